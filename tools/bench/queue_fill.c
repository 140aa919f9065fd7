/*
 * queue_fill - fills a queue with deferred messages through the queue API
 * (no SMTP), for tools/bench/queue-scale.
 *
 *   queue_fill STATE_DIR COUNT [BODY_BYTES] [DOMAINS]
 *
 * Submits COUNT messages of BODY_BYTES (default 1024) to user<i>@d<i mod
 * DOMAINS>.deferred.test (default 1000 domains), in chunks of CHUNK, and
 * records a deferred result ("4.2.0 451 try later") for each, with a first
 * retry one day later: the messages stay deferred, and out of the relay's
 * due scans, for the whole benchmark. Each chunk waits for its commits
 * before the next is submitted, so memory stays bounded whatever COUNT is.
 * Prints a key=value summary line (messages, seconds, msgs_per_s).
 */
#include "base/postern_err.h"
#include "queue/queue.h"
#include "tools/qwait.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 8192

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr,
            "usage: queue_fill STATE_DIR COUNT [BODY_BYTES] [DOMAINS]\n");
    return 2;
  }
  long count = atol(argv[2]);
  size_t body_len = argc > 3 ? (size_t)atol(argv[3]) : 1024;
  long ndom = argc > 4 ? atol(argv[4]) : 1000;
  if (count < 0 || ndom < 1 || body_len < 32)
    return 2;
  /* A plausible message: a few headers, then lines of 76 characters. */
  char *body = malloc(body_len);
  if (body == NULL)
    return 1;
  size_t hl = (size_t)snprintf(body, body_len,
                               "From: <sender@fill.test>\r\n"
                               "Subject: queue_fill\r\n\r\n");
  for (size_t i = hl; i < body_len; i++)
    body[i] = (i - hl) % 78 == 76 ? '\r' : (i - hl) % 78 == 77 ? '\n' : 'x';
  if (body_len >= 2) {
    body[body_len - 2] = '\r';
    body[body_len - 1] = '\n';
  }
  struct queue_opts o = {
      .state_dir = argv[1],
      .retry = {.initial = QUEUE_MS_DAY, .factor = 2.0, .max = QUEUE_MS_DAY},
      .max_age = 30 * QUEUE_MS_DAY,
  };
  struct queue *q;
  int rc = queue_open(&o, &q);
  if (rc) {
    fprintf(stderr, "queue_fill: %s\n", postern_strerror(rc));
    return 1;
  }
  static char ids[CHUNK][QUEUE_ID_LEN + 1];
  static char addrs[CHUNK][64];
  static struct queue_rcpt_in r[CHUNK];
  static struct queue_msg_in m[CHUNK];
  static struct queue_result_in ri[CHUNK];
  struct iovec iov = {body, body_len};
  struct queue_rcpt_result res = {0, QUEUE_OUTCOME_DEFERRED, "4.2.0",
                                  "451 4.2.0 try later"};
  struct qwait d = QWAIT_INIT;
  double t0 = now_s();
  for (long base = 0; base < count; base += CHUNK) {
    int n = count - base < CHUNK ? (int)(count - base) : CHUNK;
    d.left = n;
    for (int i = 0; i < n; i++) {
      long k = base + i;
      queue_id_new(ids[i]);
      snprintf(addrs[i], sizeof addrs[i], "user%ld@d%ld.deferred.test", k,
               k % ndom);
      r[i] = (struct queue_rcpt_in){addrs[i], NULL, QUEUE_NOTIFY_FAILURE};
      m[i] = (struct queue_msg_in){.id = ids[i],
                                   .sender = "sender@fill.test",
                                   .rcpts = &r[i],
                                   .n_rcpts = 1,
                                   .client_addr = "127.0.0.1:25",
                                   .client_helo = "fill.test",
                                   .body = &iov,
                                   .body_iovcnt = 1};
      if ((rc = queue_msg_submit(q, &m[i], qwait_submit_cb, &d)) != 0) {
        fprintf(stderr, "queue_fill: submit: %s\n", postern_strerror(rc));
        return 1;
      }
    }
    qwait_wait(&d);
    if (d.failed)
      break;
    d.left = n;
    for (int i = 0; i < n; i++) {
      ri[i] = (struct queue_result_in){ids[i], &res, 1};
      if ((rc = queue_result_submit(q, &ri[i], qwait_result_cb, &d)) != 0) {
        fprintf(stderr, "queue_fill: result: %s\n", postern_strerror(rc));
        return 1;
      }
    }
    qwait_wait(&d);
    if (d.failed)
      break;
  }
  double el = now_s() - t0;
  queue_close(q);
  free(body);
  if (d.failed) {
    fprintf(stderr, "queue_fill: %s\n", postern_strerror(d.failed));
    return 1;
  }
  printf("messages=%ld seconds=%.1f msgs_per_s=%.0f\n", count, el,
         el > 0 ? (double)count / el : 0.0);
  return 0;
}
