/*
 * cidr.h - IPv4/IPv6 address prefixes ("CIDR blocks") for access lists.
 *
 * A prefix is parsed from text ("127.0.0.0/8", "::1", "2001:db8::/32"; an
 * address without "/len" is a host prefix) and matched against a socket
 * address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, what a dual-stack
 * IPv6 listener reports for an IPv4 client) match IPv4 prefixes, so one
 * access list works whatever socket family accepted the client.
 *
 * No allocation; all functions are pure and thread-safe.
 */
#ifndef POSTERN_NET_CIDR_H
#define POSTERN_NET_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct cidr {
  int family;       /* AF_INET or AF_INET6 */
  unsigned bits;    /* prefix length: 0..32 or 0..128 */
  uint8_t addr[16]; /* network address, host bits cleared; IPv4 uses [0..3] */
};

/*
 * Parses `s` (NUL-terminated) into *out. Host bits set below the prefix
 * ("10.1.2.3/8") are rejected, because such a line is usually a typo for a
 * different prefix. Returns 0, or POSTERN_ESYNTAX for anything else (empty,
 * bad address, length out of range, trailing bytes).
 */
int cidr_parse(const char *s, struct cidr *out);

/* Whether `sa` (AF_INET or AF_INET6; any other family never matches) lies
 * inside prefix `c`. */
bool cidr_match(const struct cidr *c, const struct sockaddr *sa);

/* Whether `sa` lies inside any of the `n` prefixes of `list`. */
bool cidr_list_match(const struct cidr *list, size_t n,
                     const struct sockaddr *sa);

/* Writes `c` as text ("127.0.0.0/8") into buf (cap >= 50 always suffices).
 * Returns buf. */
char *cidr_format(const struct cidr *c, char *buf, size_t cap);

#endif
