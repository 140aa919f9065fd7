/*
 * internal.h - what the engine's files share: the relay's runtime state,
 * delivery jobs and the functions that pass them between threads.
 *
 * Threads and ownership:
 *  - the main thread runs the main loop: signals, the scheduler, metrics;
 *  - N worker threads run one loop each: SMTP sessions in and out, DNS,
 *    policy lookups; every destination (domain or route) belongs to one
 *    worker, chosen by hashing its key;
 *  - the queue's writer thread commits and runs commit callbacks, which
 *    only copy what they need and post to a loop.
 * A message in flight is a `struct msgref` owned by the scheduler (its
 * in-flight set holds it); each of its jobs (one per destination) is owned
 * by the worker delivering it until its results are committed.
 */
#ifndef POSTERN_ENGINE_INTERNAL_H
#define POSTERN_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "engine/worker.h"
#include "queue/queue.h"

struct relay;
struct job;

/* One recipient outcome collected for the message's DSN. */
struct msg_note {
  unsigned index;
  enum queue_dsn_event event;
  char status[QUEUE_STATUS_MAX + 1];
  char reply[QUEUE_REPLY_MAX + 1];
  char mx[256];
  uint64_t when_ms;
};

/* A message in flight: loaded once, shared by its jobs. */
struct msgref {
  char id[QUEUE_ID_LEN + 1];
  struct queue_env *env;
  void *body;
  size_t body_len;
  atomic_int jobs_left;
  /* DSN material, appended on the writer thread by result callbacks (one
   * thread, so no lock), read by the scheduler after the last job. */
  struct msg_note *notes;
  size_t n_notes, cap_notes;
  /* A result commit failed or a job was abandoned: the message stays due.
   * Set from worker threads and the writer thread at once: atomic. */
  atomic_bool result_failed;
  struct msgref *next; /* scheduler inbox link */
};

/* Where a destination's mail goes. */
struct route_target {
  char host[256]; /* host name or address literal */
  uint16_t port;
  bool no_mx; /* [host] or an address: connect to it, no MX lookup */
};

/* One message's recipients for one destination. */
struct job {
  struct worker_task task;
  struct relay *relay;
  struct msgref *m;
  struct job *next; /* in the destination's pending list */
  char dest_key[300];
  bool routed;
  struct route_target route;
  char domain[256];
  uint64_t start_ms;
  size_t n;                          /* recipients in this job */
  unsigned *idx;                     /* their indexes in m->env->rcpts */
  struct queue_rcpt_result *results; /* one per recipient, filled by delivery */
  char (*status)[QUEUE_STATUS_MAX + 1];
  char (*reply)[QUEUE_REPLY_MAX + 1];
  char mx[256];               /* the MX that answered, for DSNs and logs */
  struct queue_result_in rin; /* borrowed by the queue until on_result */
};

/* ---- scheduler (sched.c, main loop) ---- */

struct sched;

int engine__sched_new(struct relay *r, uv_loop_t *loop, struct sched **out);
/* Thread-safe: a message was committed; attempt it now. */
void engine__sched_notify_new(struct sched *s, const char *id);
/* Thread-safe: every job of m has its results committed (or failed). */
void engine__sched_job_done(struct sched *s, struct msgref *m);
/* Stops dispatching; `cb` runs when nothing is in flight any more. */
void engine__sched_drain(struct sched *s, void (*cb)(void *), void *arg);
size_t engine__sched_inflight(struct sched *s);
void engine__sched_close(struct sched *s);

/* ---- delivery (deliver.c, worker loops) ---- */

/* Runs on the job's worker: queue it on its destination. */
void engine__deliver_job(struct worker *w, struct worker_task *t);
/* Per-worker delivery state; created in the worker's on_start. */
int engine__deliver_worker_init(struct relay *r, struct worker *w);
void engine__deliver_worker_stop(struct worker *w);
void engine__deliver_worker_exit(struct worker *w);
/* A task (owned by relay.c, never freed by it) that abandons every waiting
 * job. */
void engine__deliver_worker_drain(struct worker *w, struct worker_task *t);
/* SMTP server handlers (ingress.c). */
struct smtp_server_txn;
struct smtp_server_envelope;
int engine__ingress_assign_id(void *ud, char *id);
void engine__ingress_message(void *ud, struct smtp_server_txn *txn,
                             const struct smtp_server_envelope *env,
                             const char *body, size_t len);
/* Hands a finished job's results to the queue (any thread). */
void engine__job_finish(struct job *j);
/* A job with room for `nrcpts` recipients, in one allocation (zeroed);
 * NULL without memory. Freed with engine__job_free. */
struct job *engine__job_new(size_t nrcpts);
void engine__job_free(struct job *j);
/* Gives a job up without a result (shutdown): its recipients stay queued
 * and due, and no attempt is counted. Any thread. */
void engine__job_abandon(struct job *j);

#endif
