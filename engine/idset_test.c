/*
 * idset_test.c - the scheduler's in-flight set: puts, gets and deletes
 * against a plain array as the model, through growth and backward-shift
 * deletion (clusters that wrap around the end of the table included).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/idset.h"
#include "base/postern_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 5000

static char ids[N][QUEUE_ID_LEN + 1];
static int present[N];

static void make_ids(void) {
  for (int i = 0; i < N; i++) {
    /* Ids of one millisecond share their prefix, as real ones do. */
    snprintf(ids[i], sizeof ids[i], "01JQ000000%016d", i * 7919);
    assert_int_equal(strlen(ids[i]), QUEUE_ID_LEN);
  }
}

static void check_model(const struct idset *s) {
  size_t n = 0;
  for (int i = 0; i < N; i++) {
    void *v = idset_get(s, ids[i]);
    if (present[i]) {
      assert_ptr_equal(v, &present[i]);
      n++;
    } else {
      assert_null(v);
    }
  }
  assert_int_equal(s->n, n);
}

static void test_against_model(void **state) {
  (void)state;
  make_ids();
  struct idset s = {0};
  assert_null(idset_get(&s, ids[0]));
  assert_null(idset_del(&s, ids[0]));
  memset(present, 0, sizeof present);
  /* Rounds of (stride, keep every k-th): insert, delete, reinsert. */
  static const struct {
    int stride, del_mod;
  } rounds[] = {{1, 2}, {3, 3}, {7, 5}, {1, 1}, {11, 4}};
  for (size_t r = 0; r < sizeof rounds / sizeof rounds[0]; r++) {
    for (int i = 0; i < N; i += rounds[r].stride) {
      assert_int_equal(idset_put(&s, ids[i], &present[i]), 0);
      present[i] = 1;
    }
    check_model(&s);
    for (int i = 0; i < N; i++) {
      if (present[i] && i % rounds[r].del_mod == 0) {
        assert_ptr_equal(idset_del(&s, ids[i]), &present[i]);
        present[i] = 0;
      }
    }
    check_model(&s);
    assert_true(s.n * 4 <= s.cap * 3);
  }
  /* Replacing a value keeps the count. */
  for (int i = 0; i < N; i++)
    if (present[i]) {
      size_t before = s.n;
      assert_int_equal(idset_put(&s, ids[i], &present[i]), 0);
      assert_int_equal(s.n, before);
      break;
    }
  idset_free(&s);
  assert_int_equal(s.n, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_against_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
