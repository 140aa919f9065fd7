/*
 * net/smtp_client.c - the SMTP client state machine (see smtp_client.h):
 * the session from connect to close, its setup (greeting, EHLO/HELO,
 * STARTTLS) and failures. The transaction states (RSET .. DOT) are
 * smtp_client_txn.c's, command formatting smtp_client_cmd.c's; the
 * object is in smtp_client_internal.h.
 *
 * Legal transitions (anything else is a bug and is logged at error level):
 *
 *   CONNECTING    -> GREETING | FAILED
 *   GREETING      -> EHLO | FAILED
 *   EHLO          -> HELO (5xx to EHLO) | STARTTLS | READY | FAILED
 *   HELO          -> READY | FAILED
 *   STARTTLS      -> TLS_HANDSHAKE (220) | READY (refused: plaintext,
 *                    reported to the caller) | FAILED
 *   TLS_HANDSHAKE -> EHLO_TLS | FAILED
 *   EHLO_TLS      -> READY | FAILED
 *   READY         -> RSET (message 2..n) | MAIL | QUIT | FAILED
 *   RSET          -> MAIL | FAILED
 *   MAIL          -> RCPT | READY (MAIL refused, no pipelining) | FAILED
 *   RCPT          -> RCPT | DATA | READY (no recipient accepted) | FAILED
 *   DATA          -> BODY (354) | DOT (354 without accepted recipients:
 *                    send the lone ".") | READY (DATA refused) | FAILED
 *   BODY          -> DOT | FAILED
 *   DOT           -> READY | FAILED
 *   QUIT          -> CLOSING
 *   any           -> CLOSING (smtp_client_close)
 *
 * With PIPELINING the commands of a transaction are written together and
 * the states above only track which reply we expect next (RFC 2920 §3.1:
 * replies come in command order).
 *
 * Ownership and lifetime: the client owns three libuv handles: the TCP
 * handle, the command timer and a net_defer ("soon"). The TCP handle is
 * closed as soon as the session fails (so libuv stops reading the caller's
 * body at once) or at smtp_client_close(); the timer and the defer only at
 * smtp_client_close(). The struct is freed in the close callback of
 * whichever handle closes last, always after the caller asked for it.
 * Failures and results decided inside a caller's call are reported through
 * the defer (smtp_client__fail_soon, _finish_soon), so no callback ever
 * runs inside the caller's call; a command timeout replaces a pending
 * "soon", exactly as when one timer did both.
 *
 * Input: bytes read (decrypted when TLS is on) are appended to `rbuf` and
 * parsed by smtp_reply_parse(); the buffer is bounded, so a hostile server
 * gets a protocol error, never unbounded memory.
 */
#include "net/smtp_client_internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/postern_err.h"
#include "base/postern_log.h"

_Static_assert(BODY_BUFS <= STREAM_BUFS_MAX, "a body write fits stream_write");

static void process_input(struct smtp_client *c);

/* ---- states ------------------------------------------------------------- */

static bool transition_ok(enum smtp_client_state from,
                          enum smtp_client_state to) {
  if (to == SMTP_CLIENT_CLOSING || to == SMTP_CLIENT_FAILED) {
    return true;
  }
  switch (from) {
  case SMTP_CLIENT_CONNECTING:
    return to == SMTP_CLIENT_GREETING;
  case SMTP_CLIENT_GREETING:
    return to == SMTP_CLIENT_EHLO;
  case SMTP_CLIENT_EHLO:
    return to == SMTP_CLIENT_HELO || to == SMTP_CLIENT_STARTTLS ||
           to == SMTP_CLIENT_READY;
  case SMTP_CLIENT_HELO:
    return to == SMTP_CLIENT_READY;
  case SMTP_CLIENT_STARTTLS:
    return to == SMTP_CLIENT_TLS_HANDSHAKE || to == SMTP_CLIENT_READY;
  case SMTP_CLIENT_TLS_HANDSHAKE:
    return to == SMTP_CLIENT_EHLO_TLS;
  case SMTP_CLIENT_EHLO_TLS:
    return to == SMTP_CLIENT_READY;
  case SMTP_CLIENT_READY:
    return to == SMTP_CLIENT_RSET || to == SMTP_CLIENT_MAIL ||
           to == SMTP_CLIENT_QUIT;
  case SMTP_CLIENT_RSET:
    return to == SMTP_CLIENT_MAIL;
  case SMTP_CLIENT_MAIL:
    return to == SMTP_CLIENT_RCPT || to == SMTP_CLIENT_READY;
  case SMTP_CLIENT_RCPT:
    return to == SMTP_CLIENT_RCPT || to == SMTP_CLIENT_DATA ||
           to == SMTP_CLIENT_READY;
  case SMTP_CLIENT_DATA:
    return to == SMTP_CLIENT_BODY || to == SMTP_CLIENT_DOT ||
           to == SMTP_CLIENT_READY;
  case SMTP_CLIENT_BODY:
    return to == SMTP_CLIENT_DOT;
  case SMTP_CLIENT_DOT:
    return to == SMTP_CLIENT_READY;
  case SMTP_CLIENT_QUIT:
  case SMTP_CLIENT_CLOSING:
  case SMTP_CLIENT_FAILED:
    return false;
  }
  return false;
}

void smtp_client__set_state(struct smtp_client *c, enum smtp_client_state to) {
  enum smtp_client_state from = c->state;
  if (from == to && to != SMTP_CLIENT_RCPT) {
    return;
  }
  bool ok = transition_ok(from, to);
  if (!ok || postern_log_enabled(POSTERN_LOG_DEBUG)) {
    postern_log(ok ? POSTERN_LOG_DEBUG : POSTERN_LOG_ERROR,
                ok ? "smtp_client_state" : "smtp_client_bad_transition", "peer",
                c->peer_str, "mx", c->mx_name, "from",
                smtp_client_state_name(from), "to", smtp_client_state_name(to),
                NULL);
  }
  c->state = to;
}

/* ---- handles and closing ----------------------------------------------- */

static void free_client(struct smtp_client *c) {
  stream_free(&c->io);
  free(c->rbuf);
  free(c->raw);
  free(c->cmd);
  free(c->results);
  free(c->prev_results);
  free(c->rstate);
  free(c->next_env);
  free(c->cur_env);
  free(c->helo_name);
  free(c->mx_name);
  free(c->sni);
  free(c->session_key);
  free(c);
}

static void handle_closed(uv_handle_t *h) {
  struct smtp_client *c = h->data;
  if (h == (uv_handle_t *)&c->io.tcp) {
    c->tcp_closed = true;
  }
  if (--c->open_handles > 0) {
    return;
  }
  smtp_client_close_cb cb = c->close_cb;
  void *arg = c->close_arg;
  free_client(c);
  if (cb) {
    cb(c, arg);
  }
}

/* Stops all I/O on the socket. libuv cancels queued writes and never reads
 * their buffers again, so the caller may free its body afterwards. */
static void close_tcp(struct smtp_client *c) {
  if (!uv_is_closing((uv_handle_t *)&c->io.tcp)) {
    uv_close((uv_handle_t *)&c->io.tcp, handle_closed);
  }
}

static void soon_closed(struct net_defer *d) {
  handle_closed((uv_handle_t *)&((struct smtp_client *)d->data)->timer);
}

static void close_all(struct smtp_client *c) {
  smtp_client__set_state(c, SMTP_CLIENT_CLOSING);
  smtp_client__timers_stop(c);
  close_tcp(c);
  if (!uv_is_closing((uv_handle_t *)&c->timer)) {
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    net_defer_close(&c->soon, soon_closed);
  }
}

/* Stops the command timer and a pending "soon": whatever was due is not. */
void smtp_client__timers_stop(struct smtp_client *c) {
  uv_timer_stop(&c->timer);
  net_defer_cancel(&c->soon);
}

/* What is due now: a close, locally decided results, a deferred failure,
 * or (from the timer only) a timeout. */
static void run_due(struct smtp_client *c, bool timer) {
  int status = c->deferred_status;
  c->deferred_status = 0;
  if (c->close_requested) {
    /* Only QUIT waits after close was asked for. */
    close_all(c);
    return;
  }
  if (c->local_finish) {
    c->local_finish = false;
    smtp_client__finish_txn(c, 0);
    return;
  }
  if (status < 0) {
    const char *enh = c->state == SMTP_CLIENT_CONNECTING ? "4.4.1" : "4.4.2";
    smtp_client__session_failed(
        c, status, enh,
        c->deferred_reason[0] ? c->deferred_reason : postern_strerror(status),
        NULL);
    return;
  }
  if (!timer)
    return;
  char why[96];
  snprintf(why, sizeof why, "timed out in state %s",
           smtp_client_state_name(c->state));
  smtp_client__session_failed(c, POSTERN_ETIMEOUT, "4.4.1", why, NULL);
}

static void on_timer(uv_timer_t *t) {
  run_due(t->data, true);
}

static void on_soon(struct net_defer *d) {
  run_due(d->data, false);
}

/* A command timeout replaces a pending "soon", as one timer used to do both
 * (locally decided results then wait for the timeout's run_due). */
void smtp_client__arm(struct smtp_client *c, uint64_t ms) {
  if (c->deferred_status < 0) {
    return; /* a failure is already due at once; keep it due */
  }
  net_defer_cancel(&c->soon);
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* Reports `status` once the current call has returned (net/defer). */
void smtp_client__fail_soon(struct smtp_client *c, int status) {
  c->deferred_status = status;
  uv_timer_stop(&c->timer);
  net_defer_arm(&c->soon, on_soon);
}

/* The results were decided locally (smtp_client_txn.c's refusals without
 * a command): sent_cb runs once the current call has returned. */
void smtp_client__finish_soon(struct smtp_client *c) {
  c->local_finish = true;
  uv_timer_stop(&c->timer);
  net_defer_arm(&c->soon, on_soon);
}

/* ---- writing ------------------------------------------------------------ */

/* A queued write completed (net/stream.h). */
static void write_done(void *arg, int status, int kind) {
  struct smtp_client *c = arg;
  if (c->close_requested || c->dead) {
    return;
  }
  if (status < 0) {
    smtp_client__session_failed(c, status, "4.4.2",
                                "lost connection while writing", NULL);
    return;
  }
  if (kind == WRITE_BODY && c->state == SMTP_CLIENT_BODY) {
    smtp_client__arm(c, c->data_to);
    smtp_client__write_body(c);
  }
}

/* Writes the accumulated commands as one write (one pipelining group). A
 * failure is reported through smtp_client__fail_soon(). */
void smtp_client__cmd_flush(struct smtp_client *c) {
  if (c->cmdlen == 0) {
    return;
  }
  if (postern_log_enabled(POSTERN_LOG_DEBUG)) {
    struct postern_log_rec r;
    postern_log_begin(&r, POSTERN_LOG_DEBUG, "smtp_client_send");
    postern_log_str(&r, "peer", c->peer_str);
    postern_log_strn(&r, "data", c->cmd, c->cmdlen);
    postern_log_end(&r);
  }
  uv_buf_t b = uv_buf_init(c->cmd, (unsigned)c->cmdlen);
  int rc = stream_write(&c->io, &b, 1, STREAM_COPY, WRITE_CMD);
  c->cmdlen = 0;
  if (rc < 0) {
    smtp_client__fail_soon(c, rc);
  }
}

void smtp_client__send_cmd(struct smtp_client *c, const char *fmt,
                           const char *arg, uint64_t timeout) {
  if (smtp_client__cmd_append(c, fmt, arg) < 0) {
    smtp_client__fail_soon(c, POSTERN_ENOMEM);
    return;
  }
  smtp_client__cmd_flush(c);
  smtp_client__arm(c, timeout);
}

/* ---- session setup ------------------------------------------------------ */

static void fill_facts_tls(struct smtp_client *c) {
  struct smtp_client_facts *f = &c->facts;
  struct tls_conn *t = stream_tls(&c->io);
  f->tls = t;
  f->tls_version = tls_conn_version(t);
  f->tls_cipher = tls_conn_cipher(t);
  f->tls_resumed = tls_conn_session_reused(t);
  tls_conn_peer_verify(t, &f->verify);
  if (f->verify.pkix_ok && f->verify.name_ok) {
    f->tls_level = SMTP_TLS_AUTHENTICATED;
    c->tls_error[0] = '\0';
  } else {
    f->tls_level = SMTP_TLS_ENCRYPTED;
    snprintf(c->tls_error, sizeof c->tls_error, "%s", f->verify.error);
  }
}

static void report_ready(struct smtp_client *c, int status) {
  c->facts.last_reply = &c->last_reply;
  c->facts.tls_error = c->tls_error;
  c->facts_valid = true;
  if (status == 0) {
    smtp_client__timers_stop(c);
    smtp_client__set_state(c, SMTP_CLIENT_READY);
    if (postern_log_enabled(POSTERN_LOG_DEBUG)) {
      postern_log(POSTERN_LOG_DEBUG, "smtp_client_ready", "peer", c->peer_str,
                  "mx", c->mx_name, "tls",
                  smtp_tls_level_name(c->facts.tls_level), "starttls",
                  smtp_starttls_name(c->facts.starttls), "tls_error",
                  c->tls_error, NULL);
    }
  }
  if (!c->close_requested && c->ready_cb) {
    c->ready_cb(c, status, &c->facts, c->ready_arg);
  }
}

static void on_handshake(struct tls_conn *t, int status, void *arg) {
  struct smtp_client *c = arg;
  if (c->close_requested || c->dead) {
    return;
  }
  if (status < 0) {
    c->facts.starttls = SMTP_STARTTLS_FAILED;
    snprintf(c->tls_error, sizeof c->tls_error, "%s", tls_conn_error(t));
    smtp_client__session_failed(c, POSTERN_ETLS, "4.7.0", c->tls_error, NULL);
    return;
  }
  c->facts.starttls = SMTP_STARTTLS_DONE;
  fill_facts_tls(c);
  /* RFC 3207 §4.2: forget everything learnt before TLS, EHLO again. */
  c->facts.caps = 0;
  c->facts.size_limit = 0;
  smtp_client__set_state(c, SMTP_CLIENT_EHLO_TLS);
  smtp_client__send_cmd(c, "EHLO %s\r\n", c->helo_name, c->command_to);
}

static void start_tls(struct smtp_client *c) {
  /* RFC 3207 §5: plaintext the server sent after its 220 could be injected
   * by an attacker; a correct server sends nothing before the handshake. */
  if (c->rlen > 0) {
    c->facts.starttls = SMTP_STARTTLS_FAILED;
    snprintf(c->tls_error, sizeof c->tls_error,
             "server sent plaintext after its STARTTLS reply");
    smtp_client__session_failed(c, POSTERN_EPROTO, "4.7.0", c->tls_error, NULL);
    return;
  }
  struct tls_conn *t = NULL;
  int rc = tls_conn_new(&t, c->tls_ctx, (uv_stream_t *)&c->io.tcp, c->mx_name,
                        c->session_key);
  if (rc == 0) {
    stream_set_tls(&c->io, t);
  }
  if (rc == 0 && c->sni) {
    rc = tls_conn_set_sni(t, c->sni);
  }
  if (rc == 0 && c->skip_pkix) {
    rc = tls_conn_skip_pkix(t);
  }
  if (rc == 0) {
    smtp_client__set_state(c, SMTP_CLIENT_TLS_HANDSHAKE);
    rc = tls_conn_handshake(t, on_handshake, c);
  }
  if (rc < 0) {
    c->facts.starttls = SMTP_STARTTLS_FAILED;
    snprintf(c->tls_error, sizeof c->tls_error, "%s",
             t ? tls_conn_error(t) : postern_strerror(rc));
    smtp_client__session_failed(c, POSTERN_ETLS, "4.7.0", c->tls_error, NULL);
    return;
  }
  smtp_client__arm(c, c->command_to);
}

/* A reply that ends the setup: remember it and fail. */
static void setup_refused(struct smtp_client *c, const struct smtp_reply *r) {
  char why[SMTP_REPLY_TEXT_MAX + 64];
  smtp_reply_format(r, why, sizeof why);
  smtp_client__session_failed(c, POSTERN_EPROTO, NULL, why, r);
}

static void setup_reply(struct smtp_client *c, const struct smtp_reply *r,
                        const char *raw, size_t rawlen) {
  int cls = smtp_reply_class(r);
  switch (c->state) {
  case SMTP_CLIENT_GREETING:
    if (cls != 2) {
      setup_refused(c, r);
      return;
    }
    smtp_client__set_state(c, SMTP_CLIENT_EHLO);
    smtp_client__send_cmd(c, "EHLO %s\r\n", c->helo_name, c->command_to);
    return;
  case SMTP_CLIENT_EHLO:
    if (cls == 5 && r->code != 554) {
      /* RFC 5321 §3.2: an old server refuses EHLO; try HELO. */
      smtp_client__set_state(c, SMTP_CLIENT_HELO);
      smtp_client__send_cmd(c, "HELO %s\r\n", c->helo_name, c->command_to);
      return;
    }
    if (cls != 2) {
      setup_refused(c, r);
      return;
    }
    c->facts.esmtp = true;
    smtp_client__parse_ehlo(&c->facts, raw, rawlen);
    /* RFC 8689 §4.2.1: only the EHLO reply after TLS counts for
     * REQUIRETLS; offered in plaintext it means nothing. */
    c->facts.caps &= ~SMTP_CAP_REQUIRETLS;
    if (!(c->facts.caps & SMTP_CAP_STARTTLS)) {
      c->facts.starttls = SMTP_STARTTLS_NOT_OFFERED;
      report_ready(c, 0);
    } else if (!c->want_starttls || !c->tls_ctx) {
      c->facts.starttls = SMTP_STARTTLS_NOT_WANTED;
      report_ready(c, 0);
    } else {
      smtp_client__set_state(c, SMTP_CLIENT_STARTTLS);
      smtp_client__send_cmd(c, "STARTTLS\r\n%s", "", c->command_to);
    }
    return;
  case SMTP_CLIENT_HELO:
    if (cls != 2) {
      setup_refused(c, r);
      return;
    }
    c->facts.starttls = SMTP_STARTTLS_NOT_OFFERED;
    report_ready(c, 0);
    return;
  case SMTP_CLIENT_STARTTLS:
    if (r->code == 220) {
      start_tls(c);
      return;
    }
    if (r->code == 421) {
      setup_refused(c, r);
      return;
    }
    /* RFC 3207 §4: 454 (or any refusal) leaves the plaintext session
     * usable; the caller's policy decides whether that is good enough. */
    c->facts.starttls = SMTP_STARTTLS_REFUSED;
    {
      static const char prefix[] = "STARTTLS refused: ";
      memcpy(c->tls_error, prefix, sizeof prefix);
      smtp_reply_format(r, c->tls_error + sizeof prefix - 1,
                        sizeof c->tls_error - sizeof prefix + 1);
    }
    report_ready(c, 0);
    return;
  case SMTP_CLIENT_EHLO_TLS:
    if (cls != 2) {
      setup_refused(c, r);
      return;
    }
    c->facts.esmtp = true;
    smtp_client__parse_ehlo(&c->facts, raw, rawlen);
    report_ready(c, 0);
    return;
  default:
    /* CONNECTING and TLS_HANDSHAKE read no plaintext replies. */
    smtp_client__session_failed(c, POSTERN_EPROTO, "4.5.0", "unexpected reply",
                                r);
    return;
  }
}

/* ---- failures ----------------------------------------------------------- */

void smtp_client__session_failed(struct smtp_client *c, int status,
                                 const char *enh, const char *reason,
                                 const struct smtp_reply *remote) {
  if (c->dead) {
    return;
  }
  enum smtp_client_state st = c->state;
  c->dead = true;
  c->facts.failed_state = st;
  smtp_client__timers_stop(c);
  close_tcp(c);
  if (remote) {
    c->last_reply = *remote;
  }
  if (postern_log_enabled(POSTERN_LOG_DEBUG)) {
    char text[SMTP_REPLY_TEXT_MAX + 64];
    if (remote) {
      smtp_reply_format(remote, text, sizeof text);
    }
    postern_log(POSTERN_LOG_DEBUG, "smtp_client_failed", "peer", c->peer_str,
                "mx", c->mx_name, "state", smtp_client_state_name(st), "error",
                postern_err_name(status), "reason",
                remote ? text : (reason ? reason : ""), NULL);
  }
  if (st == SMTP_CLIENT_QUIT || c->close_requested) {
    close_all(c);
    return;
  }
  if (st == SMTP_CLIENT_TLS_HANDSHAKE &&
      c->facts.starttls != SMTP_STARTTLS_FAILED) {
    c->facts.starttls = SMTP_STARTTLS_FAILED;
    snprintf(c->tls_error, sizeof c->tls_error, "%s",
             reason ? reason : postern_strerror(status));
  }
  smtp_client__set_state(c, SMTP_CLIENT_FAILED);
  if (smtp_client__in_setup(st)) {
    if (!remote) {
      /* A local reason: keep it as the last reply for the caller's logs. */
      smtp_client__make_reply(&c->last_reply, 421, enh ? enh : "4.4.2",
                              reason ? reason : postern_strerror(status));
      c->last_reply.code = 0;
    }
    report_ready(c, status);
    return;
  }
  struct smtp_reply made;
  if (!remote) {
    smtp_client__make_reply(&made, 421, enh ? enh : "4.4.2",
                            reason ? reason : postern_strerror(status));
  }
  if (smtp_client__in_txn(st) && c->msg) {
    smtp_client__fail_pending(c, remote ? remote : &made, remote != NULL,
                              smtp_client__stage_of(st));
    smtp_client__finish_txn(c, status);
  }
  if (c->next_msg) {
    /* Unless the caller closed the client from the callback above. */
    smtp_client__fail_next(c, status, remote ? remote : &made, remote != NULL);
  }
  /* READY: the idle session died; smtp_client_send() will say so. */
}

/* ---- reading ------------------------------------------------------------ */

static void handle_reply(struct smtp_client *c, const struct smtp_reply *r,
                         const char *raw, size_t rawlen) {
  if (postern_log_enabled(POSTERN_LOG_DEBUG)) {
    char text[SMTP_REPLY_TEXT_MAX + 64];
    smtp_reply_format(r, text, sizeof text);
    postern_log(POSTERN_LOG_DEBUG, "smtp_client_reply", "peer", c->peer_str,
                "state", smtp_client_state_name(c->state), "reply", text, NULL);
  }
  if (smtp_client__in_setup(c->state)) {
    c->last_reply = *r;
    setup_reply(c, r, raw, rawlen);
  } else if (smtp_client__in_txn(c->state)) {
    smtp_client__txn_reply(c, r);
  } else if (c->state == SMTP_CLIENT_QUIT) {
    close_all(c);
  } else {
    /* READY: a reply nobody asked for - usually a 421 before the server
     * hangs up an idle session (RFC 5321 §3.8). */
    c->last_reply = *r;
    smtp_client__session_failed(c, POSTERN_ECLOSED, NULL, NULL, r);
  }
}

static void process_input(struct smtp_client *c) {
  while (!c->dead && c->state != SMTP_CLIENT_CLOSING && c->rlen > 0 &&
         c->state != SMTP_CLIENT_TLS_HANDSHAKE) {
    struct smtp_reply r;
    size_t used = 0;
    const char *why = NULL;
    enum smtp_reply_status st =
        smtp_reply_parse(c->rbuf, c->rlen, &r, &used, &why);
    if (st == SMTP_REPLY_NEED_MORE) {
      return;
    }
    if (st == SMTP_REPLY_PROTO_ERROR) {
      char reason[128];
      snprintf(reason, sizeof reason, "malformed reply in state %s: %s",
               smtp_client_state_name(c->state), why);
      smtp_client__session_failed(c, POSTERN_EPROTO, "4.5.0", reason, NULL);
      return;
    }
    /* Keep the raw reply for EHLO parsing, then consume it: handlers may
     * start TLS and expect rbuf to hold only what followed. */
    char *raw = NULL;
    bool ehlo =
        c->state == SMTP_CLIENT_EHLO || c->state == SMTP_CLIENT_EHLO_TLS;
    if (ehlo) {
      raw = malloc(used);
      if (!raw) {
        smtp_client__session_failed(c, POSTERN_ENOMEM, "4.3.0", "out of memory",
                                    NULL);
        return;
      }
      memcpy(raw, c->rbuf, used);
    }
    memmove(c->rbuf, c->rbuf + used, c->rlen - used);
    c->rlen -= used;
    handle_reply(c, &r, raw, ehlo ? used : 0);
    free(raw);
  }
}

static void ingest(struct smtp_client *c, const char *data, size_t n) {
  while (n > 0 && !c->dead) {
    size_t room = RBUF_CAP - c->rlen;
    if (room == 0) {
      smtp_client__session_failed(c, POSTERN_EPROTO, "4.5.0", "reply too long",
                                  NULL);
      return;
    }
    size_t k = n < room ? n : room;
    memcpy(c->rbuf + c->rlen, data, k);
    c->rlen += k;
    data += k;
    n -= k;
    process_input(c);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct smtp_client *c = h->data;
  *buf = uv_buf_init(c->raw, RAW_CAP);
}

static void lost(struct smtp_client *c, int status, const char *what) {
  char reason[160];
  snprintf(reason, sizeof reason, "%s in state %s", what,
           smtp_client_state_name(c->state));
  smtp_client__session_failed(c, status, "4.4.2", reason, NULL);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct smtp_client *c = s->data;
  if (c->dead || (c->close_requested && c->state != SMTP_CLIENT_QUIT)) {
    return;
  }
  if (nread == 0) {
    return;
  }
  if (nread < 0) {
    if (nread == UV_EOF) {
      lost(c, POSTERN_ECLOSED, "connection closed by server");
    } else {
      lost(c, postern_err_from_errno((int)-nread), uv_strerror((int)nread));
    }
    return;
  }
  struct tls_conn *t = stream_tls(&c->io);
  if (!t) {
    ingest(c, buf->base, (size_t)nread);
    return;
  }
  /* May complete the handshake (on_handshake runs from here). */
  if (tls_conn_feed(t, buf->base, (size_t)nread) < 0) {
    if (!c->dead) {
      snprintf(c->tls_error, sizeof c->tls_error, "%s", tls_conn_error(t));
      smtp_client__session_failed(c, POSTERN_ETLS, "4.7.0", c->tls_error, NULL);
    }
    return;
  }
  while (!c->dead && c->state != SMTP_CLIENT_TLS_HANDSHAKE) {
    size_t room = RBUF_CAP - c->rlen;
    if (room == 0) {
      smtp_client__session_failed(c, POSTERN_EPROTO, "4.5.0", "reply too long",
                                  NULL);
      return;
    }
    ssize_t n = tls_conn_read(t, c->rbuf + c->rlen, room);
    if (n == 0) {
      return;
    }
    if (n == POSTERN_ECLOSED) {
      lost(c, POSTERN_ECLOSED, "TLS session closed by server");
      return;
    }
    if (n < 0) {
      lost(c, (int)n, tls_conn_error(t));
      return;
    }
    c->rlen += (size_t)n;
    process_input(c);
  }
}

static void on_connect(uv_connect_t *req, int status) {
  struct smtp_client *c = req->data;
  if (status == UV_ECANCELED || c->dead) {
    return;
  }
  if (status < 0) {
    char reason[128];
    snprintf(reason, sizeof reason, "connect failed: %s", uv_strerror(status));
    smtp_client__session_failed(c, postern_err_from_errno(-status), "4.4.1",
                                reason, NULL);
    return;
  }
  int rc = uv_read_start((uv_stream_t *)&c->io.tcp, on_alloc, on_read);
  if (rc < 0) {
    smtp_client__session_failed(c, postern_err_from_errno(-rc), "4.4.1",
                                uv_strerror(rc), NULL);
    return;
  }
  smtp_client__set_state(c, SMTP_CLIENT_GREETING);
  /* RFC 5321 §4.5.3.2.1: the greeting gets the command timeout. */
  smtp_client__arm(c, c->command_to);
}

/* ---- public entry points ------------------------------------------------ */

int smtp_client_connect(struct smtp_client **out, uv_loop_t *loop,
                        const struct smtp_client_opts *opts,
                        const struct sockaddr *addr, const char *mx_name,
                        smtp_client_ready_cb ready_cb, void *arg) {
  if (!out || !loop || !opts || !addr || !mx_name || !mx_name[0] ||
      !opts->helo_name || !smtp_client__param_ok(opts->helo_name, 255) ||
      strchr(opts->helo_name, ' ') ||
      (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)) {
    return POSTERN_EINVAL;
  }
  if (opts->local_addr && opts->local_addr->sa_family != addr->sa_family) {
    return POSTERN_EINVAL;
  }
  struct smtp_client *c = calloc(1, sizeof *c);
  if (!c) {
    return POSTERN_ENOMEM;
  }
  c->loop = loop;
  c->connect_to = opts->connect_timeout_ms ? opts->connect_timeout_ms
                                           : DEFAULT_CONNECT_TIMEOUT_MS;
  c->command_to = opts->command_timeout_ms ? opts->command_timeout_ms
                                           : DEFAULT_COMMAND_TIMEOUT_MS;
  c->data_to =
      opts->data_timeout_ms ? opts->data_timeout_ms : DEFAULT_DATA_TIMEOUT_MS;
  c->tls_ctx = opts->tls_ctx;
  c->want_starttls = opts->starttls;
  c->ready_cb = ready_cb;
  c->ready_arg = arg;
  size_t alen = addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                           : sizeof(struct sockaddr_in6);
  memcpy(&c->peer, addr, alen);
  char ip[48] = "";
  int port;
  if (addr->sa_family == AF_INET) {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)addr;
    uv_ip4_name(a4, ip, sizeof ip);
    port = ntohs(a4->sin_port);
    snprintf(c->peer_str, sizeof c->peer_str, "%s:%d", ip, port);
  } else {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)addr;
    uv_ip6_name(a6, ip, sizeof ip);
    port = ntohs(a6->sin6_port);
    snprintf(c->peer_str, sizeof c->peer_str, "[%s]:%d", ip, port);
  }
  if (opts->local_addr) {
    memcpy(&c->local_addr, opts->local_addr, alen);
    c->has_local = true;
  }
  c->helo_name = strdup(opts->helo_name);
  c->mx_name = strdup(mx_name);
  c->sni = opts->sni && opts->sni[0] ? strdup(opts->sni) : NULL;
  c->skip_pkix = opts->skip_pkix;
  c->session_key = malloc(TLS_SESSION_KEY_MAX);
  c->rbuf = malloc(RBUF_CAP);
  c->raw = malloc(RAW_CAP);
  c->cmdcap = 1024;
  c->cmd = malloc(c->cmdcap);
  if (!c->helo_name || !c->mx_name || !c->session_key || !c->rbuf || !c->raw ||
      !c->cmd || (opts->sni && opts->sni[0] && !c->sni)) {
    free_client(c);
    return POSTERN_ENOMEM;
  }
  /* Sessions are cached by everything the certificate verdict depends on:
   * the name checked, the port, the SNI and what governs (PKIX, or DANE
   * with a given TLSA RRset). A session made under another policy is then
   * never offered, e.g. after a TLSA rollover. A name the key cannot
   * hold just means no resumption. */
  struct tls_session_id sid = {.name = mx_name,
                               .port = (uint16_t)port,
                               .sni = opts->sni,
                               .policy = opts->session_policy};
  if (tls_session_key(&sid, c->session_key, TLS_SESSION_KEY_MAX) != 0) {
    free(c->session_key);
    c->session_key = NULL;
  }
  c->facts.last_reply = &c->last_reply;
  c->facts.tls_error = c->tls_error;
  c->facts.starttls = SMTP_STARTTLS_NOT_OFFERED;
  c->facts.failed_state = SMTP_CLIENT_CONNECTING;

  stream_init(&c->io, loop, write_done, c);
  uv_timer_init(loop, &c->timer);
  net_defer_init(loop, &c->soon, c);
  c->io.tcp.data = c;
  c->timer.data = c;
  c->connect_req.data = c;
  c->open_handles = 3; /* tcp, timer, soon */
  c->state = SMTP_CLIENT_CONNECTING;
  *out = c;

  int rc = 0;
  if (c->has_local) {
    rc = uv_tcp_bind(&c->io.tcp, (const struct sockaddr *)&c->local_addr, 0);
    if (rc < 0) {
      snprintf(c->deferred_reason, sizeof c->deferred_reason,
               "cannot bind to local_ip: %s", uv_strerror(rc));
    }
  }
  if (rc == 0) {
    rc = uv_tcp_connect(&c->connect_req, &c->io.tcp,
                        (const struct sockaddr *)&c->peer, on_connect);
    if (rc < 0) {
      snprintf(c->deferred_reason, sizeof c->deferred_reason,
               "connect failed: %s", uv_strerror(rc));
    }
  }
  if (rc < 0) {
    smtp_client__fail_soon(c, postern_err_from_errno(-rc));
    return 0;
  }
  smtp_client__arm(c, c->connect_to);
  return 0;
}

void smtp_client_close(struct smtp_client *c, smtp_client_close_cb cb,
                       void *arg) {
  if (!c || c->close_requested) {
    return;
  }
  c->close_requested = true;
  c->close_cb = cb;
  c->close_arg = arg;
  if (c->state == SMTP_CLIENT_READY && !c->dead) {
    smtp_client__set_state(c, SMTP_CLIENT_QUIT);
    c->cmdlen = 0;
    if (smtp_client__cmd_append(c, "QUIT\r\n") == 0) {
      smtp_client__cmd_flush(c);
      /* The QUIT reply is a courtesy (RFC 5321 §4.1.1.10); do not wait
       * long for it. */
      smtp_client__arm(c, c->command_to < 30000 ? c->command_to : 30000);
      return;
    }
  }
  close_all(c);
}

void smtp_client_forget_tls_session(struct smtp_client *c) {
  if (c && stream_tls(&c->io)) {
    tls_conn_forget_session(stream_tls(&c->io));
  }
}

int smtp_client_local_ip(const struct smtp_client *c, char *buf, size_t cap) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (c == NULL || buf == NULL)
    return POSTERN_EINVAL;
  if (uv_tcp_getsockname(&c->io.tcp, (struct sockaddr *)&ss, &len) != 0)
    return POSTERN_ESTATE;
  const void *a = ss.ss_family == AF_INET
                      ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                      : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
  if (inet_ntop(ss.ss_family, a, buf, (socklen_t)cap) == NULL)
    return POSTERN_EINVAL;
  return 0;
}

enum smtp_client_state smtp_client_state(const struct smtp_client *c) {
  return c->state;
}

const struct smtp_client_facts *smtp_client_facts(const struct smtp_client *c) {
  return c->facts_valid ? &c->facts : NULL;
}

unsigned smtp_client_messages(const struct smtp_client *c) {
  return c->messages;
}
