/*
 * queue_crash_test.c - kill -9 at random moments must lose nothing that was
 * acknowledged.
 *
 * Each round forks a child that opens the queue and enqueues continuously
 * from four producer threads; every submit callback with status 0 writes
 * the committed id to a pipe (the moment a relay would send 250). The parent
 * reads ids, SIGKILLs the child after a random delay, then reopens the queue
 * and checks that every reported id is there with its body, and that the
 * counters match a full listing. At least 20 rounds (POSTERN_LONG=1: 100).
 */
#include "base/postern_err.h"
#include "queue/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PRODUCERS 4
#define BODY "Subject: crash\r\n\r\nsurvive me\r\n"

static int report_fd;

struct slot {
  char id[QUEUE_ID_LEN + 1];
  struct queue_rcpt_in rcpt;
  struct iovec iov;
  struct queue_msg_in in;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
};

static void on_commit(void *arg, int status) {
  struct slot *s = arg;
  if (status == 0) {
    char line[QUEUE_ID_LEN + 1];
    memcpy(line, s->id, QUEUE_ID_LEN);
    line[QUEUE_ID_LEN] = '\n';
    /* 27 bytes < PIPE_BUF: atomic. */
    if (write(report_fd, line, sizeof line) != (ssize_t)sizeof line)
      _exit(3);
  }
  pthread_mutex_lock(&s->mu);
  s->done = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void *producer(void *arg) {
  struct queue *q = arg;
  struct slot s;
  memset(&s, 0, sizeof s);
  pthread_mutex_init(&s.mu, NULL);
  pthread_cond_init(&s.cv, NULL);
  for (unsigned n = 0;; n++) {
    queue_id_new(s.id);
    s.rcpt =
        (struct queue_rcpt_in){n % 2 ? "a@odd.test" : "b@even.test", NULL, 0};
    s.iov = (struct iovec){BODY, sizeof BODY - 1};
    s.in = (struct queue_msg_in){.id = s.id,
                                 .sender = "s@crash.test",
                                 .rcpts = &s.rcpt,
                                 .n_rcpts = 1,
                                 .body = &s.iov,
                                 .body_iovcnt = 1};
    s.done = 0;
    if (queue_msg_submit(q, &s.in, on_commit, &s) != 0)
      _exit(4);
    pthread_mutex_lock(&s.mu);
    while (!s.done)
      pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
  }
  return NULL;
}

static void child(const char *dir, int fd) {
  report_fd = fd;
  struct queue_opts o = {.state_dir = dir, .map_size = 256u << 20};
  struct queue *q;
  if (queue_open(&o, &q) != 0)
    _exit(2);
  pthread_t th[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++)
    pthread_create(&th[i], NULL, producer, q);
  for (;;)
    pause();
}

struct idset {
  char (*ids)[QUEUE_ID_LEN + 1];
  size_t n, cap;
};

static void idset_add(struct idset *s, const char *id) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1024;
    s->ids = realloc(s->ids, s->cap * sizeof *s->ids);
    if (!s->ids)
      abort();
  }
  memcpy(s->ids[s->n], id, QUEUE_ID_LEN);
  s->ids[s->n++][QUEUE_ID_LEN] = '\0';
}

static int count_cb(void *arg, const struct queue_env *e) {
  (*(size_t *)arg)++;
  return 0;
}

int main(void) {
  const char *tmp = getenv("TEST_TMPDIR");
  char dir[512];
  snprintf(dir, sizeof dir, "%s/crashXXXXXX", tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  const char *lng = getenv("POSTERN_LONG");
  int rounds = lng && *lng == '1' ? 100 : 24;
  struct idset all = {0};
  int failures = 0;

  for (int round = 0; round < rounds; round++) {
    int p[2];
    if (pipe(p) != 0)
      return 1;
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      child(dir, p[1]);
    }
    close(p[1]);
    uint32_t r;
    if (getrandom(&r, sizeof r, 0) != sizeof r)
      r = (uint32_t)round * 7919u;
    /* 20..300 ms: sometimes before the first commit is done (open), most
     * often in the middle of a stream of commits. */
    struct timespec ts = {0, (long)(20 + r % 281) * 1000000L};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) {
      fprintf(stderr, "round %d: child ended by itself (status %d)\n", round,
              st);
      failures++;
    }
    /* The child is dead: everything it wrote to the pipe is readable. */
    char buf[QUEUE_ID_LEN + 1];
    size_t got = 0, reported = 0;
    ssize_t n;
    while ((n = read(p[0], buf + got, sizeof buf - got)) > 0) {
      got += (size_t)n;
      if (got == sizeof buf) {
        buf[QUEUE_ID_LEN] = '\0';
        idset_add(&all, buf);
        reported++;
        got = 0;
      }
    }
    close(p[0]);

    struct queue_opts o = {.state_dir = dir, .no_create = true};
    struct queue *q;
    int rc = queue_open(&o, &q);
    if (rc != 0) {
      fprintf(stderr, "round %d: reopen failed: %s\n", round,
              postern_strerror(rc));
      failures++;
      continue;
    }
    size_t missing = 0;
    for (size_t i = 0; i < all.n; i++) {
      struct queue_env *e;
      void *body = NULL;
      size_t blen = 0;
      rc = queue_msg_load(q, all.ids[i], &e, &body, &blen);
      if (rc != 0) {
        if (missing++ < 5)
          fprintf(stderr, "round %d: acknowledged %s lost: %s\n", round,
                  all.ids[i], postern_strerror(rc));
        continue;
      }
      if (blen != sizeof BODY - 1 || memcmp(body, BODY, blen) != 0 ||
          e->n_rcpts != 1) {
        fprintf(stderr, "round %d: %s damaged\n", round, all.ids[i]);
        missing++;
      }
      queue_env_free(e);
      free(body);
    }
    struct queue_stats stt;
    size_t listed = 0;
    if (queue_stats_get(q, 2, &stt) != 0 ||
        queue_list(q, NULL, NULL, 500, count_cb, &listed) != 0) {
      fprintf(stderr, "round %d: stats/list failed\n", round);
      failures++;
    } else {
      if (stt.messages != listed || listed < all.n) {
        fprintf(stderr,
                "round %d: counters say %llu, list has %zu, reported %zu\n",
                round, (unsigned long long)stt.messages, listed, all.n);
        failures++;
      }
      free(stt.top);
    }
    queue_close(q);
    printf("round %2d: killed after %3u ms, %5zu acknowledged this round, "
           "%6zu in total, %zu lost\n",
           round, 20 + r % 281, reported, all.n, missing);
    if (missing)
      failures++;
  }
  if (all.n == 0) {
    fprintf(stderr, "no message was ever acknowledged\n");
    failures++;
  }
  free(all.ids);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
  printf("%s\n", failures ? "FAIL" : "PASS");
  return failures ? 1 : 0;
}
