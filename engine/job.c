/*
 * job.c - a job: one message's recipients for one destination. Its memory
 * (one allocation), the outcome of each recipient and its log line, and
 * the way back to the queue: results are submitted to the queue's writer
 * and, once committed, noted for the message's DSN; the scheduler hears
 * when a message's last job is done.
 *
 * Ownership: the scheduler makes jobs; the worker delivering a job owns it
 * until engine__job_finish or engine__job_abandon, after which nothing
 * touches it (the writer thread frees it after the commit). Result
 * callbacks run on the writer thread and only copy what the DSN needs.
 */
#include "engine/internal.h"

#include "engine/metrics.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- outcomes ---- */

void engine__job_log(struct job *j, unsigned k, const char *mx,
                     const char *addr, enum policy_mx_level mxl,
                     enum policy_tls_level tlsl, const char *status,
                     const char *dsn, const char *reply, uint64_t now) {
  const struct queue_env *env = j->m->env;
  const struct queue_rcpt *rc = &env->rcpts[j->idx[k]];
  struct postern_log_rec r;
  enum postern_log_level lvl =
      strcmp(status, "sent") == 0 ? POSTERN_LOG_INFO : POSTERN_LOG_WARN;
  enum metrics_status ms = status[0] == 's'   ? METRICS_SENT
                           : status[0] == 'd' ? METRICS_DEFERRED
                                              : METRICS_BOUNCED;
  metrics_delivery(ms, mxl, tlsl);
  if (env->requiretls)
    metrics_requiretls(ms);
  if (!postern_log_enabled(lvl))
    return;
  postern_log_begin(&r, lvl, "delivery");
  postern_log_str(&r, "id", j->m->id);
  postern_log_str(&r, "rcpt", rc->addr);
  postern_log_str(&r, "domain", j->domain);
  postern_log_str(&r, "mx", mx ? mx : "");
  postern_log_str(&r, "addr", addr ? addr : "");
  postern_log_str(&r, "mx_level", policy_mx_level_name(mxl));
  postern_log_str(&r, "tls_level", policy_tls_level_name(tlsl));
  postern_log_str(&r, "status", status);
  postern_log_str(&r, "dsn", dsn);
  postern_log_str(&r, "reply", reply);
  if (env->requiretls)
    postern_log_str(&r, "requiretls", "yes");
  if (j->tls_required_no)
    postern_log_str(&r, "tls_required", "no");
  postern_log_uint(&r, "attempt", rc->attempts + 1);
  postern_log_fmt(&r, "delay", "%.3f",
                  (double)(now - env->arrival_ms) / 1000.0);
  postern_log_end(&r);
}

void engine__job_set(struct job *j, unsigned k, enum queue_outcome o,
                     const char *status, const char *reply) {
  j->results[k].index = j->idx[k];
  j->results[k].outcome = o;
  snprintf(j->status[k], sizeof j->status[k], "%s", status);
  snprintf(j->reply[k], sizeof j->reply[k], "%s", reply);
  j->results[k].status = j->status[k];
  j->results[k].reply = j->reply[k];
}

void engine__job_fail_all(struct job *j, bool temp, const char *status,
                          const char *reason, const char *mx) {
  uint64_t now = relay_now_ms(j->relay);
  snprintf(j->mx, sizeof j->mx, "%s", mx ? mx : "");
  for (unsigned k = 0; k < j->n; k++) {
    engine__job_set(j, k, temp ? QUEUE_OUTCOME_DEFERRED : QUEUE_OUTCOME_BOUNCED,
                    status, reason);
    engine__job_log(j, k, mx, NULL, POLICY_MX_LEVEL_NONE, POLICY_TLS_LEVEL_NONE,
                    temp ? "deferred" : "bounced", status, reason, now);
  }
  engine__job_finish(j);
}

/* ---- results to the queue ---- */

/* Frees the job; the scheduler hears when it was its message's last. */
static void job_done(struct job *j) {
  struct msgref *m = j->m;
  struct relay *r = j->relay;
  engine__job_free(j);
  if (atomic_fetch_sub(&m->jobs_left, 1) == 1)
    engine__sched_job_done(r->sched, m);
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
  job_done(j);
}

void engine__job_abandon(struct job *j) {
  j->m->result_failed = true;
  job_done(j);
}

void engine__job_finish(struct job *j) {
  j->rin = (struct queue_result_in){
      .id = j->m->id, .results = j->results, .n_results = j->n};
  int rc = queue_result_submit(j->relay->q, &j->rin, on_result, j);
  if (rc != 0) {
    /* Closing or out of memory: the message stays due; retried later. */
    engine__job_abandon(j);
  }
}
