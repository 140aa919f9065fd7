/*
 * net/smtp_client_txn.c - the SMTP client's mail transaction: [RSET] MAIL,
 * RCPT..., DATA, the dot-stuffed body and the final "." (RFC 5321 §3.3,
 * §4.5.2), pipelined when the server offers it (RFC 2920), a chained
 * message behind the current "." (smtp_client_send_next), and one result
 * per recipient. The states RSET .. DOT of the machine in smtp_client.c.
 *
 * Invariants:
 *  - the caller's message and body are borrowed until its sent_cb; the
 *    body is written from the caller's buffer (STREAM_BORROW) with only
 *    the stuffed dots and the terminator our own, never copied;
 *  - every recipient ends with exactly one result: the server's reply
 *    (RCPT, MAIL, DATA, end of data) or one made up when the session
 *    fails;
 *  - replies come in command order (RFC 2920 §3.1), so `rcpt_reply`
 *    tells which RCPT a reply answers.
 */
#include "net/smtp_client_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/postern_err.h"
#include "base/postern_log.h"

static int start_txn(struct smtp_client *c, const struct smtp_message *msg,
                     smtp_client_sent_cb cb, void *arg, bool env_sent);
static int write_body_chunk(struct smtp_client *c);

static void set_result(struct smtp_client *c, size_t i,
                       const struct smtp_reply *r, bool remote,
                       const char *stage) {
  struct smtp_result *res = &c->results[i];
  res->outcome = smtp_client__outcome_of(r);
  res->remote = remote;
  res->reply = *r;
  res->stage = stage;
}

/* Reports the chained message as failed with r (the session is over):
 * its commands may have been written but it never reached DATA. */
void smtp_client__fail_next(struct smtp_client *c, int status,
                            const struct smtp_reply *r, bool remote) {
  const struct smtp_message *m = c->next_msg;
  smtp_client_sent_cb cb = c->next_cb;
  void *arg = c->next_arg;
  c->next_msg = NULL;
  if (c->close_requested || !cb) {
    return; /* abandoned: the caller may have freed m already */
  }
  struct smtp_result *res = calloc(m->nrcpts, sizeof *res);
  if (res) {
    for (size_t i = 0; i < m->nrcpts; i++) {
      res[i] = (struct smtp_result){.outcome = smtp_client__outcome_of(r),
                                    .remote = remote,
                                    .reply = *r,
                                    .stage = "MAIL"};
    }
  }
  struct smtp_send_result sr = {.nrcpts = res ? m->nrcpts : 0, .rcpt = res};
  cb(c, status, &sr, arg);
  free(res);
}

/* The chained message becomes the transaction in progress; its replies
 * follow in the input. A failure is reported through smtp_client__fail_soon().
 */
static void promote_next(struct smtp_client *c) {
  const struct smtp_message *m = c->next_msg;
  bool sent = c->next_env_sent;
  c->next_msg = NULL;
  /* Every reply to the previous chained commands is in: free them. */
  free(c->cur_env);
  c->cur_env = c->next_env;
  c->next_env = NULL;
  if (start_txn(c, m, c->next_cb, c->next_arg, sent) < 0) {
    c->next_msg = m; /* reported as failed with the session */
    smtp_client__fail_soon(c, POSTERN_ENOMEM);
  }
}

void smtp_client__finish_txn(struct smtp_client *c, int status) {
  struct smtp_send_result sr = {.nrcpts = c->msg->nrcpts, .rcpt = c->results};
  for (size_t i = 0; i < sr.nrcpts; i++) {
    sr.accepted += c->results[i].outcome == SMTP_OUTCOME_OK;
  }
  smtp_client_sent_cb cb = c->sent_cb;
  void *arg = c->sent_arg;
  c->msg = NULL;
  if (status == 0) {
    smtp_client__timers_stop(c);
    smtp_client__set_state(c, SMTP_CLIENT_READY);
  }
  if (postern_log_enabled(POSTERN_LOG_DEBUG)) {
    struct postern_log_rec r;
    postern_log_begin(&r, POSTERN_LOG_DEBUG, "smtp_client_sent");
    postern_log_str(&r, "peer", c->peer_str);
    postern_log_int(&r, "status", status);
    postern_log_uint(&r, "rcpts", sr.nrcpts);
    postern_log_uint(&r, "accepted", sr.accepted);
    postern_log_end(&r);
  }
  /* The chained message is current before the callback runs, so that the
   * callback may chain another behind it; sr keeps pointing at these
   * results (now prev_results) until the next transaction starts. */
  if (status == 0 && c->next_msg && !c->close_requested) {
    promote_next(c);
  }
  if (!c->close_requested && cb) {
    cb(c, status, &sr, arg);
  }
}

/* Every recipient the server has not finally answered gets `r`. */
void smtp_client__fail_pending(struct smtp_client *c,
                               const struct smtp_reply *r, bool remote,
                               const char *stage) {
  for (size_t i = 0; i < c->msg->nrcpts; i++) {
    if (c->rstate[i] != RCPT_FINAL) {
      set_result(c, i, r, remote, stage);
      c->rstate[i] = RCPT_FINAL;
    }
  }
}

/* Sends what comes after RSET: MAIL (and with PIPELINING every RCPT and
 * DATA in the same write). */
static int send_envelope(struct smtp_client *c) {
  if (!c->pipelined) {
    return smtp_client__append_mail(c, c->msg);
  }
  c->rcpt_sent = c->msg->nrcpts;
  return smtp_client__append_envelope(c, c->msg);
}

/*
 * Makes msg the transaction in progress. With env_sent its MAIL..DATA are
 * already on the wire (a chained message) and only the replies are
 * awaited; otherwise [RSET,] MAIL... go out now. Returns 0 or
 * POSTERN_ENOMEM (nothing changed).
 */
static int start_txn(struct smtp_client *c, const struct smtp_message *msg,
                     smtp_client_sent_cb cb, void *arg, bool env_sent) {
  struct smtp_result *res = calloc(msg->nrcpts, sizeof *res);
  uint8_t *rs = calloc(msg->nrcpts, 1);
  if (!res || !rs) {
    free(res);
    free(rs);
    return POSTERN_ENOMEM;
  }
  free(c->prev_results);
  c->prev_results = c->results;
  free(c->rstate);
  c->results = res;
  c->rstate = rs;
  c->msg = msg;
  c->sent_cb = cb;
  c->sent_arg = arg;
  c->rcpt_reply = 0;
  c->rcpt_sent = 0;
  c->accepted = 0;
  c->mail_ok = false;
  c->ignore_dot = false;
  c->body_off = 0;
  c->body_line_start = true;
  c->body_queued = false;
  c->pipelined = c->facts.caps & SMTP_CAP_PIPELINING;
  c->cmdlen = 0;
  if (env_sent) {
    c->rcpt_sent = msg->nrcpts;
    c->need_rset = true;
    smtp_client__set_state(c, SMTP_CLIENT_MAIL);
    smtp_client__arm(c, c->command_to);
    return 0;
  }
  /* Commands of an earlier chained message: all answered, or never
   * written (a chain that fell through). */
  free(c->cur_env);
  c->cur_env = NULL;
  /* Messages this server cannot take fail here, without a command: RFC
   * 8689 §4.2.1 (REQUIRETLS not offered), RFC 6531 §3.2 (SMTPUTF8 not
   * offered) and RFC 1870 §6 (over the SIZE the server declared). The
   * results are reported from the timer. */
  struct smtp_reply local;
  if (smtp_client__refused_locally(c, msg, &local)) {
    for (size_t i = 0; i < msg->nrcpts; i++) {
      set_result(c, i, &local, false, "MAIL");
      c->rstate[i] = RCPT_FINAL;
    }
    smtp_client__set_state(c, SMTP_CLIENT_MAIL);
    smtp_client__finish_soon(c);
    return 0;
  }
  int rc = 0;
  if (c->need_rset) {
    /* RFC 2920 §3.1: RSET may be pipelined with what follows. */
    rc = smtp_client__cmd_append(c, "RSET\r\n");
    if (rc == 0 && c->pipelined) {
      rc = send_envelope(c);
    }
    smtp_client__set_state(c, SMTP_CLIENT_RSET);
  } else {
    rc = send_envelope(c);
    smtp_client__set_state(c, SMTP_CLIENT_MAIL);
  }
  c->need_rset = true;
  if (rc < 0) {
    c->cmdlen = 0;
    smtp_client__fail_soon(c, rc);
    return 0;
  }
  smtp_client__cmd_flush(c);
  smtp_client__arm(c, c->command_to);
  return 0;
}

/* What both send calls check first: the message, and a session that has
 * neither been closed by the caller nor died. */
static int send_check(const struct smtp_client *c,
                      const struct smtp_message *msg) {
  int rc = c ? smtp_client__msg_valid(msg) : POSTERN_EINVAL;
  if (rc != 0) {
    return rc;
  }
  if (c->close_requested) {
    return POSTERN_ESTATE;
  }
  return c->dead ? POSTERN_ECLOSED : 0;
}

int smtp_client_send(struct smtp_client *c, const struct smtp_message *msg,
                     smtp_client_sent_cb cb, void *arg) {
  int rc = send_check(c, msg);
  if (rc != 0) {
    return rc;
  }
  if (c->state != SMTP_CLIENT_READY) {
    return POSTERN_ESTATE;
  }
  return start_txn(c, msg, cb, arg, false);
}

/* Writes the chained message's commands (kept in next_env until it is
 * current). A failure is reported through smtp_client__fail_soon(). */
static void write_next_env(struct smtp_client *c) {
  uv_buf_t b = uv_buf_init(c->next_env, (unsigned)c->next_env_len);
  c->next_env_sent = true;
  int rc = stream_write(&c->io, &b, 1, STREAM_BORROW, WRITE_CMD);
  if (rc < 0) {
    smtp_client__fail_soon(c, rc);
  }
}

int smtp_client_send_next(struct smtp_client *c, const struct smtp_message *msg,
                          smtp_client_sent_cb cb, void *arg) {
  int rc = send_check(c, msg);
  if (rc != 0) {
    return rc;
  }
  /* Only behind a transaction that is on the wire, on a pipelining
   * server, and only a message the server can take as it is (the local
   * refusals of smtp_client_send need no chaining). */
  struct smtp_reply why;
  if (!smtp_client__in_txn(c->state) || c->next_msg || c->local_finish ||
      !c->msg || !(c->facts.caps & SMTP_CAP_PIPELINING) ||
      smtp_client__refused_locally(c, msg, &why)) {
    return POSTERN_ESTATE;
  }
  c->cmdlen = 0;
  if ((rc = smtp_client__append_envelope(c, msg)) < 0) {
    c->cmdlen = 0;
    return rc;
  }
  char *env = malloc(c->cmdlen);
  if (!env) {
    c->cmdlen = 0;
    return POSTERN_ENOMEM;
  }
  memcpy(env, c->cmd, c->cmdlen);
  free(c->next_env);
  c->next_env = env;
  c->next_env_len = c->cmdlen;
  c->cmdlen = 0;
  c->next_env_sent = false;
  c->next_msg = msg;
  c->next_cb = cb;
  c->next_arg = arg;
  /* After our "." anything may follow at once; before it, write_body adds
   * the commands to the write that ends the body. */
  if (c->state == SMTP_CLIENT_DOT && c->body_queued && !c->ignore_dot) {
    write_next_env(c);
  }
  return 0;
}

/* Writes the body from body_off, chunk by chunk while the kernel takes
 * each at once; a chunk that has to wait continues from its completion
 * (write_done in smtp_client.c). */
void smtp_client__write_body(struct smtp_client *c) {
  while (write_body_chunk(c) == 1 && c->state == SMTP_CLIENT_BODY) {
    smtp_client__arm(c, c->data_to);
  }
}

/* Pulls the next piece of the body: the stored body is CRLF lines without
 * dot-stuffing; RFC 5321 §4.5.2 wants a '.' added before every line that
 * starts with one. The buffers point into the caller's body; only the
 * added dots and the terminator are ours (static). One chunk; returns
 * stream_write's answer (a failure is reported through
 * smtp_client__fail_soon). */
static int write_body_chunk(struct smtp_client *c) {
  static char dot[] = ".";
  static char end_crlf[] = "\r\n.\r\n";
  static char end[] = ".\r\n";
  const struct smtp_message *m = c->msg;
  uv_buf_t bufs[BODY_BUFS];
  unsigned nb = 0;
  size_t off = c->body_off, seg = off, bytes = 0;
  /* Room is kept for a dot-stuffed line (2 buffers), the last segment,
   * the end of data and a chained envelope. */
  while (off < m->body_len && nb < BODY_BUFS - 4 && bytes < BODY_CHUNK) {
    if (c->body_line_start && m->body[off] == '.') {
      if (off > seg) {
        bufs[nb++] = uv_buf_init((char *)m->body + seg, (unsigned)(off - seg));
      }
      bufs[nb++] = uv_buf_init(dot, 1);
      seg = off;
    }
    const char *nl = memchr(m->body + off, '\n', m->body_len - off);
    size_t next = nl ? (size_t)(nl - m->body) + 1 : m->body_len;
    if (next - off > BODY_CHUNK) {
      /* A huge line: cut it so one write stays bounded. */
      next = off + BODY_CHUNK;
      nl = NULL;
    }
    bytes += next - off;
    off = next;
    c->body_line_start = nl != NULL;
  }
  if (off > seg) {
    bufs[nb++] = uv_buf_init((char *)m->body + seg, (unsigned)(off - seg));
  }
  c->body_off = off;
  if (off == m->body_len) {
    bool crlf = m->body_len == 0 || m->body[m->body_len - 1] == '\n';
    bufs[nb++] = crlf ? uv_buf_init(end, 3) : uv_buf_init(end_crlf, 5);
    c->body_queued = true;
    /* The final reply may now arrive at any time. */
    smtp_client__set_state(c, SMTP_CLIENT_DOT);
    if (c->next_msg && !c->next_env_sent) {
      /* RFC 2920 §3.1: the chained message's commands share this write. */
      bufs[nb++] = uv_buf_init(c->next_env, (unsigned)c->next_env_len);
      c->next_env_sent = true;
    }
  }
  int rc = stream_write(&c->io, bufs, nb, STREAM_BORROW, WRITE_BODY);
  if (rc < 0) {
    smtp_client__fail_soon(c, rc);
  }
  return rc;
}

void smtp_client__txn_reply(struct smtp_client *c, const struct smtp_reply *r) {
  int cls = smtp_reply_class(r);
  const char *stage = smtp_client__stage_of(c->state);
  if (r->code == 421) {
    /* RFC 5321 §3.8: the server is closing; whatever is not final gets
     * its 421, and the session is over. */
    smtp_client__session_failed(c, POSTERN_ECLOSED, NULL, NULL, r);
    return;
  }
  switch (c->state) {
  case SMTP_CLIENT_RSET:
    if (cls != 2) {
      smtp_client__session_failed(c, POSTERN_EPROTO, NULL, NULL, r);
      return;
    }
    smtp_client__set_state(c, SMTP_CLIENT_MAIL);
    if (!c->pipelined) {
      if (send_envelope(c) < 0) {
        smtp_client__fail_soon(c, POSTERN_ENOMEM);
        return;
      }
      smtp_client__cmd_flush(c);
    }
    smtp_client__arm(c, c->command_to);
    return;
  case SMTP_CLIENT_MAIL:
    if (cls == 2) {
      c->mail_ok = true;
    } else {
      /* Every recipient shares the MAIL reply. */
      for (size_t i = 0; i < c->msg->nrcpts; i++) {
        set_result(c, i, r, true, "MAIL");
        c->rstate[i] = RCPT_FINAL;
      }
      if (!c->pipelined) {
        smtp_client__finish_txn(c, 0);
        return;
      }
    }
    smtp_client__set_state(c, SMTP_CLIENT_RCPT);
    if (!c->pipelined) {
      if (smtp_client__append_rcpt(c, c->msg, c->rcpt_sent++) < 0) {
        smtp_client__fail_soon(c, POSTERN_ENOMEM);
        return;
      }
      smtp_client__cmd_flush(c);
    }
    smtp_client__arm(c, c->command_to);
    return;
  case SMTP_CLIENT_RCPT: {
    size_t i = c->rcpt_reply++;
    if (c->mail_ok) {
      set_result(c, i, r, true, "RCPT");
      if (cls == 2) {
        c->rstate[i] = RCPT_ACCEPTED;
        c->accepted++;
      } else {
        c->rstate[i] = RCPT_FINAL;
      }
    }
    if (c->rcpt_reply < c->msg->nrcpts) {
      smtp_client__set_state(c, SMTP_CLIENT_RCPT);
      if (!c->pipelined) {
        if (smtp_client__append_rcpt(c, c->msg, c->rcpt_sent++) < 0) {
          smtp_client__fail_soon(c, POSTERN_ENOMEM);
          return;
        }
        smtp_client__cmd_flush(c);
      }
      smtp_client__arm(c, c->command_to);
      return;
    }
    if (!c->pipelined && c->accepted == 0) {
      smtp_client__finish_txn(c, 0);
      return;
    }
    smtp_client__set_state(c, SMTP_CLIENT_DATA);
    if (!c->pipelined) {
      smtp_client__send_cmd(c, "DATA\r\n%s", "", c->command_to);
    } else {
      smtp_client__arm(c, c->command_to);
    }
    return;
  }
  case SMTP_CLIENT_DATA:
    if (r->code == 354) {
      if (c->accepted == 0) {
        /* RFC 2920 §3.1: a server should refuse DATA when no RCPT was
         * accepted; if it does not, end the empty message at once. */
        c->ignore_dot = true;
        smtp_client__set_state(c, SMTP_CLIENT_DOT);
        smtp_client__send_cmd(c, ".\r\n%s", "", c->data_to);
        return;
      }
      smtp_client__set_state(c, SMTP_CLIENT_BODY);
      smtp_client__arm(c, c->data_to);
      smtp_client__write_body(c);
      return;
    }
    if (c->accepted > 0 || c->mail_ok) {
      smtp_client__fail_pending(c, r, true, stage);
    }
    smtp_client__finish_txn(c, 0);
    return;
  case SMTP_CLIENT_BODY:
  case SMTP_CLIENT_DOT:
    if (c->state == SMTP_CLIENT_BODY || r->code == 354 || cls == 3) {
      /* A reply before our "." was sent (or a nonsense one): the server
       * gave up on the message; the session cannot be trusted. */
      smtp_client__fail_pending(c, r, true, stage);
      smtp_client__session_failed(c, POSTERN_EPROTO, NULL, NULL, r);
      return;
    }
    if (!c->ignore_dot) {
      smtp_client__fail_pending(c, r, true, stage);
      if (cls == 2) {
        c->messages++;
      }
    }
    /* RFC 5321 §4.1.1.4: the reply to the final "." ends the transaction
     * whatever its code, so the next MAIL needs no RSET. */
    c->need_rset = false;
    smtp_client__finish_txn(c, 0);
    return;
  default:
    return;
  }
}
