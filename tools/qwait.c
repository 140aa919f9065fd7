/*
 * qwait.c - see qwait.h. The callbacks run on the queue's writer thread;
 * the mutex hands their counts to the waiting thread.
 */
#include "tools/qwait.h"

static void done(struct qwait *w, int status) {
  pthread_mutex_lock(&w->mu);
  if (status)
    w->failed = status;
  w->left--;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

void qwait_submit_cb(void *w, int status) {
  done(w, status);
}

void qwait_result_cb(void *w, int status, const struct queue_env *env) {
  (void)env;
  done(w, status);
}

int qwait_wait(struct qwait *w) {
  pthread_mutex_lock(&w->mu);
  while (w->left > 0)
    pthread_cond_wait(&w->cv, &w->mu);
  int failed = w->failed;
  pthread_mutex_unlock(&w->mu);
  return failed;
}
