/*
 * ingress.c - where messages enter the queue: the SMTP server's handlers
 * (a message becomes a queue submission; 250 is sent only after the commit
 * returned) and messages Postern makes itself (DSNs).
 *
 * Commit callbacks run on the queue's writer thread: they only tell the
 * SMTP server (which hops to its own loop) and the scheduler (likewise),
 * and free their own records. Delivery results go back to the queue in
 * job.c.
 */
#include "engine/internal.h"

#include "engine/metrics.h"

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
  struct msgref *ready; /* the message as the scheduler will need it */
  struct queue_msg_in in;
  struct iovec iov;
  char id[QUEUE_ID_LEN + 1];
  char client[80];
  struct queue_rcpt_in rcpts[];
};

void engine__ingress_auth_event(void *ud, int result) {
  (void)ud;
  metrics_auth(result == SMTP_SERVER_AUTH_OK       ? METRICS_AUTH_OK
               : result == SMTP_SERVER_AUTH_FAILED ? METRICS_AUTH_FAILED
                                                   : METRICS_AUTH_THROTTLED);
}

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
    if (t->ready)
      engine__sched_notify_msg(r->sched, t->ready);
    else
      engine__sched_notify_new(r->sched, t->id);
    t->ready = NULL;
  } else {
    metrics_inc(METRICS_ENQUEUE_FAILED);
    postern_log(POSTERN_LOG_WARN, "enqueue_failed", "id", t->id, "client",
                t->client, "error", postern_strerror(status), NULL);
  }
  engine__msgref_free(t->ready);
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
      /* RFC 8689 §4.1: MAIL ... REQUIRETLS tags the message. */
      .requiretls = env->requiretls,
      /* RFC 4954: who logged in, kept with the message (qtool show). */
      .auth_user = env->auth_user,
      /* Stamped here, so the message the scheduler is handed and the one
       * stored agree (queue_env_of_submission). */
      .arrival_ms = queue_now_ms(r->q),
  };
  /* Built on this worker thread, not on the queue's writer: the scheduler
   * gets the message without reading it back from LMDB. */
  t->ready = engine__msgref_of_submission(&t->in, body, len);
  int rc = queue_msg_submit(r->q, &t->in, on_committed, t);
  if (rc != 0) {
    smtp_server_txn_done(txn, rc, NULL);
    engine__msgref_free(t->ready);
    free(t);
  }
}

/* ---- messages Postern makes (DSNs) ---- */

/* A message the relay made (a DSN, a TLS report): its recipients, the
 * sender and the envelope copied, the body taken over. */
struct local_msg {
  struct relay *r;
  struct queue_msg_in in;
  struct queue_rcpt_in *rcpts;
  struct iovec iov;
  char id[QUEUE_ID_LEN + 1];
  char *body;
  char *strings; /* sender and recipients, one block */
};

static void on_local_committed(void *arg, int status) {
  struct local_msg *m = arg;
  if (status == 0)
    engine__sched_notify_new(m->r->sched, m->id);
  else
    postern_log(POSTERN_LOG_ERROR, "enqueue_failed", "id", m->id, "error",
                postern_strerror(status), NULL);
  free(m->body);
  free(m->strings);
  free(m->rcpts);
  free(m);
}

static int local_submit(struct relay *r, const char *id, const char *sender,
                        const char *const *rcpts, size_t nrcpts, char *msg,
                        size_t len, bool tls_report) {
  if (nrcpts == 0)
    return POSTERN_EINVAL;
  struct local_msg *m = calloc(1, sizeof *m);
  size_t bytes = strlen(sender) + 1;
  for (size_t i = 0; i < nrcpts; i++)
    bytes += strlen(rcpts[i]) + 1;
  char *s = malloc(bytes);
  struct queue_rcpt_in *rin = calloc(nrcpts, sizeof *rin);
  if (m == NULL || s == NULL || rin == NULL) {
    free(m);
    free(s);
    free(rin);
    return POSTERN_ENOMEM;
  }
  m->strings = s;
  m->rcpts = rin;
  size_t off = 0;
  const char *snd = s + off;
  off += (size_t)sprintf(s + off, "%s", sender) + 1;
  for (size_t i = 0; i < nrcpts; i++) {
    rin[i].addr = s + off;
    off += (size_t)sprintf(s + off, "%s", rcpts[i]) + 1;
  }
  m->r = r;
  snprintf(m->id, sizeof m->id, "%s", id);
  m->body = msg;
  m->iov.iov_base = msg;
  m->iov.iov_len = len;
  m->in = (struct queue_msg_in){.id = m->id,
                                .sender = snd,
                                .rcpts = rin,
                                .n_rcpts = nrcpts,
                                .client_addr = "local",
                                .body = &m->iov,
                                .body_iovcnt = 1,
                                .tls_report = tls_report};
  int rc = queue_msg_submit(r->q, &m->in, on_local_committed, m);
  if (rc != 0) {
    free(m->strings);
    free(m->rcpts);
    free(m);
  }
  return rc;
}

int engine__ingress_local(struct relay *r, const char *id, const char *sender,
                          const char *rcpt, char *msg, size_t len) {
  return local_submit(r, id, sender, &rcpt, 1, msg, len, false);
}

int engine__ingress_local_report(struct relay *r, const char *id,
                                 const char *sender, const char *const *rcpts,
                                 size_t nrcpts, char *msg, size_t len) {
  return local_submit(r, id, sender, rcpts, nrcpts, msg, len, true);
}
