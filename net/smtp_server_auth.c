/*
 * smtp_server_auth.c - SMTP AUTH in the server session (RFC 4954): the
 * AUTH command and its exchange (states AUTH, AUTH_CHECK of
 * smtp_server_internal.h), verification off the loop, the limiter of
 * failures, and who may relay (auth_mode with accept_from).
 *
 * Invariants:
 *  - AUTH is offered and accepted only on a TLS session (RFC 4954 §4 and
 *    §14: PLAIN and LOGIN send the password as it is); before STARTTLS it
 *    gets 538 5.7.11;
 *  - every reply to a failed login is the same bytes whether the user
 *    exists or not, and takes the same path: an unknown user is verified
 *    against a dummy hash of the table's method and cost;
 *  - crypt_rn runs on libuv's thread pool (uv_queue_work). The job owns a
 *    copy of the password and the hash, so a reload freeing nothing and a
 *    session closing meanwhile are both harmless; the session's memory
 *    stays while a job is out (auth_pending) and is freed by the job's
 *    after-work callback when the session closed meanwhile;
 *  - passwords are wiped from every buffer once they are copied or used;
 *    they are never logged. User names are logged escaped (postern_log).
 */
#include "net/smtp_server_session.h"
#include "net/tls.h"

#include "base/postern_err.h"
#include "base/postern_log.h"

#include <stdlib.h>
#include <string.h>

/* RFC 4954 §6 and RFC 3463 codes. */
#define R_AUTH_OK "235 2.7.0 Authentication successful"
#define R_INVALID "535 5.7.8 Authentication credentials invalid"
#define R_ENCRYPT                                                              \
  "538 5.7.11 Encryption required for requested authentication mechanism"
#define R_REQUIRED "530 5.7.0 Authentication required"
#define R_TEMP "454 4.7.0 Temporary authentication failure"
#define R_REFUSED                                                              \
  "421 4.7.0 Too many failed authentications, try again later, closing "       \
  "connection"

_Static_assert(SMTP_SERVER__AUTH_LINE_MAX == SMTP_AUTH_LINE_MAX,
               "the AUTH command and its responses share one line limit");

/* Verifications on libuv's thread pool at once, across the server's loops.
 * Each may take tens of milliseconds and megabytes (yescrypt); the pool
 * has four threads and is shared (getaddrinfo). Beyond this a login gets
 * RFC 4954's 454 4.7.0 and may be retried: a crowd of clients cannot queue
 * unbounded work or memory. */
#define AUTH_INFLIGHT_MAX 64

struct auth_job {
  uv_work_t req;
  struct session *s;
  char pass[SMTP_AUTH_PASS_MAX + 1];
  char hash[SMTP_AUTH_HASH_MAX + 1];
  bool known; /* the user exists: a match counts */
  bool match;
};

const char *smtp_server__auth_ehlo(const struct session *s) {
  const struct smtp_server *srv = s->lc->srv;
  if (srv->auth_mode == SMTP_AUTH_OFF || stream_tls(&s->io) == NULL)
    return NULL;
  return "250-AUTH PLAIN LOGIN";
}

bool smtp_server__auth_connect_ok(const struct smtp_server *srv,
                                  const struct sockaddr *peer) {
  /* optional: anyone may connect to log in; accept_from is checked at
   * MAIL for those who do not. */
  if (srv->auth_mode == SMTP_AUTH_OPTIONAL)
    return true;
  return cidr_list_match(srv->accept, srv->naccept, peer);
}

const char *smtp_server__auth_mail_refusal(const struct session *s) {
  const struct smtp_server *srv = s->lc->srv;
  bool authed = s->auth_user[0] != '\0';
  switch (srv->auth_mode) {
  case SMTP_AUTH_REQUIRED:
    return authed ? NULL : R_REQUIRED;
  case SMTP_AUTH_OPTIONAL:
    if (authed || cidr_list_match(srv->accept, srv->naccept,
                                  (const struct sockaddr *)&s->peer))
      return NULL;
    return R_REQUIRED;
  default:
    return NULL; /* accept_from was checked at connect */
  }
}

bool smtp_server__session_idle(const struct session *s) {
  return !s->txn_pending && !s->auth_pending;
}

void smtp_server__auth_reset(struct session *s) {
  if (s->auth_x != NULL) {
    smtp_auth_wipe(s->auth_x, sizeof *s->auth_x);
    free(s->auth_x);
    s->auth_x = NULL;
  }
}

static void event(struct session *s, int result) {
  struct smtp_server *srv = s->lc->srv;
  if (srv->h.auth_event)
    srv->h.auth_event(srv->ud, result);
}

/* auth_failed / auth_ok / auth_throttled with the client, the user name
 * (escaped by the logger) and the mechanism. */
static void auth_log(struct session *s, enum postern_log_level lvl,
                     const char *ev, const char *user, const char *reason,
                     uint64_t delay_ms) {
  if (!postern_log_enabled(lvl))
    return;
  struct postern_log_rec r;
  postern_log_begin(&r, lvl, ev);
  postern_log_uint(&r, "sess", s->id);
  postern_log_str(&r, "client", s->ip);
  postern_log_str(&r, "user", user && user[0] ? user : "-");
  postern_log_str(&r, "mechanism", smtp_auth_mech_name(s->auth_mech));
  if (reason)
    postern_log_str(&r, "reason", reason);
  if (delay_ms)
    postern_log_uint(&r, "delay_ms", delay_ms);
  postern_log_end(&r);
}

/* Back to READY after an exchange that ended without a login. */
static void end_exchange(struct session *s, const char *reply) {
  smtp_server__reply(s, reply);
  smtp_server__auth_reset(s);
  smtp_server__set_state(s, SMTP_SERVER__S_READY);
}

/* A failure the limiter counts: malformed messages and foreign authzids
 * too, or they would be free guesses. */
static void count_failure(struct session *s, const char *user,
                          const char *reason, const char *reply) {
  struct smtp_server *srv = s->lc->srv;
  smtp_auth_limit_fail(srv->limit, s->ip, user, uv_now(s->lc->loop));
  auth_log(s, POSTERN_LOG_WARN, "auth_failed", user, reason, 0);
  event(s, SMTP_SERVER_AUTH_FAILED);
  end_exchange(s, reply);
}

static void refuse(struct session *s, const char *user) {
  auth_log(s, POSTERN_LOG_WARN, "auth_throttled", user, "refused", 0);
  event(s, SMTP_SERVER_AUTH_THROTTLED);
  smtp_server__auth_reset(s);
  smtp_server__reply(s, R_REFUSED);
  smtp_server__session_close(s);
}

/* ---- verification on the thread pool ---------------------------------- */

static void work_cb(uv_work_t *req) {
  struct auth_job *j = req->data;
  j->match = smtp_auth_verify(j->pass, j->hash);
  smtp_auth_wipe(j->pass, sizeof j->pass);
}

static void after_work_cb(uv_work_t *req, int status) {
  struct auth_job *j = req->data;
  struct session *s = j->s;
  bool ok = status == 0 && j->known && j->match;
  atomic_fetch_sub(&s->lc->srv->auth_inflight, 1);
  smtp_auth_wipe(j, sizeof *j);
  free(j);
  s->auth_pending = false;
  if (s->st == SMTP_SERVER__S_CLOSED) {
    if (smtp_server__session_idle(s))
      smtp_server__session_free(s); /* the client left meanwhile */
    return;
  }
  if (s->handles_closing || s->st != SMTP_SERVER__S_AUTH_CHECK)
    return; /* closing: on_handle_close frees the session */
  if (status != 0) {
    auth_log(s, POSTERN_LOG_ERROR, "auth_failed", s->auth_try,
             "verification_unavailable", 0);
    end_exchange(s, R_TEMP);
  } else if (ok) {
    memcpy(s->auth_user, s->auth_try, sizeof s->auth_user);
    auth_log(s, POSTERN_LOG_INFO, "auth_ok", s->auth_user, NULL, 0);
    event(s, SMTP_SERVER_AUTH_OK);
    end_exchange(s, R_AUTH_OK);
  } else {
    /* One reply and one log reason for both: the log is the operator's,
     * but a log shipped elsewhere should not be an oracle either. */
    count_failure(s, s->auth_try, "invalid_credentials", R_INVALID);
  }
  smtp_server__arm_timer(s);
  smtp_server__pump(s);
}

/* Hands the credentials in s->auth_x to the thread pool. */
static void start_verify(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  if (atomic_fetch_add(&srv->auth_inflight, 1) >= AUTH_INFLIGHT_MAX) {
    atomic_fetch_sub(&srv->auth_inflight, 1);
    auth_log(s, POSTERN_LOG_WARN, "auth_failed", s->auth_try, "busy", 0);
    end_exchange(s, R_TEMP);
    return;
  }
  struct auth_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    atomic_fetch_sub(&srv->auth_inflight, 1);
    end_exchange(s, R_TEMP);
    return;
  }
  const struct smtp_auth_users *users = atomic_load(&srv->users);
  const char *hash = smtp_auth_users_hash(users, s->auth_x->user);
  j->known = hash != NULL;
  if (hash == NULL)
    hash = smtp_auth_users_dummy(users);
  j->s = s;
  j->req.data = j;
  snprintf(j->hash, sizeof j->hash, "%s", hash);
  memcpy(j->pass, s->auth_x->pass, sizeof j->pass);
  smtp_server__auth_reset(s); /* the password now lives in the job only */
  uv_timer_stop(&s->timer);   /* the thread pool, not the client, is slow */
  if (uv_queue_work(s->lc->loop, &j->req, work_cb, after_work_cb) != 0) {
    atomic_fetch_sub(&srv->auth_inflight, 1);
    smtp_auth_wipe(j, sizeof *j);
    free(j);
    auth_log(s, POSTERN_LOG_ERROR, "auth_failed", s->auth_try,
             "verification_unavailable", 0);
    end_exchange(s, R_TEMP);
    smtp_server__arm_timer(s);
    return;
  }
  s->auth_pending = true;
}

void smtp_server__auth_timer(struct session *s) {
  if (s->auth_x == NULL) { /* cannot happen: the exchange waits for us */
    end_exchange(s, R_TEMP);
    smtp_server__arm_timer(s);
    smtp_server__pump(s);
    return;
  }
  start_verify(s);
  if (!s->auth_pending)
    smtp_server__pump(s); /* it answered at once (454) */
}

/* The credentials are complete: the limiter decides when they are
 * checked. The delay holds the session in AUTH_CHECK with its input
 * waiting, so a pipelining client gains nothing. */
static void credentials(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  snprintf(s->auth_try, sizeof s->auth_try, "%s", s->auth_x->user);
  uint64_t delay = 0;
  enum smtp_auth_verdict v = smtp_auth_limit_check(
      srv->limit, s->ip, s->auth_try, uv_now(s->lc->loop), &delay);
  if (v == SMTP_AUTH_REFUSE) {
    refuse(s, s->auth_try);
    return;
  }
  smtp_server__set_state(s, SMTP_SERVER__S_AUTH_CHECK);
  if (v == SMTP_AUTH_DELAY) {
    auth_log(s, POSTERN_LOG_WARN, "auth_throttled", s->auth_try, "delayed",
             delay);
    s->timer.data = s;
    uv_timer_start(&s->timer, smtp_server__on_timer, delay, 0);
    return;
  }
  start_verify(s);
}

/* Acts on one step of the exchange. */
static void step(struct session *s, enum smtp_auth_step r,
                 const char *challenge) {
  switch (r) {
  case SMTP_AUTH_STEP_CONTINUE:
    smtp_server__replyf(s, "334 %s", challenge);
    smtp_server__set_state(s, SMTP_SERVER__S_AUTH);
    break;
  case SMTP_AUTH_STEP_DONE:
    credentials(s);
    break;
  case SMTP_AUTH_STEP_CANCEL:
    end_exchange(s, "501 5.7.0 Authentication cancelled");
    break;
  case SMTP_AUTH_STEP_BAD_B64:
    end_exchange(s, "501 5.5.2 Cannot Base64-decode client response");
    break;
  case SMTP_AUTH_STEP_MALFORMED:
    count_failure(s, NULL, "malformed",
                  "501 5.5.2 Malformed authentication response");
    break;
  case SMTP_AUTH_STEP_AUTHZID:
    /* RFC 4616 §2: we authorize no identity but the authcid's own. */
    snprintf(s->auth_try, sizeof s->auth_try, "%s", s->auth_x->user);
    count_failure(s, s->auth_try, "authzid", R_INVALID);
    break;
  case SMTP_AUTH_STEP_TOO_LONG:
    end_exchange(s, "500 5.5.6 Authentication Exchange line is too long");
    break;
  }
}

void smtp_server__cmd_auth(struct session *s,
                           const struct smtp_server__cmd *c) {
  struct smtp_server *srv = s->lc->srv;
  if (srv->auth_mode == SMTP_AUTH_OFF) {
    smtp_server__reply(s, "502 5.5.1 Error: command not implemented");
    return;
  }
  if (s->st == SMTP_SERVER__S_CONNECTED || !s->esmtp) {
    smtp_server__reply(s, "503 5.5.1 Error: send EHLO first");
    return;
  }
  if (stream_tls(&s->io) == NULL) {
    /* RFC 4954 §4, §6: never invite a password in plaintext. */
    smtp_server__reply(s, R_ENCRYPT);
    return;
  }
  if (s->auth_user[0] != '\0') {
    smtp_server__reply(s, "503 5.5.1 Error: already authenticated");
    return;
  }
  if (s->st != SMTP_SERVER__S_READY) {
    smtp_server__reply(
        s, "503 5.5.1 Error: AUTH not permitted during a mail transaction");
    return;
  }
  enum smtp_auth_mech m = smtp_auth_mech_parse(c->arg.p, c->arg.n);
  if (m == SMTP_AUTH_MECH_NONE) {
    smtp_server__reply(s, "504 5.5.4 Unrecognized authentication type");
    return;
  }
  s->auth_mech = m;
  uint64_t delay;
  if (smtp_auth_limit_check(srv->limit, s->ip, NULL, uv_now(s->lc->loop),
                            &delay) == SMTP_AUTH_REFUSE) {
    refuse(s, NULL);
    return;
  }
  s->auth_x = malloc(sizeof *s->auth_x);
  if (s->auth_x == NULL) {
    smtp_server__reply(s, R_TEMP);
    return;
  }
  const char *challenge = NULL;
  enum smtp_auth_step r = smtp_auth_exchange_begin(s->auth_x, m, c->auth_ir.p,
                                                   c->auth_ir.n, &challenge);
  if (c->auth_ir.p != NULL) /* in s->in: the credentials go now */
    smtp_auth_wipe((char *)c->auth_ir.p, c->auth_ir.n);
  step(s, r, challenge);
}

bool smtp_server__auth_step(struct session *s) {
  char *b = s->in + s->in_off;
  size_t n, used;
  enum smtp_server__frame f = smtp_server__line_frame(
      b, s->in_len - s->in_off, SMTP_AUTH_LINE_MAX, &n, &used);
  if (f == SMTP_SERVER__FRAME_MORE)
    return false;
  if (f == SMTP_SERVER__FRAME_LONG) {
    /* RFC 4954 §4: 500 5.5.6 for a line over our limit; the rest of it
     * is skipped like an overlong command. */
    s->discard_line = true; /* pump_once skips up to the LF */
    step(s, SMTP_AUTH_STEP_TOO_LONG, NULL);
    return true;
  }
  s->in_off += used;
  s->ncmd++;
  s->ncmd_idle++;
  smtp_server__arm_timer(s);
  if (f == SMTP_SERVER__FRAME_BARE_LF) {
    end_exchange(s, "500 5.5.2 Bare LF not allowed, lines end with CRLF");
    return true;
  }
  const char *challenge = NULL;
  enum smtp_auth_step r = smtp_auth_exchange_line(s->auth_x, b, n, &challenge);
  smtp_auth_wipe(b, n + 1); /* the response stays nowhere */
  step(s, r, challenge);
  return true;
}
