/*
 * policy/mtasts_cache.h - the persistent MTA-STS policy cache (RFC 8461
 * §5.1 "cache"): one LMDB environment in <state_dir>/mtasts, one record per
 * policy domain, surviving restarts.
 *
 * The `mtasts` policy module is the only writer; qtool reads the sizes
 * (policy_mtasts_cache_stat_dir). The file format is private to this file
 * pair:
 *
 *   key:   the policy domain, lower case, no trailing dot (1-253 bytes);
 *          keys starting with '#' are bookkeeping, never domains.
 *   value: a versioned variable-length record, host byte order (the cache
 *          never leaves the machine):
 *            u8 format (2), u8 mode, u8 id length (1-32), u8 mx count
 *            (0-64), u32 max_age, u64 fetched, u64 expires, u64 last_used,
 *            u64 tried, the id, then each mx pattern as u8 length + bytes.
 *          A typical record is under 100 bytes. A record of another format
 *          (format 1 was a fixed 16 KiB struct) or a malformed one reads
 *          as absent, is replaced by the next write and is deleted by the
 *          next sweep.
 *
 * Thread safety: every function may be called from any thread; LMDB
 * serialises write transactions and read transactions are short (no
 * transaction is held between calls). LMDB allows one open of an
 * environment per process, so opens of the same directory share one
 * refcounted handle.
 */
#ifndef POSTERN_POLICY_MTASTS_CACHE_H
#define POSTERN_POLICY_MTASTS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/chain.h"

/* mtasts { cache_size } default: about 500,000 typical policies. */
#define POLICY_MTASTS_CACHE_SIZE_DEFAULT (64ull * 1024 * 1024)
#define POLICY_MTASTS_REC_FORMAT 2
/* The largest encoded record: header, id, 64 patterns of 255 bytes. */
#define POLICY_MTASTS_REC_MAX                                                  \
  (40 + POLICY_MTASTS_ID_MAX + POLICY_MTASTS_MX_MAX * 256)

/* One cached policy. Times are unix seconds. */
struct policy_mtasts_rec {
  uint64_t fetched;   /* last successful fetch */
  uint64_t expires;   /* fetched + max_age: unusable from then on */
  uint64_t last_used; /* a delivery used it (updated at most once per
                         refresh interval, so deliveries rarely write) */
  uint64_t tried;     /* the last proactive refresh started */
  char id[POLICY_MTASTS_ID_MAX + 1]; /* the TXT id it was fetched under */
  struct policy_mtasts_policy policy;
};

/*
 * Encodes `rec` into buf (capacity cap). Returns the length, or 0 when the
 * record cannot be represented (empty or over-long id, more than
 * POLICY_MTASTS_MX_MAX patterns, a pattern over 255 bytes) or cap is too
 * small (POLICY_MTASTS_REC_MAX always suffices).
 */
size_t policy_mtasts_rec_encode(const struct policy_mtasts_rec *rec,
                                uint8_t *buf, size_t cap);

/*
 * Decodes a stored value. Returns 0, or POSTERN_ENOENT for a record of
 * another format and POSTERN_EPROTO for a malformed one (wrong length, bad
 * mode, id not 1-32 letters and digits, a pattern that is empty or holds a
 * NUL); *out is unspecified then.
 */
int policy_mtasts_rec_decode(const void *data, size_t len,
                             struct policy_mtasts_rec *out);

struct policy_mtasts_cache;

/*
 * Opens (creating the directory and files as needed, mode 0700/0600)
 * <state_dir>/mtasts with a map of `map_size` bytes (0: the default), or
 * takes another reference to the handle this process already has for that
 * directory (its map size then stays; a new size applies after a restart).
 * Returns 0, POSTERN_EINVAL (path too long), POSTERN_EIO, POSTERN_ENOMEM.
 */
int policy_mtasts_cache_open(const char *state_dir, uint64_t map_size,
                             struct policy_mtasts_cache **out);
/* Another reference to an open cache. */
void policy_mtasts_cache_retain(struct policy_mtasts_cache *c);
/* Drops a reference; the last one closes the environment. NULL is fine. */
void policy_mtasts_cache_release(struct policy_mtasts_cache *c);

/* Reads `domain`'s record (expired or not: the caller judges). Returns 0,
 * POSTERN_ENOENT (absent, another format, malformed) or POSTERN_EIO. */
int policy_mtasts_cache_get(struct policy_mtasts_cache *c, const char *domain,
                            struct policy_mtasts_rec *rec);

/*
 * Stores `domain`'s record. When the map is full, expired and unreadable
 * records (expires <= now) are deleted, the freed space is made reusable
 * and the write is tried once more. Returns 0, POSTERN_ENOSPC (still full:
 * counted in policy_mtasts_cache_stat's full_events), POSTERN_EINVAL (the
 * record cannot be encoded) or POSTERN_EIO.
 */
int policy_mtasts_cache_put(struct policy_mtasts_cache *c, const char *domain,
                            const struct policy_mtasts_rec *rec, uint64_t now);

/*
 * Updates the bookkeeping times of an existing record in place: last_used
 * and tried, each only when non-zero. Returns 0, POSTERN_ENOENT (no
 * readable record), POSTERN_ENOSPC or POSTERN_EIO.
 */
int policy_mtasts_cache_touch(struct policy_mtasts_cache *c, const char *domain,
                              uint64_t last_used, uint64_t tried);

/*
 * Walks every record in key order, deleting the expired ones (expires <=
 * now) and those that do not decode, in write transactions of a bounded
 * number of records each. `each` (may be NULL) is called for every record
 * kept, inside the transaction: it must be quick and must not call back
 * into the cache. Returns 0 or POSTERN_EIO; *kept and *evicted (either may
 * be NULL) count records.
 */
typedef void (*policy_mtasts_cache_each_cb)(
    void *arg, const char *domain, const struct policy_mtasts_rec *rec);
int policy_mtasts_cache_sweep(struct policy_mtasts_cache *c, uint64_t now,
                              policy_mtasts_cache_each_cb each, void *arg,
                              uint64_t *kept, uint64_t *evicted);

struct policy_mtasts_cache_stat {
  uint64_t entries;     /* records (of any format) */
  uint64_t used_bytes;  /* pages in use (including free ones) x page size */
  uint64_t map_size;    /* the map's size: the most the cache can hold */
  uint64_t full_events; /* writes refused because the map was full (this
                           process, since the cache was opened) */
};

/* Sizes of an open cache. Returns 0 or POSTERN_EIO. */
int policy_mtasts_cache_stat(struct policy_mtasts_cache *c,
                             struct policy_mtasts_cache_stat *st);

/*
 * Sizes of the cache in <state_dir>/mtasts, opened read-only for this call
 * (for qtool, with or without a running relay; full_events is 0). Never
 * creates anything. Returns 0, POSTERN_ENOENT (no cache there), POSTERN_EIO
 * or POSTERN_EINVAL.
 */
int policy_mtasts_cache_stat_dir(const char *state_dir,
                                 struct policy_mtasts_cache_stat *st);

#endif
