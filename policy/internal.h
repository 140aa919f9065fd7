/*
 * policy/internal.h - helpers shared by the files of the policy module only.
 * Not part of the public interface (policy/chain.h); names use `policy__`.
 */
#ifndef POSTERN_POLICY_INTERNAL_H
#define POSTERN_POLICY_INTERNAL_H

#include "policy/chain.h"
#include "policy/mtasts_cache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/*
 * Copies the `len` bytes of domain name `in` into `out` (capacity `cap`,
 * NUL-terminated) lower-cased (ASCII only) and without one trailing dot, so
 * names compare with strcmp. Returns the length written, or -1 when the name
 * is empty (after dropping the dot), holds a NUL byte, or does not fit.
 */
int policy__name_norm(const char *in, size_t len, char *out, size_t cap);

/* ------------------------------------------------------------------------
 * The `mtasts` module, in three files:
 *   mtasts.c          the module: its state, and the chain ops (a
 *                     delivery's discovery, check_mx, check_conn);
 *   mtasts_fetch.c    the process-wide single-flight registry and the
 *                     fetch itself (address lookup, HTTPS, slot waits);
 *   mtasts_refresh.c  the maintain op: eviction and proactive refresh.
 * ------------------------------------------------------------------------ */

/* The module's state, shared by every worker loop. Immutable after
 * creation but for `cache`, set once under `mu`. */
struct policy__mts {
  char *state_dir;
  char *ca_file; /* NULL: libcurl's bundle */
  uint16_t https_port;
  unsigned timeout_ms;
  size_t body_max;
  uint64_t cache_size;
  uint64_t refresh_ms, refresh_s;
  pthread_mutex_t mu;                /* guards cache while NULL */
  struct policy_mtasts_cache *cache; /* opened on first use */
};

/* The cache, opened on first use (mtasts.c); NULL while it cannot be. */
struct policy_mtasts_cache *policy__mts_cache(struct policy__mts *s);

/* What a waiter learns from the fetch it waited for. */
enum policy__mts_outcome {
  POLICY__MTS_PENDING,
  POLICY__MTS_GOT_POLICY,
  POLICY__MTS_FETCH_FAILED, /* a real attempt failed: §3.3 applies */
  POLICY__MTS_NO_SLOT,      /* no fetch slot came free: nothing was tried */
  POLICY__MTS_CANCELED,     /* the resolver or HTTPS client closed */
  POLICY__MTS_WAIT_TIMEOUT, /* the fetch did not end within the wait bound */
};

#define POLICY__MTS_REASON_MAX 384

/* Fleet mode (mtasts_shared.h): the store keys of a domain's shared
 * policy and of its fetch claim; a claim lives the fetch timeout and this
 * slack. */
#define POLICY__MTS_SHARED_KEY "mtasts:%s"
#define POLICY__MTS_CLAIM_KEY "mtasts-fetch:%s"
#define POLICY__MTS_CLAIM_SLACK_MS 2000

/* Whether a shared entry may stand for this node's fetch of policy `id`:
 * the same id, not expired, and fetched no later than our clock allows
 * (another node's clock may be ahead by a few minutes). mtasts_shared.c */
bool policy__mts_shared_fresh(const struct policy_mtasts_rec *rec,
                              const char *id, uint64_t now);

/* Writes rec into the node's cache as if fetched here (c NULL: nothing);
 * a failure is logged (mtasts_cache_write_failed), the policy is still
 * used. mtasts_shared.c */
void policy__mts_cache_store(struct policy_mtasts_cache *c, const char *domain,
                             const struct policy_mtasts_rec *rec, uint64_t now);

struct policy__mts_fetch; /* mtasts_fetch.c */

/*
 * A delivery waiting for a fetch, part of its per-domain state. The waiter
 * initialises `wake` on its own loop (and closes it); the fetch, on
 * whatever loop it runs, sends it once the outcome is in. The rest is
 * guarded by the registry's lock: the fetch waited for (NULL once it has
 * handed out its outcome, or the wait was given up), the list of its
 * waiters, the outcome with its reason; a fetched policy is copied to
 * *policy.
 */
struct policy__mts_waiter {
  uv_async_t wake;
  struct policy__mts_fetch *flight;
  struct policy__mts_waiter *next;
  enum policy__mts_outcome outcome;
  char reason[POLICY__MTS_REASON_MAX];
  int tlsrpt; /* a failed fetch's RFC 8460 result type */
  struct policy_mtasts_policy *policy;
};

/*
 * Joins w to the fetch in progress for `domain` in the scope of `cache`
 * (or of s without one), or registers a new fetch for it, taking `id` (a
 * joined refresh takes it too: the id just seen in DNS is better than the
 * one it knew). Sets *started when the fetch is new: the caller then starts
 * it with policy__mts_fetch_begin. NULL when out of memory (w not joined).
 */
struct policy__mts_fetch *
policy__mts_fetch_join(struct policy__mts *s, struct policy_mtasts_cache *cache,
                       const struct policy_env *env, const char *domain,
                       const char *id, struct policy__mts_waiter *w,
                       bool *started);

/*
 * Registers a refresh fetch for `domain` (maintenance: not for a delivery)
 * unless a fetch for it is in flight; NULL then, or when out of memory.
 * A success stores the policy with `last_used` kept as it was. `fetched`
 * is the refreshed record's: in fleet mode a shared policy fetched later
 * under the same id is taken instead of fetching.
 */
struct policy__mts_fetch *
policy__mts_fetch_refresh(struct policy__mts *s,
                          struct policy_mtasts_cache *cache,
                          const struct policy_env *env, const char *domain,
                          const char *id, uint64_t last_used, uint64_t fetched);

/*
 * Starts a registered fetch on its loop: the address of mta-sts.<domain>,
 * then the request. Any outcome, even an immediate failure, goes to the
 * waiters later, on their loops; the fetch then frees itself.
 */
void policy__mts_fetch_begin(struct policy__mts_fetch *f);

/* Whether a fetch for `domain` (in the scope of `cache`, or of s) runs. */
bool policy__mts_fetch_running(struct policy__mts *s,
                               struct policy_mtasts_cache *cache,
                               const char *domain);

/* Takes w off its fetch's waiters, if it still waits. */
void policy__mts_wait_leave(struct policy__mts_waiter *w);

/*
 * Whether w's wait is over, and with which outcome (*o): false while the
 * fetch has not reported, unless timed_out, which gives the wait up
 * (POLICY__MTS_WAIT_TIMEOUT).
 */
bool policy__mts_wait_over(struct policy__mts_waiter *w, bool timed_out,
                           enum policy__mts_outcome *o);

/* The maintain op (mtasts_refresh.c). */
uint64_t policy__mts_maintain(void *state, const struct policy_env *env);

/* Whether a destination block's pins or extra names authenticate the
 * session (destination.c): the leaf's certificate or SPKI digest is
 * pinned, or a PKIX-valid chain names one of the extra names. Logs which. */
bool policy__dest_vouches(const struct policy_dest *d,
                          const struct policy_conn *c);

/* The RFC 8460 result type of a session that fell short of the TLS level
 * a policy requires (chain.c). */
int policy__tlsrpt_of_conn(const struct policy_conn *c);

#endif
