/*
 * defer_test.c - "run this callback later": never inside the arming call,
 * exactly once however often it is armed while pending, in arming order,
 * not at all once cancelled or closed, and the close callback comes last.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/defer.h"

#include <string.h>

struct owner {
  struct net_defer d;
  int runs;
  int order; /* position among all runs, from 1 */
  int closed;
  bool rearm; /* arm itself once more from its own callback */
};

static int next_order;

static void on_run(struct net_defer *d) {
  struct owner *o = d->data;
  o->runs++;
  o->order = ++next_order;
  if (o->rearm) {
    o->rearm = false;
    int before = o->runs;
    net_defer_arm(&o->d, on_run);
    assert_int_equal(o->runs, before); /* not run again inside the arm */
  }
}

static void on_other(struct net_defer *d) {
  struct owner *o = d->data;
  o->runs += 100;
}

static void on_closed(struct net_defer *d) {
  struct owner *o = d->data;
  o->closed++;
}

static void test_runs_later_once_in_order(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct owner a, b, c;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(&c, 0, sizeof c);
  next_order = 0;
  net_defer_init(&loop, &a.d, &a);
  net_defer_init(&loop, &b.d, &b);
  net_defer_init(&loop, &c.d, &c);
  assert_false(net_defer_pending(&a.d));
  net_defer_arm(&b.d, on_other);
  net_defer_arm(&a.d, on_run);
  net_defer_arm(&c.d, on_run);
  net_defer_arm(&b.d, on_run); /* pending: replaces the callback only */
  assert_true(net_defer_pending(&a.d));
  assert_int_equal(a.runs + b.runs + c.runs, 0); /* nothing ran inside */
  uv_run(&loop, UV_RUN_NOWAIT);
  assert_int_equal(a.runs, 1);
  assert_int_equal(b.runs, 1);
  assert_int_equal(c.runs, 1);
  assert_int_equal(b.order, 1); /* its first place, its new callback */
  assert_int_equal(a.order, 2);
  assert_int_equal(c.order, 3);
  assert_false(net_defer_pending(&a.d));
  /* Armed again from its own callback: runs once more, later. */
  a.rearm = true;
  net_defer_arm(&a.d, on_run);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(a.runs, 3);
  /* Cancelled and closed while pending: never runs; closed runs once. */
  net_defer_arm(&b.d, on_run);
  net_defer_cancel(&b.d);
  assert_false(net_defer_pending(&b.d));
  net_defer_arm(&c.d, on_run);
  net_defer_close(&a.d, on_closed);
  net_defer_close(&b.d, on_closed);
  net_defer_close(&c.d, on_closed);
  assert_int_equal(a.closed + b.closed + c.closed, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(b.runs, 1);
  assert_int_equal(c.runs, 1);
  assert_int_equal(a.closed, 1);
  assert_int_equal(b.closed, 1);
  assert_int_equal(c.closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_runs_later_once_in_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
