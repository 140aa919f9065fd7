/*
 * destination_test.c - how a destination block combines with the chain, as
 * a table: the operator's global minimums (local), another module's
 * requirement (standing in for an MTA-STS enforce policy), the block's
 * minimums (stricter or looser), REQUIRETLS floors and pinned digests,
 * against the level a session or MX candidate reached. The strictest
 * requirement wins, except that a block's minimum replaces local's (an
 * explicit loosening); floors and other modules are never lowered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "policy/chain.h"

#include <openssl/sha.h>
#include <string.h>
#include <uv.h>

/* A module that requires a TLS level (as MTA-STS enforce does), and an MX
 * level; its state is the pair. */
struct need {
  enum policy_tls_level tls;
  enum policy_mx_level mx;
  enum policy_mx_level raise_to; /* the MX level the candidate reaches */
};

static void need_check_mx(void *state, void *pd, const struct policy_mx *mx,
                          struct policy_mx_verdict *v) {
  (void)pd, (void)mx;
  const struct need *n = state;
  if (v->required < n->mx)
    v->required = n->mx;
  if (v->level < n->raise_to)
    v->level = n->raise_to;
}

static void need_check_conn(void *state, void *pd, void *pc,
                            const struct policy_conn *c,
                            struct policy_conn_verdict *v) {
  (void)pd, (void)pc, (void)c;
  const struct need *n = state;
  if (v->required < n->tls)
    v->required = n->tls;
}

static const struct policy_module_ops need_ops = {
    .name = "need",
    .check_mx = need_check_mx,
    .check_conn = need_check_conn,
};

enum { NO_BLOCK = -1 };
enum pin { PIN_NONE, PIN_MATCH, PIN_OTHER };

static const struct row {
  const char *what;
  enum policy_tls_level local_min; /* policy { local { min_tls_level } } */
  enum policy_tls_level other;     /* another module's requirement */
  int block_min;                   /* NO_BLOCK, or the block's min_tls */
  enum policy_tls_level floor;     /* REQUIRETLS */
  enum pin pin;
  bool dane_usable;
  enum policy_tls_level reached;
  bool ok;
} rows[] = {
    {"nothing asks", 0, 0, NO_BLOCK, 0, PIN_NONE, false, 1, true},
    {"local asks encrypted, plaintext", 1, 0, NO_BLOCK, 0, PIN_NONE, false, 0,
     false},
    {"block loosens local to none", 1, 0, 0, 0, PIN_NONE, false, 0, true},
    {"block loosens local, other module still requires", 0, 2, 0, 0, PIN_NONE,
     false, 1, false},
    {"block stricter than local", 0, 0, 2, 0, PIN_NONE, false, 1, false},
    {"block stricter, met", 0, 0, 2, 0, PIN_NONE, false, 2, true},
    {"pinned digest matches", 0, 0, 2, 0, PIN_MATCH, false, 1, true},
    {"pinned digest, other certificate", 0, 0, 2, 0, PIN_OTHER, false, 1,
     false},
    {"pin also satisfies another module", 0, 2, NO_BLOCK, 0, PIN_NONE, false, 1,
     false},
    {"pin satisfies another module's requirement", 0, 2, 0, 0, PIN_MATCH, false,
     1, true},
    {"DANE governs: a pin does not count", 0, 0, 2, 0, PIN_MATCH, true, 1,
     false},
    {"REQUIRETLS floor beats a looser block", 0, 0, 0, 2, PIN_NONE, false, 1,
     false},
    {"REQUIRETLS floor met", 0, 0, 0, 2, PIN_NONE, false, 2, true},
    {"REQUIRETLS floor met by a pin", 0, 0, NO_BLOCK, 2, PIN_MATCH, false, 1,
     true},
};

static const struct mx_row {
  const char *what;
  enum policy_mx_level local_min, other;
  int block_min;
  enum policy_mx_level floor, reached;
  bool ok;
} mx_rows[] = {
    {"nothing asks", 0, 0, NO_BLOCK, 0, 0, true},
    {"local asks dnssec", 2, 0, NO_BLOCK, 0, 1, false},
    {"block loosens local to none", 2, 0, 0, 0, 0, true},
    {"block loosens, other module still requires", 2, 1, 0, 0, 0, false},
    {"block asks dnssec, mtasts reached", 0, 0, 2, 0, 1, false},
    {"REQUIRETLS floor mtasts, none reached", 0, 0, 0, 1, 0, false},
    {"REQUIRETLS floor mtasts, dnssec reached", 0, 0, NO_BLOCK, 1, 2, true},
};

static void on_domain(void *arg, struct policy_domain_run *run,
                      const struct policy_result *r) {
  assert_int_equal(r->outcome, POLICY_OK);
  *(struct policy_domain_run **)arg = run;
}

static struct policy_conn_run *got_crun;
static void on_conn(void *arg, struct policy_conn_run *crun,
                    const struct policy_conn_req *req) {
  (void)arg;
  assert_int_equal(req->result.outcome, POLICY_OK);
  got_crun = crun;
}

/* A chain of local and `need`, a domain run with the block (or none). */
static struct policy_domain_run *
run_for(uv_loop_t *loop, struct policy_chain **chain, struct need *need,
        enum policy_tls_level local_tls, enum policy_mx_level local_mx,
        const struct policy_dest *dest) {
  assert_int_equal(policy_chain_new(chain), 0);
  struct policy_module m;
  policy_local_new(local_tls, local_mx, &m);
  assert_int_equal(policy_chain_add(*chain, m), 0);
  assert_int_equal(
      policy_chain_add(*chain, (struct policy_module){&need_ops, need}), 0);
  struct policy_env env = {.loop = loop, .dest = dest};
  struct policy_domain_run *run = NULL;
  assert_int_equal(
      policy_chain_prepare_domain(*chain, &env, "dest.test", on_domain, &run),
      0);
  uv_run(loop, UV_RUN_DEFAULT);
  assert_non_null(run);
  return run;
}

static void test_tls_table(void **state) {
  (void)state;
  static const uint8_t leaf[] = "a certificate's DER, as far as pins go";
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    const struct row *t = &rows[i];
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct policy_dest d = {0};
    snprintf(d.pattern, sizeof d.pattern, "dest.test");
    d.has_min_tls = t->block_min != NO_BLOCK;
    d.min_tls = t->block_min == NO_BLOCK ? 0 : t->block_min;
    d.floor_tls = t->floor;
    if (t->pin != PIN_NONE) {
      SHA256(leaf, sizeof leaf - (t->pin == PIN_OTHER), d.pins[0]);
      d.npins = 1;
    }
    bool any = t->block_min != NO_BLOCK || t->floor || t->pin != PIN_NONE;
    struct need need = {.tls = t->other};
    struct policy_chain *chain;
    struct policy_domain_run *run =
        run_for(&loop, &chain, &need, t->local_min, 0, any ? &d : NULL);
    struct policy_mx mx = {.domain = "dest.test", .host = "mx.dest.test"};
    struct policy_host h = {.mx = &mx};
    struct policy_env env = {.loop = &loop};
    got_crun = NULL;
    assert_int_equal(policy_chain_prepare_conn(run, &env, &h, on_conn, NULL),
                     0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_non_null(got_crun);
    const uint8_t *ders[1] = {leaf};
    size_t lens[1] = {sizeof leaf};
    struct policy_conn c = {.host = "mx.dest.test",
                            .reached = t->reached,
                            .verify_error = "",
                            .chain_len = 1,
                            .chain_der = ders,
                            .chain_der_len = lens,
                            .dane_usable = t->dane_usable};
    struct policy_conn_verdict v;
    policy_chain_check_conn(got_crun, &c, &v);
    if ((v.result.outcome == POLICY_OK) != t->ok)
      fail_msg("row %zu (%s): outcome %d, level %d, required %d", i, t->what,
               v.result.outcome, v.level, v.required);
    policy_conn_run_free(got_crun);
    policy_domain_run_free(run);
    policy_chain_free(chain);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
  }
}

static void test_mx_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof mx_rows / sizeof mx_rows[0]; i++) {
    const struct mx_row *t = &mx_rows[i];
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct policy_dest d = {0};
    d.has_min_mx = t->block_min != NO_BLOCK;
    d.min_mx = t->block_min == NO_BLOCK ? 0 : t->block_min;
    d.floor_mx = t->floor;
    bool any = t->block_min != NO_BLOCK || t->floor;
    struct need need = {.mx = t->other, .raise_to = t->reached};
    struct policy_chain *chain;
    struct policy_domain_run *run =
        run_for(&loop, &chain, &need, 0, t->local_min, any ? &d : NULL);
    /* `need` raises the candidate to the row's level, as the mtasts or
     * dnssec module would; the chain then compares it with the strictest
     * requirement. */
    struct policy_mx mx = {.domain = "dest.test", .host = "mx.dest.test"};
    struct policy_mx_verdict v;
    policy_chain_check_mx(run, &mx, &v);
    bool ok = v.result.outcome == POLICY_OK;
    if (ok != t->ok)
      fail_msg("row %zu (%s): required %d, outcome %d", i, t->what, v.required,
               v.result.outcome);
    policy_domain_run_free(run);
    policy_chain_free(chain);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tls_table),
      cmocka_unit_test(test_mx_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
