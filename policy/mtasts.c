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
 *   3. the fetch (§3.3): `mta-sts.<domain>` resolved by our resolver, then
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
 * Single flight: at most one fetch per policy domain runs in the process.
 * Fetches live in a registry (flight_mu) keyed by cache and domain; a
 * delivery that needs a policy joins the fetch in progress, or starts one,
 * and waits for its outcome on its own loop (a uv_async_t woken by the
 * fetch, on whatever loop that runs), at most wait_bound() ms. A fetch
 * belongs to no delivery: it ends on its own, stores what it got in the
 * cache, then hands the outcome to every waiter. When the loop's HTTPS
 * client has no free slot, the fetch waits for one (up to fetch_timeout)
 * instead of failing: it queues (slot_waiters) and gets the slot the next
 * finishing fetch of that client frees, or gives up after fetch_timeout
 * as "no slot" - which, nothing having been tried, is never "no policy".
 *
 * Maintenance (the maintain op, on one engine loop every few minutes):
 * a sweep of the cache evicts expired policies and picks those in use
 * (used by a delivery within MTS_IN_USE_S) that are due: fetched at least
 * refresh_interval ago, or half their max_age if that is shorter, and not
 * tried too recently. Each is fetched again over HTTPS directly - no TXT
 * lookup needed, so a blocked or withdrawn TXT record does not let a
 * policy lapse - and a success extends its life to now + max_age (§5.1:
 * refresh before expiry).
 *
 * Ownership: a `struct mts_domain` is this module's per-domain state.
 * While its TXT lookup is in flight the resolver references it too
 * (free_domain then cancels and the CANCELED callback frees); once it
 * waits for a fetch it owns two handles and is freed in their close
 * callbacks. A `struct mts_fetch` is owned by the loop it runs on and
 * frees itself (timer close callback) after handing out its outcome.
 * The module state is immutable after creation (the cache pointer is set
 * once under its mutex) and shared by every worker loop.
 */
#include "policy/chain.h"

#include "net/dns.h"
#include "net/https.h"
#include "policy/mtasts_cache.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MTS_TXT_MAX 16 /* TXT records looked at */
#define MTS_REFRESH_DEFAULT_MS (24u * 3600 * 1000)
/* A policy a delivery used within this is "in use" and kept fresh. */
#define MTS_IN_USE_S (30u * 86400)
/* Longest and shortest delay between maintenance passes. */
#define MTS_MAINTAIN_MAX_MS POLICY_MAINTAIN_DEFAULT_MS
#define MTS_MAINTAIN_MIN_MS 100
/* Refreshes started per maintenance pass (the longest untried first). */
#define MTS_REFRESH_PER_PASS 32
/* A fetch without a free HTTPS slot looks again this often. */
#define MTS_SLOT_RETRY_MS 200
#define MTS_FLIGHT_BUCKETS 256

/* ---- module state ---- */

struct mts_state {
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

/* The cache, opened on first use: on a worker thread, after the relay has
 * dropped privileges and created state_dir, so the files belong to the
 * relay's user. A failure is retried at the next use. NULL while the
 * cache cannot be opened. */
static struct policy_mtasts_cache *cache_of(struct mts_state *s) {
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

/* What a waiter learns from the fetch it waited for. */
enum mts_outcome {
  MTS_PENDING,
  MTS_GOT_POLICY,
  MTS_FETCH_FAILED, /* a real attempt failed: §3.3 applies */
  MTS_NO_SLOT,      /* no fetch slot came free: nothing was tried */
  MTS_CANCELED,     /* the resolver or HTTPS client closed */
  MTS_WAIT_TIMEOUT, /* the fetch did not end within wait_bound() */
};

struct mts_fetch;

struct mts_domain {
  struct mts_state *s;
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
  char source[16]; /* "fetched", "cache" */
  /* Waiting for a fetch: the handles are initialised (and closed by
   * free_domain), `settled` once the outcome was acted on. */
  bool waiting, settled;
  int open_handles;
  uv_async_t wake;
  uv_timer_t wait_timer;
  /* Guarded by flight_mu: the fetch waited for (NULL once it has handed
   * out its outcome, or the wait was given up), the waiters' list, and the
   * outcome with its reason; the policy goes into `policy`. */
  struct mts_fetch *flight;
  struct mts_domain *wnext;
  enum mts_outcome outcome;
  char reason[384];
};

static void count(struct mts_domain *d, const char *outcome) {
  if (d->count)
    d->count("mtasts", outcome);
}

/* ---- fetches and the single-flight registry ---- */

struct mts_fetch {
  /* Guarded by flight_mu. */
  struct mts_fetch *next;
  const void *scope; /* the cache (or the module state without one) */
  char domain[256];
  char id[POLICY_MTASTS_ID_MAX + 1]; /* stored with the policy */
  bool id_from_txt;                  /* a delivery saw it in DNS just now */
  struct mts_domain *waiters;
  /* Owned by the loop the fetch runs on. */
  uv_loop_t *loop;
  struct dns_resolver *dns;
  struct https_client *https;
  void (*count)(const char *module, const char *outcome);
  struct policy_mtasts_cache *cache; /* a reference, or NULL */
  char *ca_file;
  uint16_t port;
  unsigned timeout_ms;
  size_t body_max;
  uint64_t now;            /* unix seconds at start */
  bool refresh;            /* started by the maintenance, not a delivery */
  uint64_t last_used;      /* of the refreshed record */
  uint64_t slot_deadline;  /* loop time: give up waiting for a slot */
  struct mts_fetch *snext; /* slot_waiters, guarded by flight_mu */
  struct dns_query *q;
  struct https_fetch *hf;
  uv_timer_t retry; /* the slot deadline while queued */
  struct sockaddr_storage addrs[HTTPS_ADDRS_MAX];
  size_t naddrs;
  char url[HTTPS_URL_MAX];
};

static pthread_mutex_t flight_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mts_fetch *flights[MTS_FLIGHT_BUCKETS];
/* Fetches waiting for a free slot of their HTTPS client, oldest first.
 * Each entry is only ever touched on its client's loop; the list itself
 * is shared, so flight_mu guards it. */
static struct mts_fetch *slot_waiters;

static size_t flight_bucket(const void *scope, const char *domain) {
  size_t h = (size_t)(uintptr_t)scope * 31u;
  for (const char *c = domain; *c; c++)
    h = (h ^ (unsigned char)*c) * 1099511628211ull;
  return h % MTS_FLIGHT_BUCKETS;
}

/* Under flight_mu. */
static struct mts_fetch *flight_find(const void *scope, const char *domain) {
  for (struct mts_fetch *f = flights[flight_bucket(scope, domain)]; f;
       f = f->next)
    if (f->scope == scope && strcmp(f->domain, domain) == 0)
      return f;
  return NULL;
}

/* Under flight_mu. */
static void flight_unlink(struct mts_fetch *f) {
  for (struct mts_fetch **pp = &flights[flight_bucket(f->scope, f->domain)];
       *pp; pp = &(*pp)->next)
    if (*pp == f) {
      *pp = f->next;
      return;
    }
}

/* Under flight_mu: takes `d` off its fetch's waiters. */
static void waiter_unlink(struct mts_domain *d) {
  if (d->flight == NULL)
    return;
  for (struct mts_domain **pp = &d->flight->waiters; *pp; pp = &(*pp)->wnext)
    if (*pp == d) {
      *pp = d->wnext;
      break;
    }
  d->flight = NULL;
  d->wnext = NULL;
}

/* A new fetch for `domain` on `loop`, registered under flight_mu (the
 * caller holds it). NULL when out of memory. */
static struct mts_fetch *fetch_new(struct mts_state *s,
                                   struct policy_mtasts_cache *cache,
                                   const struct policy_env *env,
                                   const char *domain, const char *id,
                                   bool id_from_txt) {
  struct mts_fetch *f = calloc(1, sizeof *f);
  if (f == NULL)
    return NULL;
  if (s->ca_file && (f->ca_file = strdup(s->ca_file)) == NULL) {
    free(f);
    return NULL;
  }
  f->scope = cache ? (const void *)cache : (const void *)s;
  snprintf(f->domain, sizeof f->domain, "%s", domain);
  snprintf(f->id, sizeof f->id, "%s", id);
  f->id_from_txt = id_from_txt;
  f->loop = env->loop;
  f->dns = env->dns;
  f->https = env->https;
  f->count = env->count;
  if (cache) {
    policy_mtasts_cache_retain(cache);
    f->cache = cache;
  }
  f->port = s->https_port;
  f->timeout_ms = s->timeout_ms;
  f->body_max = s->body_max;
  f->now = env->now_ms / 1000;
  uv_timer_init(f->loop, &f->retry);
  f->retry.data = f;
  size_t b = flight_bucket(f->scope, f->domain);
  f->next = flights[b];
  flights[b] = f;
  return f;
}

static void fetch_closed(uv_handle_t *h) {
  struct mts_fetch *f = h->data;
  policy_mtasts_cache_release(f->cache);
  free(f->ca_file);
  free(f);
}

/* Ends a fetch: out of the registry, the outcome (and with GOT_POLICY the
 * policy) to every waiter, each woken on its own loop; then freed. */
static void fetch_complete(struct mts_fetch *f, enum mts_outcome outcome,
                           const char *reason,
                           const struct policy_mtasts_policy *pol) {
  pthread_mutex_lock(&flight_mu);
  flight_unlink(f);
  struct mts_domain *w = f->waiters;
  while (w != NULL) {
    struct mts_domain *next = w->wnext;
    w->flight = NULL;
    w->wnext = NULL;
    w->outcome = outcome;
    snprintf(w->reason, sizeof w->reason, "%s", reason ? reason : "");
    if (pol)
      w->policy = *pol;
    uv_async_send(&w->wake);
    w = next;
  }
  f->waiters = NULL;
  pthread_mutex_unlock(&flight_mu);
  uv_timer_stop(&f->retry);
  uv_close((uv_handle_t *)&f->retry, fetch_closed);
}

static void fetch_count(struct mts_fetch *f, const char *outcome) {
  if (f->count)
    f->count("mtasts", outcome);
}

static void fetch_failed_now(struct mts_fetch *f, const char *reason) {
  fetch_count(f, "fetch_failed");
  if (f->refresh)
    postern_log(POSTERN_LOG_INFO, "mtasts_refresh_failed", "domain", f->domain,
                "reason", reason, NULL);
  fetch_complete(f, MTS_FETCH_FAILED, reason, NULL);
}

static void fetch_judge(struct mts_fetch *f, const struct https_result *res);
static void slot_kick(struct https_client *hc, bool closing);

static void on_fetch(const struct https_result *res, void *arg) {
  struct mts_fetch *f = arg;
  struct https_client *hc = f->https;
  f->hf = NULL;
  /* This module never cancels its fetches: a cancellation is the client
   * closing. */
  bool closing = res->status == POSTERN_ECANCELED;
  fetch_judge(f, res);
  slot_kick(hc, closing);
}

/* Ends fetch `f` according to its HTTPS outcome. */
static void fetch_judge(struct mts_fetch *f, const struct https_result *res) {
  char reason[384];
  if (res->status == POSTERN_ECANCELED) {
    fetch_complete(f, MTS_CANCELED, "canceled", NULL);
    return;
  }
  if (res->status != 0) {
    snprintf(reason, sizeof reason, "fetching %s: %s%s%s", res->url,
             postern_strerror(res->status), res->error[0] ? ": " : "",
             res->error);
    fetch_failed_now(f, reason);
    return;
  }
  struct policy_mtasts_rec *rec = calloc(1, sizeof *rec);
  if (rec == NULL) {
    fetch_failed_now(f, "out of memory");
    return;
  }
  int rc = policy_mtasts_policy_parse((const char *)res->body, res->body_len,
                                      &rec->policy);
  if (rc != 0) {
    snprintf(reason, sizeof reason, "invalid policy at %s: %s", res->url,
             postern_strerror(rc));
    free(rec);
    fetch_failed_now(f, reason);
    return;
  }
  pthread_mutex_lock(&flight_mu); /* a joining delivery may set the id */
  snprintf(rec->id, sizeof rec->id, "%s", f->id);
  pthread_mutex_unlock(&flight_mu);
  rec->fetched = f->now;
  rec->expires = f->now + rec->policy.max_age;
  rec->last_used = f->refresh ? f->last_used : f->now;
  rec->tried = f->refresh ? f->now : 0;
  rc = f->cache ? policy_mtasts_cache_put(f->cache, f->domain, rec, f->now)
                : POSTERN_EIO;
  if (rc == POSTERN_ENOSPC) {
    fetch_count(f, "cache_full");
    postern_log(POSTERN_LOG_WARN, "mtasts_cache_full", "domain", f->domain,
                "hint", "raise mtasts { cache_size }", NULL);
  } else if (rc != 0) {
    postern_log(POSTERN_LOG_WARN, "mtasts_cache_write_failed", "domain",
                f->domain, "error", postern_strerror(rc), NULL);
  }
  fetch_count(f, "fetched");
  char ma[16];
  snprintf(ma, sizeof ma, "%u", (unsigned)rec->policy.max_age);
  postern_log(POSTERN_LOG_INFO, "mtasts_policy_fetched", "domain", f->domain,
              "id", rec->id, "mode", policy_mtasts_mode_name(rec->policy.mode),
              "max_age", ma, "refresh", f->refresh ? "yes" : "no", NULL);
  fetch_complete(f, MTS_GOT_POLICY, NULL, &rec->policy);
  free(rec);
}

static void fetch_request(struct mts_fetch *f);

/* Under flight_mu: takes the first fetch waiting for a slot of `hc` (with
 * `f` given, that fetch), or NULL. */
static struct mts_fetch *slot_take(struct https_client *hc,
                                   struct mts_fetch *f) {
  for (struct mts_fetch **pp = &slot_waiters; *pp; pp = &(*pp)->snext) {
    struct mts_fetch *w = *pp;
    if (w->https == hc && (f == NULL || w == f)) {
      *pp = w->snext;
      w->snext = NULL;
      return w;
    }
  }
  return NULL;
}

/* No slot came free in time. Nothing was tried: never "no policy" on
 * this account. */
static void slot_timeout(uv_timer_t *t) {
  struct mts_fetch *f = t->data;
  pthread_mutex_lock(&flight_mu);
  slot_take(f->https, f);
  pthread_mutex_unlock(&flight_mu);
  fetch_count(f, "fetch_no_slot");
  postern_log(POSTERN_LOG_WARN, "mtasts_fetch_no_slot", "domain", f->domain,
              NULL);
  fetch_complete(f, MTS_NO_SLOT, "no HTTPS fetch slot came free", NULL);
}

/*
 * Called at the end of every fetch callback of client `hc`, whose slot is
 * free by then (net/https frees it before the callback): hands it to the
 * oldest fetch waiting for one. A cancelled fetch means the client is
 * closing: the waiting ones are cancelled too, without touching it.
 */
static void slot_kick(struct https_client *hc, bool closing) {
  for (;;) {
    pthread_mutex_lock(&flight_mu);
    struct mts_fetch *w = slot_take(hc, NULL);
    pthread_mutex_unlock(&flight_mu);
    if (w == NULL)
      return;
    uv_timer_stop(&w->retry);
    if (!closing) {
      fetch_request(w);
      return;
    }
    fetch_complete(w, MTS_CANCELED, "canceled", NULL);
  }
}

/* Starts the HTTPS request; without a free slot, queues for one. */
static void fetch_request(struct mts_fetch *f) {
  char reason[384];
  if (f->https == NULL) {
    fetch_failed_now(f, "no HTTPS client (libcurl unavailable)");
    return;
  }
  struct https_request rq = {.url = f->url,
                             .port = f->port,
                             .addrs = f->addrs,
                             .naddrs = f->naddrs,
                             .ca_file = f->ca_file,
                             .timeout_ms = f->timeout_ms,
                             .body_max = f->body_max,
                             .require_text_plain = true};
  int rc = https_fetch(f->https, &rq, on_fetch, f, &f->hf);
  if (rc == 0)
    return;
  if (rc == POSTERN_EBUSY) {
    uint64_t now = uv_now(f->loop);
    pthread_mutex_lock(&flight_mu);
    struct mts_fetch **pp = &slot_waiters;
    while (*pp)
      pp = &(*pp)->snext;
    *pp = f;
    pthread_mutex_unlock(&flight_mu);
    uv_timer_start(&f->retry, slot_timeout,
                   f->slot_deadline > now ? f->slot_deadline - now : 0, 0);
    return;
  }
  snprintf(reason, sizeof reason, "cannot fetch the policy of %s: %s",
           f->domain, postern_strerror(rc));
  if (rc == POSTERN_ESTATE) { /* the client is closing */
    fetch_complete(f, MTS_CANCELED, reason, NULL);
    return;
  }
  fetch_failed_now(f, reason);
}

static void on_addrs(const struct dns_answer *a, void *arg) {
  struct mts_fetch *f = arg;
  f->q = NULL;
  char reason[384];
  if (a->status == DNS_CANCELED) {
    fetch_complete(f, MTS_CANCELED, "canceled", NULL);
    return;
  }
  if (a->status != DNS_ANSWER) {
    snprintf(reason, sizeof reason, "address lookup for mta-sts.%s: %s",
             f->domain, dns_status_name(a->status));
    fetch_failed_now(f, reason);
    return;
  }
  f->naddrs = 0;
  for (size_t i = 0; i < a->nrr && f->naddrs < HTTPS_ADDRS_MAX; i++) {
    struct sockaddr_storage *ss = &f->addrs[f->naddrs];
    memset(ss, 0, sizeof *ss);
    if (a->rr[i].type == DNS_T_A) {
      struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
      s4->sin_family = AF_INET;
      s4->sin_addr = a->rr[i].u.a;
      f->naddrs++;
    } else if (a->rr[i].type == DNS_T_AAAA) {
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
      s6->sin6_family = AF_INET6;
      s6->sin6_addr = a->rr[i].u.aaaa;
      f->naddrs++;
    }
  }
  int rc = https_mta_sts_url(f->domain, f->url, sizeof f->url);
  if (rc >= 0 && f->naddrs == 0)
    rc = POSTERN_ENOENT;
  if (rc < 0) {
    snprintf(reason, sizeof reason, "cannot fetch the policy of %s: %s",
             f->domain, postern_strerror(rc));
    fetch_failed_now(f, reason);
    return;
  }
  f->slot_deadline = uv_now(f->loop) + f->timeout_ms;
  fetch_request(f);
}

/* Starts a registered fetch on its loop: the address of mta-sts.<domain>,
 * then the request. Any outcome, even an immediate failure, goes through
 * fetch_complete (waiters are woken later, on their loops). */
static void fetch_begin(struct mts_fetch *f) {
  char host[300];
  snprintf(host, sizeof host, "mta-sts.%s", f->domain);
  int rc = f->dns ? dns_resolve_host(f->dns, host, on_addrs, f, &f->q)
                  : POSTERN_ESTATE;
  if (rc != 0) {
    char reason[384];
    snprintf(reason, sizeof reason, "cannot look up %s: %s", host,
             postern_strerror(rc));
    fetch_failed_now(f, reason);
  }
}

/* ---- a delivery's discovery ---- */

/* The longest a delivery waits for a fetch: the address lookup, a wait
 * for a slot and the fetch itself are each bounded; this only guards
 * against a fetch that never reports. */
static uint64_t wait_bound(const struct mts_state *s) {
  return 2 * (uint64_t)s->timeout_ms + 30000;
}

static void domain_closed(uv_handle_t *h) {
  struct mts_domain *d = h->data;
  if (--d->open_handles == 0)
    free(d);
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
  if (d->waiting) {
    pthread_mutex_lock(&flight_mu);
    waiter_unlink(d);
    pthread_mutex_unlock(&flight_mu);
    uv_close((uv_handle_t *)&d->wake, domain_closed);
    uv_close((uv_handle_t *)&d->wait_timer, domain_closed);
    return;
  }
  free(d);
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
    struct policy_mtasts_cache *c = cache_of(d->s);
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
  no_policy(d, "fetch failed, nothing cached");
}

/* Acts on the outcome of the fetch waited for, once: from the wake-up or
 * from the wait's timer, whichever comes first. */
static void settle(struct mts_domain *d, bool timed_out) {
  if (d->settled)
    return;
  pthread_mutex_lock(&flight_mu);
  if (d->flight != NULL && !timed_out) {
    pthread_mutex_unlock(&flight_mu);
    return; /* not for us yet */
  }
  if (d->flight != NULL) {
    waiter_unlink(d);
    d->outcome = MTS_WAIT_TIMEOUT;
  }
  enum mts_outcome o = d->outcome;
  pthread_mutex_unlock(&flight_mu);
  d->settled = true;
  uv_timer_stop(&d->wait_timer);
  switch (o) {
  case MTS_GOT_POLICY:
    d->have_policy = true;
    snprintf(d->source, sizeof d->source, "fetched");
    finish_ok(d);
    return;
  case MTS_FETCH_FAILED:
    fetch_failed(d, d->reason);
    return;
  case MTS_WAIT_TIMEOUT:
    fetch_failed(d, "the fetch in progress did not finish in time");
    return;
  case MTS_NO_SLOT: {
    if (d->have_cache) {
      use_cache(d, "no fetch slot");
      return;
    }
    struct policy_result r;
    policy_result_set(&r, POLICY_TEMPFAIL, "mtasts", "4.7.5",
                      "MTA-STS policy of %s not fetched: no fetch slot free",
                      d->domain);
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
  uv_async_init(d->loop, &d->wake, on_wake);
  uv_timer_init(d->loop, &d->wait_timer);
  d->wake.data = d->wait_timer.data = d;
  d->waiting = true;
  d->open_handles = 2;
  struct policy_mtasts_cache *cache = cache_of(d->s);
  const void *scope = cache ? (const void *)cache : (const void *)d->s;
  struct policy_env env = {.loop = d->loop,
                           .dns = d->dns,
                           .https = d->https,
                           .now_ms = d->now * 1000,
                           .count = d->count};
  pthread_mutex_lock(&flight_mu);
  struct mts_fetch *f = flight_find(scope, d->domain);
  bool started = false;
  if (f == NULL) {
    f = fetch_new(d->s, cache, &env, d->domain, d->txt_id, true);
    started = f != NULL;
  } else if (!f->id_from_txt) {
    /* A refresh stores the id it knew; the current one is better. */
    snprintf(f->id, sizeof f->id, "%s", d->txt_id);
    f->id_from_txt = true;
  }
  if (f != NULL) {
    d->flight = f;
    d->wnext = f->waiters;
    f->waiters = d;
  }
  pthread_mutex_unlock(&flight_mu);
  if (f == NULL) {
    d->settled = true;
    fetch_failed(d, "out of memory");
    return;
  }
  uv_timer_start(&d->wait_timer, on_wait_timeout, wait_bound(d->s), 0);
  if (started)
    fetch_begin(f);
  else
    postern_log(POSTERN_LOG_DEBUG, "mtasts_fetch_joined", "domain", d->domain,
                NULL);
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
  wait_for_fetch(d);
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
  struct mts_state *s = state;
  /* RFC 8461 §3.4: for a route to a named host the policy domain is that
   * host's name (the engine passes it as `domain`); an IP address names
   * no domain, so there is no policy to look for. */
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
  d->now = env->now_ms / 1000;
  d->done = done;
  d->arg = arg;
  /* Names are compared and cached lower-case without the trailing dot. */
  size_t len = strlen(domain);
  if (len && domain[len - 1] == '.')
    len--;
  if (len == 0 || len >= sizeof d->domain || domain[0] == '#') {
    free(d);
    return POSTERN_EINVAL;
  }
  for (size_t i = 0; i < len; i++) {
    char ch = domain[i];
    d->domain[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
  }
  struct policy_mtasts_cache *c = cache_of(s);
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
  count(d, "testing_tls_failure");
  postern_log(POSTERN_LOG_WARN, "mtasts_testing_failure", "domain", d->domain,
              "mx", c->host, "reason", why, NULL);
}

/* ---- maintenance ---- */

struct refresh_cand {
  char domain[256];
  char id[POLICY_MTASTS_ID_MAX + 1];
  uint64_t tried, fetched, last_used;
};

struct refresh_pick {
  const struct mts_state *s;
  uint64_t now;
  size_t n;
  struct refresh_cand c[MTS_REFRESH_PER_PASS];
};

/* How old a policy may get before a refresh: refresh_interval, or half
 * its max_age when that is shorter (at least a second). */
static uint64_t refresh_age(const struct mts_state *s,
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

static uint64_t mts_maintain(void *state, const struct policy_env *env) {
  struct mts_state *s = state;
  uint64_t period = s->refresh_ms / 4;
  if (period > MTS_MAINTAIN_MAX_MS)
    period = MTS_MAINTAIN_MAX_MS;
  if (period < MTS_MAINTAIN_MIN_MS)
    period = MTS_MAINTAIN_MIN_MS;
  struct policy_mtasts_cache *c = cache_of(s);
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
    pthread_mutex_lock(&flight_mu);
    struct mts_fetch *f = NULL;
    if (flight_find(c, cd->domain) == NULL &&
        (f = fetch_new(s, c, env, cd->domain, cd->id, false)) != NULL) {
      f->refresh = true;
      f->last_used = cd->last_used;
    }
    pthread_mutex_unlock(&flight_mu);
    if (f == NULL)
      continue;
    policy_mtasts_cache_touch(c, cd->domain, 0, p->now);
    postern_log(POSTERN_LOG_DEBUG, "mtasts_refresh_started", "domain",
                cd->domain, "id", cd->id, NULL);
    fetch_begin(f);
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

/* ---- the module ---- */

static void mts_free(void *state) {
  struct mts_state *s = state;
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
    .maintain = mts_maintain,
};

int policy_mtasts_new(const struct policy_mtasts_opts *o,
                      struct policy_module *out) {
  if (o == NULL || o->state_dir == NULL || out == NULL)
    return POSTERN_EINVAL;
  struct mts_state *s = calloc(1, sizeof *s);
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
