/*
 * ingress.c - where messages enter and leave the queue: the SMTP server's
 * handlers (a message becomes a queue submission; 250 is sent only after
 * the commit returned), messages Postern makes itself (DSNs), and delivery
 * results going back to the queue.
 *
 * Commit callbacks run on the queue's writer thread: they only tell the
 * SMTP server (which hops to its own loop) and the scheduler (likewise),
 * copy what the DSN needs, and free their own records.
 */
#include "engine/internal.h"
#include "engine/metrics.h"
#include "engine/relay.h"

#include "net/smtp_server.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- messages from SMTP clients ---- */

struct in_txn {
  struct relay *r;
  struct smtp_server_txn *txn;
  struct queue_msg_in in;
  struct iovec iov;
  char id[QUEUE_ID_LEN + 1];
  char client[80];
  struct queue_rcpt_in rcpts[];
};

int engine__ingress_assign_id(void *ud, char *id) {
  (void)ud;
  queue_id_new(id);
  return 0;
}

static void on_committed(void *arg, int status) {
  struct in_txn *t = arg;
  struct relay *r = t->r;
  smtp_server_txn_done(t->txn, status, t->id);
  if (status == 0) {
    metrics_inc(METRICS_ACCEPTED);
    engine__sched_notify_new(r->sched, t->id);
  } else {
    metrics_inc(METRICS_ENQUEUE_FAILED);
    postern_log(POSTERN_LOG_WARN, "enqueue_failed", "id", t->id, "client",
                t->client, "error", postern_strerror(status), NULL);
  }
  free(t);
}

void engine__ingress_message(void *ud, struct smtp_server_txn *txn,
                             const struct smtp_server_envelope *env,
                             const char *body, size_t len) {
  struct relay *r = ud;
  struct in_txn *t =
      calloc(1, sizeof *t + env->nrcpt * sizeof(struct queue_rcpt_in));
  if (t == NULL) {
    smtp_server_txn_done(txn, POSTERN_ENOMEM, NULL);
    return;
  }
  t->r = r;
  t->txn = txn;
  snprintf(t->id, sizeof t->id, "%s", env->id);
  snprintf(t->client, sizeof t->client, "%s", env->client_ip);
  for (size_t i = 0; i < env->nrcpt; i++) {
    t->rcpts[i].addr = env->rcpt[i].addr;
    t->rcpts[i].orcpt = env->rcpt[i].orcpt;
    /* The server's NOTIFY bits are RFC 3461's, as are the queue's. */
    unsigned n = env->rcpt[i].notify, q = 0;
    if (n & SMTP_SERVER_NOTIFY_NEVER)
      q |= QUEUE_NOTIFY_NEVER;
    if (n & SMTP_SERVER_NOTIFY_SUCCESS)
      q |= QUEUE_NOTIFY_SUCCESS;
    if (n & SMTP_SERVER_NOTIFY_FAILURE)
      q |= QUEUE_NOTIFY_FAILURE;
    if (n & SMTP_SERVER_NOTIFY_DELAY)
      q |= QUEUE_NOTIFY_DELAY;
    t->rcpts[i].notify = q;
  }
  t->iov.iov_base = (void *)body;
  t->iov.iov_len = len;
  t->in = (struct queue_msg_in){
      .id = t->id,
      .sender = env->mail_from,
      .rcpts = t->rcpts,
      .n_rcpts = env->nrcpt,
      .ret = env->ret == SMTP_SERVER_RET_FULL
                 ? QUEUE_RET_FULL
                 : (env->ret == SMTP_SERVER_RET_HDRS ? QUEUE_RET_HDRS
                                                     : QUEUE_RET_UNSET),
      .envid = env->envid,
      .client_addr = env->client_ip,
      .client_helo = env->helo,
      .body = &t->iov,
      .body_iovcnt = 1,
  };
  int rc = queue_msg_submit(r->q, &t->in, on_committed, t);
  if (rc != 0) {
    smtp_server_txn_done(txn, rc, NULL);
    free(t);
  }
}

/* ---- messages Postern makes (DSNs) ---- */

struct local_msg {
  struct relay *r;
  struct queue_msg_in in;
  struct queue_rcpt_in rcpt;
  struct iovec iov;
  char id[QUEUE_ID_LEN + 1];
  char *body;
  char *rcpt_addr;
};

static void on_local_committed(void *arg, int status) {
  struct local_msg *m = arg;
  if (status == 0)
    engine__sched_notify_new(m->r->sched, m->id);
  else
    postern_log(POSTERN_LOG_ERROR, "enqueue_failed", "id", m->id, "error",
                postern_strerror(status), NULL);
  free(m->body);
  free(m->rcpt_addr);
  free(m);
}

int relay_submit_local(struct relay *r, const char *id, const char *sender,
                       const char *rcpt, char *msg, size_t len) {
  struct local_msg *m = calloc(1, sizeof *m);
  if (m == NULL)
    return POSTERN_ENOMEM;
  m->rcpt_addr = strdup(rcpt);
  if (m->rcpt_addr == NULL) {
    free(m);
    return POSTERN_ENOMEM;
  }
  m->r = r;
  snprintf(m->id, sizeof m->id, "%s", id);
  m->body = msg;
  m->rcpt.addr = m->rcpt_addr;
  m->iov.iov_base = msg;
  m->iov.iov_len = len;
  m->in = (struct queue_msg_in){.id = m->id,
                                .sender = sender,
                                .rcpts = &m->rcpt,
                                .n_rcpts = 1,
                                .client_addr = "local",
                                .body = &m->iov,
                                .body_iovcnt = 1};
  int rc = queue_msg_submit(r->q, &m->in, on_local_committed, m);
  if (rc != 0) {
    free(m->rcpt_addr);
    free(m);
  }
  return rc;
}

/* ---- delivery results ---- */

struct job *engine__job_new(size_t nrcpts) {
  /* One allocation per job on the hot path: the job and its per-recipient
   * arrays, most strictly aligned first. */
  size_t sz = sizeof(struct job) +
              nrcpts * (sizeof(struct queue_rcpt_result) + sizeof(unsigned) +
                        QUEUE_STATUS_MAX + 1 + QUEUE_REPLY_MAX + 1);
  struct job *j = calloc(1, sz);
  if (j == NULL)
    return NULL;
  char *p = (char *)(j + 1);
  j->results = (struct queue_rcpt_result *)p;
  p += nrcpts * sizeof(struct queue_rcpt_result);
  j->idx = (unsigned *)p;
  p += nrcpts * sizeof(unsigned);
  j->status = (char(*)[QUEUE_STATUS_MAX + 1]) p;
  p += nrcpts * (QUEUE_STATUS_MAX + 1);
  j->reply = (char(*)[QUEUE_REPLY_MAX + 1]) p;
  return j;
}

void engine__job_free(struct job *j) {
  free(j);
}

static bool submitted_deferred(const struct job *j, size_t index) {
  for (size_t k = 0; k < j->n; k++)
    if (j->results[k].index == index)
      return j->results[k].outcome == QUEUE_OUTCOME_DEFERRED;
  return false;
}

/* Runs on the writer thread: note what the DSN needs, then let the
 * scheduler know when the message's last job is done. */
static void on_result(void *arg, int status, const struct queue_env *env) {
  struct job *j = arg;
  struct msgref *m = j->m;
  struct relay *r = j->relay;
  if (status == POSTERN_ENOENT) {
    /* Deleted meanwhile (qtool delete): nothing is left to update or to
     * retry, and nothing failed. */
    postern_log(POSTERN_LOG_INFO, "result_dropped", "id", m->id, "reason",
                "message deleted during the attempt", NULL);
  } else if (status != 0) {
    m->result_failed = true;
    postern_log(POSTERN_LOG_ERROR, "result_commit_failed", "id", m->id, "error",
                postern_strerror(status), NULL);
  } else {
    for (size_t i = 0; i < env->n_rcpts; i++) {
      const struct queue_rcpt *rc = &env->rcpts[i];
      if (rc->event != QUEUE_DSN_BOUNCED && rc->event != QUEUE_DSN_DELAYED)
        continue;
      if (rc->event == QUEUE_DSN_BOUNCED && submitted_deferred(j, i))
        /* The queue turned this deferral into a bounce: the message is
         * older than max_age (4.4.7). Say so next to the attempt's line. */
        postern_log(POSTERN_LOG_WARN, "expired", "id", m->id, "rcpt", rc->addr,
                    "status", "bounced", "dsn", rc->status, "reason",
                    "message older than queue max_age", NULL);
      if (m->n_notes == m->cap_notes) {
        size_t nc = m->cap_notes ? m->cap_notes * 2 : 4;
        struct msg_note *nn = realloc(m->notes, nc * sizeof *nn);
        if (nn == NULL)
          break;
        m->notes = nn;
        m->cap_notes = nc;
      }
      struct msg_note *n = &m->notes[m->n_notes++];
      n->index = (unsigned)i;
      n->event = rc->event;
      snprintf(n->status, sizeof n->status, "%s", rc->status);
      snprintf(n->reply, sizeof n->reply, "%s", rc->reply);
      snprintf(n->mx, sizeof n->mx, "%s", j->mx);
      n->when_ms = rc->last_ms;
    }
  }
  engine__job_free(j);
  if (atomic_fetch_sub(&m->jobs_left, 1) == 1)
    engine__sched_job_done(r->sched, m);
}

void engine__job_abandon(struct job *j) {
  struct msgref *m = j->m;
  struct relay *r = j->relay;
  m->result_failed = true;
  engine__job_free(j);
  if (atomic_fetch_sub(&m->jobs_left, 1) == 1)
    engine__sched_job_done(r->sched, m);
}

void engine__job_finish(struct job *j) {
  j->rin = (struct queue_result_in){
      .id = j->m->id, .results = j->results, .n_results = j->n};
  int rc = queue_result_submit(j->relay->q, &j->rin, on_result, j);
  if (rc != 0) {
    /* Closing or out of memory: the message stays due; retried later. */
    struct msgref *m = j->m;
    struct relay *r = j->relay;
    m->result_failed = true;
    engine__job_free(j);
    if (atomic_fetch_sub(&m->jobs_left, 1) == 1)
      engine__sched_job_done(r->sched, m);
  }
}
