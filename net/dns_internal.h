/*
 * net/dns_internal.h - helpers shared by the net/dns*.c files only.
 */
#ifndef NET_DNS_INTERNAL_H
#define NET_DNS_INTERNAL_H

#include "net/dns.h"

#include <stddef.h>

/* The POSTERN_E* code matching a status (0 for DNS_ANSWER). */
int dns__status_err(enum dns_status st);

/*
 * Reads the possibly compressed wire name at *off of `pkt` (`len` bytes);
 * in-place labels must end before `end`. Writes its presentation form
 * (lower case, escaped, no trailing dot, "." for the root) into `out`
 * (DNS_NAME_MAX bytes) and moves *off past the in-place bytes. Returns 0 or
 * -1 when the name is malformed (out of bounds, pointer loop or forward
 * pointer, longer than 255 octets, reserved label type).
 */
int dns__name_read(const unsigned char *pkt, size_t len, size_t end,
                   size_t *off, char *out);

/* Lower-cases `in` and drops one unescaped trailing dot, into `out`
 * (DNS_NAME_MAX bytes). Returns 0, or -1 for an empty or too long name. */
int dns__name_normalize(const char *in, char *out);

#endif
