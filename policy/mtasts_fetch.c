/*
 * mtasts_fetch.c - MTA-STS policy fetches (RFC 8461 §3.3) and the
 * process-wide single-flight registry they run under.
 *
 * The fetch: `mta-sts.<domain>` resolved by our resolver, then
 * https://mta-sts.<domain>/.well-known/mta-sts.txt through net/https (PKIX
 * with tls { ca_file }, no redirects, 200 only, text/plain, size cap,
 * timeout). A valid policy is cached for max_age seconds under its TXT id;
 * a failed fetch or an invalid policy is handed out as a failure (the
 * waiting delivery then applies §3.3, mtasts.c).
 *
 * Single flight: at most one fetch per policy domain runs in the process.
 * Fetches live in a registry (flight_mu) keyed by scope (the cache, or the
 * module state without one) and domain; a delivery that needs a policy
 * joins the fetch in progress, or starts one, and waits for its outcome on
 * its own loop (policy__mts_waiter: a uv_async_t woken by the fetch, on
 * whatever loop that runs). A fetch belongs to no delivery: it ends on its
 * own, stores what it got in the cache, then hands the outcome to every
 * waiter. When the loop's HTTPS client has no free slot, the fetch waits
 * for one (up to fetch_timeout) instead of failing: it queues
 * (slot_waiters) and gets the slot the next finishing fetch of that client
 * frees, or gives up after fetch_timeout as "no slot" - which, nothing
 * having been tried, is never "no policy".
 *
 * Fleet mode: with a store (policy/mtasts_shared.h) a fetched policy is
 * also shared, in the background (share_policy): the nodes waiting for it
 * read it from there. A refresh first reads the shared entry: one fetched
 * under the same id after the policy it refreshes is taken as the refresh
 * (another node did it); otherwise it claims the fetch, and when another
 * node holds the claim it leaves the refresh to that node (unless a
 * delivery waits for it), to take its result at a later pass.
 *
 * Ownership: a `struct policy__mts_fetch` is owned by the loop it runs on
 * and frees itself (timer close callback) after handing out its outcome;
 * it holds a reference on the cache. Waiters are owned by their deliveries:
 * a fetch only writes to them under flight_mu while they are joined.
 */
#include "policy/internal.h"
#include "policy/mtasts_shared.h"
#include "policy/tlsrpt.h"

#include "base/postern_err.h"
#include "base/postern_htab.h"
#include "base/postern_log.h"
#include "net/dns.h"
#include "net/https.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The registry's key: fixed-size and zero-padded, so it compares and
 * hashes as bytes. */
struct flight_key {
  const void *scope; /* the cache (or the module state without one) */
  char domain[256];
};

struct policy__mts_fetch {
  /* Guarded by flight_mu. */
  struct flight_key key;
  char id[POLICY_MTASTS_ID_MAX + 1]; /* stored with the policy */
  bool id_from_txt;                  /* a delivery saw it in DNS just now */
  struct policy__mts_waiter *waiters;
  /* Owned by the loop the fetch runs on. */
  uv_loop_t *loop;
  struct dns_resolver *dns;
  struct https_client *https;
  void (*count)(const char *module, const char *outcome);
  const struct policy_store *store;  /* fleet mode, or NULL */
  struct policy_mtasts_cache *cache; /* a reference, or NULL */
  char *ca_file;
  uint16_t port;
  unsigned timeout_ms;
  size_t body_max;
  uint64_t now;                    /* unix seconds at start */
  bool refresh;                    /* started by the maintenance */
  uint64_t last_used;              /* of the refreshed record */
  uint64_t fetched;                /* of the refreshed record */
  uint64_t slot_deadline;          /* loop time: give up waiting for a slot */
  struct policy__mts_fetch *snext; /* slot_waiters, guarded by flight_mu */
  struct dns_query *q;
  struct https_fetch *hf;
  uv_timer_t retry; /* the slot deadline while queued */
  struct sockaddr_storage addrs[HTTPS_ADDRS_MAX];
  size_t naddrs;
  char url[HTTPS_URL_MAX];
};

static pthread_mutex_t flight_mu = PTHREAD_MUTEX_INITIALIZER;
/* flight_key -> fetch; created with the first fetch, kept for the
 * process's life. */
static struct postern_htab *flights;
/* Fetches waiting for a free slot of their HTTPS client, oldest first.
 * Each entry is only ever touched on its client's loop; the list itself
 * is shared, so flight_mu guards it. */
static struct policy__mts_fetch *slot_waiters;

/* ---- The registry (everything here under flight_mu) ---- */

static struct policy__mts_fetch *flight_find(const void *scope,
                                             const char *domain) {
  if (flights == NULL)
    return NULL;
  struct flight_key k;
  memset(&k, 0, sizeof k);
  k.scope = scope;
  snprintf(k.domain, sizeof k.domain, "%s", domain);
  return postern_htab_get(flights, &k);
}

static void flight_unlink(struct policy__mts_fetch *f) {
  if (flights != NULL && postern_htab_get(flights, &f->key) == f)
    postern_htab_del(flights, &f->key);
}

/* Takes `w` off its fetch's waiters. */
static void waiter_unlink(struct policy__mts_waiter *w) {
  if (w->flight == NULL)
    return;
  for (struct policy__mts_waiter **pp = &w->flight->waiters; *pp;
       pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  w->flight = NULL;
  w->next = NULL;
}

/* A new fetch for `domain` on env's loop, registered. NULL when out of
 * memory. */
static struct policy__mts_fetch *fetch_new(struct policy__mts *s,
                                           struct policy_mtasts_cache *cache,
                                           const struct policy_env *env,
                                           const char *domain, const char *id,
                                           bool id_from_txt) {
  if (flights == NULL &&
      postern_htab_new(sizeof(struct flight_key), &flights) != 0)
    return NULL;
  struct policy__mts_fetch *f = calloc(1, sizeof *f);
  if (f == NULL)
    return NULL;
  if (s->ca_file && (f->ca_file = strdup(s->ca_file)) == NULL) {
    free(f);
    return NULL;
  }
  f->key.scope = cache ? (const void *)cache : (const void *)s;
  snprintf(f->key.domain, sizeof f->key.domain, "%s", domain);
  if (postern_htab_put(flights, &f->key, f) != 0) {
    free(f->ca_file);
    free(f);
    return NULL;
  }
  snprintf(f->id, sizeof f->id, "%s", id);
  f->id_from_txt = id_from_txt;
  f->loop = env->loop;
  f->dns = env->dns;
  f->https = env->https;
  f->count = env->count;
  f->store = env->store;
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
  return f;
}

struct policy__mts_fetch *
policy__mts_fetch_join(struct policy__mts *s, struct policy_mtasts_cache *cache,
                       const struct policy_env *env, const char *domain,
                       const char *id, struct policy__mts_waiter *w,
                       bool *started) {
  const void *scope = cache ? (const void *)cache : (const void *)s;
  pthread_mutex_lock(&flight_mu);
  struct policy__mts_fetch *f = flight_find(scope, domain);
  *started = false;
  if (f == NULL) {
    f = fetch_new(s, cache, env, domain, id, true);
    *started = f != NULL;
  } else if (!f->id_from_txt) {
    /* A refresh stores the id it knew; the current one is better. */
    snprintf(f->id, sizeof f->id, "%s", id);
    f->id_from_txt = true;
  }
  if (f != NULL) {
    w->flight = f;
    w->next = f->waiters;
    f->waiters = w;
  }
  pthread_mutex_unlock(&flight_mu);
  return f;
}

struct policy__mts_fetch *policy__mts_fetch_refresh(
    struct policy__mts *s, struct policy_mtasts_cache *cache,
    const struct policy_env *env, const char *domain, const char *id,
    uint64_t last_used, uint64_t fetched) {
  pthread_mutex_lock(&flight_mu);
  struct policy__mts_fetch *f = NULL;
  if (flight_find(cache, domain) == NULL &&
      (f = fetch_new(s, cache, env, domain, id, false)) != NULL) {
    f->refresh = true;
    f->last_used = last_used;
    f->fetched = fetched;
  }
  pthread_mutex_unlock(&flight_mu);
  return f;
}

bool policy__mts_fetch_running(struct policy__mts *s,
                               struct policy_mtasts_cache *cache,
                               const char *domain) {
  pthread_mutex_lock(&flight_mu);
  bool on = flight_find(cache ? (const void *)cache : (const void *)s,
                        domain) != NULL;
  pthread_mutex_unlock(&flight_mu);
  return on;
}

void policy__mts_wait_leave(struct policy__mts_waiter *w) {
  pthread_mutex_lock(&flight_mu);
  waiter_unlink(w);
  pthread_mutex_unlock(&flight_mu);
}

bool policy__mts_wait_over(struct policy__mts_waiter *w, bool timed_out,
                           enum policy__mts_outcome *o) {
  pthread_mutex_lock(&flight_mu);
  if (w->flight != NULL && !timed_out) {
    pthread_mutex_unlock(&flight_mu);
    return false; /* not for us yet */
  }
  if (w->flight != NULL) {
    waiter_unlink(w);
    w->outcome = POLICY__MTS_WAIT_TIMEOUT;
  }
  *o = w->outcome;
  pthread_mutex_unlock(&flight_mu);
  return true;
}

/* ---- A fetch's end ---- */

/* Fleet mode: shares a fetched policy for the rest of its life (RFC 8461
 * §3.3: max_age from the fetch), in the background. */
static void share_policy(struct policy__mts_fetch *f,
                         const struct policy_mtasts_rec *rec) {
  if (f->store == NULL || rec->policy.max_age == 0)
    return;
  char *buf = malloc(POLICY_MTASTS_SHARED_MAX);
  size_t len =
      buf ? policy_mtasts_shared_encode(rec, buf, POLICY_MTASTS_SHARED_MAX) : 0;
  if (len > 0) {
    char key[300];
    snprintf(key, sizeof key, POLICY__MTS_SHARED_KEY, f->key.domain);
    f->store->put(f->store->impl, f->loop, key, buf, len,
                  (uint64_t)rec->policy.max_age * 1000);
  }
  free(buf);
}

static void fetch_closed(uv_handle_t *h) {
  struct policy__mts_fetch *f = h->data;
  policy_mtasts_cache_release(f->cache);
  free(f->ca_file);
  free(f);
}

/* Ends a fetch: out of the registry, the outcome (and with GOT_POLICY the
 * policy) to every waiter, each woken on its own loop; then freed. */
static void fetch_complete(struct policy__mts_fetch *f,
                           enum policy__mts_outcome outcome, const char *reason,
                           const struct policy_mtasts_policy *pol, int tlsrpt) {
  pthread_mutex_lock(&flight_mu);
  flight_unlink(f);
  struct policy__mts_waiter *w = f->waiters;
  while (w != NULL) {
    struct policy__mts_waiter *next = w->next;
    w->flight = NULL;
    w->next = NULL;
    w->outcome = outcome;
    snprintf(w->reason, sizeof w->reason, "%s", reason ? reason : "");
    w->tlsrpt = tlsrpt;
    if (pol)
      *w->policy = *pol;
    uv_async_send(&w->wake);
    w = next;
  }
  f->waiters = NULL;
  pthread_mutex_unlock(&flight_mu);
  uv_timer_stop(&f->retry);
  uv_close((uv_handle_t *)&f->retry, fetch_closed);
}

static void fetch_count(struct policy__mts_fetch *f, const char *outcome) {
  if (f->count)
    f->count("mtasts", outcome);
}

/* tlsrpt: the RFC 8460 §4.3.2.2 result type (sts-policy-fetch-error,
 * sts-policy-invalid, sts-webpki-invalid). */
static void fetch_failed_as(struct policy__mts_fetch *f, const char *reason,
                            int tlsrpt) {
  fetch_count(f, "fetch_failed");
  if (f->refresh)
    postern_log(POSTERN_LOG_INFO, "mtasts_refresh_failed", "domain",
                f->key.domain, "reason", reason, NULL);
  fetch_complete(f, POLICY__MTS_FETCH_FAILED, reason, NULL, tlsrpt);
}

static void fetch_failed_now(struct policy__mts_fetch *f, const char *reason) {
  fetch_failed_as(f, reason, POLICY_TLSRPT_STS_POLICY_FETCH_ERROR);
}

/* Ends fetch `f` according to its HTTPS outcome. */
static void fetch_judge(struct policy__mts_fetch *f,
                        const struct https_result *res) {
  char reason[POLICY__MTS_REASON_MAX];
  if (res->status == POSTERN_ECANCELED) {
    fetch_complete(f, POLICY__MTS_CANCELED, "canceled", NULL, 0);
    return;
  }
  if (res->status != 0) {
    snprintf(reason, sizeof reason, "fetching %s: %s%s%s", res->url,
             postern_strerror(res->status), res->error[0] ? ": " : "",
             res->error);
    fetch_failed_as(f, reason,
                    res->status == POSTERN_ETLS_VERIFY
                        ? POLICY_TLSRPT_STS_WEBPKI_INVALID
                        : POLICY_TLSRPT_STS_POLICY_FETCH_ERROR);
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
    fetch_failed_as(f, reason, POLICY_TLSRPT_STS_POLICY_INVALID);
    return;
  }
  pthread_mutex_lock(&flight_mu); /* a joining delivery may set the id */
  snprintf(rec->id, sizeof rec->id, "%s", f->id);
  pthread_mutex_unlock(&flight_mu);
  rec->fetched = f->now;
  rec->expires = f->now + rec->policy.max_age;
  rec->last_used = f->refresh ? f->last_used : f->now;
  rec->tried = f->refresh ? f->now : 0;
  const char *domain = f->key.domain;
  rc = f->cache ? policy_mtasts_cache_put(f->cache, domain, rec, f->now)
                : POSTERN_EIO;
  if (rc == POSTERN_ENOSPC) {
    fetch_count(f, "cache_full");
    postern_log(POSTERN_LOG_WARN, "mtasts_cache_full", "domain", domain, "hint",
                "raise mtasts { cache_size }", NULL);
  } else if (rc != 0) {
    postern_log(POSTERN_LOG_WARN, "mtasts_cache_write_failed", "domain", domain,
                "error", postern_strerror(rc), NULL);
  }
  share_policy(f, rec);
  fetch_count(f, "fetched");
  char ma[16];
  snprintf(ma, sizeof ma, "%u", (unsigned)rec->policy.max_age);
  postern_log(POSTERN_LOG_INFO, "mtasts_policy_fetched", "domain", domain, "id",
              rec->id, "mode", policy_mtasts_mode_name(rec->policy.mode),
              "max_age", ma, "refresh", f->refresh ? "yes" : "no", NULL);
  fetch_complete(f, POLICY__MTS_GOT_POLICY, NULL, &rec->policy, 0);
  free(rec);
}

/* ---- HTTPS slots ---- */

static void fetch_request(struct policy__mts_fetch *f);

/* Under flight_mu: takes the first fetch waiting for a slot of `hc` (with
 * `f` given, that fetch), or NULL. */
static struct policy__mts_fetch *slot_take(struct https_client *hc,
                                           struct policy__mts_fetch *f) {
  for (struct policy__mts_fetch **pp = &slot_waiters; *pp; pp = &(*pp)->snext) {
    struct policy__mts_fetch *w = *pp;
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
  struct policy__mts_fetch *f = t->data;
  pthread_mutex_lock(&flight_mu);
  slot_take(f->https, f);
  pthread_mutex_unlock(&flight_mu);
  fetch_count(f, "fetch_no_slot");
  postern_log(POSTERN_LOG_WARN, "mtasts_fetch_no_slot", "domain", f->key.domain,
              NULL);
  fetch_complete(f, POLICY__MTS_NO_SLOT, "no HTTPS fetch slot came free", NULL,
                 POLICY_TLSRPT_STS_POLICY_FETCH_ERROR);
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
    struct policy__mts_fetch *w = slot_take(hc, NULL);
    pthread_mutex_unlock(&flight_mu);
    if (w == NULL)
      return;
    uv_timer_stop(&w->retry);
    if (!closing) {
      fetch_request(w);
      return;
    }
    fetch_complete(w, POLICY__MTS_CANCELED, "canceled", NULL, 0);
  }
}

/* ---- A fetch's steps ---- */

static void on_fetch(const struct https_result *res, void *arg) {
  struct policy__mts_fetch *f = arg;
  struct https_client *hc = f->https;
  f->hf = NULL;
  /* This module never cancels its fetches: a cancellation is the client
   * closing. */
  bool closing = res->status == POSTERN_ECANCELED;
  fetch_judge(f, res);
  slot_kick(hc, closing);
}

/* Starts the HTTPS request; without a free slot, queues for one. */
static void fetch_request(struct policy__mts_fetch *f) {
  char reason[POLICY__MTS_REASON_MAX];
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
    struct policy__mts_fetch **pp = &slot_waiters;
    while (*pp)
      pp = &(*pp)->snext;
    *pp = f;
    pthread_mutex_unlock(&flight_mu);
    uv_timer_start(&f->retry, slot_timeout,
                   f->slot_deadline > now ? f->slot_deadline - now : 0, 0);
    return;
  }
  snprintf(reason, sizeof reason, "cannot fetch the policy of %s: %s",
           f->key.domain, postern_strerror(rc));
  if (rc == POSTERN_ESTATE) { /* the client is closing */
    fetch_complete(f, POLICY__MTS_CANCELED, reason, NULL, 0);
    return;
  }
  fetch_failed_now(f, reason);
}

static void on_addrs(const struct dns_answer *a, void *arg) {
  struct policy__mts_fetch *f = arg;
  f->q = NULL;
  char reason[POLICY__MTS_REASON_MAX];
  if (a->status == DNS_CANCELED) {
    fetch_complete(f, POLICY__MTS_CANCELED, "canceled", NULL, 0);
    return;
  }
  if (a->status != DNS_ANSWER) {
    snprintf(reason, sizeof reason, "address lookup for mta-sts.%s: %s",
             f->key.domain, dns_status_name(a->status));
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
  int rc = https_mta_sts_url(f->key.domain, f->url, sizeof f->url);
  if (rc >= 0 && f->naddrs == 0)
    rc = POSTERN_ENOENT;
  if (rc < 0) {
    snprintf(reason, sizeof reason, "cannot fetch the policy of %s: %s",
             f->key.domain, postern_strerror(rc));
    fetch_failed_now(f, reason);
    return;
  }
  f->slot_deadline = uv_now(f->loop) + f->timeout_ms;
  fetch_request(f);
}

static void fetch_lookup(struct policy__mts_fetch *f);

/* ---- Fleet mode: a refresh another node may have done ---- */

static void refresh_on_claim(void *arg, int status, bool granted) {
  struct policy__mts_fetch *f = arg;
  if (status != 0 || granted) {
    fetch_lookup(f);
    return;
  }
  pthread_mutex_lock(&flight_mu);
  bool waited = f->waiters != NULL;
  pthread_mutex_unlock(&flight_mu);
  if (waited) { /* a delivery needs it now: fetch anyway */
    fetch_lookup(f);
    return;
  }
  fetch_count(f, "refresh_left");
  postern_log(POSTERN_LOG_DEBUG, "mtasts_refresh_left", "domain", f->key.domain,
              "why", "another node is fetching it", NULL);
  fetch_complete(f, POLICY__MTS_FETCH_FAILED, "another node is fetching it",
                 NULL, POLICY_TLSRPT_STS_POLICY_FETCH_ERROR);
}

static void refresh_on_get(void *arg, int status, const char *data,
                           size_t len) {
  struct policy__mts_fetch *f = arg;
  struct policy_mtasts_rec *rec = status == 0 ? malloc(sizeof *rec) : NULL;
  if (rec != NULL && policy_mtasts_shared_decode(data, len, rec) == 0) {
    pthread_mutex_lock(&flight_mu);
    bool usable = policy__mts_shared_fresh(rec, f->id, f->now);
    pthread_mutex_unlock(&flight_mu);
    if (usable && rec->fetched > f->fetched) {
      rec->last_used = f->last_used;
      rec->tried = f->now;
      policy__mts_cache_store(f->cache, f->key.domain, rec, f->now);
      char at[24];
      snprintf(at, sizeof at, "%llu", (unsigned long long)rec->fetched);
      fetch_count(f, "shared_refresh");
      postern_log(POSTERN_LOG_INFO, "mtasts_refresh_shared", "domain",
                  f->key.domain, "id", rec->id, "fetched", at, NULL);
      fetch_complete(f, POLICY__MTS_GOT_POLICY, NULL, &rec->policy, 0);
      free(rec);
      return;
    }
  }
  /* An entry that does not decode is ignored here: the refresh fetches
   * (and its share replaces the entry). */
  free(rec);
  if (status != 0 && status != POSTERN_ENOENT) {
    fetch_lookup(f);
    return;
  }
  char key[300];
  snprintf(key, sizeof key, POLICY__MTS_CLAIM_KEY, f->key.domain);
  if (f->store->claim(f->store->impl, f->loop, key,
                      f->timeout_ms + POLICY__MTS_CLAIM_SLACK_MS,
                      refresh_on_claim, f) != 0)
    fetch_lookup(f);
}

void policy__mts_fetch_begin(struct policy__mts_fetch *f) {
  if (f->refresh && f->store != NULL) {
    char key[300];
    snprintf(key, sizeof key, POLICY__MTS_SHARED_KEY, f->key.domain);
    if (f->store->get(f->store->impl, f->loop, key, refresh_on_get, f) == 0)
      return;
  }
  fetch_lookup(f);
}

/* The fetch proper: the policy host's address, then the request. */
static void fetch_lookup(struct policy__mts_fetch *f) {
  char host[300];
  snprintf(host, sizeof host, "mta-sts.%s", f->key.domain);
  int rc = f->dns ? dns_resolve_host(f->dns, host, on_addrs, f, &f->q)
                  : POSTERN_ESTATE;
  if (rc != 0) {
    char reason[POLICY__MTS_REASON_MAX];
    snprintf(reason, sizeof reason, "cannot look up %s: %s", host,
             postern_strerror(rc));
    fetch_failed_now(f, reason);
  }
}
