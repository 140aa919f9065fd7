/*
 * chain_test.c - the policy chain with the `local`, `dnssec` and `dane`
 * modules on a real libuv loop: MX levels from the AD bit, which hosts get
 * a TLSA lookup, a failed TLSA lookup as a temporary failure, DANE's
 * precedence over PKIX (RFC 8461 §2), and modules that answer inside their
 * prepare step (the engine's callback still comes later, from the loop).
 *
 * The TLSA lookups go to a resolver pointed at a closed loopback port, so
 * they fail for real (connection refused or timeout); successful DANE
 * lookups and matches are proven end to end in tests/policy_e2e.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/dns.h"
#include "net/https.h"
#include "policy/chain.h"
#include "policy/mtasts_cache.h"
#include "base/postern_err.h"

/* ---- counters (env->count) ---- */

static int n_insecure, n_tempfail, n_other;

static int n_txt_failed, n_txt_failed_no_policy, n_testing_tls, n_mts_other;

static void counter(const char *module, const char *outcome) {
  if (strcmp(module, "mtasts") == 0) {
    if (strcmp(outcome, "txt_failed") == 0)
      n_txt_failed++;
    else if (strcmp(outcome, "txt_failed_no_policy") == 0)
      n_txt_failed_no_policy++;
    else if (strcmp(outcome, "testing_tls_failure") == 0)
      n_testing_tls++;
    else
      n_mts_other++;
    return;
  }
  assert_string_equal(module, "dane");
  if (strcmp(outcome, "insecure") == 0)
    n_insecure++;
  else if (strcmp(outcome, "tempfail") == 0)
    n_tempfail++;
  else
    n_other++;
}

/* ---- a loop, a resolver that cannot answer, a chain ---- */

struct fx {
  uv_loop_t loop;
  struct dns_resolver *dns;
  struct policy_chain *chain;
  int closed_udp; /* bound and never read: the "server" never answers */
};

static void fx_init(struct fx *f, enum policy_tls_level min_tls,
                    enum policy_mx_level min_mx) {
  memset(f, 0, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  /* A UDP socket that is bound but never read: queries to it time out. */
  f->closed_udp = socket(AF_INET, SOCK_DGRAM, 0);
  assert_true(f->closed_udp >= 0);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(f->closed_udp, (struct sockaddr *)&sin, sizeof sin), 0);
  socklen_t sl = sizeof sin;
  getsockname(f->closed_udp, (struct sockaddr *)&sin, &sl);
  struct dns_opts o;
  dns_opts_init(&o);
  memcpy(&o.servers[0], &sin, sizeof sin);
  o.nservers = 1;
  o.timeout_ms = 100;
  o.attempts = 1;
  assert_int_equal(dns_resolver_new(&f->loop, &o, &f->dns), 0);
  assert_int_equal(policy_chain_new(&f->chain), 0);
  struct policy_module m;
  policy_local_new(min_tls, min_mx, &m);
  assert_int_equal(policy_chain_add(f->chain, m), 0);
  policy_dnssec_new(&m);
  assert_int_equal(policy_chain_add(f->chain, m), 0);
  assert_int_equal(policy_dane_new(&m), 0);
  assert_int_equal(policy_chain_add(f->chain, m), 0);
  n_insecure = n_tempfail = n_other = 0;
  n_txt_failed = n_txt_failed_no_policy = n_testing_tls = n_mts_other = 0;
}

static void fx_done(struct fx *f) {
  dns_resolver_close(f->dns, NULL, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  policy_chain_free(f->chain);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  close(f->closed_udp);
}

static struct policy_env env_of(struct fx *f) {
  struct policy_env e = {
      .loop = &f->loop, .dns = f->dns, .now_ms = 0, .count = counter};
  return e;
}

/* ---- domain run ---- */

struct got_domain {
  bool called, in_call;
  struct policy_domain_run *run;
  struct policy_result r;
};

static bool in_call_flag;

static void on_domain(void *arg, struct policy_domain_run *run,
                      const struct policy_result *r) {
  struct got_domain *g = arg;
  g->called = true;
  g->in_call = in_call_flag;
  g->run = run;
  g->r = *r;
}

static void prepare_domain(struct fx *f, struct got_domain *g) {
  struct policy_env e = env_of(f);
  memset(g, 0, sizeof *g);
  in_call_flag = true;
  assert_int_equal(
      policy_chain_prepare_domain(f->chain, &e, "example.test", on_domain, g),
      0);
  in_call_flag = false;
  assert_false(g->called);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_true(g->called);
  assert_false(g->in_call);
  assert_int_equal(g->r.outcome, POLICY_OK);
}

/* ---- check_mx: the dnssec module and the local minimum ---- */

static void test_mx_levels(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_DNSSEC);
  struct got_domain g;
  prepare_domain(&f, &g);
  static const struct {
    bool authenticated, implicit, routed;
    enum policy_mx_level level;
    enum policy_outcome outcome;
  } cases[] = {
      /* validated MX RRset */
      {true, false, false, POLICY_MX_LEVEL_DNSSEC, POLICY_OK},
      /* validated denial: the domain is its own (implicit) MX */
      {true, true, false, POLICY_MX_LEVEL_DNSSEC, POLICY_OK},
      /* insecure MX RRset or insecure denial */
      {false, false, false, POLICY_MX_LEVEL_NONE, POLICY_TEMPFAIL},
      {false, true, false, POLICY_MX_LEVEL_NONE, POLICY_TEMPFAIL},
      /* a literal route: the configuration named the host, not DNSSEC */
      {false, false, true, POLICY_MX_LEVEL_NONE, POLICY_TEMPFAIL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct policy_mx mx = {.domain = "example.test",
                           .host = "mx.example.test",
                           .port = 25,
                           .mx_authenticated = cases[i].authenticated,
                           .implicit = cases[i].implicit,
                           .routed = cases[i].routed};
    struct policy_mx_verdict v;
    policy_chain_check_mx(g.run, &mx, &v);
    assert_int_equal(v.level, cases[i].level);
    assert_int_equal(v.required, POLICY_MX_LEVEL_DNSSEC);
    assert_int_equal(v.result.outcome, cases[i].outcome);
    if (cases[i].outcome != POLICY_OK)
      assert_string_equal(v.result.status, "4.7.5");
  }
  policy_domain_run_free(g.run);
  fx_done(&f);
}

/* ---- prepare_conn: which hosts get a TLSA lookup ---- */

struct got_conn {
  bool called, in_call;
  struct policy_conn_run *crun;
  struct policy_conn_req req;
};

static void on_conn(void *arg, struct policy_conn_run *crun,
                    const struct policy_conn_req *req) {
  struct got_conn *g = arg;
  g->called = true;
  g->in_call = in_call_flag;
  g->crun = crun;
  g->req = *req;
}

static void prepare_conn(struct fx *f, struct policy_domain_run *run,
                         const struct policy_mx *mx, bool addrs_auth,
                         struct got_conn *g) {
  struct policy_env e = env_of(f);
  struct policy_host h = {
      .mx = mx, .addrs_authenticated = addrs_auth, .canonical = mx->host};
  memset(g, 0, sizeof *g);
  in_call_flag = true;
  assert_int_equal(policy_chain_prepare_conn(run, &e, &h, on_conn, g), 0);
  in_call_flag = false;
  assert_false(g->called);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_true(g->called);
  assert_false(g->in_call);
}

static void test_no_lookup_without_dnssec(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
  struct got_domain g;
  prepare_domain(&f, &g);
  /* insecure addresses; insecure MX RRset with secure addresses (RFC 7672
   * §2.2.1: a forged MX could name any host); both insecure */
  static const struct {
    bool mx_auth, addrs_auth;
  } cases[] = {{true, false}, {false, true}, {false, false}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct policy_mx mx = {.domain = "example.test",
                           .host = "mx.example.test",
                           .port = 25,
                           .mx_authenticated = cases[i].mx_auth};
    struct got_conn c;
    prepare_conn(&f, g.run, &mx, cases[i].addrs_auth, &c);
    assert_int_equal(c.req.result.outcome, POLICY_OK);
    assert_false(c.req.tls_required);
    assert_false(c.req.dane_usable);
    policy_conn_run_free(c.crun);
  }
  assert_int_equal(n_insecure, 3);
  assert_int_equal(n_tempfail, 0);
  policy_domain_run_free(g.run);
  fx_done(&f);
}

static void test_failed_tlsa_lookup_is_tempfail(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
  struct got_domain g;
  prepare_domain(&f, &g);
  /* A secure MX host, and a routed host (a non-MX destination, §2.2.2):
   * both are looked up, and the lookup fails. */
  for (int routed = 0; routed < 2; routed++) {
    struct policy_mx mx = {.domain = "example.test",
                           .host = "mx.example.test",
                           .port = 2525,
                           .mx_authenticated = !routed,
                           .routed = routed};
    struct got_conn c;
    prepare_conn(&f, g.run, &mx, true, &c);
    assert_int_equal(c.req.result.outcome, POLICY_TEMPFAIL);
    assert_string_equal(c.req.result.status, "4.7.5");
    assert_string_equal(c.req.result.module, "dane");
    assert_non_null(strstr(c.req.result.reason, "_2525._tcp.mx.example.test"));
    policy_conn_run_free(c.crun);
  }
  assert_int_equal(n_tempfail, 2);
  policy_domain_run_free(g.run);
  fx_done(&f);
}

/* ---- check_conn: DANE precedence and the local minimum ---- */

static void test_dane_usable_overrides_pkix(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f, POLICY_TLS_LEVEL_AUTHENTICATED, POLICY_MX_LEVEL_NONE);
  struct got_domain g;
  prepare_domain(&f, &g);
  struct policy_mx mx = {
      .domain = "example.test", .host = "mx.example.test", .port = 25};
  struct got_conn c;
  prepare_conn(&f, g.run, &mx, false, &c);
  struct policy_conn pc = {.host = "mx.example.test",
                           .reached = POLICY_TLS_LEVEL_AUTHENTICATED,
                           .pkix_ok = true,
                           .name_ok = true,
                           .verify_error = ""};
  struct policy_conn_verdict v;
  policy_chain_check_conn(c.crun, &pc, &v);
  assert_int_equal(v.result.outcome, POLICY_OK);
  assert_int_equal(v.level, POLICY_TLS_LEVEL_AUTHENTICATED);
  /* Where usable TLSA records govern, a PKIX verdict alone is only
   * `encrypted`; the local minimum then fails. */
  pc.dane_usable = true;
  policy_chain_check_conn(c.crun, &pc, &v);
  assert_int_equal(v.level, POLICY_TLS_LEVEL_ENCRYPTED);
  assert_int_equal(v.result.outcome, POLICY_TEMPFAIL);
  assert_string_equal(v.result.status, "4.7.5");
  /* Plaintext against the minimum. */
  pc.dane_usable = false;
  pc.reached = POLICY_TLS_LEVEL_NONE;
  policy_chain_check_conn(c.crun, &pc, &v);
  assert_int_equal(v.result.outcome, POLICY_TEMPFAIL);
  policy_conn_run_free(c.crun);
  policy_domain_run_free(g.run);
  fx_done(&f);
}

/* ---- check_conn: the MX level the connection had ---- */

/* A module whose check_conn raises the MX level to the one in its state. */
static void raise_check_conn(void *state, void *pd, void *pc,
                             const struct policy_conn *c,
                             struct policy_conn_verdict *v) {
  enum policy_mx_level to = *(const enum policy_mx_level *)state;
  if (v->mx_level < to)
    v->mx_level = to;
}

static const struct policy_module_ops raise_ops = {
    .name = "raise",
    .check_conn = raise_check_conn,
};

static void test_conn_verdict_mx_level(void **state) {
  (void)state;
  /* The verdict starts from the candidate's level; modules may raise it
   * (dane does, to dnssec, when it authenticated the session); without a
   * module that does, it is the candidate's level whatever TLS reached. */
  static const enum policy_mx_level raise_to[] = {POLICY_MX_LEVEL_NONE,
                                                  POLICY_MX_LEVEL_DNSSEC};
  static const struct {
    enum policy_mx_level in;
    enum policy_tls_level reached;
    int raise; /* index into raise_to */
    enum policy_mx_level out;
  } cases[] = {
      {POLICY_MX_LEVEL_NONE, POLICY_TLS_LEVEL_NONE, 0, POLICY_MX_LEVEL_NONE},
      {POLICY_MX_LEVEL_MTASTS, POLICY_TLS_LEVEL_AUTHENTICATED, 0,
       POLICY_MX_LEVEL_MTASTS},
      {POLICY_MX_LEVEL_DNSSEC, POLICY_TLS_LEVEL_ENCRYPTED, 0,
       POLICY_MX_LEVEL_DNSSEC},
      {POLICY_MX_LEVEL_NONE, POLICY_TLS_LEVEL_AUTHENTICATED, 1,
       POLICY_MX_LEVEL_DNSSEC},
      {POLICY_MX_LEVEL_MTASTS, POLICY_TLS_LEVEL_AUTHENTICATED, 1,
       POLICY_MX_LEVEL_DNSSEC},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct fx f;
    fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
    struct policy_module m = {.ops = &raise_ops,
                              .state = (void *)&raise_to[cases[i].raise]};
    assert_int_equal(policy_chain_add(f.chain, m), 0);
    struct got_domain g;
    prepare_domain(&f, &g);
    /* An insecure host: no TLSA lookup, the dane module stays out. */
    struct policy_mx mx = {
        .domain = "example.test", .host = "mx.example.test", .port = 25};
    struct got_conn c;
    prepare_conn(&f, g.run, &mx, false, &c);
    struct policy_conn pc = {.host = "mx.example.test",
                             .reached = cases[i].reached,
                             .pkix_ok = true,
                             .name_ok = true,
                             .verify_error = "",
                             .mx_level = cases[i].in};
    struct policy_conn_verdict v;
    memset(&v, 0xff, sizeof v);
    policy_chain_check_conn(c.crun, &pc, &v);
    assert_int_equal(v.result.outcome, POLICY_OK);
    assert_int_equal(v.mx_level, cases[i].out);
    assert_int_equal(v.level, cases[i].reached);
    policy_conn_run_free(c.crun);
    policy_domain_run_free(g.run);
    fx_done(&f);
  }
}

/* ---- modules answering inside prepare_domain ---- */

static int sync_prepare(void *state, const struct policy_env *env,
                        const char *domain, void **pd, policy_done_cb done,
                        void *arg) {
  struct policy_result r;
  memset(&r, 0, sizeof r);
  if (state != NULL)
    policy_result_set(&r, POLICY_PERMFAIL, "sync", "5.7.1", "no %s", domain);
  else
    r.outcome = POLICY_OK;
  done(arg, &r);
  return 0;
}

static const struct policy_module_ops sync_ops = {
    .name = "sync",
    .prepare_domain = sync_prepare,
};

static void test_sync_answers(void **state) {
  (void)state;
  for (int fail = 0; fail < 2; fail++) {
    struct fx f;
    fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
    struct policy_module m = {.ops = &sync_ops,
                              .state = fail ? (void *)&sync_ops : NULL};
    assert_int_equal(policy_chain_add(f.chain, m), 0);
    struct policy_env e = env_of(&f);
    struct got_domain g = {0};
    in_call_flag = true;
    assert_int_equal(
        policy_chain_prepare_domain(f.chain, &e, "example.test", on_domain, &g),
        0);
    in_call_flag = false;
    assert_false(g.called);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    assert_true(g.called);
    assert_false(g.in_call);
    assert_int_equal(g.r.outcome, fail ? POLICY_PERMFAIL : POLICY_OK);
    if (fail)
      assert_string_equal(g.r.reason, "no example.test");
    policy_domain_run_free(g.run);
    fx_done(&f);
  }
}

/* ---- mtasts: a failed TXT lookup with nothing cached is no policy ---- */

static void test_mtasts_txt_failure_no_policy(void **state) {
  (void)state;
  char dir[] = "/tmp/postern-chain-test-XXXXXX";
  assert_non_null(mkdtemp(dir));
  struct fx f;
  fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
  struct policy_mtasts_opts o = {.state_dir = dir,
                                 .https_port = 443,
                                 .fetch_timeout_ms = 1000,
                                 .max_policy_size = 65536};
  struct policy_module m;
  assert_int_equal(policy_mtasts_new(&o, &m), 0);
  assert_int_equal(policy_chain_add(f.chain, m), 0);
  struct policy_env e = env_of(&f);
  struct got_domain g = {0};
  in_call_flag = true;
  assert_int_equal(
      policy_chain_prepare_domain(f.chain, &e, "Example.TEST.", on_domain, &g),
      0);
  in_call_flag = false;
  uv_run(&f.loop, UV_RUN_DEFAULT);
  assert_true(g.called);
  assert_false(g.in_call);
  /* A timeout (or SERVFAIL) with nothing cached: no policy, logged and
   * counted. A domain that never deployed MTA-STS must not wait for its
   * broken DNS; a known domain is protected by its cached policy. */
  assert_int_equal(g.r.outcome, POLICY_OK);
  assert_int_equal(n_txt_failed, 1);
  assert_int_equal(n_txt_failed_no_policy, 1);
  struct policy_mx mx = {
      .domain = "example.test", .host = "anything.example.net", .port = 25};
  struct policy_mx_verdict v;
  policy_chain_check_mx(g.run, &mx, &v);
  assert_int_equal(v.result.outcome, POLICY_OK);
  assert_int_equal(v.level, POLICY_MX_LEVEL_NONE);
  char desc[256];
  policy_domain_run_describe(g.run, desc, sizeof desc);
  assert_non_null(strstr(desc, "mtasts: no policy"));
  policy_domain_run_free(g.run);
  fx_done(&f);
  /* The cache was created under state_dir on first use. */
  char path[256];
  snprintf(path, sizeof path, "%s/mtasts/data.mdb", dir);
  assert_int_equal(access(path, F_OK), 0);
  snprintf(path, sizeof path, "rm -rf '%s'", dir);
  assert_int_equal(system(path), 0);
}

/* ---- mtasts with a cached policy (the resolver never answers, so every
 * TXT lookup fails) ---- */

static char *mts_dir(void) {
  char *dir = malloc(64);
  assert_non_null(dir);
  snprintf(dir, 64, "/tmp/postern-chain-test-XXXXXX");
  assert_non_null(mkdtemp(dir));
  return dir;
}

static void mts_dir_free(char *dir) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
  free(dir);
}

/* Caches `mode` for example.test (mx mx.example.test), valid from `now` for
 * a day; `last_used` as given. The module shares this process's handle. */
static void cache_policy(const char *dir, const char *domain,
                         enum policy_mtasts_mode mode, uint64_t now,
                         uint64_t expires, uint64_t last_used) {
  struct policy_mtasts_cache *c;
  assert_int_equal(policy_mtasts_cache_open(dir, 0, &c), 0);
  struct policy_mtasts_rec *r = calloc(1, sizeof *r);
  snprintf(r->id, sizeof r->id, "1");
  r->fetched = now;
  r->expires = expires;
  r->last_used = last_used;
  r->policy.mode = mode;
  r->policy.max_age = (uint32_t)(expires - now);
  r->policy.n_mx = 1;
  snprintf(r->policy.mx[0], sizeof r->policy.mx[0], "mx.example.test");
  assert_int_equal(policy_mtasts_cache_put(c, domain, r, now), 0);
  free(r);
  policy_mtasts_cache_release(c);
}

static void add_mtasts(struct fx *f, const char *dir, uint64_t refresh_ms) {
  struct policy_mtasts_opts o = {.state_dir = dir,
                                 .https_port = 443,
                                 .fetch_timeout_ms = 1000,
                                 .max_policy_size = 65536,
                                 .refresh_interval_ms = refresh_ms};
  struct policy_module m;
  assert_int_equal(policy_mtasts_new(&o, &m), 0);
  assert_int_equal(policy_chain_add(f->chain, m), 0);
}

#define NOW_S 1700000000ull

static void prepare_at(struct fx *f, const char *domain, bool routed,
                       struct got_domain *g) {
  struct policy_env e = env_of(f);
  e.now_ms = NOW_S * 1000;
  e.routed = routed;
  memset(g, 0, sizeof *g);
  assert_int_equal(
      policy_chain_prepare_domain(f->chain, &e, domain, on_domain, g), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_true(g->called);
}

/* An attacker who blocks the TXT lookup does not downgrade a domain with a
 * cached enforce policy: an MX it does not list is still refused. */
static void test_mtasts_txt_failure_uses_cache(void **state) {
  (void)state;
  char *dir = mts_dir();
  cache_policy(dir, "example.test", POLICY_MTASTS_MODE_ENFORCE, NOW_S - 10,
               NOW_S + 86400, NOW_S - 10);
  struct fx f;
  fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
  add_mtasts(&f, dir, 0);
  struct got_domain g;
  prepare_at(&f, "example.test", false, &g);
  assert_int_equal(g.r.outcome, POLICY_OK);
  assert_int_equal(n_txt_failed, 1);
  assert_int_equal(n_txt_failed_no_policy, 0);
  struct policy_mx mx = {
      .domain = "example.test", .host = "evil.example.net", .port = 25};
  struct policy_mx_verdict v;
  policy_chain_check_mx(g.run, &mx, &v);
  assert_int_equal(v.result.outcome, POLICY_TEMPFAIL);
  assert_string_equal(v.result.status, "4.7.5");
  mx.host = "mx.example.test";
  policy_chain_check_mx(g.run, &mx, &v);
  assert_int_equal(v.result.outcome, POLICY_OK);
  assert_int_equal(v.level, POLICY_MX_LEVEL_MTASTS);
  policy_domain_run_free(g.run);
  /* An expired policy no longer applies: no policy. */
  fx_done(&f);
  cache_policy(dir, "example.test", POLICY_MTASTS_MODE_ENFORCE, NOW_S - 86400,
               NOW_S, NOW_S - 10);
  fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
  add_mtasts(&f, dir, 0);
  prepare_at(&f, "example.test", false, &g);
  assert_int_equal(g.r.outcome, POLICY_OK);
  assert_int_equal(n_txt_failed_no_policy, 1);
  mx.host = "evil.example.net";
  policy_chain_check_mx(g.run, &mx, &v);
  assert_int_equal(v.result.outcome, POLICY_OK);
  policy_domain_run_free(g.run);
  fx_done(&f);
  mts_dir_free(dir);
}

/* Testing mode: plaintext (a missing or stripped STARTTLS) is a testing
 * failure, logged and counted - except for the engine's hypothetical
 * check before a plaintext retry. Under enforce the hypothetical check
 * refuses plaintext without counting anything. */
static void test_mtasts_plaintext(void **state) {
  (void)state;
  char *dir = mts_dir();
  cache_policy(dir, "testing.test", POLICY_MTASTS_MODE_TESTING, NOW_S - 10,
               NOW_S + 86400, NOW_S - 10);
  cache_policy(dir, "enforce.test", POLICY_MTASTS_MODE_ENFORCE, NOW_S - 10,
               NOW_S + 86400, NOW_S - 10);
  static const struct {
    const char *domain;
    bool hypothetical;
    enum policy_tls_level reached;
    enum policy_outcome outcome;
    int counted;
  } cases[] = {
      {"testing.test", true, POLICY_TLS_LEVEL_NONE, POLICY_OK, 0},
      {"testing.test", false, POLICY_TLS_LEVEL_NONE, POLICY_OK, 1},
      {"testing.test", false, POLICY_TLS_LEVEL_ENCRYPTED, POLICY_OK, 1},
      {"testing.test", false, POLICY_TLS_LEVEL_AUTHENTICATED, POLICY_OK, 0},
      {"enforce.test", true, POLICY_TLS_LEVEL_NONE, POLICY_TEMPFAIL, 0},
      {"enforce.test", false, POLICY_TLS_LEVEL_NONE, POLICY_TEMPFAIL, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct fx f;
    fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
    add_mtasts(&f, dir, 0);
    struct got_domain g;
    prepare_at(&f, cases[i].domain, false, &g);
    assert_int_equal(g.r.outcome, POLICY_OK);
    struct policy_mx mx = {
        .domain = cases[i].domain, .host = "mx.example.test", .port = 25};
    struct got_conn c;
    prepare_conn(&f, g.run, &mx, false, &c);
    struct policy_conn pc = {.host = "mx.example.test",
                             .reached = cases[i].reached,
                             .pkix_ok = true,
                             .name_ok = true,
                             .verify_error = "",
                             .hypothetical = cases[i].hypothetical};
    struct policy_conn_verdict v;
    policy_chain_check_conn(c.crun, &pc, &v);
    if (v.result.outcome != cases[i].outcome ||
        n_testing_tls != cases[i].counted)
      fail_msg("case %zu (%s, hypothetical %d, reached %s): outcome %d, "
               "counted %d",
               i, cases[i].domain, cases[i].hypothetical,
               policy_tls_level_name(cases[i].reached), v.result.outcome,
               n_testing_tls);
    policy_conn_run_free(c.crun);
    policy_domain_run_free(g.run);
    fx_done(&f);
  }
  mts_dir_free(dir);
}

/* RFC 8461 §3.4: a route's host is the policy domain; an IP address has
 * none, so there is nothing to look up. */
static void test_mtasts_routes(void **state) {
  (void)state;
  char *dir = mts_dir();
  static const struct {
    const char *host;
    int txt_lookups;
  } cases[] = {
      {"192.0.2.1", 0},
      {"2001:db8::25", 0},
      {"[2001:db8::25]", 0},
      {"smarthost.example.test", 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct fx f;
    fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
    add_mtasts(&f, dir, 0);
    struct got_domain g;
    prepare_at(&f, cases[i].host, true, &g);
    assert_int_equal(g.r.outcome, POLICY_OK);
    if (n_txt_failed != cases[i].txt_lookups)
      fail_msg("route to %s: %d failed TXT lookups, want %d", cases[i].host,
               n_txt_failed, cases[i].txt_lookups);
    policy_domain_run_free(g.run);
    fx_done(&f);
  }
  /* A cached policy of the smart host's domain applies to the route. */
  cache_policy(dir, "smarthost.example.test", POLICY_MTASTS_MODE_ENFORCE,
               NOW_S - 10, NOW_S + 86400, NOW_S - 10);
  struct fx f;
  fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
  add_mtasts(&f, dir, 0);
  struct got_domain g;
  prepare_at(&f, "smarthost.example.test", true, &g);
  struct policy_mx mx = {.domain = "recipient.example",
                         .host = "smarthost.example.test",
                         .port = 587,
                         .routed = true};
  struct policy_mx_verdict v;
  policy_chain_check_mx(g.run, &mx, &v);
  assert_int_equal(v.result.outcome, POLICY_TEMPFAIL);
  assert_non_null(strstr(v.result.reason, "smarthost.example.test"));
  policy_domain_run_free(g.run);
  fx_done(&f);
  mts_dir_free(dir);
}

/* ---- maintenance: eviction and gauges ---- */

static uint64_t g_entries, g_map;
static int n_gauges;

static void gauge_cb(const char *module, const char *name, uint64_t value) {
  assert_string_equal(module, "mtasts");
  n_gauges++;
  if (strcmp(name, "cache_entries") == 0)
    g_entries = value;
  else if (strcmp(name, "cache_map_bytes") == 0)
    g_map = value;
}

static void test_mtasts_maintain(void **state) {
  (void)state;
  char *dir = mts_dir();
  cache_policy(dir, "live.test", POLICY_MTASTS_MODE_ENFORCE, NOW_S - 10,
               NOW_S + 86400, NOW_S - 10);
  cache_policy(dir, "expired.test", POLICY_MTASTS_MODE_ENFORCE, NOW_S - 100,
               NOW_S - 1, NOW_S - 10);
  struct fx f;
  fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
  add_mtasts(&f, dir, 8000);
  struct policy_env e = env_of(&f);
  e.now_ms = NOW_S * 1000;
  e.gauge = gauge_cb;
  /* No HTTPS client: nothing is refreshed, the upkeep still happens. The
   * next pass comes after a quarter of the refresh interval. */
  assert_int_equal(policy_chain_maintain(f.chain, &e), 2000);
  assert_int_equal(g_entries, 1);
  assert_int_equal(g_map, POLICY_MTASTS_CACHE_SIZE_DEFAULT);
  assert_int_equal(n_gauges, 3);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  fx_done(&f);
  struct policy_mtasts_cache_stat st;
  assert_int_equal(policy_mtasts_cache_stat_dir(dir, &st), 0);
  assert_int_equal(st.entries, 1);
  /* A chain without maintain ops asks for the default period. */
  fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
  assert_int_equal(policy_chain_maintain(f.chain, &e),
                   POLICY_MAINTAIN_DEFAULT_MS);
  fx_done(&f);
  mts_dir_free(dir);
}

/* Which cached policies a maintenance pass refreshes: those in use (a
 * delivery used them within 30 days) that are due (a refresh interval old,
 * or half their max_age if sooner) and not tried too recently. Each
 * refresh starts with the address of mta-sts.<domain>, which the silent
 * resolver never gives: every refresh started ends as one fetch_failed. */
static void test_mtasts_refresh_selection(void **state) {
  (void)state;
  char *dir = mts_dir();
  const uint64_t day = 86400;
  /* due: fetched over a day ago, used yesterday */
  cache_policy(dir, "due.test", POLICY_MTASTS_MODE_ENFORCE, NOW_S - day - 5,
               NOW_S + 300 * day, NOW_S - day);
  /* half its max_age (10 minutes) is over, though a day is not */
  cache_policy(dir, "short.test", POLICY_MTASTS_MODE_ENFORCE, NOW_S - 301,
               NOW_S - 301 + 600, NOW_S - 301);
  /* not in use: last used 31 days ago */
  cache_policy(dir, "unused.test", POLICY_MTASTS_MODE_ENFORCE, NOW_S - 31 * day,
               NOW_S + 300 * day, NOW_S - 31 * day);
  /* fresh: fetched an hour ago */
  cache_policy(dir, "fresh.test", POLICY_MTASTS_MODE_ENFORCE, NOW_S - 3600,
               NOW_S + 300 * day, NOW_S - 3600);
  /* due, but a refresh was tried an hour ago (retry after 6 hours) */
  cache_policy(dir, "tried.test", POLICY_MTASTS_MODE_ENFORCE, NOW_S - 2 * day,
               NOW_S + 300 * day, NOW_S - day);
  struct policy_mtasts_cache *c;
  assert_int_equal(policy_mtasts_cache_open(dir, 0, &c), 0);
  assert_int_equal(policy_mtasts_cache_touch(c, "tried.test", 0, NOW_S - 3600),
                   0);
  struct fx f;
  fx_init(&f, POLICY_TLS_LEVEL_NONE, POLICY_MX_LEVEL_NONE);
  add_mtasts(&f, dir, 0);
  assert_int_equal(https_global_init(), 0);
  struct https_client *hc;
  assert_int_equal(https_client_new(&f.loop, &hc), 0);
  struct policy_env e = env_of(&f);
  e.https = hc;
  e.now_ms = NOW_S * 1000;
  assert_int_equal(policy_chain_maintain(f.chain, &e),
                   POLICY_MAINTAIN_DEFAULT_MS);
  https_client_close(hc, NULL, NULL);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  assert_int_equal(n_mts_other, 2); /* two fetch_failed: due, short */
  struct policy_mtasts_rec *r = calloc(1, sizeof *r);
  static const struct {
    const char *domain;
    uint64_t tried;
  } want[] = {{"due.test", NOW_S},
              {"short.test", NOW_S},
              {"unused.test", 0},
              {"fresh.test", 0},
              {"tried.test", NOW_S - 3600}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    assert_int_equal(policy_mtasts_cache_get(c, want[i].domain, r), 0);
    if (r->tried != want[i].tried)
      fail_msg("%s: tried %llu, want %llu", want[i].domain,
               (unsigned long long)r->tried, (unsigned long long)want[i].tried);
  }
  free(r);
  /* A second pass right away starts nothing: both were just tried. */
  n_mts_other = 0;
  assert_int_equal(https_client_new(&f.loop, &hc), 0);
  e.https = hc;
  policy_chain_maintain(f.chain, &e);
  https_client_close(hc, NULL, NULL);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  assert_int_equal(n_mts_other, 0);
  policy_mtasts_cache_release(c);
  fx_done(&f);
  mts_dir_free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mx_levels),
      cmocka_unit_test(test_no_lookup_without_dnssec),
      cmocka_unit_test(test_failed_tlsa_lookup_is_tempfail),
      cmocka_unit_test(test_dane_usable_overrides_pkix),
      cmocka_unit_test(test_conn_verdict_mx_level),
      cmocka_unit_test(test_sync_answers),
      cmocka_unit_test(test_mtasts_txt_failure_no_policy),
      cmocka_unit_test(test_mtasts_txt_failure_uses_cache),
      cmocka_unit_test(test_mtasts_plaintext),
      cmocka_unit_test(test_mtasts_routes),
      cmocka_unit_test(test_mtasts_maintain),
      cmocka_unit_test(test_mtasts_refresh_selection),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
