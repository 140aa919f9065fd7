/*
 * qwait.h - waiting for queue callbacks from a tool's main thread.
 *
 * The queue completes submissions and results on its writer thread; a
 * command-line tool that submits a batch and needs the outcome before it
 * goes on counts the callbacks down here and sleeps until all arrived.
 */
#ifndef POSTERN_TOOLS_QWAIT_H
#define POSTERN_TOOLS_QWAIT_H

#include <pthread.h>

#include "queue/queue.h"

struct qwait {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int left;   /* callbacks still to come; set before submitting */
  int failed; /* the last failure status seen, 0 when none */
};

#define QWAIT_INIT                                                             \
  { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 }

/* Callbacks to pass with &w as their argument. */
void qwait_submit_cb(void *w, int status);
void qwait_result_cb(void *w, int status, const struct queue_env *env);

/* Sleeps until w->left reaches 0; returns w->failed. */
int qwait_wait(struct qwait *w);

#endif
