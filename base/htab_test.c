/*
 * htab_test.c - the hash table against a plain reference: random puts,
 * replacements and deletions on string and fixed-size keys must leave the
 * table holding exactly what the reference holds, lookups and walks
 * included, across growth and many backward-shift deletions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "base/postern_htab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 20000

/* A deterministic generator: the test must fail the same way twice. */
static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void test_strings_against_reference(void **state) {
  (void)state;
  static char keys[N][24];
  static int present[N]; /* reference: 0 absent, else the value's tag */
  static int tags[N][1];
  struct postern_htab *t;
  assert_int_equal(postern_htab_new(0, &t), 0);
  for (size_t i = 0; i < N; i++)
    snprintf(keys[i], sizeof keys[i], "d%zu.example.org", i);
  size_t count = 0;
  for (int round = 0; round < 200000; round++) {
    size_t k = next_rand() % N;
    switch (next_rand() % 3) {
    case 0:
    case 1: /* put (insert or replace) */
      tags[k][0] = round + 1;
      assert_int_equal(postern_htab_put(t, keys[k], tags[k]), 0);
      if (!present[k])
        count++;
      present[k] = round + 1;
      break;
    case 2: { /* delete */
      void *v = postern_htab_del(t, keys[k]);
      if (present[k]) {
        assert_ptr_equal(v, tags[k]);
        count--;
        present[k] = 0;
      } else {
        assert_null(v);
      }
      break;
    }
    }
    if (round % 997 == 0) {
      assert_int_equal(postern_htab_count(t), count);
      for (size_t i = 0; i < N; i++) {
        int *v = postern_htab_get(t, keys[i]);
        if (present[i]) {
          assert_non_null(v);
          assert_int_equal(*v, present[i]);
        } else {
          assert_null(v);
        }
      }
    }
  }
  /* A walk sees every entry exactly once, with its own key. */
  static int seen[N];
  memset(seen, 0, sizeof seen);
  size_t pos = 0, walked = 0;
  const void *key;
  int *v;
  while ((v = postern_htab_next(t, &pos, &key)) != NULL) {
    size_t k = (size_t)(v - &tags[0][0]);
    assert_true(k < N);
    assert_ptr_equal(key, keys[k]);
    assert_int_equal(seen[k]++, 0);
    walked++;
  }
  assert_int_equal(walked, count);
  /* Delete everything: the table is empty and still usable. */
  for (size_t i = 0; i < N; i++)
    postern_htab_del(t, keys[i]);
  assert_int_equal(postern_htab_count(t), 0);
  pos = 0;
  assert_null(postern_htab_next(t, &pos, NULL));
  assert_int_equal(postern_htab_put(t, keys[1], tags[1]), 0);
  assert_ptr_equal(postern_htab_get(t, "d1.example.org"), tags[1]);
  postern_htab_free(t);
}

static void test_fixed_keys(void **state) {
  (void)state;
  /* 16-byte ids that differ only in the last byte, and a key that is a
   * prefix of another as a string would be: bytes, not strings, count. */
  static unsigned char ids[256][16];
  struct postern_htab *t;
  assert_int_equal(postern_htab_new(16, &t), 0);
  for (int i = 0; i < 256; i++) {
    memset(ids[i], 0, 16);
    ids[i][15] = (unsigned char)i;
    assert_int_equal(postern_htab_put(t, ids[i], ids[i]), 0);
  }
  assert_int_equal(postern_htab_count(t), 256);
  for (int i = 0; i < 256; i++) {
    unsigned char probe[16] = {0};
    probe[15] = (unsigned char)i;
    assert_ptr_equal(postern_htab_get(t, probe), ids[i]);
  }
  unsigned char absent[16] = {1};
  assert_null(postern_htab_get(t, absent));
  assert_int_equal(postern_htab_put(t, absent, NULL), POSTERN_EINVAL);
  postern_htab_free(t);
  postern_htab_free(NULL);
}

static void test_hash(void **state) {
  (void)state;
  /* Same input, same hash; distinct inputs spread over distinct values. */
  assert_true(postern_hash("abc", 3) == postern_hash("abc", 3));
  assert_true(postern_hash("abc", 3) != postern_hash("abd", 3));
  assert_true(postern_hash("", 0) != postern_hash("\0", 1));
  enum { M = 100000 };
  static uint64_t h[M];
  for (size_t i = 0; i < M; i++) {
    char k[32];
    int n = snprintf(k, sizeof k, "mx%zu.example", i);
    h[i] = postern_hash(k, (size_t)n);
  }
  /* Low bits pick the slot: count how many of 65536 buckets stay empty
   * with 100,000 keys. A uniform hash leaves about e^-1.53 = 21.7%. */
  static unsigned char used[65536];
  for (size_t i = 0; i < M; i++)
    used[h[i] & 0xffff] = 1;
  size_t empty = 0;
  for (size_t i = 0; i < 65536; i++)
    empty += !used[i];
  assert_true(empty > 12000 && empty < 16500);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_strings_against_reference),
      cmocka_unit_test(test_fixed_keys),
      cmocka_unit_test(test_hash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
