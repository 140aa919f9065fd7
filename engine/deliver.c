/*
 * deliver.c - the delivery side of the MX loop: a destination's attempts.
 * An attempt whose session the policies accept becomes a connection of the
 * destination (conn.c); an attempt that exhausts every candidate settles
 * the destination's waiting jobs - deferred if anything failed temporarily
 * (here or in another attempt for the same jobs), bounced only when every
 * failure was permanent - unless other attempts or connections can still
 * carry them.
 *
 * Ownership: a destination owns its attempts (d->attempts) from
 * engine__deliver_attempt_start until they exhaust, become a connection,
 * or are stopped. One thread: the worker's.
 */
#include "engine/dest.h"

#include "base/postern_err.h"

#include <stdio.h>

static void attempt_free(struct dest *d, struct mx_attempt *a) {
  for (struct mx_attempt **pp = &d->attempts; *pp; pp = &(*pp)->next)
    if (*pp == a) {
      *pp = a->next;
      break;
    }
  d->nattempts--;
  engine__lease_release(a->lease);
  engine__mx_free(a);
}

/* Acceptable: the attempt becomes a connection of the destination. */
static int on_acceptable(void *arg, struct mx_attempt *a,
                         const struct mx_session *s) {
  struct dest *d = arg;
  struct conn *cn = engine__conn_open(d, s, a->lease);
  if (cn == NULL)
    return POSTERN_ENOMEM;
  a->lease = NULL; /* the connection's now */
  d->saturated = false;
  d->temp_seen = false;
  attempt_free(d, a);
  engine__conn_start(cn);
  engine__dest_kick(d);
  return 0;
}

/* Every candidate failed: settle the destination's waiting jobs unless
 * another connection or attempt can still carry them. */
static void on_exhausted(void *arg, struct mx_attempt *a,
                         const struct mx_outcome *o) {
  struct dest *d = arg;
  bool temp = o->temporary;
  char status[16], reason[512], mx[256];
  snprintf(status, sizeof status, "%s", o->status);
  snprintf(reason, sizeof reason, "%s", o->reason);
  snprintf(mx, sizeof mx, "%s", o->last_mx);
  attempt_free(d, a);
  if (atomic_load(&d->dw->env.r->stopping)) {
    engine__dest_abandon(d);
    return;
  }
  if (d->nconns == 0 && d->nattempts == 0) {
    if (!temp && d->temp_seen) {
      temp = true;
      snprintf(status, sizeof status, "%s", d->temp_status);
      snprintf(reason, sizeof reason, "%s", d->temp_reason);
    }
    d->saturated = false;
    d->temp_seen = false;
    struct job *j;
    while (d->njobs > d->nattempts && (j = engine__dest_pop(d)) != NULL)
      engine__job_fail_all(j, temp, status, reason, mx);
  } else {
    d->saturated = true;
    if (temp) {
      d->temp_seen = true;
      snprintf(d->temp_status, sizeof d->temp_status, "%s", status);
      snprintf(d->temp_reason, sizeof d->temp_reason, "%s", reason);
    }
  }
  engine__dest_kick(d);
}

static const struct mx_ops deliver_ops = {
    .session_acceptable = on_acceptable,
    .exhausted = on_exhausted,
};

void engine__deliver_attempt_start(struct dest *d, struct lease *lease) {
  struct mx_attempt *a =
      engine__mx_new(&d->dw->env, &d->target, &deliver_ops, d);
  if (a == NULL) {
    engine__lease_release(lease);
    return;
  }
  a->lease = lease;
  a->next = d->attempts;
  d->attempts = a;
  d->nattempts++;
  int rc = engine__mx_run(a);
  if (rc != 0) {
    engine__mx_fail(a, true, "4.3.0", "policy: %s", postern_strerror(rc));
    /* Only a failure to allocate the domain's policy run gets here; it is
     * settled at once, from inside dest_kick's loop. */
    engine__mx_exhaust(a);
  }
}

void engine__deliver_attempts_stop(struct dest *d) {
  struct mx_attempt *a = d->attempts;
  while (a) {
    struct mx_attempt *next = a->next;
    if (engine__mx_stop(a))
      attempt_free(d, a);
    a = next;
  }
}

void engine__deliver_attempts_free(struct dest *d) {
  while (d->attempts)
    attempt_free(d, d->attempts);
}
