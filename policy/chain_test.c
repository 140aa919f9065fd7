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
#include "policy/chain.h"
#include "postern_err.h"

/* ---- counters (env->count) ---- */

static int n_insecure, n_tempfail, n_other;

static int n_txt_failed;

static void counter(const char *module, const char *outcome) {
  if (strcmp(module, "mtasts") == 0) {
    assert_string_equal(outcome, "txt_failed");
    n_txt_failed++;
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
  n_insecure = n_tempfail = n_other = n_txt_failed = 0;
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

/* ---- mtasts: a failed TXT lookup with nothing cached defers ---- */

static void test_mtasts_txt_failure_defers(void **state) {
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
  /* SERVFAIL/timeout is not "no policy" (RFC 8461 §3.1, fail closed). */
  assert_int_equal(g.r.outcome, POLICY_TEMPFAIL);
  assert_string_equal(g.r.status, "4.7.5");
  assert_string_equal(g.r.module, "mtasts");
  assert_non_null(strstr(g.r.reason, "_mta-sts.example.test"));
  assert_int_equal(n_txt_failed, 1);
  policy_domain_run_free(g.run);
  fx_done(&f);
  /* The cache was created under state_dir on first use. */
  char path[256];
  snprintf(path, sizeof path, "%s/mtasts/data.mdb", dir);
  assert_int_equal(access(path, F_OK), 0);
  snprintf(path, sizeof path, "rm -rf '%s'", dir);
  assert_int_equal(system(path), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mx_levels),
      cmocka_unit_test(test_no_lookup_without_dnssec),
      cmocka_unit_test(test_failed_tlsa_lookup_is_tempfail),
      cmocka_unit_test(test_dane_usable_overrides_pkix),
      cmocka_unit_test(test_conn_verdict_mx_level),
      cmocka_unit_test(test_sync_answers),
      cmocka_unit_test(test_mtasts_txt_failure_defers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
