/*
 * worker_test.c - the loop pool: tasks run on their worker's thread (never
 * on the poster's, inside worker_post) and in order; and a task queued before
 * the stop request still runs (it owns memory only its fn gives back: a job, a
 * drain request), before on_stop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/worker.h"
#include "base/postern_err.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct rec_task {
  struct worker_task task;
  int n;
};

static atomic_int order[16];
static atomic_int norder;
static atomic_int on_thread;

static void rec_fn(struct worker *w, struct worker_task *t) {
  struct rec_task *rt = (struct rec_task *)t;
  if (worker_current() == w)
    atomic_fetch_add(&on_thread, 1);
  order[atomic_fetch_add(&norder, 1)] = rt->n;
}

static void test_tasks_run_in_order_on_the_loop(void **state) {
  (void)state;
  struct worker_pool p;
  assert_int_equal(worker_pool_init(&p, 1, NULL, NULL, NULL, NULL), 0);
  worker_pool_run(&p);
  struct rec_task t[8];
  for (int i = 0; i < 8; i++) {
    t[i].n = i;
    t[i].task.fn = rec_fn;
    assert_int_equal(worker_post(&p.w[0], &t[i].task), 0);
  }
  for (int spin = 0; spin < 5000 && atomic_load(&norder) < 8; spin++)
    usleep(1000);
  worker_pool_stop(&p);
  assert_int_equal(atomic_load(&norder), 8);
  assert_int_equal(atomic_load(&on_thread), 8);
  for (int i = 0; i < 8; i++)
    assert_int_equal(order[i], i);
}

/* ---- a task queued when the stop request comes ---- */

static atomic_int blocker_running;
static atomic_int late_ran;
static atomic_int late_ran_before_stop;
static atomic_int stop_calls;

/* Keeps the loop busy until worker_pool_stop has flagged the worker. */
static void blocker_fn(struct worker *w, struct worker_task *t) {
  (void)t;
  atomic_store(&blocker_running, 1);
  for (;;) {
    pthread_mutex_lock(&w->mu);
    bool stopping = w->stopping;
    pthread_mutex_unlock(&w->mu);
    if (stopping)
      return;
    usleep(1000);
  }
}

static void late_fn(struct worker *w, struct worker_task *t) {
  (void)w;
  atomic_store(&late_ran, 1);
  free(t); /* like engine__deliver_worker_drain: the task owns itself */
}

static void on_stop(struct worker *w) {
  (void)w;
  atomic_store(&late_ran_before_stop, atomic_load(&late_ran));
  atomic_fetch_add(&stop_calls, 1);
}

static void test_task_queued_before_stop_runs(void **state) {
  (void)state;
  struct worker_pool p;
  assert_int_equal(worker_pool_init(&p, 1, NULL, on_stop, NULL, NULL), 0);
  worker_pool_run(&p);
  struct worker_task blocker = {.fn = blocker_fn};
  assert_int_equal(worker_post(&p.w[0], &blocker), 0);
  while (!atomic_load(&blocker_running))
    usleep(1000);
  /* Queued behind the busy task; the stop request comes before it runs. */
  struct worker_task *late = calloc(1, sizeof *late);
  assert_non_null(late);
  late->fn = late_fn;
  assert_int_equal(worker_post(&p.w[0], late), 0);
  worker_pool_stop(&p);
  assert_int_equal(atomic_load(&late_ran), 1);
  assert_int_equal(atomic_load(&late_ran_before_stop), 1);
  assert_int_equal(atomic_load(&stop_calls), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tasks_run_in_order_on_the_loop),
      cmocka_unit_test(test_task_queued_before_stop_runs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
