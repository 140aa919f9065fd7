/*
 * mtasts_shared_test.c - the text form of a fleet-shared MTA-STS policy
 * (policy/mtasts_shared.h): round trips of every mode and of the largest
 * policy, records that cannot be written, and a table of hostile or
 * malformed entries that must be refused as a whole.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/postern_err.h"
#include "policy/mtasts_shared.h"

static struct policy_mtasts_rec *rec_new(const char *id, uint64_t fetched,
                                         enum policy_mtasts_mode mode,
                                         uint32_t max_age, size_t nmx) {
  struct policy_mtasts_rec *r = calloc(1, sizeof *r);
  assert_non_null(r);
  snprintf(r->id, sizeof r->id, "%s", id);
  r->fetched = fetched;
  r->policy.mode = mode;
  r->policy.max_age = max_age;
  r->policy.n_mx = nmx;
  for (size_t i = 0; i < nmx; i++)
    snprintf(r->policy.mx[i], sizeof r->policy.mx[i],
             i % 2 ? "*.mx%zu.example.net" : "mx%zu.example.net", i);
  return r;
}

static void round_trip(const struct policy_mtasts_rec *r) {
  char *buf = malloc(POLICY_MTASTS_SHARED_MAX);
  struct policy_mtasts_rec *back = calloc(1, sizeof *back);
  assert_non_null(buf);
  assert_non_null(back);
  size_t n = policy_mtasts_shared_encode(r, buf, POLICY_MTASTS_SHARED_MAX);
  assert_true(n > 0);
  assert_int_equal(policy_mtasts_shared_decode(buf, n, back), 0);
  assert_string_equal(back->id, r->id);
  assert_int_equal(back->fetched, r->fetched);
  assert_int_equal(back->expires, r->fetched + r->policy.max_age);
  assert_int_equal(back->last_used, 0);
  assert_int_equal(back->policy.mode, r->policy.mode);
  assert_int_equal(back->policy.max_age, r->policy.max_age);
  assert_int_equal(back->policy.n_mx, r->policy.n_mx);
  for (size_t i = 0; i < r->policy.n_mx; i++)
    assert_string_equal(back->policy.mx[i], r->policy.mx[i]);
  /* A byte less is refused, never half read. */
  assert_int_not_equal(policy_mtasts_shared_decode(buf, n - 1, back), 0);
  free(back);
  free(buf);
}

static void test_round_trips(void **state) {
  (void)state;
  static const struct {
    const char *id;
    enum policy_mtasts_mode mode;
    uint32_t max_age;
    size_t nmx;
  } t[] = {
      {"20260101T000000", POLICY_MTASTS_MODE_ENFORCE, 86400, 2},
      {"a", POLICY_MTASTS_MODE_TESTING, 1, 1},
      {"none1", POLICY_MTASTS_MODE_NONE, 604800, 0},
      {"abcdefghijklmnopqrstuvwxyz012345", POLICY_MTASTS_MODE_ENFORCE,
       POLICY_MTASTS_MAX_AGE_MAX, POLICY_MTASTS_MX_MAX},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    struct policy_mtasts_rec *r =
        rec_new(t[i].id, 1780000000ull + i, t[i].mode, t[i].max_age, t[i].nmx);
    round_trip(r);
    free(r);
  }
}

static void test_the_text(void **state) {
  (void)state;
  struct policy_mtasts_rec *r =
      rec_new("id7", 1780000000, POLICY_MTASTS_MODE_ENFORCE, 86400, 2);
  char buf[512];
  size_t n = policy_mtasts_shared_encode(r, buf, sizeof buf);
  static const char want[] = "postern-mtasts 1\nid: id7\nfetched: 1780000000\n"
                             "\nversion: STSv1\nmode: enforce\n"
                             "mx: mx0.example.net\nmx: *.mx1.example.net\n"
                             "max_age: 86400\n";
  assert_int_equal(n, strlen(want));
  assert_memory_equal(buf, want, n);
  free(r);
}

static void test_unwritable(void **state) {
  (void)state;
  char buf[POLICY_MTASTS_SHARED_MAX];
  struct policy_mtasts_rec *r =
      rec_new("", 1, POLICY_MTASTS_MODE_ENFORCE, 60, 1);
  assert_int_equal(policy_mtasts_shared_encode(r, buf, sizeof buf), 0);
  snprintf(r->id, sizeof r->id, "bad-id");
  assert_int_equal(policy_mtasts_shared_encode(r, buf, sizeof buf), 0);
  snprintf(r->id, sizeof r->id, "ok");
  assert_int_equal(policy_mtasts_shared_encode(r, buf, 20), 0);
  r->policy.mode = POLICY_MTASTS_MODE_COUNT;
  assert_int_equal(policy_mtasts_shared_encode(r, buf, sizeof buf), 0);
  free(r);
}

#define HDR "postern-mtasts 1\nid: x1\nfetched: 1780000000\n\n"
#define POL "version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 60\n"

static void test_hostile(void **state) {
  (void)state;
  static const struct {
    const char *what, *text;
    int rc;
  } t[] = {
      {"the reference entry", HDR POL, 0},
      {"empty", "", POSTERN_EPROTO},
      {"another version", "postern-mtasts 2\nid: x1\nfetched: 1\n\n" POL,
       POSTERN_EPROTO},
      {"no magic", "id: x1\nfetched: 1\n\n" POL, POSTERN_EPROTO},
      {"id missing", "postern-mtasts 1\nfetched: 1\n\n" POL, POSTERN_EPROTO},
      {"id empty", "postern-mtasts 1\nid: \nfetched: 1\n\n" POL,
       POSTERN_EPROTO},
      {"id not alnum", "postern-mtasts 1\nid: x-1\nfetched: 1\n\n" POL,
       POSTERN_EPROTO},
      {"id too long",
       "postern-mtasts 1\nid: abcdefghijklmnopqrstuvwxyz0123456\nfetched: "
       "1\n\n" POL,
       POSTERN_EPROTO},
      {"fetched missing", "postern-mtasts 1\nid: x1\n\n" POL, POSTERN_EPROTO},
      {"fetched not a number", "postern-mtasts 1\nid: x1\nfetched: 12a\n\n" POL,
       POSTERN_EPROTO},
      {"fetched negative", "postern-mtasts 1\nid: x1\nfetched: -1\n\n" POL,
       POSTERN_EPROTO},
      {"fetched overlong",
       "postern-mtasts 1\nid: x1\nfetched: 99999999999999999999\n\n" POL,
       POSTERN_EPROTO},
      {"a control byte in a field",
       "postern-mtasts 1\nid: x1\nfetched: 1\r\n\n" POL, POSTERN_EPROTO},
      {"fields swapped", "postern-mtasts 1\nfetched: 1\nid: x1\n\n" POL,
       POSTERN_EPROTO},
      {"a repeated field",
       "postern-mtasts 1\nid: x1\nid: x2\nfetched: 1\n\n" POL, POSTERN_EPROTO},
      {"no blank line", "postern-mtasts 1\nid: x1\nfetched: 1\n" POL,
       POSTERN_EPROTO},
      {"header only", HDR, POSTERN_EPROTO},
      {"policy without mode",
       HDR "version: STSv1\nmx: a.example\nmax_age: 60\n", POSTERN_EPROTO},
      {"enforce without mx", HDR "version: STSv1\nmode: enforce\nmax_age: 60\n",
       POSTERN_EPROTO},
      {"bad max_age",
       HDR "version: STSv1\nmode: testing\nmx: a.example\n"
           "max_age: forever\n",
       POSTERN_EPROTO},
      {"unknown mode",
       HDR "version: STSv1\nmode: strict\nmx: a.example\n"
           "max_age: 60\n",
       POSTERN_EPROTO},
  };
  struct policy_mtasts_rec *out = calloc(1, sizeof *out);
  assert_non_null(out);
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    int rc = policy_mtasts_shared_decode(t[i].text, strlen(t[i].text), out);
    if (rc != t[i].rc)
      fail_msg("%s: got %d, want %d", t[i].what, rc, t[i].rc);
  }
  /* The reference entry reads as it says. */
  assert_int_equal(policy_mtasts_shared_decode(HDR POL, strlen(HDR POL), out),
                   0);
  assert_string_equal(out->id, "x1");
  assert_int_equal(out->expires, 1780000000ull + 60);
  assert_string_equal(out->policy.mx[0], "mx.example.net");
  /* A NUL inside the policy, and an entry over the bound. */
  char withnul[] = HDR "version: STSv1\nmode: enforce\nmx: a\0b\nmax_age: 60\n";
  assert_int_equal(
      policy_mtasts_shared_decode(withnul, sizeof withnul - 1, out),
      POSTERN_EPROTO);
  char *big = malloc(POLICY_MTASTS_SHARED_MAX + 1);
  assert_non_null(big);
  memset(big, 'x', POLICY_MTASTS_SHARED_MAX + 1);
  assert_int_equal(
      policy_mtasts_shared_decode(big, POLICY_MTASTS_SHARED_MAX + 1, out),
      POSTERN_ETOOBIG);
  free(big);
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trips),
      cmocka_unit_test(test_the_text),
      cmocka_unit_test(test_unwritable),
      cmocka_unit_test(test_hostile),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
