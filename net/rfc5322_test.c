/*
 * rfc5322_test.c - finding a header field's value (rfc5322_header_value),
 * as a table: names in any case, folded values, fields in the body not
 * found, LF-only messages, cut values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "net/rfc5322.h"

#include <string.h>

static const struct {
  const char *msg, *name;
  int rc;
  const char *want;
} cases[] = {
    {"TLS-Required: No\r\n\r\nbody", "TLS-Required", 0, "No"},
    {"tls-required:no\r\n\r\n", "TLS-Required", 0, "no"},
    {"Subject: x\r\nTLS-Required:   No  \r\n\r\n", "tls-required", 0, "No"},
    {"TLS-Required: \r\n No\r\n\r\n", "TLS-Required", 0, "No"},
    {"Subject: a\r\n folded\r\n\tmore\r\nX: y\r\n\r\n", "Subject", 0,
     "a folded more"},
    {"Subject: x\r\n\r\nTLS-Required: No\r\n", "TLS-Required", POSTERN_ENOENT,
     ""},
    {"Subject: x\nTLS-Required: No\n\nbody\n", "TLS-Required", 0, "No"},
    {"TLS-Required-Not: No\r\n\r\n", "TLS-Required", POSTERN_ENOENT, ""},
    {"X-TLS-Required: No\r\n\r\n", "TLS-Required", POSTERN_ENOENT, ""},
    {"TLS-Required: No", "TLS-Required", 0, "No"},
    {"", "TLS-Required", POSTERN_ENOENT, ""},
    {"A: first\r\nA: second\r\n\r\n", "A", 0, "first"},
};

static void test_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char out[64] = "unchanged";
    int rc = rfc5322_header_value(cases[i].msg, strlen(cases[i].msg),
                                  cases[i].name, out, sizeof out);
    if (rc != cases[i].rc)
      fail_msg("case %zu: rc %d, want %d", i, rc, cases[i].rc);
    if (rc == 0 && strcmp(out, cases[i].want) != 0)
      fail_msg("case %zu: '%s', want '%s'", i, out, cases[i].want);
  }
  char small[4];
  assert_int_equal(
      rfc5322_header_value("A: abcdef\r\n\r\n", 13, "A", small, sizeof small),
      0);
  assert_string_equal(small, "abc");
  assert_int_equal(rfc5322_header_value(NULL, 0, "A", small, sizeof small),
                   POSTERN_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_table)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
