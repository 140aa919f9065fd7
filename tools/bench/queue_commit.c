/*
 * queue_commit - measures the queue's group commit: N producer threads each
 * submit a message and wait for its commit callback (as an SMTP session
 * waits before sending 250), then submit the next, for a fixed time.
 *
 *   queue_commit STATE_DIR PRODUCERS SECONDS [BODY_BYTES]
 *
 * Prints one line of key=value: producers, messages, commits (write
 * transactions, each one fsync'ed commit), msgs_per_s, commits_per_s,
 * msgs_per_commit, and the commit latency seen by producers (p50, p99, ms).
 * The queue in STATE_DIR/queue is used as is; use a fresh directory.
 */
#include "base/postern_err.h"
#include "queue/queue.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile int stop_flag;
static char *body;
static size_t body_len;

struct producer {
  struct queue *q;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, status;
  uint64_t sent, failed;
  double *lat; /* ms, one per message, up to lat_cap */
  size_t lat_n, lat_cap;
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_commit(void *arg, int status) {
  struct producer *p = arg;
  pthread_mutex_lock(&p->mu);
  p->done = 1;
  p->status = status;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

static void *producer_main(void *arg) {
  struct producer *p = arg;
  char id[QUEUE_ID_LEN + 1];
  struct queue_rcpt_in r = {"rcpt@bench.test", NULL, 0};
  struct iovec iov = {body, body_len};
  while (!stop_flag) {
    queue_id_new(id);
    struct queue_msg_in m = {.id = id,
                             .sender = "sender@bench.test",
                             .rcpts = &r,
                             .n_rcpts = 1,
                             .client_addr = "127.0.0.1:1",
                             .body = &iov,
                             .body_iovcnt = 1};
    p->done = 0;
    double t0 = now_s();
    if (queue_msg_submit(p->q, &m, on_commit, p) != 0) {
      p->failed++;
      break;
    }
    pthread_mutex_lock(&p->mu);
    while (!p->done)
      pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    if (p->status == 0) {
      p->sent++;
      if (p->lat_n < p->lat_cap)
        p->lat[p->lat_n++] = (now_s() - t0) * 1000.0;
    } else {
      p->failed++;
    }
  }
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr,
            "usage: queue_commit STATE_DIR PRODUCERS SECONDS [BODY_BYTES]\n");
    return 2;
  }
  int n = atoi(argv[2]);
  double secs = atof(argv[3]);
  body_len = argc > 4 ? (size_t)atol(argv[4]) : 1024;
  if (n < 1 || n > 4096 || secs <= 0)
    return 2;
  body = malloc(body_len + 1);
  memset(body, 'x', body_len);

  struct queue_opts o = {.state_dir = argv[1], .map_size = 4ull << 30};
  struct queue *q;
  int rc = queue_open(&o, &q);
  if (rc) {
    fprintf(stderr, "queue_commit: %s\n", postern_strerror(rc));
    return 1;
  }
  struct producer *ps = calloc((size_t)n, sizeof *ps);
  pthread_t *th = calloc((size_t)n, sizeof *th);
  for (int i = 0; i < n; i++) {
    ps[i].q = q;
    pthread_mutex_init(&ps[i].mu, NULL);
    pthread_cond_init(&ps[i].cv, NULL);
    ps[i].lat_cap = 1u << 20;
    ps[i].lat = malloc(ps[i].lat_cap * sizeof(double));
  }
  uint64_t c0, o0;
  queue_writer_totals(q, &c0, &o0);
  double t0 = now_s();
  for (int i = 0; i < n; i++)
    pthread_create(&th[i], NULL, producer_main, &ps[i]);
  struct timespec ts = {(time_t)secs,
                        (long)((secs - (double)(time_t)secs) * 1e9)};
  nanosleep(&ts, NULL);
  stop_flag = 1;
  uint64_t sent = 0, failed = 0;
  size_t nlat = 0;
  for (int i = 0; i < n; i++) {
    pthread_join(th[i], NULL);
    sent += ps[i].sent;
    failed += ps[i].failed;
    nlat += ps[i].lat_n;
  }
  double el = now_s() - t0;
  uint64_t c1, o1;
  queue_writer_totals(q, &c1, &o1);
  double *all = malloc((nlat + 1) * sizeof *all);
  size_t k = 0;
  for (int i = 0; i < n; i++) {
    memcpy(all + k, ps[i].lat, ps[i].lat_n * sizeof *all);
    k += ps[i].lat_n;
    free(ps[i].lat);
  }
  qsort(all, nlat, sizeof *all, cmp_double);
  uint64_t commits = c1 - c0;
  printf("producers=%d messages=%llu failed=%llu commits=%llu "
         "msgs_per_s=%.0f commits_per_s=%.0f msgs_per_commit=%.2f "
         "p50_ms=%.2f p99_ms=%.2f body=%zu\n",
         n, (unsigned long long)sent, (unsigned long long)failed,
         (unsigned long long)commits, (double)sent / el, (double)commits / el,
         commits ? (double)(o1 - o0) / (double)commits : 0.0,
         nlat ? all[nlat / 2] : 0.0, nlat ? all[nlat * 99 / 100] : 0.0,
         body_len);
  free(all);
  queue_close(q);
  free(ps);
  free(th);
  free(body);
  return failed ? 1 : 0;
}
