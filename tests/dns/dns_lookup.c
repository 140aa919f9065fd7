/*
 * tests/dns/dns_lookup.c - test driver for net/dns: runs lookups on one
 * libuv loop and prints one JSON object per lookup, in argument order, for
 * tests/dns/dns_resolver_test.py to check.
 *
 *   dns_lookup [--server ADDR]... [--timeout MS] [--attempts N] [--trust-ad]
 *              [--cancel-first] [--close-early] [--sequential]
 *              [--no-cache] [--cache-max-ttl S] [--max-inflight N]
 *              [--cancel-last] [--stats] NAME/TYPE...
 *   dns_lookup --trust [--trust-ad] [--server ADDR]...
 *
 * TYPE is A, AAAA, MX, TXT, TLSA, CNAME or HOST (dns_resolve_host). All
 * lookups start at once, or with --sequential each when the one before it
 * has answered (from its callback), which is how a second lookup meets the
 * first one's cached answer; the last line is then the cache's counters,
 * {"cache":{...}}. --no-cache turns the resolver's cache off. --cancel-first
 * cancels the first lookup right after starting it, --cancel-last the last
 * one once all have started; --close-early closes the resolver right after
 * starting them all. Each line carries "ms", the time from the start to its
 * callback; --stats prints the counters line without --sequential too. --trust
 * only prints whether the resolver would believe AD.
 *
 * The driver also checks the event-loop contract itself: it exits 3 if a
 * callback runs inside dns_query()/dns_resolve_host() or twice for one
 * lookup, and 4 if the resolver's close callback never ran.
 */
#include "net/dns.h"

#include "base/postern_err.h"
#include "base/postern_json.h"
#include "base/postern_log.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lookup {
  const char *name;
  const char *tname;
  int type; /* 0 = HOST */
  int done;
  char *json;
  struct dns_query *q; /* valid until its callback */
};

static int in_call;
static int closed;
static int bad;
static bool sequential;
static struct dns_resolver *resolver;
static struct lookup *all;
static size_t nall, started;

static bool cancel_first_lookup;
static uint64_t t0;
static uv_loop_t *main_loop;

static void start_lookup(size_t i);

/* One record as JSON (jansson, base/postern_json.h). */
static json_t *rr_json(const struct dns_rr *rr) {
  char buf[INET6_ADDRSTRLEN];
  switch (rr->type) {
  case DNS_T_A:
    inet_ntop(AF_INET, &rr->u.a, buf, sizeof buf);
    return json_string(buf);
  case DNS_T_AAAA:
    inet_ntop(AF_INET6, &rr->u.aaaa, buf, sizeof buf);
    return json_string(buf);
  case DNS_T_MX: {
    char t[DNS_NAME_MAX + 16];
    snprintf(t, sizeof t, "%u %s", rr->u.mx.pref, rr->u.mx.host);
    return postern_json_cstr(t);
  }
  case DNS_T_TXT:
    return json_pack(
        "{s:I, s:o}", "strings", (json_int_t)rr->u.txt.nstrings, "text",
        postern_json_str((const char *)rr->u.txt.data, rr->u.txt.len));
  case DNS_T_TLSA: {
    size_t cap = 32 + rr->u.tlsa.len * 2;
    char *t = malloc(cap);
    if (t == NULL)
      return NULL;
    size_t o = (size_t)snprintf(t, cap, "%u %u %u ", rr->u.tlsa.usage,
                                rr->u.tlsa.selector, rr->u.tlsa.mtype);
    for (size_t i = 0; i < rr->u.tlsa.len; i++)
      o += (size_t)snprintf(t + o, cap - o, "%02x", rr->u.tlsa.data[i]);
    json_t *v = json_string(t);
    free(t);
    return v;
  }
  case DNS_T_CNAME:
    return postern_json_cstr(rr->u.target);
  default:
    snprintf(buf, sizeof buf, "type%u", rr->type);
    return json_string(buf);
  }
}

/* Prints and frees a JSON object into a malloc'd line (NULL when out of
 * memory: the lookup then never reports, and the driver says so). */
static char *json_line(json_t *o) {
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

static void on_answer(const struct dns_answer *a, void *arg) {
  struct lookup *l = arg;
  if (in_call) {
    fprintf(stderr, "callback ran inside the call that started it\n");
    bad = 3;
  }
  l->q = NULL;
  if (l->done++) {
    fprintf(stderr, "callback ran twice for %s\n", l->name);
    bad = 3;
  }
  json_t *o = json_pack(
      "{s:o, s:s, s:s, s:s, s:i, s:b, s:b, s:b, s:I, s:I, s:o}", "name",
      postern_json_cstr(l->name), "type", l->tname, "status",
      dns_status_name(a->status), "err", postern_err_name(a->err), "rcode",
      a->rcode, "ad", a->authenticated, "null_mx", a->null_mx, "partial",
      a->partial, "ttl", (json_int_t)a->ttl, "hops", (json_int_t)a->cname_hops,
      "cname", a->cname ? postern_json_cstr(a->cname) : json_null());
  if (o) {
    uv_update_time(main_loop);
    json_object_set_new(o, "ms",
                        json_integer((json_int_t)(uv_now(main_loop) - t0)));
  }
  if (o && l->type == 0) {
    /* Host lookups: what each family found, and what DANE may use. */
    bool use[2];
    bool sel = dns_host_select(a, use);
    json_object_set_new(
        o, "a",
        json_pack("{s:s, s:b}", "status",
                  dns_status_name(a->family[DNS_FAMILY_A].status), "ad",
                  a->family[DNS_FAMILY_A].authenticated));
    json_object_set_new(
        o, "aaaa",
        json_pack("{s:s, s:b}", "status",
                  dns_status_name(a->family[DNS_FAMILY_AAAA].status), "ad",
                  a->family[DNS_FAMILY_AAAA].authenticated));
    json_object_set_new(o, "select",
                        json_pack("{s:b, s:b, s:b}", "a", use[0], "aaaa",
                                  use[1], "authenticated", sel));
  }
  json_t *recs = json_array();
  for (size_t i = 0; recs && i < a->nrr; i++)
    json_array_append_new(recs, rr_json(&a->rr[i]));
  if (o)
    json_object_set_new(o, "records", recs);
  else
    json_decref(recs);
  l->json = json_line(o);
  if (sequential && started < nall)
    start_lookup(started);
}

static void on_closed(void *arg) {
  closed = 1;
}

static int type_of(const char *t) {
  static const struct {
    const char *n;
    int t;
  } map[] = {{"A", DNS_T_A},     {"AAAA", DNS_T_AAAA}, {"MX", DNS_T_MX},
             {"TXT", DNS_T_TXT}, {"TLSA", DNS_T_TLSA}, {"CNAME", DNS_T_CNAME},
             {"HOST", 0}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (strcmp(t, map[i].n) == 0)
      return map[i].t;
  return -1;
}

static void start_lookup(size_t i) {
  struct lookup *l = &all[i];
  struct dns_query *q = NULL;
  int rc;
  started = i + 1;
  l->q = NULL;
  in_call = 1;
  if (l->type == 0)
    rc = dns_resolve_host(resolver, l->name, on_answer, l, &q);
  else
    rc = dns_query(resolver, l->name, (uint16_t)l->type, on_answer, l, &q);
  if (rc == 0 && i == 0 && cancel_first_lookup)
    dns_query_cancel(q);
  else if (rc == 0)
    l->q = q;
  in_call = 0;
  if (rc != 0) {
    l->json = json_line(json_pack("{s:o, s:s, s:s}", "name",
                                  postern_json_cstr(l->name), "type", l->tname,
                                  "error", postern_err_name(rc)));
    l->done = 1;
    if (sequential && started < nall)
      start_lookup(started);
  }
}

int main(int argc, char **argv) {
  struct dns_opts o;
  bool trust_only = false, cancel_first = false, close_early = false;
  bool cancel_last = false, stats = false;
  struct lookup *ls = calloc((size_t)argc, sizeof *ls);
  size_t nl = 0;
  dns_opts_init(&o);
  o.timeout_ms = 1000;
  o.attempts = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--server") == 0 && i + 1 < argc) {
      if (o.nservers == DNS_MAX_SERVERS ||
          dns_server_parse(argv[++i], &o.servers[o.nservers]) != 0) {
        fprintf(stderr, "bad server %s\n", argv[i]);
        return 2;
      }
      o.nservers++;
    } else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
      o.timeout_ms = (unsigned)atoi(argv[++i]);
    } else if (strcmp(a, "--attempts") == 0 && i + 1 < argc) {
      o.attempts = (unsigned)atoi(argv[++i]);
    } else if (strcmp(a, "--trust-ad") == 0) {
      o.trust_ad = true;
    } else if (strcmp(a, "--trust") == 0) {
      trust_only = true;
    } else if (strcmp(a, "--cancel-first") == 0) {
      cancel_first = true;
    } else if (strcmp(a, "--close-early") == 0) {
      close_early = true;
    } else if (strcmp(a, "--max-inflight") == 0 && i + 1 < argc) {
      o.max_inflight = (unsigned)atoi(argv[++i]);
    } else if (strcmp(a, "--cancel-last") == 0) {
      cancel_last = true;
    } else if (strcmp(a, "--stats") == 0) {
      stats = true;
    } else if (strcmp(a, "--sequential") == 0) {
      sequential = true;
    } else if (strcmp(a, "--no-cache") == 0) {
      o.cache_size = 0;
    } else if (strcmp(a, "--cache-max-ttl") == 0 && i + 1 < argc) {
      o.cache_max_ttl = (uint32_t)atoi(argv[++i]);
    } else if (strcmp(a, "--debug") == 0) {
      postern_log_set_level(POSTERN_LOG_DEBUG);
    } else {
      char *slash = strrchr(argv[i], '/');
      if (slash == NULL || type_of(slash + 1) < 0) {
        fprintf(stderr, "bad lookup %s (want NAME/TYPE)\n", a);
        return 2;
      }
      *slash = '\0';
      ls[nl].name = argv[i];
      ls[nl].tname = slash + 1;
      ls[nl].type = type_of(slash + 1);
      nl++;
    }
  }

  uv_loop_t loop;
  uv_loop_init(&loop);
  main_loop = &loop;
  t0 = uv_now(&loop);
  struct dns_resolver *r;
  int rc = dns_resolver_new(&loop, &o, &r);
  if (rc != 0) {
    fprintf(stderr, "dns_resolver_new: %s\n", postern_strerror(rc));
    return 1;
  }
  if (trust_only) {
    json_t *o = json_pack("{s:b}", "trust", dns_resolver_trusts_ad(r));
    postern_json_print(o, stdout, 1);
    json_decref(o);
  }
  resolver = r;
  all = ls;
  nall = nl;
  cancel_first_lookup = cancel_first;
  if (sequential) {
    if (nl > 0)
      start_lookup(0);
  } else {
    for (size_t i = 0; i < nl; i++)
      start_lookup(i);
    /* The last lookup has not answered yet: it cannot have, inside the
     * calls, so its handle is still valid. */
    if (cancel_last && nl > 0 && ls[nl - 1].q != NULL && !ls[nl - 1].done)
      dns_query_cancel(ls[nl - 1].q);
  }
  if (close_early)
    dns_resolver_close(r, on_closed, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  struct dns_cache_stats cs = {0};
  if (!close_early) /* else the resolver is gone already */
    dns_resolver_cache_stats(r, &cs);
  if (!close_early) {
    /* Every lookup has ended; closing now must still finish cleanly. */
    dns_resolver_close(r, on_closed, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  for (size_t i = 0; i < nl; i++) {
    if (ls[i].json == NULL) {
      fprintf(stderr, "lookup %s/%s never completed\n", ls[i].name,
              ls[i].tname);
      bad = bad ? bad : 3;
      continue;
    }
    printf("%s\n", ls[i].json);
    free(ls[i].json);
  }
  if (sequential || stats) {
    json_t *c = json_pack(
        "{s:{s:o, s:o, s:o, s:o, s:o, s:o}}", "cache", "hits",
        postern_json_u64(cs.hits), "misses", postern_json_u64(cs.misses),
        "stored", postern_json_u64(cs.stored), "evicted",
        postern_json_u64(cs.evicted), "entries", postern_json_u64(cs.entries),
        "waited", postern_json_u64(cs.waited));
    postern_json_print(c, stdout, 1);
    json_decref(c);
  }
  if (!closed)
    bad = bad ? bad : 4;
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "loop still has handles\n");
    bad = bad ? bad : 4;
  }
  free(ls);
  return bad;
}
