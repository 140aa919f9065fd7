/*
 * mtasts_refresh.c - the `mtasts` module's maintain op: cache eviction and
 * the proactive refresh of policies in use (RFC 8461 §5.1: refresh before
 * expiry).
 *
 * On one engine loop every few minutes, a sweep of the cache evicts
 * expired policies and picks those in use (used by a delivery within
 * MTS_IN_USE_S) that are due: fetched at least refresh_interval ago, or
 * half their max_age if that is shorter, and not tried too recently. Each
 * is fetched again over HTTPS directly (mtasts_fetch.c) - no TXT lookup
 * needed, so a blocked or withdrawn TXT record does not let a policy
 * lapse - and a success extends its life to now + max_age. A domain whose
 * fetch is already in flight is left to that fetch.
 *
 * Ownership: the candidates are copied out of the sweep into a block freed
 * before return; the fetches started belong to env's loop (mtasts_fetch.c).
 */
#include "policy/internal.h"

#include "base/postern_err.h"
#include "base/postern_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A policy a delivery used within this is "in use" and kept fresh. */
#define MTS_IN_USE_S (30u * 86400)
/* Longest and shortest delay between maintenance passes. */
#define MTS_MAINTAIN_MAX_MS POLICY_MAINTAIN_DEFAULT_MS
#define MTS_MAINTAIN_MIN_MS 100
/* Refreshes started per maintenance pass (the longest untried first). */
#define MTS_REFRESH_PER_PASS 32

struct refresh_cand {
  char domain[256];
  char id[POLICY_MTASTS_ID_MAX + 1];
  uint64_t tried, fetched, last_used;
};

struct refresh_pick {
  const struct policy__mts *s;
  uint64_t now;
  size_t n;
  struct refresh_cand c[MTS_REFRESH_PER_PASS];
};

/* How old a policy may get before a refresh: refresh_interval, or half
 * its max_age when that is shorter (at least a second). */
static uint64_t refresh_age(const struct policy__mts *s,
                            const struct policy_mtasts_rec *r) {
  uint64_t half = r->policy.max_age / 2;
  uint64_t age = s->refresh_s < half ? s->refresh_s : half;
  return age ? age : 1;
}

/* Sweep callback: keeps the MTS_REFRESH_PER_PASS due policies whose last
 * refresh attempt is the oldest (a dead policy host must not starve the
 * others), ties broken by the oldest fetch. */
static void pick_each(void *arg, const char *domain,
                      const struct policy_mtasts_rec *r) {
  struct refresh_pick *p = arg;
  uint64_t age = refresh_age(p->s, r);
  uint64_t gap = age / 4 ? age / 4 : 1; /* between attempts */
  if (r->last_used + MTS_IN_USE_S < p->now || p->now < r->fetched + age ||
      p->now < r->tried + gap || strlen(domain) >= 256)
    return;
  size_t i = p->n;
  while (i > 0 &&
         (p->c[i - 1].tried > r->tried ||
          (p->c[i - 1].tried == r->tried && p->c[i - 1].fetched > r->fetched)))
    i--;
  if (i >= MTS_REFRESH_PER_PASS)
    return;
  size_t last = p->n < MTS_REFRESH_PER_PASS ? p->n : MTS_REFRESH_PER_PASS - 1;
  memmove(&p->c[i + 1], &p->c[i], (last - i) * sizeof p->c[0]);
  struct refresh_cand *c = &p->c[i];
  snprintf(c->domain, sizeof c->domain, "%s", domain);
  snprintf(c->id, sizeof c->id, "%s", r->id);
  c->tried = r->tried;
  c->fetched = r->fetched;
  c->last_used = r->last_used;
  if (p->n < MTS_REFRESH_PER_PASS)
    p->n++;
}

static void gauge(const struct policy_env *env, const char *name, uint64_t v) {
  if (env->gauge)
    env->gauge("mtasts", name, v);
}

uint64_t policy__mts_maintain(void *state, const struct policy_env *env) {
  struct policy__mts *s = state;
  uint64_t period = s->refresh_ms / 4;
  if (period > MTS_MAINTAIN_MAX_MS)
    period = MTS_MAINTAIN_MAX_MS;
  if (period < MTS_MAINTAIN_MIN_MS)
    period = MTS_MAINTAIN_MIN_MS;
  struct policy_mtasts_cache *c = policy__mts_cache(s);
  if (c == NULL)
    return period;
  struct refresh_pick *p = calloc(1, sizeof *p);
  if (p == NULL)
    return period;
  p->s = s;
  p->now = env->now_ms / 1000;
  uint64_t kept = 0, evicted = 0;
  int rc = policy_mtasts_cache_sweep(c, p->now, pick_each, p, &kept, &evicted);
  if (rc != 0)
    postern_log(POSTERN_LOG_WARN, "mtasts_cache_sweep_failed", "error",
                postern_strerror(rc), NULL);
  if (evicted) {
    char n[24];
    snprintf(n, sizeof n, "%llu", (unsigned long long)evicted);
    postern_log(POSTERN_LOG_INFO, "mtasts_cache_evicted", "expired", n, NULL);
  }
  for (size_t i = 0; i < p->n && env->dns && env->https; i++) {
    struct refresh_cand *cd = &p->c[i];
    struct policy__mts_fetch *f = policy__mts_fetch_refresh(
        s, c, env, cd->domain, cd->id, cd->last_used, cd->fetched);
    if (f == NULL)
      continue;
    policy_mtasts_cache_touch(c, cd->domain, 0, p->now);
    postern_log(POSTERN_LOG_DEBUG, "mtasts_refresh_started", "domain",
                cd->domain, "id", cd->id, NULL);
    policy__mts_fetch_begin(f);
  }
  free(p);
  struct policy_mtasts_cache_stat st;
  if (policy_mtasts_cache_stat(c, &st) == 0) {
    gauge(env, "cache_entries", st.entries);
    gauge(env, "cache_used_bytes", st.used_bytes);
    gauge(env, "cache_map_bytes", st.map_size);
  }
  return period;
}
