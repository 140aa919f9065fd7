/*
 * queue_test.c - unit tests of the queue: commit and read-back, recipient
 * transitions, the due index, retry arithmetic with a fixed clock, hold and
 * release, max_age expiry, admin selections, stats counters, id uniqueness
 * under many threads, and a full map.
 *
 * Each test gets its own state directory under TEST_TMPDIR and a queue whose
 * clock and jitter source are the test's (struct fixture).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "queue/internal.h"
#include "queue/queue.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define T0 1700000000000ull /* the fixed clock's start, Unix ms */

struct fixture {
  char dir[512];
  uint64_t now;
  uint32_t rnd;
  struct queue *q;
  struct queue_opts o;
};

static uint64_t fx_clock(void *arg) {
  return __atomic_load_n(&((struct fixture *)arg)->now, __ATOMIC_SEQ_CST);
}

static uint32_t fx_random(void *arg) {
  return ((struct fixture *)arg)->rnd;
}

static void rm_rf(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

/* Fills fx and its options (a fresh directory, the test clock); opening
 * is left to the caller, who may change fx->o first. */
static void fx_prepare(struct fixture *fx, uint64_t map_size) {
  memset(fx, 0, sizeof *fx);
  const char *tmp = getenv("TEST_TMPDIR");
  snprintf(fx->dir, sizeof fx->dir, "%s/qtestXXXXXX", tmp ? tmp : "/tmp");
  assert_non_null(mkdtemp(fx->dir));
  fx->now = T0;
  fx->rnd = 1000; /* jitter 0 */
  fx->o.state_dir = fx->dir;
  fx->o.map_size = map_size;
  fx->o.clock_ms = fx_clock;
  fx->o.random_u32 = fx_random;
  fx->o.test_arg = fx;
}

static void fx_init(struct fixture *fx, uint64_t map_size) {
  fx_prepare(fx, map_size);
  assert_int_equal(queue_open(&fx->o, &fx->q), 0);
}

static void fx_done(struct fixture *fx) {
  queue_close(fx->q);
  rm_rf(fx->dir);
}

/* ---- Synchronous wrappers ----------------------------------------------- */

struct wait {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int pending;
  int status;
  struct queue_env *env; /* copy of a result envelope */
  pthread_t cb_thread;
};

static void wait_init(struct wait *w, int pending) {
  memset(w, 0, sizeof *w);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->pending = pending;
}

static void wait_all(struct wait *w) {
  pthread_mutex_lock(&w->mu);
  while (w->pending > 0)
    pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
}

struct sub_slot {
  struct wait *w;
  int status;
};

static void on_submit(void *arg, int status) {
  struct sub_slot *s = arg;
  s->status = status;
  pthread_mutex_lock(&s->w->mu);
  s->w->cb_thread = pthread_self();
  s->w->pending--;
  pthread_cond_signal(&s->w->cv);
  pthread_mutex_unlock(&s->w->mu);
}

static int submit_sync(struct queue *q, const struct queue_msg_in *m) {
  struct wait w;
  struct sub_slot s = {&w, 1};
  wait_init(&w, 1);
  int rc = queue_msg_submit(q, m, on_submit, &s);
  if (rc)
    return rc;
  wait_all(&w);
  assert_false(pthread_equal(w.cb_thread, pthread_self()));
  return s.status;
}

/* Submits a message to the given recipients with a small body. */
static int put_msg(struct queue *q, char id[QUEUE_ID_LEN + 1],
                   const char *const *rcpts, size_t n) {
  struct queue_rcpt_in r[16];
  assert_true(n <= 16);
  for (size_t i = 0; i < n; i++)
    r[i] = (struct queue_rcpt_in){rcpts[i], NULL, 0};
  queue_id_new(id);
  static const char body[] = "Subject: t\r\n\r\nhello\r\n";
  struct iovec iov = {(void *)body, sizeof body - 1};
  struct queue_msg_in m = {.id = id,
                           .sender = "s@example.org",
                           .rcpts = r,
                           .n_rcpts = n,
                           .body = &iov,
                           .body_iovcnt = 1};
  return submit_sync(q, &m);
}

static void on_result(void *arg, int status, const struct queue_env *env) {
  struct wait *w = arg;
  w->status = status;
  if (env) {
    /* Deep copy through the public fields we check. */
    size_t sz = sizeof *env + env->n_rcpts * sizeof *env->rcpts;
    w->env = malloc(sz);
    memcpy(w->env, env, sizeof *env);
    w->env->rcpts = (struct queue_rcpt *)(w->env + 1);
    memcpy(w->env->rcpts, env->rcpts, env->n_rcpts * sizeof *env->rcpts);
    for (size_t i = 0; i < env->n_rcpts; i++) {
      w->env->rcpts[i].addr = strdup(env->rcpts[i].addr);
      w->env->rcpts[i].status = strdup(env->rcpts[i].status);
      w->env->rcpts[i].reply = strdup(env->rcpts[i].reply);
    }
  }
  pthread_mutex_lock(&w->mu);
  w->pending--;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static void free_copy(struct queue_env *e) {
  if (!e)
    return;
  for (size_t i = 0; i < e->n_rcpts; i++) {
    free((char *)e->rcpts[i].addr);
    free((char *)e->rcpts[i].status);
    free((char *)e->rcpts[i].reply);
  }
  free(e);
}

/* Reports outcomes for recipients 0..n-1; returns status, *out gets a copy
 * of the committed envelope (caller frees with free_copy). */
static int result_sync(struct queue *q, const char *id,
                       const struct queue_rcpt_result *res, size_t n,
                       struct queue_env **out) {
  struct wait w;
  wait_init(&w, 1);
  struct queue_result_in in = {id, res, n};
  int rc = queue_result_submit(q, &in, on_result, &w);
  if (rc)
    return rc;
  wait_all(&w);
  if (out)
    *out = w.env;
  else
    free_copy(w.env);
  return w.status;
}

static size_t due_ids(struct queue *q, uint64_t now, struct queue_due *out,
                      size_t max) {
  size_t n = 0;
  assert_int_equal(queue_due_scan(q, now, NULL, out, max, &n), 0);
  return n;
}

/* ---- Tests -------------------------------------------------------------- */

static void test_id_format(void **state) {
  char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1];
  queue_id_new(a);
  queue_id_new(b);
  assert_int_equal(strlen(a), QUEUE_ID_LEN);
  assert_true(queue_id_valid(a));
  assert_true(strcmp(a, b) < 0);
  uint64_t t = queue_id_time_ms(a);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  assert_true(t <= now && now - t < 60000);
  static const char *const bad[] = {
      "",
      "01ARZ3NDEKTSV4RRFFQ69G5FA",
      "01ARZ3NDEKTSV4RRFFQ69G5FAVV",
      "01ARZ3NDEKTSV4RRFFQ69G5FAU", /* U is not Crockford */
      "81ARZ3NDEKTSV4RRFFQ69G5FAV", /* more than 128 bits */
      "01arz3ndektsv4rrffq69g5fav"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_false(queue_id_valid(bad[i]));
  assert_true(queue_id_valid("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
  assert_int_equal(queue_id_time_ms("0000000001ZZZZZZZZZZZZZZZZ"), 1);
  assert_int_equal(queue_id_time_ms("0000000010ZZZZZZZZZZZZZZZZ"), 32);
  assert_int_equal(queue_id_time_ms("7ZZZZZZZZZ0000000000000000"),
                   (1ull << 48) - 1);
}

#define ID_THREADS 16
#define ID_PER_THREAD 20000

static char (*id_all)[QUEUE_ID_LEN + 1];

static void *id_worker(void *arg) {
  size_t t = (size_t)arg;
  for (size_t i = 0; i < ID_PER_THREAD; i++)
    queue_id_new(id_all[t * ID_PER_THREAD + i]);
  return NULL;
}

static int cmp_id(const void *a, const void *b) {
  return strcmp(a, b);
}

static void test_id_unique_threads(void **state) {
  id_all = malloc(sizeof *id_all * ID_THREADS * ID_PER_THREAD);
  pthread_t th[ID_THREADS];
  for (size_t t = 0; t < ID_THREADS; t++)
    pthread_create(&th[t], NULL, id_worker, (void *)t);
  for (size_t t = 0; t < ID_THREADS; t++)
    pthread_join(th[t], NULL);
  /* Each thread saw strictly increasing ids. */
  for (size_t t = 0; t < ID_THREADS; t++) {
    for (size_t i = 1; i < ID_PER_THREAD; i++)
      assert_true(strcmp(id_all[t * ID_PER_THREAD + i - 1],
                         id_all[t * ID_PER_THREAD + i]) < 0);
  }
  qsort(id_all, ID_THREADS * ID_PER_THREAD, sizeof *id_all, cmp_id);
  for (size_t i = 1; i < ID_THREADS * ID_PER_THREAD; i++)
    assert_true(strcmp(id_all[i - 1], id_all[i]) != 0);
  free(id_all);
}

static void test_commit_readback(void **state) {
  struct fixture fx;
  fx_init(&fx, 0);
  char id[QUEUE_ID_LEN + 1];
  queue_id_new(id);
  struct queue_rcpt_in r[2] = {
      {"a@Example.COM", "rfc822;a@example.com", QUEUE_NOTIFY_FAILURE},
      {"b@other.test", NULL, QUEUE_NOTIFY_NEVER}};
  /* A body in three pieces, one of them 33 MiB: bigger than the default
   * max_message_size, spanning many overflow pages. */
  size_t big = 33u << 20;
  char *mid = malloc(big);
  for (size_t i = 0; i < big; i++)
    mid[i] = (char)('a' + i % 26);
  struct iovec iov[3] = {
      {"Head: x\r\n\r\n", 11}, {mid, big}, {"\r\nend\r\n", 7}};
  struct queue_msg_in m = {.id = id,
                           .sender = "s@example.org",
                           .rcpts = r,
                           .n_rcpts = 2,
                           .ret = QUEUE_RET_HDRS,
                           .envid = "ENV123",
                           .client_addr = "127.0.0.1:4444",
                           .client_helo = "client.test",
                           .arrival_ms = T0 - 5,
                           .body = iov,
                           .body_iovcnt = 3,
                           .tls_report = true,
                           .requiretls = true};
  assert_int_equal(submit_sync(fx.q, &m), 0);
  /* The same id again is refused, the first copy stays. */
  assert_int_equal(submit_sync(fx.q, &m), POSTERN_EEXIST);

  struct queue_env *e;
  void *body;
  size_t blen;
  assert_int_equal(queue_msg_load(fx.q, id, &e, &body, &blen), 0);
  assert_string_equal(e->id, id);
  assert_string_equal(e->sender, "s@example.org");
  assert_string_equal(e->envid, "ENV123");
  assert_string_equal(e->client_addr, "127.0.0.1:4444");
  assert_string_equal(e->client_helo, "client.test");
  assert_true(e->tls_report);
  assert_true(e->requiretls);
  assert_int_equal(e->ret, QUEUE_RET_HDRS);
  assert_int_equal(e->arrival_ms, T0 - 5);
  assert_int_equal(e->state, QUEUE_MSG_ACTIVE);
  assert_int_equal(e->size, 11 + big + 7);
  assert_int_equal(e->n_rcpts, 2);
  assert_string_equal(e->rcpts[0].addr, "a@Example.COM");
  assert_string_equal(e->rcpts[0].orcpt, "rfc822;a@example.com");
  assert_int_equal(e->rcpts[0].notify, QUEUE_NOTIFY_FAILURE);
  assert_string_equal(e->rcpts[1].orcpt, "");
  assert_int_equal(e->rcpts[1].notify, QUEUE_NOTIFY_NEVER);
  assert_int_equal(e->rcpts[0].state, QUEUE_RCPT_PENDING);
  assert_int_equal(e->rcpts[0].attempts, 0);
  assert_int_equal(blen, e->size);
  assert_memory_equal(body, "Head: x\r\n\r\n", 11);
  assert_memory_equal((char *)body + 11, mid, big);
  assert_memory_equal((char *)body + 11 + big, "\r\nend\r\n", 7);
  /* What the submitter hands on without reading back is what was stored
   * (the due time aside: stored at the commit, handed on at arrival). */
  struct queue_env *h;
  assert_int_equal(queue_env_of_submission(&m, &h), 0);
  assert_string_equal(h->id, e->id);
  assert_int_equal(h->state, e->state);
  assert_string_equal(h->sender, e->sender);
  assert_string_equal(h->envid, e->envid);
  assert_string_equal(h->client_addr, e->client_addr);
  assert_string_equal(h->client_helo, e->client_helo);
  assert_int_equal(h->ret, e->ret);
  assert_int_equal(h->arrival_ms, e->arrival_ms);
  assert_int_equal(h->size, e->size);
  assert_int_equal(h->delay_warned, e->delay_warned);
  assert_int_equal(h->tls_report, e->tls_report);
  assert_int_equal(h->requiretls, e->requiretls);
  assert_int_equal(h->n_rcpts, e->n_rcpts);
  for (size_t i = 0; i < e->n_rcpts; i++) {
    assert_string_equal(h->rcpts[i].addr, e->rcpts[i].addr);
    assert_string_equal(h->rcpts[i].orcpt, e->rcpts[i].orcpt);
    assert_int_equal(h->rcpts[i].notify, e->rcpts[i].notify);
    assert_int_equal(h->rcpts[i].state, e->rcpts[i].state);
    assert_int_equal(h->rcpts[i].attempts, e->rcpts[i].attempts);
    assert_string_equal(h->rcpts[i].status, e->rcpts[i].status);
    assert_string_equal(h->rcpts[i].reply, e->rcpts[i].reply);
  }
  assert_int_equal(h->next_ms, T0 - 5);
  queue_env_free(h);
  /* The arrival stamp is the submitter's to give. */
  struct queue_msg_in nostamp = m;
  nostamp.arrival_ms = 0;
  assert_int_equal(queue_env_of_submission(&nostamp, &h), POSTERN_EINVAL);
  queue_env_free(e);
  free(body);
  free(mid);

  /* Envelope only; unknown and malformed ids. */
  assert_int_equal(queue_msg_load(fx.q, id, &e, NULL, NULL), 0);
  queue_env_free(e);
  char other[QUEUE_ID_LEN + 1];
  queue_id_new(other);
  assert_int_equal(queue_msg_load(fx.q, other, &e, NULL, NULL), POSTERN_ENOENT);
  assert_int_equal(queue_msg_load(fx.q, "nope", &e, NULL, NULL),
                   POSTERN_EINVAL);

  /* A message without recipients is refused by the writer. */
  queue_id_new(other);
  struct queue_msg_in none = {.id = other, .sender = "", .n_rcpts = 0};
  assert_int_equal(submit_sync(fx.q, &none), POSTERN_EINVAL);

  /* Everything survives a close and reopen. */
  queue_close(fx.q);
  assert_int_equal(queue_open(&fx.o, &fx.q), 0);
  assert_int_equal(queue_msg_load(fx.q, id, &e, NULL, NULL), 0);
  assert_int_equal(e->n_rcpts, 2);
  queue_env_free(e);
  fx_done(&fx);
}

/* A one-recipient message with a new id (the caller's buffer). */
static const struct queue_rcpt_in one_rcpt = {"a@x.test", NULL, 0};
static const char one_body[] = "Subject: t\r\n\r\nhello\r\n";
static const struct iovec one_iov = {(void *)one_body, sizeof one_body - 1};

static struct queue_msg_in one_msg(char id[QUEUE_ID_LEN + 1]) {
  queue_id_new(id);
  return (struct queue_msg_in){.id = id,
                               .sender = "s@example.org",
                               .rcpts = &one_rcpt,
                               .n_rcpts = 1,
                               .body = &one_iov,
                               .body_iovcnt = 1,
                               .arrival_ms = T0};
}

/* Submits a one-recipient message with the given flags. */
static int put_flagged(struct queue *q, char id[QUEUE_ID_LEN + 1],
                       bool requiretls, bool tls_report) {
  struct queue_msg_in m = one_msg(id);
  m.tls_report = tls_report;
  m.requiretls = requiretls;
  struct queue_env *h;
  assert_int_equal(queue_env_of_submission(&m, &h), 0);
  assert_int_equal(h->requiretls, requiretls);
  assert_int_equal(h->tls_report, tls_report);
  queue_env_free(h);
  return submit_sync(q, &m);
}

static void assert_flags(struct queue *q, const char *id, bool requiretls,
                         bool tls_report) {
  struct queue_env *e;
  assert_int_equal(queue_msg_load(q, id, &e, NULL, NULL), 0);
  assert_int_equal(e->requiretls, requiretls);
  assert_int_equal(e->tls_report, tls_report);
  queue_env_free(e);
}

/* The SMTP AUTH user is kept with the message, through a result update
 * (which rewrites the record) and a reopen; a message without one is
 * written exactly as records were before the field existed, and reads as
 * "". */
static void test_auth_user(void **state) {
  (void)state;
  struct fixture fx;
  fx_prepare(&fx, 0);
  assert_int_equal(queue_open(&fx.o, &fx.q), 0);
  char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1];
  struct queue_msg_in m = one_msg(a);
  m.auth_user = "j\xc3\xb6rg";
  struct queue_env *h;
  assert_int_equal(queue_env_of_submission(&m, &h), 0);
  assert_string_equal(h->auth_user, "j\xc3\xb6rg");
  size_t with = queue__rec_size(h);
  h->auth_user = NULL;
  size_t old = queue__rec_size(h);
  h->auth_user = "";
  assert_int_equal(queue__rec_size(h), old);
  assert_int_equal(with, old + 4 + 5);
  queue_env_free(h);
  assert_int_equal(submit_sync(fx.q, &m), 0);
  m = one_msg(b);
  assert_int_equal(submit_sync(fx.q, &m), 0);
  struct queue_rcpt_result def = {0, QUEUE_OUTCOME_DEFERRED, "4.2.0", "451"};
  struct queue_env *e = NULL;
  /* (result_sync's copy keeps only the recipients' strings.) */
  assert_int_equal(result_sync(fx.q, a, &def, 1, &e), 0);
  free_copy(e);
  queue_close(fx.q);
  assert_int_equal(queue_open(&fx.o, &fx.q), 0);
  assert_int_equal(queue_msg_load(fx.q, a, &e, NULL, NULL), 0);
  assert_string_equal(e->auth_user, "j\xc3\xb6rg");
  assert_int_equal(e->rcpts[0].state, QUEUE_RCPT_DEFERRED);
  queue_env_free(e);
  assert_int_equal(queue_msg_load(fx.q, b, &e, NULL, NULL), 0);
  assert_string_equal(e->auth_user, "");
  queue_env_free(e);
  fx_done(&fx);
}

/* RFC 8689 REQUIRETLS is kept with the message in the record's flags,
 * apart from the other flags, through result updates (which rewrite the
 * record) and a reopen; a message without it (every record written before
 * the flag existed) reads as false. */
static void test_requiretls_flag(void **state) {
  struct fixture fx;
  fx_prepare(&fx, 0);
  fx.o.delay_warning = QUEUE_MS_HOUR;
  assert_int_equal(queue_open(&fx.o, &fx.q), 0);
  char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1], c[QUEUE_ID_LEN + 1];
  assert_int_equal(put_flagged(fx.q, a, true, false), 0);
  assert_int_equal(put_flagged(fx.q, b, false, false), 0);
  assert_int_equal(put_flagged(fx.q, c, false, true), 0);
  assert_flags(fx.q, a, true, false);
  assert_flags(fx.q, b, false, false);
  assert_flags(fx.q, c, false, true);

  /* A deferral rewrites the record (and, past delay_warning, sets the
   * warned flag next to it): the flag stays. */
  fx.now = T0 + 2 * QUEUE_MS_HOUR;
  struct queue_rcpt_result def = {0, QUEUE_OUTCOME_DEFERRED, "4.2.0", "451"};
  struct queue_env *e = NULL;
  assert_int_equal(result_sync(fx.q, a, &def, 1, &e), 0);
  assert_true(e->requiretls);
  assert_true(e->delay_warned);
  free_copy(e);
  assert_int_equal(result_sync(fx.q, b, &def, 1, &e), 0);
  assert_false(e->requiretls);
  free_copy(e);
  assert_flags(fx.q, a, true, false);
  assert_flags(fx.q, b, false, false);

  queue_close(fx.q);
  assert_int_equal(queue_open(&fx.o, &fx.q), 0);
  assert_flags(fx.q, a, true, false);
  assert_flags(fx.q, b, false, false);
  assert_flags(fx.q, c, false, true);
  fx_done(&fx);
}

static void test_rcpt_transitions(void **state) {
  struct fixture fx;
  fx_init(&fx, 0);
  fx.o.delay_warning = 0;
  char id[QUEUE_ID_LEN + 1];
  static const char *const rc3[] = {"a@x.test", "b@x.test", "c@y.test"};
  assert_int_equal(put_msg(fx.q, id, rc3, 3), 0);
  struct queue_due d[4];
  assert_int_equal(due_ids(fx.q, T0, d, 4), 1);
  assert_string_equal(d[0].id, id);
  assert_int_equal(d[0].due_ms, T0);

  fx.now = T0 + 1000;
  struct queue_rcpt_result res[] = {
      {0, QUEUE_OUTCOME_SENT, "2.0.0", "250 ok"},
      {1, QUEUE_OUTCOME_DEFERRED, "4.2.0", "451 try later"},
      {2, QUEUE_OUTCOME_BOUNCED, "5.1.1", "550 no such user"}};
  struct queue_env *e = NULL;
  assert_int_equal(result_sync(fx.q, id, res, 3, &e), 0);
  assert_false(e->removed);
  assert_int_equal(e->state, QUEUE_MSG_DEFERRED);
  assert_int_equal(e->rcpts[0].state, QUEUE_RCPT_SENT);
  assert_int_equal(e->rcpts[0].event, QUEUE_DSN_SENT);
  assert_int_equal(e->rcpts[1].state, QUEUE_RCPT_DEFERRED);
  assert_int_equal(e->rcpts[1].event, QUEUE_DSN_NONE);
  assert_int_equal(e->rcpts[1].next_ms, T0 + 1000 + 5 * 60000);
  assert_int_equal(e->rcpts[2].state, QUEUE_RCPT_BOUNCED);
  assert_int_equal(e->rcpts[2].event, QUEUE_DSN_BOUNCED);
  assert_string_equal(e->rcpts[2].status, "5.1.1");
  assert_string_equal(e->rcpts[2].reply, "550 no such user");
  free_copy(e);

  /* Stored as reported; no longer due now, due in 5 minutes. */
  assert_int_equal(queue_msg_load(fx.q, id, &e, NULL, NULL), 0);
  assert_int_equal(e->rcpts[1].attempts, 1);
  assert_int_equal(e->rcpts[1].last_ms, T0 + 1000);
  assert_string_equal(e->rcpts[1].reply, "451 try later");
  assert_int_equal(e->next_ms, T0 + 1000 + 300000);
  queue_env_free(e);
  assert_int_equal(due_ids(fx.q, T0 + 1000, d, 4), 0);
  uint64_t next;
  assert_int_equal(queue_due_next(fx.q, T0 + 1000, &next), 0);
  assert_int_equal(next, T0 + 1000 + 300000);

  /* A final recipient cannot be reported again; nothing changes. */
  struct queue_rcpt_result again = {0, QUEUE_OUTCOME_SENT, "2.0.0", "x"};
  assert_int_equal(result_sync(fx.q, id, &again, 1, NULL), POSTERN_EINVAL);
  struct queue_rcpt_result range = {7, QUEUE_OUTCOME_SENT, "2.0.0", "x"};
  assert_int_equal(result_sync(fx.q, id, &range, 1, NULL), POSTERN_EINVAL);

  /* Long replies are cut to QUEUE_REPLY_MAX. */
  char longr[2000];
  memset(longr, 'r', sizeof longr - 1);
  longr[sizeof longr - 1] = '\0';
  fx.now = T0 + 400000;
  struct queue_rcpt_result def2 = {1, QUEUE_OUTCOME_DEFERRED, "4.4.1", longr};
  assert_int_equal(result_sync(fx.q, id, &def2, 1, &e), 0);
  assert_int_equal(strlen(e->rcpts[1].reply), QUEUE_REPLY_MAX);
  assert_int_equal(e->rcpts[1].next_ms, T0 + 400000 + 600000);
  free_copy(e);

  /* The last recipient sent: the message leaves the queue. */
  struct queue_rcpt_result sent = {1, QUEUE_OUTCOME_SENT, "2.0.0", "250"};
  assert_int_equal(result_sync(fx.q, id, &sent, 1, &e), 0);
  assert_true(e->removed);
  free_copy(e);
  assert_int_equal(queue_msg_load(fx.q, id, &e, NULL, NULL), POSTERN_ENOENT);
  assert_int_equal(due_ids(fx.q, UINT64_MAX - 1, d, 4), 0);
  assert_int_equal(result_sync(fx.q, id, &sent, 1, NULL), POSTERN_ENOENT);

  struct queue_stats st;
  assert_int_equal(queue_stats_get(fx.q, 5, &st), 0);
  assert_int_equal(st.messages, 0);
  assert_int_equal(st.recipients, 0);
  assert_int_equal(st.bytes, 0);
  assert_int_equal(st.domains, 0);
  free(st.top);
  fx_done(&fx);
}

static void test_due_order(void **state) {
  struct fixture fx;
  fx_init(&fx, 0);
  /* Five messages committed at different clock times: due in that order;
   * deferring the first moves it behind the others. */
  char ids[5][QUEUE_ID_LEN + 1];
  static const char *const r1[] = {"a@x.test"};
  for (int i = 0; i < 5; i++) {
    fx.now = T0 + (uint64_t)(5 - i) * 10; /* later ids due earlier */
    assert_int_equal(put_msg(fx.q, ids[i], r1, 1), 0);
  }
  struct queue_due d[8];
  size_t n = due_ids(fx.q, T0 + 100, d, 8);
  assert_int_equal(n, 5);
  for (int i = 0; i < 5; i++) {
    assert_string_equal(d[i].id, ids[4 - i]);
    assert_int_equal(d[i].due_ms, T0 + (uint64_t)(i + 1) * 10);
  }
  /* Bounded by now and by max; paging with `after`. */
  assert_int_equal(due_ids(fx.q, T0 + 25, d, 8), 2);
  assert_int_equal(due_ids(fx.q, T0 + 100, d, 3), 3);
  size_t m;
  struct queue_due page[8];
  assert_int_equal(queue_due_scan(fx.q, T0 + 100, &d[2], page, 8, &m), 0);
  assert_int_equal(m, 2);
  assert_string_equal(page[0].id, ids[1]);
  assert_string_equal(page[1].id, ids[0]);
  uint64_t next;
  assert_int_equal(queue_due_next(fx.q, T0 + 25, &next), 0);
  assert_int_equal(next, T0 + 30);
  assert_int_equal(queue_due_next(fx.q, T0 + 50, &next), 0);
  assert_int_equal(next, UINT64_MAX);

  fx.now = T0 + 100;
  struct queue_rcpt_result def = {0, QUEUE_OUTCOME_DEFERRED, "4.0.0", ""};
  assert_int_equal(result_sync(fx.q, ids[4], &def, 1, NULL), 0);
  n = due_ids(fx.q, UINT64_MAX - 1, d, 8);
  assert_int_equal(n, 5);
  assert_string_equal(d[4].id, ids[4]);
  assert_int_equal(d[4].due_ms, T0 + 100 + 300000);
  fx_done(&fx);
}

struct retry_case {
  unsigned attempts;
  uint32_t rnd;
  uint64_t want; /* ms after now */
};

static void test_retry_arith(void **state) {
  const struct queue_retry_params p = {5 * 60000, 2.0, 3600000};
  static const struct retry_case cases[] = {
      {1, 1000, 300000},  /* 5m, no jitter */
      {2, 1000, 600000},  /* 10m */
      {3, 1000, 1200000}, /* 20m */
      {4, 1000, 2400000}, /* 40m */
      {5, 1000, 3600000}, /* capped at 1h */
      {60, 1000, 3600000}, {1000000, 1000, 3600000}, {1, 0, 270000}, /* -10% */
      {1, 2000, 330000},                                             /* +10% */
      {1, 2001, 270000},  /* wraps: 2001 % 2001 == 0 */
      {1, 1500, 315000},  /* +5% */
      {5, 0, 3240000},    /* -10% of the cap */
      {5, 2000, 3960000}, /* +10% of the cap */
      {0, 1000, 300000},  /* 0 attempts behaves like 1 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    uint64_t got = queue_retry_next(&p, cases[i].attempts, T0, cases[i].rnd);
    if (got != T0 + cases[i].want)
      fail_msg("case %zu: got +%llu want +%llu", i,
               (unsigned long long)(got - T0),
               (unsigned long long)cases[i].want);
  }
  const struct queue_retry_params p15 = {1000, 1.5, 100000};
  assert_int_equal(queue_retry_next(&p15, 3, 0, 1000), 2250);
  /* Every jitter stays within +-10%. */
  for (uint32_t r = 0; r < 5000; r += 7) {
    uint64_t d = queue_retry_next(&p, 2, 0, r);
    assert_true(d >= 540000 && d <= 660000);
  }
}

static void test_hold_release(void **state) {
  struct fixture fx;
  fx_init(&fx, 0);
  char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1];
  static const char *const ra[] = {"u@a.test"};
  static const char *const rb[] = {"u@b.test", "v@B.Test"};
  assert_int_equal(put_msg(fx.q, a, ra, 1), 0);
  assert_int_equal(put_msg(fx.q, b, rb, 2), 0);

  const char *ids[] = {a};
  struct queue_select sel = {.ids = ids, .n_ids = 1};
  size_t ch, unk;
  assert_int_equal(queue_admin(fx.q, QUEUE_ADMIN_HOLD, &sel, &ch, &unk), 0);
  assert_int_equal(ch, 1);
  assert_int_equal(unk, 0);
  struct queue_due d[4];
  assert_int_equal(due_ids(fx.q, UINT64_MAX - 1, d, 4), 1);
  assert_string_equal(d[0].id, b);
  struct queue_env *e;
  assert_int_equal(queue_msg_load(fx.q, a, &e, NULL, NULL), 0);
  assert_int_equal(e->state, QUEUE_MSG_HELD);
  queue_env_free(e);

  /* A result for a held message (it was in flight) keeps it held. */
  fx.now = T0 + 10;
  struct queue_rcpt_result def = {0, QUEUE_OUTCOME_DEFERRED, "4.1.0", "x"};
  assert_int_equal(result_sync(fx.q, a, &def, 1, &e), 0);
  assert_int_equal(e->state, QUEUE_MSG_HELD);
  free_copy(e);
  assert_int_equal(due_ids(fx.q, UINT64_MAX - 1, d, 4), 1);
  /* retry on a held message moves its time but keeps it held. */
  assert_int_equal(queue_admin(fx.q, QUEUE_ADMIN_RETRY, &sel, &ch, &unk), 0);
  assert_int_equal(due_ids(fx.q, UINT64_MAX - 1, d, 4), 1);

  struct queue_stats st;
  assert_int_equal(queue_stats_get(fx.q, 10, &st), 0);
  assert_int_equal(st.messages, 2);
  assert_int_equal(st.by_state[QUEUE_MSG_HELD], 1);
  assert_int_equal(st.by_state[QUEUE_MSG_ACTIVE], 1);
  assert_int_equal(st.recipients, 3);
  assert_int_equal(st.domains, 2);
  free(st.top);

  fx.now = T0 + 20;
  assert_int_equal(queue_admin(fx.q, QUEUE_ADMIN_RELEASE, &sel, &ch, &unk), 0);
  assert_int_equal(ch, 1);
  assert_int_equal(due_ids(fx.q, T0 + 20, d, 4), 2);
  assert_int_equal(queue_msg_load(fx.q, a, &e, NULL, NULL), 0);
  assert_int_equal(e->state, QUEUE_MSG_DEFERRED);
  assert_int_equal(e->next_ms, T0 + 10); /* retry set it to then */
  queue_env_free(e);

  /* Domain selection is case-insensitive; --all; unknown ids counted. */
  struct queue_select dom = {.domain = "B.TEST"};
  assert_int_equal(queue_admin(fx.q, QUEUE_ADMIN_HOLD, &dom, &ch, &unk), 0);
  assert_int_equal(ch, 1);
  assert_int_equal(due_ids(fx.q, UINT64_MAX - 1, d, 4), 1);
  assert_string_equal(d[0].id, a);
  struct queue_select all = {.all = true};
  assert_int_equal(queue_admin(fx.q, QUEUE_ADMIN_HOLD, &all, &ch, &unk), 0);
  assert_int_equal(ch, 2);
  assert_int_equal(due_ids(fx.q, UINT64_MAX - 1, d, 4), 0);
  assert_int_equal(queue_admin(fx.q, QUEUE_ADMIN_RELEASE, &all, &ch, &unk), 0);
  assert_int_equal(due_ids(fx.q, UINT64_MAX - 1, d, 4), 2);

  char ghost[QUEUE_ID_LEN + 1];
  queue_id_new(ghost);
  const char *mixed[] = {ghost, b, "garbage"};
  struct queue_select ms = {.ids = mixed, .n_ids = 3};
  assert_int_equal(queue_admin(fx.q, QUEUE_ADMIN_DELETE, &ms, &ch, &unk), 0);
  assert_int_equal(ch, 1);
  assert_int_equal(unk, 2);
  assert_int_equal(queue_msg_load(fx.q, b, &e, NULL, NULL), POSTERN_ENOENT);
  assert_int_equal(queue_stats_get(fx.q, 10, &st), 0);
  assert_int_equal(st.messages, 1);
  assert_int_equal(st.domains, 1);
  assert_int_equal(st.n_top, 1);
  assert_string_equal(st.top[0].domain, "a.test");
  free(st.top);
  fx_done(&fx);
}

static void test_max_age_and_delay(void **state) {
  struct fixture fx;
  fx_init(&fx, 0);
  queue_close(fx.q);
  fx.o.max_age = 2 * QUEUE_MS_HOUR;
  fx.o.delay_warning = QUEUE_MS_HOUR;
  assert_int_equal(queue_open(&fx.o, &fx.q), 0);
  char id[QUEUE_ID_LEN + 1];
  static const char *const r2[] = {"a@x.test", "b@x.test"};
  assert_int_equal(put_msg(fx.q, id, r2, 2), 0);
  struct queue_rcpt_result def[] = {
      {0, QUEUE_OUTCOME_DEFERRED, "4.2.0", "451 busy"},
      {1, QUEUE_OUTCOME_DEFERRED, "4.2.0", "451 busy"}};
  struct queue_env *e;
  /* Before delay_warning: no event. */
  fx.now = T0 + 10 * QUEUE_MS_MINUTE;
  assert_int_equal(result_sync(fx.q, id, def, 2, &e), 0);
  assert_int_equal(e->rcpts[0].event, QUEUE_DSN_NONE);
  assert_false(e->delay_warned);
  free_copy(e);
  /* Past it: a delay event once. */
  fx.now = T0 + 61 * QUEUE_MS_MINUTE;
  assert_int_equal(result_sync(fx.q, id, def, 1, &e), 0);
  assert_int_equal(e->rcpts[0].event, QUEUE_DSN_DELAYED);
  assert_true(e->delay_warned);
  free_copy(e);
  fx.now = T0 + 62 * QUEUE_MS_MINUTE;
  assert_int_equal(result_sync(fx.q, id, &def[1], 1, &e), 0);
  assert_int_equal(e->rcpts[1].event, QUEUE_DSN_NONE);
  free_copy(e);
  /* Past max_age a deferral becomes a 4.4.7 bounce. */
  fx.now = T0 + 2 * QUEUE_MS_HOUR;
  assert_int_equal(result_sync(fx.q, id, def, 2, &e), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(e->rcpts[i].state, QUEUE_RCPT_BOUNCED);
    assert_int_equal(e->rcpts[i].event, QUEUE_DSN_BOUNCED);
    assert_string_equal(e->rcpts[i].status, "4.4.7");
    assert_non_null(strstr(e->rcpts[i].reply, "451 busy"));
  }
  assert_true(e->removed);
  free_copy(e);
  assert_int_equal(queue_msg_load(fx.q, id, &e, NULL, NULL), POSTERN_ENOENT);
  fx_done(&fx);
}

/* Many producers submitting at once share commits. */
#define GC_PRODUCERS 8
#define GC_EACH 50

struct producer {
  struct queue *q;
  int failures;
};

static void *producer_main(void *arg) {
  struct producer *p = arg;
  static const char *const r1[] = {"a@x.test"};
  for (int i = 0; i < GC_EACH; i++) {
    char id[QUEUE_ID_LEN + 1];
    if (put_msg(p->q, id, r1, 1) != 0)
      p->failures++;
  }
  return NULL;
}

static void test_group_commit(void **state) {
  struct fixture fx;
  fx_init(&fx, 0);
  pthread_t th[GC_PRODUCERS];
  struct producer pr[GC_PRODUCERS];
  for (int i = 0; i < GC_PRODUCERS; i++) {
    pr[i] = (struct producer){fx.q, 0};
    pthread_create(&th[i], NULL, producer_main, &pr[i]);
  }
  for (int i = 0; i < GC_PRODUCERS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(pr[i].failures, 0);
  }
  uint64_t commits, ops;
  queue_writer_totals(fx.q, &commits, &ops);
  assert_int_equal(ops, GC_PRODUCERS * GC_EACH);
  assert_true(commits <= ops);
  struct queue_stats st;
  assert_int_equal(queue_stats_get(fx.q, 3, &st), 0);
  assert_int_equal(st.messages, GC_PRODUCERS * GC_EACH);
  assert_int_equal(st.by_state[QUEUE_MSG_ACTIVE], GC_PRODUCERS * GC_EACH);
  assert_int_equal(st.top[0].messages, GC_PRODUCERS * GC_EACH);
  assert_string_equal(st.top[0].domain, "x.test");
  free(st.top);
  /* queue_list visits them all in id order, in pages. */
  fx_done(&fx);
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Builds message i of a small batch (ids and recipients in `ids`). */
static struct queue_msg_in batch_msg(char id[QUEUE_ID_LEN + 1],
                                     struct queue_rcpt_in *r,
                                     struct iovec *iov) {
  static const char body[] = "Subject: b\r\n\r\nhi\r\n";
  queue_id_new(id);
  *r = (struct queue_rcpt_in){"a@x.test", NULL, 0};
  *iov = (struct iovec){(void *)body, sizeof body - 1};
  return (struct queue_msg_in){.id = id,
                               .sender = "s@example.org",
                               .rcpts = r,
                               .n_rcpts = 1,
                               .body = iov,
                               .body_iovcnt = 1};
}

/* commit_interval: a message after a quiet spell is committed at once;
 * messages arriving right after a commit wait for the interval and share
 * the next commit; closing the queue commits what waits. */
static void test_commit_interval(void **state) {
  struct fixture fx;
  fx_prepare(&fx, 0);
  fx.o.commit_interval_us = 500 * 1000;
  assert_int_equal(queue_open(&fx.o, &fx.q), 0);

  char id0[QUEUE_ID_LEN + 1];
  const char *rc0[] = {"a@x.test"};
  assert_int_equal(put_msg(fx.q, id0, rc0, 1), 0);
  uint64_t t0 = mono_ms(), commits, ops;
  queue_writer_totals(fx.q, &commits, &ops);
  assert_int_equal(commits, 1);

  enum { N = 3 };
  char ids[N][QUEUE_ID_LEN + 1];
  struct queue_rcpt_in r[N];
  struct iovec iov[N];
  struct wait w;
  struct sub_slot slots[N];
  wait_init(&w, N);
  for (int i = 0; i < N; i++) {
    struct queue_msg_in m = batch_msg(ids[i], &r[i], &iov[i]);
    slots[i] = (struct sub_slot){&w, 1};
    assert_int_equal(queue_msg_submit(fx.q, &m, on_submit, &slots[i]), 0);
  }
  wait_all(&w);
  for (int i = 0; i < N; i++)
    assert_int_equal(slots[i].status, 0);
  queue_writer_totals(fx.q, &commits, &ops);
  assert_int_equal(commits, 2); /* the three shared one commit */
  assert_int_equal(ops, 1 + N);
  assert_true(mono_ms() - t0 >= 400); /* it waited for the interval */

  /* Closing while a message waits for the interval commits it. */
  char idz[QUEUE_ID_LEN + 1];
  struct queue_rcpt_in rz;
  struct iovec iz;
  struct queue_msg_in mz = batch_msg(idz, &rz, &iz);
  struct wait wz;
  struct sub_slot sz = {&wz, 1};
  wait_init(&wz, 1);
  assert_int_equal(queue_msg_submit(fx.q, &mz, on_submit, &sz), 0);
  queue_close(fx.q);
  assert_int_equal(sz.status, 0);
  fx.o.no_create = true;
  assert_int_equal(queue_open(&fx.o, &fx.q), 0);
  struct queue_env *e = NULL;
  void *body = NULL;
  size_t body_len = 0;
  assert_int_equal(queue_msg_load(fx.q, idz, &e, &body, &body_len), 0);
  queue_env_free(e);
  free(body);
  fx_done(&fx);
}

struct list_acc {
  size_t n;
  char last[QUEUE_ID_LEN + 1];
  int ordered;
};

static int list_cb(void *arg, const struct queue_env *e) {
  struct list_acc *a = arg;
  if (a->n && strcmp(a->last, e->id) >= 0)
    a->ordered = 0;
  memcpy(a->last, e->id, sizeof a->last);
  a->n++;
  return 0;
}

static void test_list_pages(void **state) {
  struct fixture fx;
  fx_init(&fx, 0);
  static const char *const rx[] = {"a@x.test"};
  static const char *const ry[] = {"a@y.test", "b@x.test"};
  char id[QUEUE_ID_LEN + 1];
  for (int i = 0; i < 25; i++)
    assert_int_equal(put_msg(fx.q, id, i % 5 ? rx : ry, i % 5 ? 1 : 2), 0);
  struct list_acc acc = {0, "", 1};
  assert_int_equal(queue_list(fx.q, NULL, NULL, 7, list_cb, &acc), 0);
  assert_int_equal(acc.n, 25);
  assert_true(acc.ordered);
  struct list_acc ay = {0, "", 1};
  assert_int_equal(queue_list(fx.q, NULL, "y.test", 2, list_cb, &ay), 0);
  assert_int_equal(ay.n, 5);
  assert_true(ay.ordered);
  struct list_acc ax = {0, "", 1};
  assert_int_equal(queue_list(fx.q, NULL, "X.test", 3, list_cb, &ax), 0);
  assert_int_equal(ax.n, 25);
  fx_done(&fx);
}

/* A tiny map: submissions eventually fail with EQFULL, cleanly, and what
 * was committed stays readable; a small message still fits after a big one
 * failed in the same batch. */
static void test_map_full(void **state) {
  struct fixture fx;
  fx_init(&fx, 1u << 20); /* 1 MiB */
  size_t bsz = 64 * 1024;
  char *blob = malloc(bsz);
  memset(blob, 'x', bsz);
  struct iovec iov = {blob, bsz};
  struct queue_rcpt_in r = {"a@x.test", NULL, 0};
  char ids[64][QUEUE_ID_LEN + 1];
  int ok = 0, full = 0;
  for (int i = 0; i < 64 && !full; i++) {
    queue_id_new(ids[ok]);
    struct queue_msg_in m = {.id = ids[ok],
                             .sender = "s@x.test",
                             .rcpts = &r,
                             .n_rcpts = 1,
                             .body = &iov,
                             .body_iovcnt = 1};
    int rc = submit_sync(fx.q, &m);
    if (rc == 0)
      ok++;
    else if (rc == POSTERN_EQFULL)
      full = 1;
    else
      fail_msg("unexpected %s", postern_err_name(rc));
  }
  assert_true(full);
  assert_true(ok > 0);

  /* A batch of one huge and one tiny message: only the huge one fails. */
  struct wait w;
  wait_init(&w, 2);
  char big_id[QUEUE_ID_LEN + 1], small_id[QUEUE_ID_LEN + 1];
  queue_id_new(big_id);
  queue_id_new(small_id);
  char *huge = calloc(1, 4u << 20);
  struct iovec hiov = {huge, 4u << 20};
  struct iovec siov = {"x", 1};
  struct queue_msg_in mb = {.id = big_id,
                            .sender = "",
                            .rcpts = &r,
                            .n_rcpts = 1,
                            .body = &hiov,
                            .body_iovcnt = 1};
  struct queue_msg_in msm = {.id = small_id,
                             .sender = "",
                             .rcpts = &r,
                             .n_rcpts = 1,
                             .body = &siov,
                             .body_iovcnt = 1};
  struct sub_slot sb = {&w, 1}, ss = {&w, 1};
  assert_int_equal(queue_msg_submit(fx.q, &mb, on_submit, &sb), 0);
  assert_int_equal(queue_msg_submit(fx.q, &msm, on_submit, &ss), 0);
  wait_all(&w);
  assert_int_equal(sb.status, POSTERN_EQFULL);
  /* The tiny one may or may not fit the remaining space, but never fails
   * for another reason. */
  assert_true(ss.status == 0 || ss.status == POSTERN_EQFULL);
  free(huge);

  for (int i = 0; i < ok; i++) {
    struct queue_env *e;
    void *body;
    size_t blen;
    assert_int_equal(queue_msg_load(fx.q, ids[i], &e, &body, &blen), 0);
    assert_int_equal(blen, bsz);
    assert_memory_equal(body, blob, bsz);
    queue_env_free(e);
    free(body);
  }
  /* Deleting makes room again. */
  struct queue_select all = {.all = true};
  size_t ch;
  assert_int_equal(queue_admin(fx.q, QUEUE_ADMIN_DELETE, &all, &ch, NULL), 0);
  assert_true(ch >= (size_t)ok);
  queue_id_new(ids[0]);
  struct queue_msg_in m = {.id = ids[0],
                           .sender = "s@x.test",
                           .rcpts = &r,
                           .n_rcpts = 1,
                           .body = &iov,
                           .body_iovcnt = 1};
  assert_int_equal(submit_sync(fx.q, &m), 0);
  free(blob);
  fx_done(&fx);
}

/* Taking work from the due index writes nothing, so what was in flight when
 * the process stopped is due again after a restart. */
static void test_inflight_due_after_restart(void **state) {
  struct fixture fx;
  fx_init(&fx, 0);
  char id[QUEUE_ID_LEN + 1];
  static const char *const r1[] = {"a@x.test"};
  assert_int_equal(put_msg(fx.q, id, r1, 1), 0);
  struct queue_due d[2];
  assert_int_equal(due_ids(fx.q, T0, d, 2), 1);
  struct queue_env *e;
  void *body;
  size_t blen;
  assert_int_equal(queue_msg_load(fx.q, d[0].id, &e, &body, &blen), 0);
  queue_env_free(e);
  free(body);
  queue_close(fx.q); /* "crash" before any result */
  assert_int_equal(queue_open(&fx.o, &fx.q), 0);
  assert_int_equal(due_ids(fx.q, T0, d, 2), 1);
  assert_string_equal(d[0].id, id);
  fx_done(&fx);
}

static void test_open_errors(void **state) {
  struct queue *q;
  struct queue_opts o = {0};
  assert_int_equal(queue_open(&o, &q), POSTERN_EINVAL);
  o.state_dir = "/nonexistent/postern/state";
  o.no_create = true;
  assert_int_equal(queue_open(&o, &q), POSTERN_ENOENT);
  o.no_create = false;
  assert_true(queue_open(&o, &q) < 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_id_format),
      cmocka_unit_test(test_id_unique_threads),
      cmocka_unit_test(test_commit_readback),
      cmocka_unit_test(test_requiretls_flag),
      cmocka_unit_test(test_auth_user),
      cmocka_unit_test(test_rcpt_transitions),
      cmocka_unit_test(test_due_order),
      cmocka_unit_test(test_retry_arith),
      cmocka_unit_test(test_hold_release),
      cmocka_unit_test(test_max_age_and_delay),
      cmocka_unit_test(test_group_commit),
      cmocka_unit_test(test_commit_interval),
      cmocka_unit_test(test_list_pages),
      cmocka_unit_test(test_map_full),
      cmocka_unit_test(test_inflight_due_after_restart),
      cmocka_unit_test(test_open_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
