/*
 * mtasts.c - the `mtasts` policy module (RFC 8461, SMTP MTA Strict
 * Transport Security).
 *
 * prepare_domain discovers the policy of the policy domain: the recipient
 * domain, or for a route to a named smart host that host's name (§3.4); a
 * route to an IP address has no policy domain and so no policy.
 *   1. the cached policy for the domain, if unexpired (mtasts_cache.h);
 *   2. TXT `_mta-sts.<domain>` (§3.1):
 *      - exactly one valid `v=STSv1` record with the cached policy's id:
 *        the cache is used;
 *      - a new id, or nothing cached: the policy is fetched (3);
 *      - no STS record (NXDOMAIN, NODATA, only other TXT records), several
 *        STS records or an invalid one: the cached policy if any, else no
 *        policy (§3.1: "assume the domain has no available policy"; a
 *        domain withdraws a policy by publishing mode none, §8.3);
 *      - a failed lookup (SERVFAIL, timeout, malformed answer): the cached
 *        policy if any, else no policy, logged and counted. As for a failed
 *        fetch (§3.3), an attacker able to block the first contact could
 *        block the fetch just as well; what protects a known domain is its
 *        cached policy, which the maintenance keeps fresh (below) while
 *        TXT lookups are blocked.
 *   3. the fetch (§3.3, mtasts_fetch.c): `mta-sts.<domain>` resolved by
 *      our resolver, then
 *      https://mta-sts.<domain>/.well-known/mta-sts.txt through net/https
 *      (PKIX with tls { ca_file }, no redirects, 200 only, text/plain,
 *      size cap, timeout). A valid policy is cached for max_age seconds
 *      under its TXT id. A failed fetch or invalid policy: the cached
 *      policy if any, else - §3.3 - no policy (logged).
 * check_mx: `enforce` - an MX matching a pattern (§4.1) gets MX level
 *   `mtasts`, any other MX is rejected (4.7.5, the next MX is tried);
 *   `testing` - mismatches are logged and counted, never enforced; `none`
 *   - nothing.
 * check_conn: `enforce` requires TLS level `authenticated` (PKIX-valid for
 *   the MX name, §4.2). Where usable DANE records exist (policy_conn
 *   dane_usable) DANE governs authentication (§2): the chain then counts
 *   only a DANE match as `authenticated`, so the requirement is met by
 *   DANE and PKIX is not checked on top (logged). `testing`: a shortfall -
 *   plaintext included (a stripped STARTTLS) - is logged and counted only;
 *   hypothetical checks (policy_conn.hypothetical) are never logged.
 *
 * Waiting for a fetch: at most one fetch per policy domain runs in the
 * process (mtasts_fetch.c). A delivery that needs a policy joins the fetch
 * in progress, or starts one, and waits for its outcome on its own loop
 * (its policy__mts_waiter's uv_async_t, woken by the fetch), at most
 * wait_bound() ms; it then acts on the outcome once (settle).
 *
 * Fleet mode (env->store, policy/mtasts_shared.h): before fetching, a
 * delivery reads the policy another node shared. An entry under the TXT
 * id just seen, unexpired, is used and written to the local cache as if
 * fetched. Otherwise the delivery claims the domain's fetch lease (a short
 * SET NX PX): granted, it fetches as above and the fetch shares what it
 * got (mtasts_fetch.c); denied, another node is fetching, so it reads the
 * entry again every MTS_SHARED_POLL_MS until it appears or the claim's
 * life (the fetch timeout and a little) has passed, then fetches itself.
 * The store unavailable at any step: it fetches at once, as without a
 * fleet. An entry that does not decode is ignored (logged, counted
 * "shared_invalid"): it never means "no policy".
 *
 * Maintenance, the maintain op (evicting expired policies, refreshing
 * those in use before they age), is mtasts_refresh.c.
 *
 * Ownership: a `struct mts_domain` is this module's per-domain state.
 * While its TXT lookup is in flight the resolver references it too
 * (free_domain then cancels and the CANCELED callback frees); once it
 * waits for a fetch it owns two handles and is freed in their close
 * callbacks; while a store op is in flight the store references it too
 * (free_domain then leaves it to that op's callback). The module state (struct
 * policy__mts, policy/internal.h) is immutable after creation (the cache
 * pointer is set once under its mutex) and shared by every worker loop.
 */
#include "policy/internal.h"
#include "policy/mtasts_shared.h"
#include "policy/tlsrpt.h"

#include "base/postern_err.h"
#include "base/postern_log.h"
#include "net/dns.h"
#include "net/https.h"

#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MTS_TXT_MAX 16 /* TXT records looked at */
#define MTS_REFRESH_DEFAULT_MS (24u * 3600 * 1000)
/* Fleet mode: how often a delivery waiting for another node's fetch reads
 * the shared entry again; the slack added to the fetch timeout for the
 * life of a fetch lease (and so for that wait); the clock skew between
 * nodes tolerated in an entry's fetch time. */
#define MTS_SHARED_POLL_MS 200

/* ---- module state ---- */

/* The cache, opened on first use: on a worker thread, after the relay has
 * dropped privileges and created state_dir, so the files belong to the
 * relay's user. A failure is retried at the next use. NULL while the
 * cache cannot be opened. */
struct policy_mtasts_cache *policy__mts_cache(struct policy__mts *s) {
  pthread_mutex_lock(&s->mu);
  if (s->cache == NULL) {
    int rc = policy_mtasts_cache_open(s->state_dir, s->cache_size, &s->cache);
    if (rc != 0) {
      s->cache = NULL;
      postern_log(POSTERN_LOG_WARN, "mtasts_cache_unavailable", "state_dir",
                  s->state_dir, "error", postern_strerror(rc), NULL);
    }
  }
  struct policy_mtasts_cache *c = s->cache;
  pthread_mutex_unlock(&s->mu);
  return c;
}

/* ---- per-domain state (one delivery's discovery) ---- */

struct mts_domain {
  struct policy__mts *s;
  uv_loop_t *loop;
  struct dns_resolver *dns;
  struct https_client *https;
  void (*count)(const char *module, const char *outcome);
  char domain[256];
  uint64_t now; /* unix seconds at prepare */
  struct dns_query *q;
  bool orphaned; /* free_domain ran while the TXT lookup was in flight */
  policy_done_cb done;
  void *arg;
  char txt_id[POLICY_MTASTS_ID_MAX + 1];
  bool have_cache;
  struct policy_mtasts_rec cached;
  bool have_policy;
  struct policy_mtasts_policy policy;
  char source[16]; /* "fetched", "cache", "shared" */
  /* Fleet mode: the store (NULL without one); a store op in flight (it
   * references d); the fetch lease asked for; the poll timer initialised
   * (counted in open_handles, closed by free_domain) and when to stop
   * waiting for another node's fetch (loop time). */
  const struct policy_store *store;
  bool shared_busy, claimed, poll_init, shared_bad_logged;
  uint64_t poll_deadline;
  uv_timer_t poll_timer;
  /* Waiting for a fetch: the handles (w.wake, wait_timer) are initialised
   * (and closed by free_domain), `settled` once the outcome was acted on.
   * A fetched policy goes into `policy`. */
  bool waiting, settled;
  /* The policy could not be had and nothing was cached: the RFC 8460
   * result type of that failure (for TLS reports), 0 otherwise. */
  int sts_failure;
  int open_handles;
  uv_timer_t wait_timer;
  struct policy__mts_waiter w;
};

static void count(struct mts_domain *d, const char *outcome) {
  if (d->count)
    d->count("mtasts", outcome);
}

/* ---- a delivery's discovery ---- */

/* The longest a delivery waits for a fetch: the address lookup, a wait
 * for a slot and the fetch itself are each bounded; this only guards
 * against a fetch that never reports. */
static uint64_t wait_bound(const struct policy__mts *s) {
  return 2 * (uint64_t)s->timeout_ms + 30000;
}

/* After free_domain: the memory goes once no handle is open and no store
 * op references it. */
static void maybe_free(struct mts_domain *d) {
  if (d->open_handles == 0 && !d->shared_busy)
    free(d);
}

static void domain_closed(uv_handle_t *h) {
  struct mts_domain *d = h->data;
  d->open_handles--;
  maybe_free(d);
}

static void mts_free_domain(void *state, void *pd) {
  struct mts_domain *d = pd;
  if (d == NULL)
    return;
  if (d->q) {
    d->orphaned = true;
    dns_query_cancel(d->q);
    return;
  }
  d->orphaned = true;
  if (d->waiting) {
    policy__mts_wait_leave(&d->w);
    uv_close((uv_handle_t *)&d->w.wake, domain_closed);
    uv_close((uv_handle_t *)&d->wait_timer, domain_closed);
  }
  if (d->poll_init)
    uv_close((uv_handle_t *)&d->poll_timer, domain_closed);
  maybe_free(d);
}

/* The end of prepare_domain: reports to the chain (the last use of the
 * chain's memory). */
static void finish(struct mts_domain *d, const struct policy_result *r) {
  d->done(d->arg, r);
}

static void finish_ok(struct mts_domain *d) {
  struct policy_result r;
  memset(&r, 0, sizeof r);
  r.outcome = POLICY_OK;
  finish(d, &r);
}

static void use_cache(struct mts_domain *d, const char *why) {
  d->have_policy = true;
  d->policy = d->cached.policy;
  snprintf(d->source, sizeof d->source, "cache");
  char exp[32];
  snprintf(exp, sizeof exp, "%llu", (unsigned long long)d->cached.expires);
  postern_log(POSTERN_LOG_DEBUG, "mtasts_policy", "domain", d->domain, "source",
              "cache", "why", why, "id", d->cached.id, "mode",
              policy_mtasts_mode_name(d->policy.mode), "expires", exp, NULL);
  /* The maintenance keeps policies in use fresh; say this one is, at most
   * once per refresh interval so that deliveries rarely write. */
  if (d->now >= d->cached.last_used + d->s->refresh_s) {
    struct policy_mtasts_cache *c = policy__mts_cache(d->s);
    if (c)
      policy_mtasts_cache_touch(c, d->domain, d->now, 0);
  }
  finish_ok(d);
}

static void no_policy(struct mts_domain *d, const char *why) {
  postern_log(POSTERN_LOG_DEBUG, "mtasts_no_policy", "domain", d->domain, "why",
              why, NULL);
  finish_ok(d);
}

/* A canceled lookup or fetch (the resolver or HTTPS client is closing,
 * the relay stops): nothing was learnt, so nothing is decided. */
static void canceled(struct mts_domain *d) {
  struct policy_result r;
  policy_result_set(&r, POLICY_TEMPFAIL, "mtasts", "4.7.5",
                    "MTA-STS policy discovery for %s was canceled", d->domain);
  finish(d, &r);
}

/* A failed fetch: the cached policy, else no policy (RFC 8461 §3.3). */
static void fetch_failed(struct mts_domain *d, const char *reason) {
  if (d->have_cache) {
    postern_log(POSTERN_LOG_WARN, "mtasts_fetch_failed", "domain", d->domain,
                "reason", reason, "using", "cached policy", NULL);
    use_cache(d, "fetch failed");
    return;
  }
  postern_log(POSTERN_LOG_WARN, "mtasts_fetch_failed", "domain", d->domain,
              "reason", reason, "using",
              "no policy (RFC 8461 section 3.3: nothing cached)", NULL);
  if (d->sts_failure == 0)
    d->sts_failure = POLICY_TLSRPT_STS_POLICY_FETCH_ERROR;
  no_policy(d, "fetch failed, nothing cached");
}

/* Acts on the outcome of the fetch waited for, once: from the wake-up or
 * from the wait's timer, whichever comes first. */
static void settle(struct mts_domain *d, bool timed_out) {
  enum policy__mts_outcome o;
  if (d->settled || !policy__mts_wait_over(&d->w, timed_out, &o))
    return; /* acted on already, or not for us yet */
  d->settled = true;
  uv_timer_stop(&d->wait_timer);
  switch (o) {
  case POLICY__MTS_GOT_POLICY:
    d->have_policy = true;
    snprintf(d->source, sizeof d->source, "fetched");
    finish_ok(d);
    return;
  case POLICY__MTS_FETCH_FAILED:
    d->sts_failure = d->w.tlsrpt;
    fetch_failed(d, d->w.reason);
    return;
  case POLICY__MTS_WAIT_TIMEOUT:
    fetch_failed(d, "the fetch in progress did not finish in time");
    return;
  case POLICY__MTS_NO_SLOT: {
    if (d->have_cache) {
      use_cache(d, "no fetch slot");
      return;
    }
    struct policy_result r;
    policy_result_set(&r, POLICY_TEMPFAIL, "mtasts", "4.7.5",
                      "MTA-STS policy of %s not fetched: no fetch slot free",
                      d->domain);
    r.tlsrpt = d->sts_failure = POLICY_TLSRPT_STS_POLICY_FETCH_ERROR;
    finish(d, &r);
    return;
  }
  default:
    canceled(d);
    return;
  }
}

static void on_wake(uv_async_t *a) {
  settle(a->data, false);
}

static void on_wait_timeout(uv_timer_t *t) {
  settle(t->data, true);
}

/* Joins the fetch in progress for the domain, or starts one, and waits. */
static void wait_for_fetch(struct mts_domain *d) {
  uv_async_init(d->loop, &d->w.wake, on_wake);
  uv_timer_init(d->loop, &d->wait_timer);
  d->w.wake.data = d->wait_timer.data = d;
  d->w.policy = &d->policy;
  d->waiting = true;
  d->open_handles += 2;
  struct policy_mtasts_cache *cache = policy__mts_cache(d->s);
  struct policy_env env = {.loop = d->loop,
                           .dns = d->dns,
                           .https = d->https,
                           .now_ms = d->now * 1000,
                           .count = d->count,
                           .store = d->store};
  bool started;
  struct policy__mts_fetch *f = policy__mts_fetch_join(
      d->s, cache, &env, d->domain, d->txt_id, &d->w, &started);
  if (f == NULL) {
    d->settled = true;
    fetch_failed(d, "out of memory");
    return;
  }
  uv_timer_start(&d->wait_timer, on_wait_timeout, wait_bound(d->s), 0);
  if (started)
    policy__mts_fetch_begin(f);
  else
    postern_log(POSTERN_LOG_DEBUG, "mtasts_fetch_joined", "domain", d->domain,
                NULL);
}

/* ---- fleet mode: a policy another node fetched ---- */

static void shared_get(struct mts_domain *d);

/* The life of a fetch lease, and so the longest wait for another node's
 * fetch: the fetch's own timeout and a little for its address lookup. */
static unsigned claim_ttl(const struct policy__mts *s) {
  return s->timeout_ms + POLICY__MTS_CLAIM_SLACK_MS;
}

/* Uses another node's policy as if this node had fetched it: into the
 * local cache (so the next delivery, a restart, the refresh all see it),
 * then for this delivery. */
static void adopt_shared(struct mts_domain *d, struct policy_mtasts_rec *rec) {
  rec->last_used = d->now;
  rec->tried = 0;
  policy__mts_cache_store(policy__mts_cache(d->s), d->domain, rec, d->now);
  d->have_policy = true;
  d->policy = rec->policy;
  snprintf(d->source, sizeof d->source, "shared");
  count(d, "shared_used");
  char ma[16], at[24];
  snprintf(ma, sizeof ma, "%u", (unsigned)rec->policy.max_age);
  snprintf(at, sizeof at, "%llu", (unsigned long long)rec->fetched);
  postern_log(POSTERN_LOG_INFO, "mtasts_policy_shared", "domain", d->domain,
              "id", rec->id, "mode", policy_mtasts_mode_name(rec->policy.mode),
              "max_age", ma, "fetched", at, NULL);
  finish_ok(d);
}

static void on_poll(uv_timer_t *t) {
  shared_get(t->data);
}

static void on_shared_claim(void *arg, int status, bool granted) {
  struct mts_domain *d = arg;
  d->shared_busy = false;
  if (d->orphaned) {
    maybe_free(d);
    return;
  }
  if (status != 0 || granted) {
    /* Ours (or the store failed): fetch; the fetch shares its policy. */
    wait_for_fetch(d);
    return;
  }
  postern_log(POSTERN_LOG_DEBUG, "mtasts_shared_waiting", "domain", d->domain,
              "why", "another node is fetching", NULL);
  if (!d->poll_init) {
    uv_timer_init(d->loop, &d->poll_timer);
    d->poll_timer.data = d;
    d->poll_init = true;
    d->open_handles++;
  }
  d->poll_deadline = uv_now(d->loop) + claim_ttl(d->s);
  uv_timer_start(&d->poll_timer, on_poll, MTS_SHARED_POLL_MS, 0);
}

static void shared_claim(struct mts_domain *d) {
  char key[300];
  snprintf(key, sizeof key, POLICY__MTS_CLAIM_KEY, d->domain);
  d->claimed = true;
  d->shared_busy = true;
  if (d->store->claim(d->store->impl, d->loop, key, claim_ttl(d->s),
                      on_shared_claim, d) != 0) {
    d->shared_busy = false;
    wait_for_fetch(d);
  }
}

static void on_shared_get(void *arg, int status, const char *data, size_t len) {
  struct mts_domain *d = arg;
  d->shared_busy = false;
  if (d->orphaned) {
    maybe_free(d);
    return;
  }
  if (status != 0 && status != POSTERN_ENOENT) {
    postern_log(POSTERN_LOG_DEBUG, "mtasts_shared_unavailable", "domain",
                d->domain, "error", postern_strerror(status), NULL);
    wait_for_fetch(d);
    return;
  }
  if (status == 0) {
    struct policy_mtasts_rec *rec = malloc(sizeof *rec);
    int rc = rec ? policy_mtasts_shared_decode(data, len, rec) : POSTERN_ENOMEM;
    if (rc != 0 && rc != POSTERN_ENOMEM && !d->shared_bad_logged) {
      /* Fails closed: ignored, the policy is fetched (never "no policy"). */
      d->shared_bad_logged = true;
      count(d, "shared_invalid");
      postern_log(POSTERN_LOG_WARN, "mtasts_shared_invalid", "domain",
                  d->domain, "error", postern_strerror(rc), "using",
                  "a fetch of our own", NULL);
    } else if (rc == 0 && policy__mts_shared_fresh(rec, d->txt_id, d->now)) {
      adopt_shared(d, rec);
      free(rec);
      return;
    }
    free(rec);
  }
  if (!d->claimed) {
    shared_claim(d);
    return;
  }
  if (uv_now(d->loop) >= d->poll_deadline) {
    postern_log(POSTERN_LOG_INFO, "mtasts_shared_wait_over", "domain",
                d->domain, "using", "a fetch of our own", NULL);
    wait_for_fetch(d);
    return;
  }
  uv_timer_start(&d->poll_timer, on_poll, MTS_SHARED_POLL_MS, 0);
}

static void shared_get(struct mts_domain *d) {
  char key[300];
  snprintf(key, sizeof key, POLICY__MTS_SHARED_KEY, d->domain);
  d->shared_busy = true;
  if (d->store->get(d->store->impl, d->loop, key, on_shared_get, d) != 0) {
    d->shared_busy = false;
    wait_for_fetch(d);
  }
}

/* The policy must be had under a new id, or for the first time: from the
 * fleet if it shares one, else fetched. A fetch already running in this
 * process is joined directly. */
static void discover(struct mts_domain *d) {
  if (d->store == NULL ||
      policy__mts_fetch_running(d->s, policy__mts_cache(d->s), d->domain)) {
    wait_for_fetch(d);
    return;
  }
  shared_get(d);
}

static void on_txt(const struct dns_answer *a, void *arg) {
  struct mts_domain *d = arg;
  d->q = NULL;
  if (d->orphaned) {
    free(d);
    return;
  }
  if (a->status == DNS_CANCELED) {
    canceled(d);
    return;
  }
  int prc = POSTERN_ENOENT;
  if (a->status == DNS_ANSWER) {
    struct policy_txt txt[MTS_TXT_MAX];
    size_t n = 0;
    for (size_t i = 0; i < a->nrr && n < MTS_TXT_MAX; i++)
      if (a->rr[i].type == DNS_T_TXT)
        txt[n++] =
            (struct policy_txt){.data = (const char *)a->rr[i].u.txt.data,
                                .len = a->rr[i].u.txt.len};
    struct policy_mtasts_txt t;
    prc = policy_mtasts_txt_parse(txt, n, &t);
    if (prc == 0)
      snprintf(d->txt_id, sizeof d->txt_id, "%s", t.id);
  } else if (a->status != DNS_NXDOMAIN && a->status != DNS_NODATA) {
    prc = POSTERN_EDNS_TEMPFAIL;
  }
  if (prc == POSTERN_ENOENT) {
    /* No STS record. A cached policy stays in force until it expires
     * (RFC 8461 §8.3: withdrawing takes a `none` policy). */
    if (d->have_cache)
      use_cache(d, "no TXT record");
    else
      no_policy(d, "no _mta-sts TXT record");
    return;
  }
  if (prc == POSTERN_EDNS_TEMPFAIL) {
    count(d, "txt_failed");
    if (d->have_cache) {
      postern_log(POSTERN_LOG_INFO, "mtasts_txt_failed", "domain", d->domain,
                  "status", dns_status_name(a->status), "using",
                  "cached policy", NULL);
      use_cache(d, "TXT lookup failed");
      return;
    }
    /* Nothing cached: as for a failed fetch (§3.3), no policy. A domain
     * that never deployed MTA-STS must not have its mail held back by
     * DNS servers that fail on _mta-sts names. */
    count(d, "txt_failed_no_policy");
    postern_log(POSTERN_LOG_WARN, "mtasts_txt_failed", "domain", d->domain,
                "status", dns_status_name(a->status), "using",
                "no policy (nothing cached)", NULL);
    no_policy(d, "TXT lookup failed, nothing cached");
    return;
  }
  if (prc != 0) {
    /* RFC 8461 §3.1: not exactly one STS record, or an invalid one: "the
     * sender MUST assume the domain has no available policy" - the cached
     * one still applies (§5.1). */
    count(d, "txt_invalid");
    postern_log(POSTERN_LOG_INFO, "mtasts_txt_invalid", "domain", d->domain,
                "reason", "several v=STSv1 records, or an invalid one", "using",
                d->have_cache ? "cached policy" : "no policy", NULL);
    if (d->have_cache)
      use_cache(d, "invalid TXT record");
    else
      no_policy(d, "invalid _mta-sts TXT record");
    return;
  }
  if (d->have_cache && strcmp(d->cached.id, d->txt_id) == 0) {
    use_cache(d, "same id");
    return;
  }
  discover(d);
}

/* Whether a route's host is an IP address (no policy domain, §3.4). */
static bool is_ip_literal(const char *host) {
  char buf[64];
  size_t n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
    host++;
    n -= 2;
  }
  if (n == 0 || n >= sizeof buf)
    return false;
  memcpy(buf, host, n);
  buf[n] = '\0';
  struct in6_addr a6;
  return inet_pton(AF_INET, buf, &a6) == 1 ||
         inet_pton(AF_INET6, buf, &a6) == 1;
}

static int mts_prepare_domain(void *state, const struct policy_env *env,
                              const char *domain, void **pd,
                              policy_done_cb done, void *arg) {
  struct policy__mts *s = state;
  /* RFC 8461 §3.4: for a route to a named host the policy domain is that
   * host's name (the engine passes it as `domain`); an IP address names
   * no domain, so there is no policy to look for. */
  if (env->dest != NULL && env->dest->mtasts == POLICY_DEST_OFF) {
    /* The operator turned MTA-STS off for this destination (a broken
     * policy host): no lookup, no policy, logged on every delivery. */
    postern_log(POSTERN_LOG_INFO, "destination_override", "destination",
                env->dest->pattern, "domain", domain, "override", "mtasts off",
                NULL);
    *pd = NULL;
    static const struct policy_result ok = {.outcome = POLICY_OK};
    done(arg, &ok);
    return 0;
  }
  if (env->routed && is_ip_literal(domain)) {
    *pd = NULL;
    static const struct policy_result ok = {.outcome = POLICY_OK};
    done(arg, &ok);
    return 0;
  }
  if (env->dns == NULL)
    return POSTERN_ESTATE;
  struct mts_domain *d = calloc(1, sizeof *d);
  if (d == NULL)
    return POSTERN_ENOMEM;
  d->s = s;
  d->loop = env->loop;
  d->dns = env->dns;
  d->https = env->https;
  d->count = env->count;
  d->store = env->store;
  d->now = env->now_ms / 1000;
  d->done = done;
  d->arg = arg;
  /* Names are compared and cached lower-case without the trailing dot. */
  if (policy__name_norm(domain, strlen(domain), d->domain, sizeof d->domain) <
          0 ||
      domain[0] == '#') {
    free(d);
    return POSTERN_EINVAL;
  }
  struct policy_mtasts_cache *c = policy__mts_cache(s);
  int rc =
      c ? policy_mtasts_cache_get(c, d->domain, &d->cached) : POSTERN_ENOENT;
  d->have_cache = rc == 0 && d->cached.expires > d->now;
  if (rc != 0 && rc != POSTERN_ENOENT)
    postern_log(POSTERN_LOG_WARN, "mtasts_cache_unavailable", "domain",
                d->domain, "error", postern_strerror(rc), NULL);
  char q[300];
  snprintf(q, sizeof q, "_mta-sts.%s", d->domain);
  rc = dns_query(d->dns, q, DNS_T_TXT, on_txt, d, &d->q);
  if (rc != 0) {
    free(d);
    return rc;
  }
  *pd = d;
  return 0;
}

static void mts_describe_domain(void *state, void *pd, char *buf, size_t cap) {
  struct mts_domain *d = pd;
  if (d == NULL || !d->have_policy) {
    snprintf(buf, cap, "no policy");
    return;
  }
  size_t len = (size_t)snprintf(
      buf, cap, "%s policy (%s), id %s, max_age %u, mx",
      policy_mtasts_mode_name(d->policy.mode), d->source,
      d->txt_id[0] ? d->txt_id : (d->have_cache ? d->cached.id : "?"),
      (unsigned)d->policy.max_age);
  for (size_t i = 0; i < d->policy.n_mx && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, " %s", d->policy.mx[i]);
}

/* TLS reports: the policy in enforce or testing mode governed the session
 * (policy-string: its lines as RFC 8461 §3.2 writes them; mx-host: its
 * patterns); a policy that could not be had is no policy, with the failure
 * (sts_failure). Mode none is the domain saying it has no policy. */
static void mts_tlsrpt_policy(void *state, void *pd, void *pc,
                              struct policy_tlsrpt_applied *out) {
  (void)state, (void)pc;
  const struct mts_domain *d = pd;
  if (d == NULL)
    return;
  if (!d->have_policy) {
    /* No policy could be had: RFC 8460 §4.4 reports that as
     * no-policy-found, the failure saying why. */
    out->failure = d->sts_failure;
    return;
  }
  if (d->policy.mode == POLICY_MTASTS_MODE_NONE)
    return;
  out->type = POLICY_TLSRPT_POLICY_STS;
  size_t off = (size_t)snprintf(out->strings, sizeof out->strings,
                                "version: STSv1\nmode: %s\nmax_age: %u\n",
                                policy_mtasts_mode_name(d->policy.mode),
                                (unsigned)d->policy.max_age);
  size_t moff = 0;
  for (size_t i = 0; i < d->policy.n_mx; i++) {
    if (off < sizeof out->strings)
      off += (size_t)snprintf(out->strings + off, sizeof out->strings - off,
                              "mx: %s\n", d->policy.mx[i]);
    if (moff < sizeof out->mx)
      moff += (size_t)snprintf(out->mx + moff, sizeof out->mx - moff, "%s\n",
                               d->policy.mx[i]);
  }
}

static void mts_check_mx(void *state, void *pd, const struct policy_mx *mx,
                         struct policy_mx_verdict *v) {
  struct mts_domain *d = pd;
  if (d == NULL || !d->have_policy)
    return;
  bool match = policy_mtasts_policy_match(&d->policy, mx->host);
  switch (d->policy.mode) {
  case POLICY_MTASTS_MODE_ENFORCE:
    if (match) {
      if (v->level < POLICY_MX_LEVEL_MTASTS)
        v->level = POLICY_MX_LEVEL_MTASTS;
      return;
    }
    count(d, "mx_mismatch");
    /* RFC 8461 §4.1: never deliver to an MX the policy does not list. */
    policy_result_set(&v->result, POLICY_TEMPFAIL, "mtasts", "4.7.5",
                      "MX %s is not in the MTA-STS policy of %s", mx->host,
                      d->domain);
    /* RFC 8460 has no type of its own for an MX the policy does not
     * list: the general one. */
    v->result.tlsrpt = POLICY_TLSRPT_VALIDATION_FAILURE;
    return;
  case POLICY_MTASTS_MODE_TESTING:
    if (!match) {
      count(d, "testing_mx_mismatch");
      postern_log(POSTERN_LOG_WARN, "mtasts_testing_failure", "domain",
                  d->domain, "mx", mx->host, "reason",
                  "MX not in the policy (testing mode: not enforced)", NULL);
    }
    return;
  default:
    return;
  }
}

static void mts_check_conn(void *state, void *pd, void *pc,
                           const struct policy_conn *c,
                           struct policy_conn_verdict *v) {
  struct mts_domain *d = pd;
  if (d == NULL || !d->have_policy)
    return;
  if (d->policy.mode == POLICY_MTASTS_MODE_ENFORCE) {
    /* §4.2: TLS with a certificate valid for the MX name. With usable DANE
     * records DANE alone authenticates (§2): the chain counts only a DANE
     * match as `authenticated` then. */
    if (v->required < POLICY_TLS_LEVEL_AUTHENTICATED)
      v->required = POLICY_TLS_LEVEL_AUTHENTICATED;
    if (c->dane_usable && c->reached != POLICY_TLS_LEVEL_NONE &&
        !c->hypothetical)
      postern_log(POSTERN_LOG_INFO, "mtasts_dane_governs", "domain", d->domain,
                  "mx", c->host, NULL);
    return;
  }
  if (d->policy.mode != POLICY_MTASTS_MODE_TESTING || c->hypothetical)
    return;
  /* Testing mode (§5): report what enforce would have refused - no TLS at
   * all (STARTTLS not offered, stripped or failed) as well as a session
   * whose certificate was not verified - and deliver anyway. */
  const char *why = NULL;
  if (c->reached == POLICY_TLS_LEVEL_NONE)
    why = "no TLS (STARTTLS not offered or failed; testing mode: not "
          "enforced)";
  else if (!c->dane_usable && c->reached < POLICY_TLS_LEVEL_AUTHENTICATED)
    why = c->verify_error && c->verify_error[0] ? c->verify_error
                                                : "certificate not verified";
  if (why == NULL)
    return;
  /* What TLS reports count: testing mode exists to learn this (RFC 8461
   * §5, RFC 8460 §4.3). */
  v->tlsrpt_testing = policy__tlsrpt_of_conn(c);
  count(d, "testing_tls_failure");
  postern_log(POSTERN_LOG_WARN, "mtasts_testing_failure", "domain", d->domain,
              "mx", c->host, "reason", why, NULL);
}

/* ---- the module ---- */

static void mts_free(void *state) {
  struct policy__mts *s = state;
  if (s == NULL)
    return;
  policy_mtasts_cache_release(s->cache);
  pthread_mutex_destroy(&s->mu);
  free(s->state_dir);
  free(s->ca_file);
  free(s);
}

static const struct policy_module_ops mts_ops = {
    .name = "mtasts",
    .free = mts_free,
    .prepare_domain = mts_prepare_domain,
    .free_domain = mts_free_domain,
    .describe_domain = mts_describe_domain,
    .check_mx = mts_check_mx,
    .check_conn = mts_check_conn,
    .maintain = policy__mts_maintain,
    .tlsrpt_policy = mts_tlsrpt_policy,
};

int policy_mtasts_new(const struct policy_mtasts_opts *o,
                      struct policy_module *out) {
  if (o == NULL || o->state_dir == NULL || out == NULL)
    return POSTERN_EINVAL;
  struct policy__mts *s = calloc(1, sizeof *s);
  if (s == NULL)
    return POSTERN_ENOMEM;
  if (o->ca_file && (s->ca_file = strdup(o->ca_file)) == NULL) {
    free(s);
    return POSTERN_ENOMEM;
  }
  s->https_port = o->https_port;
  s->timeout_ms = o->fetch_timeout_ms > UINT_MAX ? UINT_MAX
                  : o->fetch_timeout_ms          ? (unsigned)o->fetch_timeout_ms
                                                 : HTTPS_TIMEOUT_MS_DEFAULT;
  s->body_max =
      o->max_policy_size ? o->max_policy_size : POLICY_MTASTS_BODY_MAX;
  if (s->body_max > POLICY_MTASTS_BODY_MAX)
    s->body_max = POLICY_MTASTS_BODY_MAX;
  s->cache_size = o->cache_size;
  s->refresh_ms =
      o->refresh_interval_ms ? o->refresh_interval_ms : MTS_REFRESH_DEFAULT_MS;
  s->refresh_s = s->refresh_ms / 1000 ? s->refresh_ms / 1000 : 1;
  pthread_mutex_init(&s->mu, NULL);
  if ((s->state_dir = strdup(o->state_dir)) == NULL) {
    pthread_mutex_destroy(&s->mu);
    free(s->ca_file);
    free(s);
    return POSTERN_ENOMEM;
  }
  out->ops = &mts_ops;
  out->state = s;
  return 0;
}
