/*
 * queue_apply.c - what one writer operation writes, inside the writer's
 * transaction (queue_writer.c commits it): a new message, or one attempt's
 * results for some of a message's recipients.
 *
 * A result makes sent and bounced recipients final; a deferred recipient
 * gets its next attempt from the retry schedule (queue_retry_next), or
 * bounces with 4.4.7 once the message is older than max_age; the first
 * deferral past delay_warning asks for a delay DSN (once per message).
 * What each update did is left in the recipients' `event` for the
 * callback.
 *
 * Ownership: the inputs are borrowed from the submitter until the
 * operation's callback has run, so new records point into them while they
 * are written; the envelope handed to a result callback is one owned block
 * (see the end of queue__apply_result).
 *
 * Errors follow internal.h: a refusal before anything is written (invalid
 * input, an id already queued or not queued any more) leaves w->failed
 * false; LMDB failures of the writes set it.
 */
#include "queue/internal.h"

#include "base/postern_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t queue__in_size(const struct queue_msg_in *m) {
  size_t size = 0;
  for (size_t i = 0; i < m->body_iovcnt; i++)
    size += m->body[i].iov_len;
  return size;
}

int queue__env_of_in(const struct queue_msg_in *m, uint64_t now,
                     struct queue_env **out) {
  struct queue_env *e = calloc(1, sizeof *e + m->n_rcpts * sizeof *e->rcpts);
  if (!e)
    return POSTERN_ENOMEM;
  e->rcpts = (struct queue_rcpt *)(e + 1);
  memcpy(e->id, m->id, QUEUE_ID_LEN + 1);
  e->state = QUEUE_MSG_ACTIVE;
  e->sender = m->sender;
  e->envid = m->envid ? m->envid : "";
  e->client_addr = m->client_addr ? m->client_addr : "";
  e->client_helo = m->client_helo ? m->client_helo : "";
  e->ret = m->ret;
  e->tls_report = m->tls_report;
  e->requiretls = m->requiretls;
  e->auth_user = m->auth_user ? m->auth_user : "";
  e->arrival_ms = m->arrival_ms ? m->arrival_ms : now;
  e->size = queue__in_size(m);
  e->n_rcpts = m->n_rcpts;
  for (size_t i = 0; i < m->n_rcpts; i++) {
    struct queue_rcpt *r = &e->rcpts[i];
    r->addr = m->rcpts[i].addr;
    r->orcpt = m->rcpts[i].orcpt ? m->rcpts[i].orcpt : "";
    r->notify = m->rcpts[i].notify;
    r->state = QUEUE_RCPT_PENDING;
    r->next_ms = now;
    r->status = "";
    r->reply = "";
  }
  e->next_ms = now;
  *out = e;
  return 0;
}

static int submission_ok(const struct queue_msg_in *m) {
  if (!queue_id_valid(m->id) || m->n_rcpts == 0 || m->n_rcpts > 65535 ||
      !m->sender)
    return POSTERN_EINVAL;
  for (size_t i = 0; i < m->n_rcpts; i++) {
    if (!m->rcpts[i].addr)
      return POSTERN_EINVAL;
  }
  return 0;
}

int queue_env_of_submission(const struct queue_msg_in *m,
                            struct queue_env **out) {
  int rc = m && out && m->arrival_ms ? submission_ok(m) : POSTERN_EINVAL;
  if (rc)
    return rc;
  /* Built, encoded and decoded exactly as the writer stores it and
   * queue_msg_load reads it back: one owned block, no borrowed string. */
  struct queue_env *e;
  if ((rc = queue__env_of_in(m, m->arrival_ms, &e)))
    return rc;
  size_t n = queue__rec_size(e);
  unsigned char *buf = malloc(n);
  if (buf == NULL) {
    free(e);
    return POSTERN_ENOMEM;
  }
  queue__rec_write(e, buf);
  free(e);
  rc = queue__rec_decode(buf, n, m->id, out);
  free(buf);
  return rc;
}

int queue__apply_submit(struct queue *q, struct queue__wtxn *w,
                        const struct queue_msg_in *m) {
  if (submission_ok(m))
    return POSTERN_EINVAL;
  uint64_t now = queue_now_ms(q);
  size_t size = queue__in_size(m);
  struct queue_env *e;
  int rc = queue__env_of_in(m, now, &e);
  if (rc)
    return rc;

  MDB_val k = {QUEUE_ID_LEN, (void *)m->id};
  MDB_val v = {queue__rec_size(e), NULL};
  int mrc = mdb_put(w->txn, q->msg, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
  if (mrc == MDB_KEYEXIST) {
    rc = POSTERN_EEXIST; /* nothing written: the txn stays usable */
    goto out;
  }
  if (mrc) {
    rc = queue__wtxn_fail(w, mrc);
    goto out;
  }
  queue__rec_write(e, v.mv_data);
  v.mv_size = size;
  if ((mrc = mdb_put(w->txn, q->body, &k, &v, MDB_RESERVE))) {
    rc = queue__wtxn_fail(w, mrc);
    goto out;
  }
  unsigned char *p = v.mv_data;
  for (size_t i = 0; i < m->body_iovcnt; i++) {
    if (m->body[i].iov_len)
      memcpy(p, m->body[i].iov_base, m->body[i].iov_len);
    p += m->body[i].iov_len;
  }
  rc = queue__msg_index(q, w, e);
out:
  free(e);
  return rc;
}

static void set_expired_reply(char *buf, const char *last) {
  snprintf(buf, QUEUE_REPLY_MAX + 1,
           "message expired in the queue (max_age)%s%s",
           last && *last ? "; last reply: " : "", last ? last : "");
}

int queue__apply_result(struct queue *q, struct queue__wtxn *w,
                        const struct queue_result_in *in,
                        struct queue_env **env, char **expired) {
  free(*env); /* from an attempt that was rolled back */
  *env = NULL;
  if (!in->id || !queue_id_valid(in->id))
    return POSTERN_EINVAL;
  struct queue_env *old;
  int rc = queue__msg_get(q, w->txn, in->id, &old);
  if (rc)
    return rc; /* nothing was written */
  for (size_t i = 0; i < in->n_results; i++) {
    unsigned ix = in->results[i].index;
    if (ix >= old->n_rcpts || !queue__rcpt_left(&old->rcpts[ix])) {
      free(old);
      return POSTERN_EINVAL;
    }
  }
  struct queue_env *e = queue__env_clone_shallow(old);
  if (!e) {
    free(old);
    return POSTERN_ENOMEM;
  }
  uint64_t now = queue_now_ms(q);
  bool expire = q->o.max_age && now >= e->arrival_ms &&
                now - e->arrival_ms >= q->o.max_age;
  bool warn = q->o.delay_warning && !e->delay_warned && now >= e->arrival_ms &&
              now - e->arrival_ms >= q->o.delay_warning;
  bool warned_now = false;
  for (size_t i = 0; i < in->n_results; i++) {
    const struct queue_rcpt_result *res = &in->results[i];
    struct queue_rcpt *r = &e->rcpts[res->index];
    r->attempts++;
    r->last_ms = now;
    r->status = res->status ? res->status : "";
    r->reply = res->reply ? res->reply : "";
    switch (res->outcome) {
    case QUEUE_OUTCOME_SENT:
      r->state = QUEUE_RCPT_SENT;
      r->event = QUEUE_DSN_SENT;
      break;
    case QUEUE_OUTCOME_BOUNCED:
      r->state = QUEUE_RCPT_BOUNCED;
      r->event = QUEUE_DSN_BOUNCED;
      break;
    case QUEUE_OUTCOME_DEFERRED:
    default:
      if (expire) {
        if (!*expired) {
          *expired = malloc(e->n_rcpts * (QUEUE_REPLY_MAX + 1));
          if (!*expired) {
            free(e);
            free(old);
            return POSTERN_ENOMEM;
          }
        }
        char *buf = *expired + res->index * (QUEUE_REPLY_MAX + 1);
        set_expired_reply(buf, r->reply);
        r->state = QUEUE_RCPT_BOUNCED;
        r->status = "4.4.7"; /* RFC 3463: delivery time expired */
        r->reply = buf;
        r->event = QUEUE_DSN_BOUNCED;
      } else {
        r->state = QUEUE_RCPT_DEFERRED;
        r->next_ms = queue_retry_next(&q->o.retry, r->attempts, now,
                                      q->o.random_u32(q->o.test_arg));
        if (warn) {
          r->event = QUEUE_DSN_DELAYED;
          warned_now = true;
        }
      }
      break;
    }
  }
  if (warned_now)
    e->delay_warned = true;
  if (e->state != QUEUE_MSG_HELD) {
    e->state = QUEUE_MSG_ACTIVE;
    for (size_t i = 0; i < e->n_rcpts; i++) {
      if (e->rcpts[i].state == QUEUE_RCPT_DEFERRED)
        e->state = QUEUE_MSG_DEFERRED;
    }
  }
  rc = queue__msg_rewrite(q, w, old, e);
  /* e's strings point into old or into the borrowed input: keep old alive
   * by packing both into one owned block for the callback. */
  if (rc == 0) {
    size_t need = queue__rec_size(e);
    unsigned char *tmp = malloc(need);
    struct queue_env *copy = NULL;
    if (tmp) {
      queue__rec_write(e, tmp);
      if (queue__rec_decode(tmp, need, e->id, &copy) == 0) {
        copy->removed = e->removed;
        copy->next_ms = e->next_ms;
        for (size_t i = 0; i < e->n_rcpts; i++)
          copy->rcpts[i].event = e->rcpts[i].event;
      }
      free(tmp);
    }
    *env = copy;
    if (!copy)
      rc = POSTERN_ENOMEM; /* the txn is aborted and retried without us */
  }
  free(e);
  free(old);
  return rc;
}
