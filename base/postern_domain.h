/*
 * postern_domain.h - the one syntax check of domain names, for every module
 * that takes one from outside: the configuration (hostname, route domains
 * and targets), SMTP commands (the domain of a MAIL FROM / RCPT TO
 * address), MTA-STS policies (mx patterns) and HTTPS URLs (the host).
 *
 * The base rule is a host name as RFC 1123 §2.1 and RFC 5321 §4.1.2
 * (Domain, sub-domain) write it: dot-separated labels of 1 to 63 letters,
 * digits and hyphens, a hyphen neither first nor last in a label, at most
 * 253 bytes (the longest name DNS can carry, written as text). Each flag
 * widens it for one kind of input; a caller names exactly the forms its
 * protocol allows, and nothing else is accepted.
 *
 * Pure; no state, no allocation, safe from any thread.
 */
#ifndef POSTERN_DOMAIN_H
#define POSTERN_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>

enum {
  /* One final '.' (the root, as in "example.com.") may end the name; it is
   * not counted in the length. */
  POSTERN_DOMAIN_TRAILING_DOT = 1u << 0,
  /* "*." may start the name: an MTA-STS mx pattern (RFC 8461 §3.2); the
   * rest is checked as a name of its own. */
  POSTERN_DOMAIN_WILDCARD = 1u << 1,
  /* A Domain as written in an SMTP command: labels may be U-labels of
   * well-formed UTF-8 (RFC 6531 §3.3; lengths count bytes) and the name
   * may have 255 bytes (RFC 5321 §4.5.3.1.2). */
  POSTERN_DOMAIN_SMTP = 1u << 2,
  /* A host in an HTTPS URL, as curl takes it: '_' in labels and hyphens
   * anywhere (RFC 2181 §11 puts no rule on labels), but the last label not
   * all digits, which curl would read as an IPv4 address (RFC 3696 §2). */
  POSTERN_DOMAIN_URL_HOST = 1u << 3,
};

/*
 * Checks the `n` bytes at `s` (not necessarily NUL-terminated; a NUL byte
 * is refused like any other byte outside the rule). Returns 0, or
 * POSTERN_EINVAL with *why pointing at a static explanation for an operator
 * ("each dot-separated label must have 1 to 63 characters"). `utf8` and
 * `why` may be NULL; *utf8 is set to true as soon as a U-label sequence is
 * read (POSTERN_DOMAIN_SMTP), and never to false.
 */
int postern_domain_check(const char *s, size_t n, unsigned flags, bool *utf8,
                         const char **why);

#endif
