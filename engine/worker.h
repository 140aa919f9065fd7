/*
 * worker.h - the pool of event loops: N threads, one libuv loop each.
 *
 * Other threads hand work to a loop with worker_post(): the task is queued
 * under a mutex and the loop is woken with uv_async_send, so the task runs
 * on the loop's own thread, never inside worker_post(). Tasks are intrusive
 * (embedded in the caller's object), so posting never allocates.
 */
#ifndef POSTERN_ENGINE_WORKER_H
#define POSTERN_ENGINE_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <uv.h>

struct worker;

struct worker_task {
  struct worker_task *next;
  void (*fn)(struct worker *w, struct worker_task *t);
};

struct worker {
  int index;
  uv_loop_t loop;
  uv_async_t wake;
  uv_thread_t thread;
  pthread_mutex_t mu;
  struct worker_task *head, *tail; /* guarded by mu */
  bool stopping;                   /* guarded by mu */
  void *ud;                        /* the relay, shared by every worker */
  void *ud2;                       /* this loop's delivery state */
  /* Called on the loop's thread once the loop runs; NULL for none. */
  void (*on_start)(struct worker *w);
  /* Called on the loop's thread when worker_pool_stop() asks it to stop:
   * it must close every handle it opened so uv_run can return. */
  void (*on_stop)(struct worker *w);
  /* Called on the loop's thread after its loop has ended: frees what the
   * loop's callbacks could still have used. NULL for none. */
  void (*on_exit)(struct worker *w);
};

struct worker_pool {
  int n;
  struct worker *w;
};

/*
 * Creates `n` loops without running them, so that listeners can be added to
 * them from this thread first. `on_start`/`on_stop` are copied into every
 * worker. Returns 0, POSTERN_ENOMEM, or POSTERN_EIO when a loop cannot be
 * created (nothing is left behind then).
 */
int worker_pool_init(struct worker_pool *p, int n,
                     void (*on_start)(struct worker *),
                     void (*on_stop)(struct worker *),
                     void (*on_exit)(struct worker *), void *ud);

/* Starts one thread per loop. Aborts if the kernel refuses a thread: a
 * half-started pool cannot be unwound safely. */
void worker_pool_run(struct worker_pool *p);

/*
 * Queues `t` to run on `w`'s loop. Safe from any thread. `t` must stay valid
 * until its fn runs. Returns POSTERN_ESTATE once the worker is stopping (the
 * task is then not queued and never runs).
 */
int worker_post(struct worker *w, struct worker_task *t);

/* Asks every loop to stop (on_stop runs on each), then joins the threads
 * and frees the loops. Tasks queued before the request still run, on their
 * loop and before on_stop; later worker_post calls fail. */
void worker_pool_stop(struct worker_pool *p);

/* The worker whose loop runs on the calling thread, or NULL. */
struct worker *worker_current(void);

#endif
