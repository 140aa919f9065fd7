/*
 * levels_test.c - the security-level model: names round-trip through the
 * parsers, levels are ordered, and the protection table is DESIGN.md's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "policy/chain.h"
#include "base/postern_err.h"

static void test_names_round_trip(void **state) {
  (void)state;
  static const char *const mx[] = {"none", "mtasts", "dnssec"};
  static const char *const tls[] = {"none", "encrypted", "authenticated"};
  for (int i = 0; i < POLICY_MX_LEVEL_COUNT; i++) {
    enum policy_mx_level l;
    assert_string_equal(policy_mx_level_name((enum policy_mx_level)i), mx[i]);
    assert_int_equal(policy_mx_level_parse(mx[i], &l), 0);
    assert_int_equal(l, i);
  }
  for (int i = 0; i < POLICY_TLS_LEVEL_COUNT; i++) {
    enum policy_tls_level l;
    assert_string_equal(policy_tls_level_name((enum policy_tls_level)i),
                        tls[i]);
    assert_int_equal(policy_tls_level_parse(tls[i], &l), 0);
    assert_int_equal(l, i);
  }
  assert_int_equal(POLICY_MX_LEVEL_COUNT, 3);
  assert_int_equal(POLICY_TLS_LEVEL_COUNT, 3);
}

static void test_parse_rejects(void **state) {
  (void)state;
  static const char *const bad[] = {
      "", "None", "DNSSEC", "dnssec ", "tls", "authenticated\n", "mta-sts"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    enum policy_mx_level m = POLICY_MX_LEVEL_DNSSEC;
    enum policy_tls_level t = POLICY_TLS_LEVEL_ENCRYPTED;
    assert_int_equal(policy_mx_level_parse(bad[i], &m), POSTERN_EINVAL);
    assert_int_equal(policy_tls_level_parse(bad[i], &t), POSTERN_EINVAL);
    assert_int_equal(m, POLICY_MX_LEVEL_DNSSEC); /* untouched */
    assert_int_equal(t, POLICY_TLS_LEVEL_ENCRYPTED);
  }
  enum policy_mx_level m;
  assert_int_equal(policy_mx_level_parse(NULL, &m), POSTERN_EINVAL);
  assert_int_equal(policy_mx_level_parse("none", NULL), POSTERN_EINVAL);
  assert_string_equal(policy_mx_level_name((enum policy_mx_level)7), "unknown");
  assert_string_equal(policy_tls_level_name((enum policy_tls_level) - 1),
                      "unknown");
}

static void test_order(void **state) {
  (void)state;
  assert_true(POLICY_MX_LEVEL_NONE < POLICY_MX_LEVEL_MTASTS);
  assert_true(POLICY_MX_LEVEL_MTASTS < POLICY_MX_LEVEL_DNSSEC);
  assert_true(POLICY_TLS_LEVEL_NONE < POLICY_TLS_LEVEL_ENCRYPTED);
  assert_true(POLICY_TLS_LEVEL_ENCRYPTED < POLICY_TLS_LEVEL_AUTHENTICATED);
}

/* The table of DESIGN.md "Security levels", row by row. */
static void test_protection_table(void **state) {
  (void)state;
  static const char *const table[3][3] = {
      /* tls: none, encrypted, authenticated */
      {"none", "passive", "passive"}, /* mx none */
      {"none", "passive", "active"},  /* mx mtasts */
      {"none", "passive", "active"},  /* mx dnssec */
  };
  for (int m = 0; m < 3; m++)
    for (int t = 0; t < 3; t++)
      assert_string_equal(
          policy_protection_name(policy_protection_of(
              (enum policy_mx_level)m, (enum policy_tls_level)t)),
          table[m][t]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_round_trip),
      cmocka_unit_test(test_parse_rejects),
      cmocka_unit_test(test_order),
      cmocka_unit_test(test_protection_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
