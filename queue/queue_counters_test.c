/*
 * queue_counters_test.c - the queue's named counters: adding creates with
 * the note and later adds keep it, order with results (one writer, FIFO),
 * prefix scans stop at the prefix's end, deletion by prefix in chunks,
 * bad keys refused, and counts surviving a reopen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "queue/queue.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/uio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fx {
  char dir[512];
  struct queue *q;
  struct queue_opts o;
};

static void fx_open(struct fx *f) {
  assert_int_equal(queue_open(&f->o, &f->q), 0);
}

static void fx_init(struct fx *f) {
  memset(f, 0, sizeof *f);
  const char *tmp = getenv("TEST_TMPDIR");
  snprintf(f->dir, sizeof f->dir, "%s/ctrXXXXXX", tmp ? tmp : "/tmp");
  assert_non_null(mkdtemp(f->dir));
  f->o.state_dir = f->dir;
  f->o.map_size = 16u << 20;
  fx_open(f);
}

static void fx_done(struct fx *f) {
  queue_close(f->q);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  assert_int_equal(system(cmd), 0);
}

struct wait {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, status;
};

static void on_done(void *arg, int status) {
  struct wait *w = arg;
  pthread_mutex_lock(&w->mu);
  w->done = 1;
  w->status = status;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Submits and waits for the commit. */
static int add_sync(struct queue *q, const struct queue_counter_add *a,
                    size_t n) {
  struct wait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
  int rc = queue_counters_submit(q, a, n, on_done, &w);
  if (rc)
    return rc;
  pthread_mutex_lock(&w.mu);
  while (!w.done)
    pthread_cond_wait(&w.cv, &w.mu);
  pthread_mutex_unlock(&w.mu);
  return w.status;
}

static size_t slen(const char *s) {
  return s ? strlen(s) : 0;
}
#define ADD(k, v, n)                                                           \
  { k, strlen(k), v, n, slen(n) }

struct seen {
  char keys[64][64];
  uint64_t vals[64];
  char notes[64][64];
  size_t n, stop_after;
};

static int collect(void *arg, const void *key, size_t klen, uint64_t value,
                   const void *note, size_t nlen) {
  struct seen *s = arg;
  assert_true(s->n < 64 && klen < 64 && nlen < 64);
  memcpy(s->keys[s->n], key, klen);
  s->keys[s->n][klen] = '\0';
  memcpy(s->notes[s->n], note, nlen);
  s->notes[s->n][nlen] = '\0';
  s->vals[s->n] = value;
  s->n++;
  return s->stop_after && s->n >= s->stop_after;
}

static int sum_values(void *arg, const void *key, size_t klen, uint64_t value,
                      const void *note, size_t nlen) {
  (void)key, (void)klen, (void)note, (void)nlen;
  *(uint64_t *)arg += value;
  return 0;
}

static void test_add_and_scan(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f);
  struct queue_counter_add a[] = {
      ADD("2026-12-05\ta.example\tS", 3, "first note"),
      ADD("2026-12-05\tb.example\tS", 1, NULL),
      ADD("2026-12-06\ta.example\tS", 7, "x"),
      ADD("2026-12-05\ta.example\tS", 2, "ignored: not new"),
  };
  assert_int_equal(add_sync(f.q, a, 4), 0);
  struct queue_counter_add b[] = {ADD("2026-12-05\ta.example\tS", 10, "no"),
                                  ADD("2026-12-05\ta.example\tP", 0, "desc")};
  assert_int_equal(add_sync(f.q, b, 2), 0);

  struct seen s = {0};
  assert_int_equal(queue_counters_scan(f.q, "2026-12-05\t", 11, collect, &s),
                   0);
  assert_int_equal(s.n, 3);
  /* Key order; the prefix's end is respected (2026-12-06 not listed). */
  assert_string_equal(s.keys[0], "2026-12-05\ta.example\tP");
  assert_int_equal(s.vals[0], 0);
  assert_string_equal(s.notes[0], "desc");
  assert_string_equal(s.keys[1], "2026-12-05\ta.example\tS");
  assert_int_equal(s.vals[1], 15);
  assert_string_equal(s.notes[1], "first note");
  assert_string_equal(s.keys[2], "2026-12-05\tb.example\tS");
  assert_int_equal(s.vals[2], 1);
  assert_string_equal(s.notes[2], "");

  /* A callback's non-zero answer stops the scan; no prefix: all. */
  struct seen all = {.stop_after = 2};
  assert_int_equal(queue_counters_scan(f.q, NULL, 0, collect, &all), 0);
  assert_int_equal(all.n, 2);

  /* Survives a reopen. */
  queue_close(f.q);
  fx_open(&f);
  struct seen again = {0};
  assert_int_equal(
      queue_counters_scan(f.q, "2026-12-06\t", 11, collect, &again), 0);
  assert_int_equal(again.n, 1);
  assert_int_equal(again.vals[0], 7);
  fx_done(&f);
}

static void test_bad_input(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f);
  char big[QUEUE_COUNTER_KEY_MAX + 2];
  memset(big, 'k', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  struct queue_counter_add bad[] = {{big, strlen(big), 1, NULL, 0}};
  assert_int_equal(queue_counters_submit(f.q, bad, 1, NULL, NULL),
                   POSTERN_EINVAL);
  struct queue_counter_add empty[] = {{"", 0, 1, NULL, 0}};
  assert_int_equal(queue_counters_submit(f.q, empty, 1, NULL, NULL),
                   POSTERN_EINVAL);
  struct queue_counter_add bignote[] = {
      {"k", 1, 1, big, QUEUE_COUNTER_NOTE_MAX + 1}};
  assert_int_equal(queue_counters_submit(f.q, bignote, 1, NULL, NULL),
                   POSTERN_EINVAL);
  /* The longest key is fine; a NULL callback is fine. */
  big[QUEUE_COUNTER_KEY_MAX] = '\0';
  struct queue_counter_add ok[] = {{big, QUEUE_COUNTER_KEY_MAX, 1, NULL, 0}};
  assert_int_equal(queue_counters_submit(f.q, ok, 1, NULL, NULL), 0);
  assert_int_equal(add_sync(f.q, ok, 1), 0);
  uint64_t sum = 0;
  assert_int_equal(queue_counters_scan(f.q, "kkk", 3, sum_values, &sum), 0);
  assert_int_equal(sum, 2);
  fx_done(&f);
}

static void test_delete_prefix(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f);
  /* 4,500 counters under one day: more than two delete chunks. */
  enum { N = 4500 };
  struct queue_counter_add *a = calloc(N + 1, sizeof *a);
  char(*keys)[48] = calloc(N + 1, sizeof *keys);
  assert_non_null(a);
  assert_non_null(keys);
  for (size_t i = 0; i < N; i++) {
    snprintf(keys[i], sizeof keys[i], "2026-12-01	d%05zu	S", i);
    a[i] = (struct queue_counter_add){keys[i], strlen(keys[i]), 1, NULL, 0};
  }
  snprintf(keys[N], sizeof keys[N], "2026-12-02	keep	S");
  a[N] = (struct queue_counter_add){keys[N], strlen(keys[N]), 5, NULL, 0};
  assert_int_equal(add_sync(f.q, a, N + 1), 0);
  size_t deleted = 0;
  assert_int_equal(queue_counters_delete(f.q, "2026-12-01	", 11, &deleted),
                   0);
  assert_int_equal(deleted, N);
  uint64_t sum = 0;
  assert_int_equal(queue_counters_scan(f.q, NULL, 0, sum_values, &sum), 0);
  assert_int_equal(sum, 5);
  /* Nothing left under the prefix: deleting again deletes nothing. */
  assert_int_equal(queue_counters_delete(f.q, "2026-12-01	", 11, &deleted),
                   0);
  assert_int_equal(deleted, 0);
  free(a);
  free(keys);
  fx_done(&f);
}

/* Counters and results share the writer: an update queued before a message
 * submission is committed no later than it (the callbacks run in order). */
static int order[4], norder;
static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;
static void note_order(void *arg, int status) {
  assert_int_equal(status, 0);
  pthread_mutex_lock(&order_mu);
  order[norder++] = (int)(intptr_t)arg;
  pthread_mutex_unlock(&order_mu);
}

static void test_fifo_with_submissions(void **state) {
  (void)state;
  struct fx f;
  fx_init(&f);
  struct queue_counter_add a[] = {ADD("k1", 1, NULL)};
  struct queue_rcpt_in rcpts[] = {{.addr = "r@example.org"}};
  struct iovec body = {.iov_base = "hello\r\n", .iov_len = 7};
  char id[QUEUE_ID_LEN + 1];
  queue_id_new(id);
  struct queue_msg_in m = {.id = id,
                           .sender = "s@example.org",
                           .rcpts = rcpts,
                           .n_rcpts = 1,
                           .body = &body,
                           .body_iovcnt = 1};
  struct wait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
  assert_int_equal(queue_counters_submit(f.q, a, 1, note_order, (void *)1), 0);
  assert_int_equal(queue_msg_submit(f.q, &m, on_done, &w), 0);
  assert_int_equal(queue_counters_submit(f.q, a, 1, note_order, (void *)2), 0);
  pthread_mutex_lock(&w.mu);
  while (!w.done)
    pthread_cond_wait(&w.cv, &w.mu);
  pthread_mutex_unlock(&w.mu);
  assert_int_equal(w.status, 0);
  queue_close(f.q); /* drains the writer */
  assert_int_equal(norder, 2);
  assert_int_equal(order[0], 1);
  assert_int_equal(order[1], 2);
  fx_open(&f);
  uint64_t sum = 0;
  assert_int_equal(queue_counters_scan(f.q, "k1", 2, sum_values, &sum), 0);
  assert_int_equal(sum, 2);
  fx_done(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_add_and_scan),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_delete_prefix),
      cmocka_unit_test(test_fifo_with_submissions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
