/*
 * net/dns_internal.h - helpers shared by the net/dns*.c files only.
 */
#ifndef NET_DNS_INTERNAL_H
#define NET_DNS_INTERNAL_H

#include "net/dns.h"

#include <stddef.h>
#include <stdint.h>

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

/* A deep copy of `src` into *dst (which the caller frees with
 * dns_answer_free). Returns 0 or POSTERN_ENOMEM (*dst is then empty). */
int dns__answer_copy(const struct dns_answer *src, struct dns_answer *dst);

/* ---- The answer cache (dns_cache.c), one per resolver, one thread ---- */

struct dns__cache;

/* A cache of at most `max_entries` answers (0: no cache, *out NULL), each
 * kept for its TTL, at most `max_ttl` seconds (negative answers at most
 * DNS__NEG_TTL_MAX). Returns 0 or POSTERN_ENOMEM. */
#define DNS__NEG_TTL_MAX (3u * 3600)
int dns__cache_new(size_t max_entries, uint32_t max_ttl,
                   struct dns__cache **out);
void dns__cache_free(struct dns__cache *c);

/* Copies the fresh answer for (name, type) into *out with its remaining
 * TTL and returns 0; POSTERN_ENOENT when there is none (expired entries
 * are dropped here), POSTERN_ENOMEM. `name` is normalized. */
int dns__cache_get(struct dns__cache *c, const char *name, uint16_t type,
                   uint64_t now_ms, struct dns_answer *out);

/* Keeps a copy of `a` when it may be cached: an ANSWER, NXDOMAIN or NODATA
 * with a TTL above 0 (RFC 2308 §5: a denial without an SOA is not cached);
 * failures never. The least recently used entry goes when the cache is
 * full. Out of memory only skips the caching. */
void dns__cache_put(struct dns__cache *c, const char *name, uint16_t type,
                    const struct dns_answer *a, uint64_t now_ms);

/* Counters since the cache was made. */
void dns__cache_stats(const struct dns__cache *c, struct dns_cache_stats *st);

#endif
