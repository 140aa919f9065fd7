/*
 * mtasts.c - the `mtasts` policy module (RFC 8461, SMTP MTA Strict
 * Transport Security).
 *
 * prepare_domain discovers the domain's policy:
 *   1. the cached policy for the domain, if unexpired (LMDB, below);
 *   2. TXT `_mta-sts.<domain>` (§3.1): exactly one `v=STSv1` record with
 *      an id. The same id as the cached policy: the cache is used (and
 *      refreshed in the background once half its max_age has passed,
 *      §5.1). A new id, or nothing cached: the policy is fetched.
 *      No STS record (NXDOMAIN, NODATA, only other TXT records): the
 *      cached policy if any (a domain withdraws a policy by publishing
 *      mode none, §8.3), else no policy. A failed lookup (SERVFAIL,
 *      timeout) or an invalid record: the cached policy if any, else a
 *      temporary failure (policy fails closed; never "no policy").
 *   3. the fetch (§3.3): `mta-sts.<domain>` resolved by our resolver, then
 *      https://mta-sts.<domain>/.well-known/mta-sts.txt through net/https
 *      (PKIX with tls { ca_file }, no redirects, 200 only, text/plain,
 *      size cap, timeout). A valid policy is cached for max_age seconds
 *      under its TXT id. A failed fetch or invalid policy: the cached
 *      policy if any, else - RFC 8461 §3.3 - no policy (logged).
 * check_mx: `enforce` - an MX matching a pattern (§4.1) gets MX level
 *   `mtasts`, any other MX is rejected (4.7.5, the next MX is tried);
 *   `testing` - mismatches are logged and counted, never enforced; `none`
 *   - nothing.
 * check_conn: `enforce` requires TLS level `authenticated` (PKIX-valid for
 *   the MX name, §4.2). Where usable DANE records exist (policy_conn
 *   dane_usable) DANE governs authentication (§2): the chain then counts
 *   only a DANE match as `authenticated`, so the requirement is met by
 *   DANE and PKIX is not checked on top (logged). `testing`: a shortfall
 *   is logged and counted only.
 *
 * The cache: a small LMDB environment owned by this module in
 * `<state_dir>/mtasts`, one record per domain (fixed-size struct with a
 * version). It survives restarts. LMDB forbids opening one environment
 * twice in a process, and a reload builds a new chain while the old one
 * is kept, so environments are shared through a refcounted registry.
 * Writes happen once per fetched policy; read transactions are short.
 *
 * Ownership: per-domain state (`struct mts_domain`) is this module's; while
 * a DNS lookup or a fetch is in flight it is also referenced by the
 * resolver or the HTTPS client: free_domain then cancels and the
 * CANCELED callback frees. A background refresh is a detached
 * `struct mts_domain` that frees itself when done. The module state is
 * immutable after creation and shared by every worker loop.
 */
#include "policy/chain.h"

#include "net/dns.h"
#include "net/https.h"
#include "postern_err.h"
#include "postern_log.h"

#include <errno.h>
#include <lmdb.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MTS_TXT_MAX 16 /* TXT records looked at */
#define MTS_CACHE_MAP (64u * 1024 * 1024)
#define MTS_REC_VERSION 1

/* ---- the cache ---- */

/* ---- module state ---- */

struct mts_cache;

struct mts_state {
  char *state_dir;
  char *ca_file; /* NULL: libcurl's bundle */
  uint16_t https_port;
  unsigned timeout_ms;
  size_t body_max;
  struct mts_cache *cache; /* opened on first use (cache_ensure) */
};

/* ---- the cache ---- */

struct mts_cache {
  char path[PATH_MAX];
  MDB_env *env;
  MDB_dbi dbi;
  int refs;
  struct mts_cache *next;
};

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mts_cache *caches;

struct mts_rec {
  uint32_t version;
  uint32_t reserved;
  uint64_t fetched; /* unix seconds */
  uint64_t expires; /* unix seconds: fetched + max_age */
  char id[POLICY_MTASTS_ID_MAX + 1];
  struct policy_mtasts_policy policy;
};

static int cache_open(const char *state_dir, struct mts_cache **out) {
  char path[PATH_MAX];
  int n = snprintf(path, sizeof path, "%s/mtasts", state_dir);
  if (n < 0 || (size_t)n >= sizeof path)
    return POSTERN_EINVAL;
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    return POSTERN_EIO;
  pthread_mutex_lock(&cache_mu);
  for (struct mts_cache *c = caches; c; c = c->next)
    if (strcmp(c->path, path) == 0) {
      c->refs++;
      *out = c;
      pthread_mutex_unlock(&cache_mu);
      return 0;
    }
  int rc = POSTERN_ENOMEM;
  struct mts_cache *c = calloc(1, sizeof *c);
  if (c == NULL)
    goto out;
  snprintf(c->path, sizeof c->path, "%s", path);
  rc = POSTERN_EIO;
  if (mdb_env_create(&c->env) != 0) {
    free(c);
    c = NULL;
    goto out;
  }
  MDB_txn *txn;
  /* MDB_NOTLS: read transactions are not tied to threads (several worker
   * threads read the cache). */
  if (mdb_env_set_mapsize(c->env, MTS_CACHE_MAP) != 0 ||
      mdb_env_open(c->env, path, MDB_NOTLS, 0600) != 0 ||
      mdb_txn_begin(c->env, NULL, 0, &txn) != 0) {
    mdb_env_close(c->env);
    free(c);
    c = NULL;
    goto out;
  }
  if (mdb_dbi_open(txn, NULL, 0, &c->dbi) != 0 || mdb_txn_commit(txn) != 0) {
    mdb_env_close(c->env);
    free(c);
    c = NULL;
    goto out;
  }
  c->refs = 1;
  c->next = caches;
  caches = c;
  *out = c;
  rc = 0;
out:
  pthread_mutex_unlock(&cache_mu);
  return rc;
}

static void cache_release(struct mts_cache *c) {
  if (c == NULL)
    return;
  pthread_mutex_lock(&cache_mu);
  if (--c->refs == 0) {
    for (struct mts_cache **pp = &caches; *pp; pp = &(*pp)->next)
      if (*pp == c) {
        *pp = c->next;
        break;
      }
    mdb_env_close(c->env);
    free(c);
  }
  pthread_mutex_unlock(&cache_mu);
}

/* Reads the record of `domain`. Returns 0, POSTERN_ENOENT (absent or not
 * a record of this version) or POSTERN_EIO. */
static int cache_get(struct mts_cache *c, const char *domain,
                     struct mts_rec *out) {
  MDB_txn *txn;
  if (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn) != 0)
    return POSTERN_EIO;
  MDB_val k = {.mv_size = strlen(domain), .mv_data = (void *)domain}, v;
  int rc = mdb_get(txn, c->dbi, &k, &v);
  int ret = POSTERN_ENOENT;
  if (rc == 0 && v.mv_size == sizeof *out) {
    memcpy(out, v.mv_data, sizeof *out);
    if (out->version == MTS_REC_VERSION &&
        memchr(out->id, '\0', sizeof out->id) != NULL &&
        out->policy.n_mx <= POLICY_MTASTS_MX_MAX)
      ret = 0;
  } else if (rc != 0 && rc != MDB_NOTFOUND) {
    ret = POSTERN_EIO;
  }
  mdb_txn_abort(txn);
  return ret;
}

static int cache_put(struct mts_cache *c, const char *domain,
                     const struct mts_rec *rec) {
  MDB_txn *txn;
  if (mdb_txn_begin(c->env, NULL, 0, &txn) != 0)
    return POSTERN_EIO;
  MDB_val k = {.mv_size = strlen(domain), .mv_data = (void *)domain};
  MDB_val v = {.mv_size = sizeof *rec, .mv_data = (void *)rec};
  int rc = mdb_put(txn, c->dbi, &k, &v, 0);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return rc == MDB_MAP_FULL ? POSTERN_ENOSPC : POSTERN_EIO;
  }
  return mdb_txn_commit(txn) == 0 ? 0 : POSTERN_EIO;
}

/* Opens the cache on first use: on a worker thread, after the relay has
 * dropped privileges and created state_dir, so the files belong to the
 * relay's user. A failure is retried at the next use. */
static int cache_ensure(struct mts_state *s) {
  static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&mu);
  int rc = 0;
  if (s->cache == NULL)
    rc = cache_open(s->state_dir, &s->cache);
  pthread_mutex_unlock(&mu);
  return rc;
}

enum mts_phase { MTS_TXT, MTS_ADDR, MTS_FETCH };

struct mts_domain {
  struct mts_state *s;
  struct dns_resolver *dns;
  struct https_client *https;
  void (*count)(const char *module, const char *outcome);
  char domain[256];
  uint64_t now; /* unix seconds at prepare */
  enum mts_phase phase;
  struct dns_query *q;
  struct https_fetch *f;
  bool orphaned; /* free_domain ran while something was in flight */
  bool detached; /* a background refresh: no `done`, frees itself */
  policy_done_cb done;
  void *arg;
  char txt_id[POLICY_MTASTS_ID_MAX + 1];
  bool have_cache;
  struct mts_rec cached;
  bool have_policy;
  struct policy_mtasts_policy policy;
  char source[16]; /* "fetched", "cache" */
};

static void count(struct mts_domain *d, const char *outcome) {
  if (d->count)
    d->count("mtasts", outcome);
}

static void domain_free(struct mts_domain *d) {
  free(d);
}

static void mts_free_domain(void *state, void *pd) {
  struct mts_domain *d = pd;
  if (d == NULL)
    return;
  if (d->q || d->f) {
    d->orphaned = true;
    if (d->q)
      dns_query_cancel(d->q);
    if (d->f)
      https_fetch_cancel(d->f);
    return;
  }
  domain_free(d);
}

/* The end of prepare_domain: reports to the chain (the last use of the
 * chain's memory), or for a detached refresh frees itself. */
static void finish(struct mts_domain *d, const struct policy_result *r) {
  if (d->detached) {
    domain_free(d);
    return;
  }
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
  count(d, "fetch_failed");
  if (d->detached) {
    postern_log(POSTERN_LOG_INFO, "mtasts_refresh_failed", "domain", d->domain,
                "reason", reason, NULL);
    finish_ok(d);
    return;
  }
  if (d->have_cache) {
    postern_log(POSTERN_LOG_WARN, "mtasts_fetch_failed", "domain", d->domain,
                "reason", reason, "using", "cached policy", NULL);
    use_cache(d, "fetch failed");
    finish_ok(d);
    return;
  }
  postern_log(POSTERN_LOG_WARN, "mtasts_fetch_failed", "domain", d->domain,
              "reason", reason, "using",
              "no policy (RFC 8461 section 3.3: nothing cached)", NULL);
  no_policy(d, "fetch failed, nothing cached");
}

static void on_fetch(const struct https_result *res, void *arg) {
  struct mts_domain *d = arg;
  d->f = NULL;
  if (d->orphaned) {
    domain_free(d);
    return;
  }
  char reason[384];
  if (res->status == POSTERN_ECANCELED) {
    canceled(d);
    return;
  }
  if (res->status != 0) {
    snprintf(reason, sizeof reason, "fetching %s: %s%s%s", res->url,
             postern_strerror(res->status), res->error[0] ? ": " : "",
             res->error);
    fetch_failed(d, reason);
    return;
  }
  struct policy_mtasts_policy pol;
  int rc =
      policy_mtasts_policy_parse((const char *)res->body, res->body_len, &pol);
  if (rc != 0) {
    snprintf(reason, sizeof reason, "invalid policy at %s: %s", res->url,
             postern_strerror(rc));
    fetch_failed(d, reason);
    return;
  }
  struct mts_rec rec;
  memset(&rec, 0, sizeof rec);
  rec.version = MTS_REC_VERSION;
  rec.fetched = d->now;
  rec.expires = d->now + pol.max_age;
  snprintf(rec.id, sizeof rec.id, "%s", d->txt_id);
  rec.policy = pol;
  rc = d->s->cache ? cache_put(d->s->cache, d->domain, &rec) : POSTERN_EIO;
  if (rc != 0)
    postern_log(POSTERN_LOG_WARN, "mtasts_cache_write_failed", "domain",
                d->domain, "error", postern_strerror(rc), NULL);
  count(d, "fetched");
  char ma[16];
  snprintf(ma, sizeof ma, "%u", (unsigned)pol.max_age);
  postern_log(POSTERN_LOG_INFO, "mtasts_policy_fetched", "domain", d->domain,
              "id", d->txt_id, "mode", policy_mtasts_mode_name(pol.mode),
              "max_age", ma, "refresh", d->detached ? "yes" : "no", NULL);
  if (!d->detached) {
    d->have_policy = true;
    d->policy = pol;
    snprintf(d->source, sizeof d->source, "fetched");
  }
  finish_ok(d);
}

static void on_addrs(const struct dns_answer *a, void *arg) {
  struct mts_domain *d = arg;
  d->q = NULL;
  if (d->orphaned) {
    domain_free(d);
    return;
  }
  char reason[384];
  if (a->status == DNS_CANCELED) {
    canceled(d);
    return;
  }
  if (a->status != DNS_ANSWER) {
    snprintf(reason, sizeof reason, "address lookup for mta-sts.%s: %s",
             d->domain, dns_status_name(a->status));
    fetch_failed(d, reason);
    return;
  }
  struct sockaddr_storage addrs[HTTPS_ADDRS_MAX];
  size_t n = 0;
  for (size_t i = 0; i < a->nrr && n < HTTPS_ADDRS_MAX; i++) {
    memset(&addrs[n], 0, sizeof addrs[n]);
    if (a->rr[i].type == DNS_T_A) {
      struct sockaddr_in *s4 = (struct sockaddr_in *)&addrs[n];
      s4->sin_family = AF_INET;
      s4->sin_addr = a->rr[i].u.a;
      n++;
    } else if (a->rr[i].type == DNS_T_AAAA) {
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&addrs[n];
      s6->sin6_family = AF_INET6;
      s6->sin6_addr = a->rr[i].u.aaaa;
      n++;
    }
  }
  char url[HTTPS_URL_MAX];
  int rc = https_mta_sts_url(d->domain, url, sizeof url);
  if (rc >= 0 && n == 0)
    rc = POSTERN_ENOENT;
  if (rc >= 0 && d->https == NULL)
    rc = POSTERN_ESTATE;
  if (rc >= 0) {
    struct https_request rq = {.url = url,
                               .port = d->s->https_port,
                               .addrs = addrs,
                               .naddrs = n,
                               .ca_file = d->s->ca_file,
                               .timeout_ms = d->s->timeout_ms,
                               .body_max = d->s->body_max,
                               .require_text_plain = true};
    d->phase = MTS_FETCH;
    rc = https_fetch(d->https, &rq, on_fetch, d, &d->f);
    if (rc == 0)
      return;
  }
  snprintf(reason, sizeof reason, "cannot fetch the policy of %s: %s",
           d->domain, postern_strerror(rc));
  fetch_failed(d, reason);
}

/* Starts the fetch: first the address of mta-sts.<domain>. Returns 0 or
 * an error (nothing started). */
static int start_fetch(struct mts_domain *d) {
  char host[300];
  snprintf(host, sizeof host, "mta-sts.%s", d->domain);
  d->phase = MTS_ADDR;
  return dns_resolve_host(d->dns, host, on_addrs, d, &d->q);
}

/* Starts a detached refresh of a cached policy (§5.1: refresh before it
 * expires, so a short outage of the policy server is invisible). */
static void start_refresh(struct mts_domain *d) {
  struct mts_domain *r = malloc(sizeof *r);
  if (r == NULL)
    return;
  *r = *d;
  r->q = NULL;
  r->f = NULL;
  r->orphaned = false;
  r->detached = true;
  r->done = NULL;
  r->arg = NULL;
  if (start_fetch(r) != 0)
    free(r);
}

static void on_txt(const struct dns_answer *a, void *arg) {
  struct mts_domain *d = arg;
  d->q = NULL;
  if (d->orphaned) {
    domain_free(d);
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
    if (d->have_cache) {
      use_cache(d, "no TXT record");
      finish_ok(d);
      return;
    }
    no_policy(d, "no _mta-sts TXT record");
    return;
  }
  if (prc != 0) {
    /* A failed lookup or an invalid record: never "no policy". */
    count(d, "txt_failed");
    if (d->have_cache) {
      use_cache(d, "TXT lookup failed");
      finish_ok(d);
      return;
    }
    struct policy_result r;
    if (prc == POSTERN_EDNS_TEMPFAIL)
      policy_result_set(&r, POLICY_TEMPFAIL, "mtasts", "4.7.5",
                        "MTA-STS TXT lookup for _mta-sts.%s failed: %s",
                        d->domain, dns_status_name(a->status));
    else
      policy_result_set(&r, POLICY_TEMPFAIL, "mtasts", "4.7.5",
                        "invalid MTA-STS TXT record at _mta-sts.%s: %s",
                        d->domain, postern_strerror(prc));
    finish(d, &r);
    return;
  }
  if (d->have_cache && strcmp(d->cached.id, d->txt_id) == 0) {
    use_cache(d, "same id");
    /* Refresh once half the lifetime is over. */
    if (d->now >=
        d->cached.fetched + (d->cached.expires - d->cached.fetched) / 2)
      start_refresh(d);
    finish_ok(d);
    return;
  }
  int rc = start_fetch(d);
  if (rc != 0) {
    char reason[384];
    snprintf(reason, sizeof reason, "cannot look up mta-sts.%s: %s", d->domain,
             postern_strerror(rc));
    fetch_failed(d, reason);
  }
}

static int mts_prepare_domain(void *state, const struct policy_env *env,
                              const char *domain, void **pd,
                              policy_done_cb done, void *arg) {
  struct mts_state *s = state;
  /* RFC 8461 §4 speaks of the recipient domain's MX hosts; a static route
   * to a smarthost is the operator's choice, not an MX, so it has no
   * MTA-STS policy (and a DNS failure must not hold routed mail back). */
  if (env->routed) {
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
  if (len == 0 || len >= sizeof d->domain) {
    free(d);
    return POSTERN_EINVAL;
  }
  for (size_t i = 0; i < len; i++) {
    char ch = domain[i];
    d->domain[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
  }
  int rc = cache_ensure(s);
  if (rc == 0)
    rc = cache_get(s->cache, d->domain, &d->cached);
  d->have_cache = rc == 0 && d->cached.expires > d->now;
  if (rc != 0 && rc != POSTERN_ENOENT)
    postern_log(POSTERN_LOG_WARN, "mtasts_cache_unavailable", "domain",
                d->domain, "error", postern_strerror(rc), NULL);
  char q[300];
  snprintf(q, sizeof q, "_mta-sts.%s", d->domain);
  d->phase = MTS_TXT;
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
    if (c->dane_usable && c->reached != POLICY_TLS_LEVEL_NONE)
      postern_log(POSTERN_LOG_INFO, "mtasts_dane_governs", "domain", d->domain,
                  "mx", c->host, NULL);
    return;
  }
  if (d->policy.mode == POLICY_MTASTS_MODE_TESTING && !c->dane_usable &&
      c->reached != POLICY_TLS_LEVEL_NONE &&
      c->reached < POLICY_TLS_LEVEL_AUTHENTICATED) {
    count(d, "testing_tls_failure");
    postern_log(POSTERN_LOG_WARN, "mtasts_testing_failure", "domain", d->domain,
                "mx", c->host, "reason",
                c->verify_error && c->verify_error[0]
                    ? c->verify_error
                    : "certificate not verified",
                NULL);
  }
}

static void mts_free(void *state) {
  struct mts_state *s = state;
  if (s == NULL)
    return;
  cache_release(s->cache);
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
  s->timeout_ms =
      o->fetch_timeout_ms > UINT_MAX ? UINT_MAX : (unsigned)o->fetch_timeout_ms;
  s->body_max =
      o->max_policy_size ? o->max_policy_size : POLICY_MTASTS_BODY_MAX;
  if (s->body_max > POLICY_MTASTS_BODY_MAX)
    s->body_max = POLICY_MTASTS_BODY_MAX;
  if ((s->state_dir = strdup(o->state_dir)) == NULL) {
    free(s->ca_file);
    free(s);
    return POSTERN_ENOMEM;
  }
  out->ops = &mts_ops;
  out->state = s;
  return 0;
}
