/*
 * postern_idna.h - internationalized domain names (IDNA2008, RFC 5890-5893)
 * for lookups: the A-label form ("xn--bcher-kva.example") of a domain as a
 * client wrote it ("bücher.example"), through Debian's libidn2.
 *
 * Mail carries the name as the client sent it (queue records keep it);
 * DNS lookups, routes, MTA-STS and DANE names and certificate checks need
 * the A-label form. The mapping is UTS #46 non-transitional (upper case
 * folded, "ß" kept as "ß"), then IDNA2008's rules: disallowed characters,
 * hyphens, bidi and contextual rules are refused, as is a result that is not
 * a host name.
 *
 * Pure apart from libidn2's own allocation; any thread.
 */
#ifndef POSTERN_IDNA_H
#define POSTERN_IDNA_H

#include <stddef.h>

/*
 * Writes the A-label form of the NUL-terminated domain `in` (UTF-8; a
 * trailing dot is kept out) into out (cap bytes, NUL-terminated), in lower
 * case. ASCII names come out lower-cased and checked the same way. Returns
 * 0; POSTERN_EINVAL when the name is not a valid IDNA2008 domain, with *why
 * (may be NULL) a static sentence for an operator or a bounce ("string
 * contains a disallowed character"); POSTERN_ETOOBIG when it does not fit
 * in cap or in 253 bytes.
 */
int postern_idna_to_ascii(const char *in, char *out, size_t cap,
                          const char **why);

#endif
