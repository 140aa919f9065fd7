/*
 * policy/mtasts_shared.h - MTA-STS policies shared by the nodes of a fleet
 * (docs/fleet.md): the store interface the `mtasts` module uses when the
 * engine gives it one (policy_env.store), and the text form of a shared
 * policy entry.
 *
 * The policy layer never talks to Redis itself (it must not include
 * engine/ nor know the fleet's configuration): the engine fills a struct
 * policy_store with functions backed by the loop's Redis client. Without a
 * store (no cluster block) nothing here is used and the module works alone.
 *
 * A shared entry is as trusted as the node that fetched it: that node
 * checked the `_mta-sts` TXT id, fetched the policy over PKIX-verified
 * HTTPS and parsed it. A reader checks it again as hostile input (bounded,
 * the same parser as for a fetched body) and uses it only under the TXT id
 * it just saw in DNS; an entry that does not decode is ignored (logged),
 * never read as "no policy".
 */
#ifndef POSTERN_POLICY_MTASTS_SHARED_H
#define POSTERN_POLICY_MTASTS_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "policy/mtasts_cache.h"

/* ---- The store (filled by the engine) ----------------------------------
 *
 * Keys are short names ("mtasts:<domain>", "mtasts-fetch:<domain>"); the
 * store adds its own prefix. Every op belongs to `loop` (the caller's) and
 * is bounded in time by the store (a Redis command timeout). An op that
 * returns 0 calls its callback exactly once, later, from `loop`, never
 * inside the call; one that returns an error (the store is down or has no
 * connection on that loop, out of memory) never calls it.
 */

/* status 0: `data` (len bytes, borrowed for the call) is the value;
 * POSTERN_ENOENT: no such key; anything else: the store is unavailable. */
typedef void (*policy_store_get_cb)(void *arg, int status, const char *data,
                                    size_t len);
/* status 0: `granted` says whether the claim is ours; else unavailable. */
typedef void (*policy_store_claim_cb)(void *arg, int status, bool granted);

struct policy_store {
  void *impl;
  /* Reads `key`. */
  int (*get)(void *impl, uv_loop_t *loop, const char *key,
             policy_store_get_cb cb, void *arg);
  /* Creates `key` for ttl_ms unless it exists (a short lease: SET NX PX). */
  int (*claim)(void *impl, uv_loop_t *loop, const char *key, unsigned ttl_ms,
               policy_store_claim_cb cb, void *arg);
  /* Writes `key` = data for ttl_ms, in the background: nothing waits for
   * it and a failure is only logged by the store. */
  void (*put)(void *impl, uv_loop_t *loop, const char *key, const char *data,
              size_t len, uint64_t ttl_ms);
};

/* ---- The shared entry ---------------------------------------------------
 *
 * Text, so that an operator can read it with redis-cli:
 *
 *   postern-mtasts 1\n
 *   id: <the _mta-sts TXT id it was fetched under, 1-32 letters/digits>\n
 *   fetched: <unix seconds of the fetch>\n
 *   \n
 *   <the policy as RFC 8461 §3.2 writes it: version, mode, mx..., max_age>
 *
 * Expiry is fetched + max_age, as for a fetched policy (§3.3, §5.1).
 */

#define POLICY_MTASTS_SHARED_MAGIC "postern-mtasts 1\n"
/* The largest entry: the header and a policy of 64 patterns. */
#define POLICY_MTASTS_SHARED_MAX                                               \
  (128 + POLICY_MTASTS_ID_MAX +                                                \
   POLICY_MTASTS_MX_MAX * (POLICY_MTASTS_MX_LEN + 5))

/*
 * Writes rec's id, fetched time and policy into buf (capacity cap). Returns
 * the length, or 0 when the record cannot be written (an id that is empty
 * or not letters and digits, a policy without a mode) or cap is too small
 * (POLICY_MTASTS_SHARED_MAX always suffices).
 */
size_t policy_mtasts_shared_encode(const struct policy_mtasts_rec *rec,
                                   char *buf, size_t cap);

/*
 * Reads an entry: out->id, out->fetched, out->policy, out->expires (fetched
 * + max_age); last_used and tried are 0. Returns 0; POSTERN_ETOOBIG over
 * POLICY_MTASTS_SHARED_MAX; POSTERN_EPROTO for anything malformed (another
 * magic or version, a last line without its newline, a missing or repeated
 * field, an id that is not 1-32 letters and digits, a time that is not a
 * bounded decimal number, no blank line, a policy the RFC 8461 parser
 * refuses). *out is unspecified then.
 */
int policy_mtasts_shared_decode(const char *data, size_t len,
                                struct policy_mtasts_rec *out);

#endif
