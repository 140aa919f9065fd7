/*
 * qfill - test helper for qtool's tests: fills a queue and can stay open
 * like a running relay.
 *
 *   qfill STATE_DIR COUNT DOMAINS DEFER [serve]
 *
 * Submits COUNT messages; message i goes to user<i>@<domain i mod n> (the
 * comma-separated DOMAINS) with a fixed body, and the first DEFER of them get
 * a deferred result ("4.2.0 451 try later"). Prints each id on stdout.
 * With `serve` it then keeps the queue open and answers lines on stdin:
 * "due" prints how many messages are due now (the relay's view), "quit"
 * exits. All submissions go through the group-commit writer.
 */
#include "base/postern_err.h"
#include "queue/queue.h"
#include "tools/qwait.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY "Subject: qfill\r\n\r\nbody line\r\n"

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: qfill STATE_DIR COUNT DOMAINS DEFER [serve]\n");
    return 2;
  }
  int count = atoi(argv[2]), defer = atoi(argv[4]);
  char *doms[64];
  int ndom = 0;
  for (char *t = strtok(argv[3], ","); t && ndom < 64; t = strtok(NULL, ","))
    doms[ndom++] = t;
  if (count < 0 || ndom == 0)
    return 2;
  struct queue_opts o = {.state_dir = argv[1]};
  struct queue *q;
  int rc = queue_open(&o, &q);
  if (rc) {
    fprintf(stderr, "qfill: %s\n", postern_strerror(rc));
    return 1;
  }
  char(*ids)[QUEUE_ID_LEN + 1] = calloc((size_t)count + 1, sizeof *ids);
  char(*addrs)[300] = calloc((size_t)count + 1, sizeof *addrs);
  struct queue_rcpt_in *r = calloc((size_t)count + 1, sizeof *r);
  struct queue_msg_in *m = calloc((size_t)count + 1, sizeof *m);
  struct iovec iov = {BODY, sizeof BODY - 1};
  struct qwait d = QWAIT_INIT;
  d.left = count;
  for (int i = 0; i < count; i++) {
    queue_id_new(ids[i]);
    snprintf(addrs[i], sizeof addrs[i], "user%d@%s", i, doms[i % ndom]);
    r[i] = (struct queue_rcpt_in){addrs[i], NULL, QUEUE_NOTIFY_FAILURE};
    m[i] = (struct queue_msg_in){.id = ids[i],
                                 .sender = "sender@qfill.test",
                                 .rcpts = &r[i],
                                 .n_rcpts = 1,
                                 .client_addr = "127.0.0.1:25",
                                 .client_helo = "qfill.test",
                                 .body = &iov,
                                 .body_iovcnt = 1};
    if (queue_msg_submit(q, &m[i], qwait_submit_cb, &d))
      return 1;
  }
  qwait_wait(&d);
  if (d.failed) {
    fprintf(stderr, "qfill: submit: %s\n", postern_strerror(d.failed));
    return 1;
  }
  struct queue_rcpt_result res = {0, QUEUE_OUTCOME_DEFERRED, "4.2.0",
                                  "451 try later"};
  d.left = defer < count ? defer : count;
  struct queue_result_in *ri = calloc((size_t)count + 1, sizeof *ri);
  for (int i = 0; i < defer && i < count; i++) {
    ri[i] = (struct queue_result_in){ids[i], &res, 1};
    if (queue_result_submit(q, &ri[i], qwait_result_cb, &d))
      return 1;
  }
  qwait_wait(&d);
  if (d.failed) {
    fprintf(stderr, "qfill: result: %s\n", postern_strerror(d.failed));
    return 1;
  }
  for (int i = 0; i < count; i++)
    printf("%s\n", ids[i]);
  fflush(stdout);
  if (argc > 5 && strcmp(argv[5], "serve") == 0) {
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
      if (strncmp(line, "due", 3) == 0) {
        static struct queue_due due[100000];
        size_t n = 0;
        rc = queue_due_scan(q, queue_now_ms(q), NULL, due, 100000, &n);
        printf("%zu\n", rc ? (size_t)-1 : n);
        fflush(stdout);
      } else {
        break;
      }
    }
  }
  queue_close(q);
  free(ids);
  free(addrs);
  free(r);
  free(m);
  free(ri);
  return 0;
}
