/*
 * units_test.c - durations and sizes (base/postern_units.h), table-driven:
 * both parse variants (the config's, where only 0 goes without a unit, and
 * qtool's, where a bare number is seconds), both formats (exact and the
 * coarse age), sizes, and the digit reader's position and overflow. The
 * config's own forms are pinned again, through its wrappers, by
 * engine/config_test.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "base/postern_units.h"

#include <string.h>

#define N(a) (sizeof a / sizeof a[0])
#define BARE POSTERN_DURATION_BARE_SECONDS

struct parse_case {
  const char *in;
  unsigned flags;
  int rc;
  uint64_t ms;
};

static void test_duration_parse(void **state) {
  (void)state;
  static const struct parse_case cases[] = {
      {"0", 0, 0, 0},
      {"250ms", 0, 0, 250},
      {"1h30m", 0, 0, 5400000},
      {"1d2h3m4s5ms", 0, 0, 93784005},
      {"30", 0, POSTERN_EINVAL, 0},
      {"1h30", 0, POSTERN_EINVAL, 0},
      {"30m1h", 0, POSTERN_EINVAL, 0},
      {"", 0, POSTERN_EINVAL, 0},
      {"-5s", 0, POSTERN_EINVAL, 0},
      {"5M", 0, POSTERN_EINVAL, 0},
      {"99999999999999999999s", 0, POSTERN_ERANGE, 0},
      {"213503982335d", 0, POSTERN_ERANGE, 0},
      /* qtool: a bare number is seconds, every other form as above. */
      {"90", BARE, 0, 90000},
      {"0", BARE, 0, 0},
      {"30s", BARE, 0, 30000},
      {"5m", BARE, 0, 300000},
      {"2h", BARE, 0, 7200000},
      {"5d", BARE, 0, 432000000},
      {"1d12h", BARE, 0, 129600000},
      {"1h30", BARE, POSTERN_EINVAL, 0},
      {"5x", BARE, POSTERN_EINVAL, 0},
      {"-5", BARE, POSTERN_EINVAL, 0},
      {"", BARE, POSTERN_EINVAL, 0},
      {"18446744073709552s", BARE, POSTERN_ERANGE, 0},
      {"18446744073709552", BARE, POSTERN_ERANGE, 0},
      {"18446744073709551", BARE, 0, UINT64_C(18446744073709551000)},
  };
  for (size_t i = 0; i < N(cases); i++) {
    uint64_t v = 7;
    const char *why = NULL;
    int rc = postern_duration_parse(cases[i].in, strlen(cases[i].in),
                                    cases[i].flags, &v, &why);
    if (rc != cases[i].rc)
      fail_msg("duration '%s' flags %u: rc %d, want %d", cases[i].in,
               cases[i].flags, rc, cases[i].rc);
    if (rc) {
      assert_non_null(why);
      assert_int_equal(v, 7); /* untouched */
    } else {
      assert_int_equal(v, cases[i].ms);
    }
  }
  /* Only the n bytes given are read. */
  uint64_t v;
  const char *why;
  assert_int_equal(postern_duration_parse("5mx", 2, 0, &v, &why), 0);
  assert_int_equal(v, 300000);
}

struct format_case {
  uint64_t ms;
  unsigned flags;
  const char *out;
};

static void test_duration_format(void **state) {
  (void)state;
  static const struct format_case cases[] = {
      {0, 0, "0"},
      {1500, 0, "1s500ms"},
      {5400000, 0, "1h30m"},
      {93784005, 0, "1d2h3m4s5ms"},
      {UINT64_MAX, 0, "213503982334d14h25m51s615ms"},
      {0, POSTERN_DURATION_COARSE, "0s"},
      {999, POSTERN_DURATION_COARSE, "0s"},
      {45999, POSTERN_DURATION_COARSE, "45s"},
      {60000, POSTERN_DURATION_COARSE, "1m0s"},
      {754000, POSTERN_DURATION_COARSE, "12m34s"},
      {7200000, POSTERN_DURATION_COARSE, "2h0m"},
      {7259999, POSTERN_DURATION_COARSE, "2h0m"},
      {273900000, POSTERN_DURATION_COARSE, "3d4h"},
      {93784005, POSTERN_DURATION_COARSE, "1d2h"},
      {UINT64_MAX, POSTERN_DURATION_COARSE, "213503982334d14h"},
  };
  for (size_t i = 0; i < N(cases); i++) {
    char buf[32];
    postern_duration_format(cases[i].ms, cases[i].flags, buf, sizeof buf);
    assert_string_equal(buf, cases[i].out);
    if (cases[i].flags == 0) {
      /* The exact text reads back to the same value. */
      uint64_t v;
      const char *why;
      assert_int_equal(postern_duration_parse(buf, strlen(buf), 0, &v, &why),
                       0);
      assert_int_equal(v, cases[i].ms);
    }
  }
  char tiny[4];
  postern_duration_format(93784005, 0, tiny, sizeof tiny);
  assert_string_equal(tiny, "1d2");
  postern_duration_format(93784005, POSTERN_DURATION_COARSE, tiny, sizeof tiny);
  assert_string_equal(tiny, "1d2");
}

static void test_size(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int rc;
    uint64_t bytes;
    const char *canon;
  } cases[] = {
      {"0", 0, 0, "0"},
      {"1536", 0, 1536, "1536"},
      {"512k", 0, 524288, "512K"},
      {"1024M", 0, UINT64_C(1073741824), "1G"},
      {"16777215T", 0, UINT64_C(16777215) << 40, "16777215T"},
      {"16777216T", POSTERN_ERANGE, 0, NULL},
      {"32MB", POSTERN_EINVAL, 0, NULL},
      {"K", POSTERN_EINVAL, 0, NULL},
      {"", POSTERN_EINVAL, 0, NULL},
  };
  for (size_t i = 0; i < N(cases); i++) {
    uint64_t v = 0;
    const char *why = NULL;
    int rc = postern_size_parse(cases[i].in, strlen(cases[i].in), &v, &why);
    if (rc != cases[i].rc)
      fail_msg("size '%s': rc %d, want %d", cases[i].in, rc, cases[i].rc);
    if (rc) {
      assert_non_null(why);
      continue;
    }
    assert_int_equal(v, cases[i].bytes);
    char buf[32];
    postern_size_format(v, buf, sizeof buf);
    assert_string_equal(buf, cases[i].canon);
  }
}

static void test_digits(void **state) {
  (void)state;
  const char *s = "x123y";
  size_t i = 1;
  uint64_t v = 0;
  const char *why = NULL;
  assert_int_equal(postern_digits_read(s, 5, &i, &v, &why), 0);
  assert_int_equal(i, 4);
  assert_int_equal(v, 123);
  assert_int_equal(postern_digits_read(s, 5, &i, &v, &why), POSTERN_EINVAL);
  assert_int_equal(i, 4);
  i = 1;
  assert_int_equal(postern_digits_read(s, 3, &i, &v, &why), 0);
  assert_int_equal(v, 12);
  const char *max = "18446744073709551615", *over = "18446744073709551616";
  i = 0;
  assert_int_equal(postern_digits_read(max, strlen(max), &i, &v, &why), 0);
  assert_true(v == UINT64_MAX);
  i = 0;
  assert_int_equal(postern_digits_read(over, strlen(over), &i, &v, &why),
                   POSTERN_ERANGE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_duration_parse),
      cmocka_unit_test(test_duration_format),
      cmocka_unit_test(test_size),
      cmocka_unit_test(test_digits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
