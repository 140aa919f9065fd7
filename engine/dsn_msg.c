/*
 * dsn_msg.c - turns a queued message's recipient outcomes into the one DSN
 * RFC 3464 asks for, applying each recipient's NOTIFY (RFC 3461 §4.1).
 * Shared by the relay's scheduler and `qtool bounce`.
 */
#include "engine/dsn.h"

#include "base/postern_err.h"

#include <stdlib.h>

bool dsn_notify_wants(unsigned notify, enum queue_dsn_event ev) {
  if (notify == 0)
    return ev == QUEUE_DSN_BOUNCED || ev == QUEUE_DSN_DELAYED;
  if (notify & QUEUE_NOTIFY_NEVER)
    return false;
  if (ev == QUEUE_DSN_BOUNCED)
    return (notify & QUEUE_NOTIFY_FAILURE) != 0;
  if (ev == QUEUE_DSN_DELAYED)
    return (notify & QUEUE_NOTIFY_DELAY) != 0;
  return false;
}

static bool wanted(const struct queue_env *env, const struct dsn_note *n,
                   enum queue_dsn_event ev) {
  return n->event == ev && n->index < env->n_rcpts &&
         dsn_notify_wants(env->rcpts[n->index].notify, ev);
}

int dsn_build_for(const struct queue_env *env, const void *body,
                  size_t body_len, const struct dsn_note *notes, size_t n,
                  enum queue_dsn_event ev, const char *hostname,
                  uint64_t now_ms, const char *dsn_id, char **out,
                  size_t *outlen, size_t *nwanted) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (wanted(env, &notes[i], ev))
      k++;
  *nwanted = k;
  if (k == 0)
    return POSTERN_ENOENT;
  if (env->sender[0] == '\0')
    return POSTERN_ESTATE;
  struct dsn_rcpt *dr = calloc(k, sizeof *dr);
  if (dr == NULL)
    return POSTERN_ENOMEM;
  k = 0;
  for (size_t i = 0; i < n; i++) {
    const struct dsn_note *note = &notes[i];
    if (!wanted(env, note, ev))
      continue;
    const struct queue_rcpt *rc = &env->rcpts[note->index];
    dr[k].addr = rc->addr;
    dr[k].orcpt = rc->orcpt[0] ? rc->orcpt : NULL;
    dr[k].status = note->status;
    dr[k].remote_mta = note->mx && note->mx[0] ? note->mx : NULL;
    dr[k].diagnostic = note->reply && note->reply[0] ? note->reply : NULL;
    dr[k].last_attempt = (time_t)(note->when_ms / 1000);
    k++;
  }
  struct dsn_input in = {
      .kind = ev == QUEUE_DSN_BOUNCED ? DSN_FAILURE : DSN_DELAY,
      .reporting_mta = hostname,
      .sender = env->sender,
      .queue_id = env->id,
      .envid = env->envid[0] ? env->envid : NULL,
      .ret =
          env->ret == QUEUE_RET_FULL
              ? DSN_RET_FULL
              : (env->ret == QUEUE_RET_HDRS ? DSN_RET_HDRS : DSN_RET_DEFAULT),
      .arrival = (time_t)(env->arrival_ms / 1000),
      .now = (time_t)(now_ms / 1000),
      .boundary_seed = dsn_id,
      /* RFC 8689 §5: a report on a REQUIRETLS message may travel where TLS
       * is not assured, so it carries none of the message's content. */
      .original = env->requiretls ? NULL : body,
      .original_len = env->requiretls ? 0 : body_len,
      .full_limit = 10u << 20,
      .rcpts = dr,
      .nrcpts = k,
  };
  int rc = dsn_build(&in, out, outlen);
  free(dr);
  return rc;
}
