/*
 * worker.c - the loop pool (see worker.h).
 *
 * Ownership: the pool owns the worker array; each worker owns its loop and
 * its wake handle. A loop's handles are closed on its own thread (on_stop,
 * then the wake handle), after which uv_run returns and the thread exits.
 */
#include "engine/worker.h"

#include "base/postern_err.h"
#include "base/postern_log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local struct worker *current_worker;

struct worker *worker_current(void) {
  return current_worker;
}

static void run_tasks(uv_async_t *a) {
  struct worker *w = a->data;
  pthread_mutex_lock(&w->mu);
  struct worker_task *t = w->head;
  bool stopping = w->stopping;
  w->head = w->tail = NULL;
  pthread_mutex_unlock(&w->mu);
  /* Every task accepted by worker_post runs, also when the stop request
   * arrived before the loop got to it: a task owns memory (a job, a
   * malloc'd drain request) that only its fn gives back. */
  while (t != NULL) {
    struct worker_task *next = t->next;
    t->next = NULL;
    t->fn(w, t);
    t = next;
  }
  if (stopping) {
    if (w->on_stop)
      w->on_stop(w);
    uv_close((uv_handle_t *)&w->wake, NULL);
  }
}

static void thread_main(void *arg) {
  struct worker *w = arg;
  current_worker = w;
  /* Named for top -H, ps -L and perf: "postern-w0", "postern-w1", ... */
  char name[16];
  snprintf(name, sizeof name, "postern-w%d", w->index);
  pthread_setname_np(pthread_self(), name);
  if (w->on_start)
    w->on_start(w);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  if (w->on_exit)
    w->on_exit(w);
  current_worker = NULL;
}

int worker_pool_init(struct worker_pool *p, int n,
                     void (*on_start)(struct worker *),
                     void (*on_stop)(struct worker *),
                     void (*on_exit)(struct worker *), void *ud) {
  memset(p, 0, sizeof *p);
  p->w = calloc((size_t)n, sizeof *p->w);
  if (p->w == NULL)
    return POSTERN_ENOMEM;
  for (int i = 0; i < n; i++) {
    struct worker *w = &p->w[i];
    w->index = i;
    w->on_start = on_start;
    w->on_stop = on_stop;
    w->on_exit = on_exit;
    w->ud = ud;
    pthread_mutex_init(&w->mu, NULL);
    if (uv_loop_init(&w->loop) != 0 ||
        uv_async_init(&w->loop, &w->wake, run_tasks) != 0) {
      /* No thread runs yet: unwind the loops made so far right here. */
      for (int j = 0; j < i; j++) {
        uv_close((uv_handle_t *)&p->w[j].wake, NULL);
        uv_run(&p->w[j].loop, UV_RUN_NOWAIT);
        uv_loop_close(&p->w[j].loop);
      }
      free(p->w);
      p->w = NULL;
      return POSTERN_EIO;
    }
    w->wake.data = w;
  }
  p->n = n;
  return 0;
}

void worker_pool_run(struct worker_pool *p) {
  for (int i = 0; i < p->n; i++) {
    if (uv_thread_create(&p->w[i].thread, thread_main, &p->w[i]) != 0) {
      postern_log(POSTERN_LOG_ERROR, "worker_start_failed", NULL);
      abort();
    }
  }
}

int worker_post(struct worker *w, struct worker_task *t) {
  t->next = NULL;
  pthread_mutex_lock(&w->mu);
  if (w->stopping) {
    pthread_mutex_unlock(&w->mu);
    return POSTERN_ESTATE;
  }
  if (w->tail)
    w->tail->next = t;
  else
    w->head = t;
  w->tail = t;
  pthread_mutex_unlock(&w->mu);
  uv_async_send(&w->wake);
  return 0;
}

void worker_pool_stop(struct worker_pool *p) {
  for (int i = 0; i < p->n; i++) {
    struct worker *w = &p->w[i];
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->wake);
  }
  for (int i = 0; i < p->n; i++)
    uv_thread_join(&p->w[i].thread);
  for (int i = 0; i < p->n; i++) {
    /* Handles left open by a careless on_stop would make this fail; run
     * once more so their close callbacks fire, then give up loudly. */
    uv_run(&p->w[i].loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&p->w[i].loop) != 0)
      postern_log(POSTERN_LOG_WARN, "worker_loop_busy_at_exit", NULL);
    pthread_mutex_destroy(&p->w[i].mu);
  }
  free(p->w);
  p->w = NULL;
  p->n = 0;
}
