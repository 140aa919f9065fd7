/*
 * smtp_server_session.c - the session protocol: the ESMTP state machine of
 * one server session (RFC 5321, RFC 2920 PIPELINING, RFC 3030 CHUNKING,
 * RFC 3207 STARTTLS, RFC 1870 SIZE, RFC 3461 DSN, RFC 6531 SMTPUTF8,
 * RFC 8689 REQUIRETLS).
 *
 * Invariants:
 *  - input is processed in order, one command at a time (PIPELINING, RFC
 *    2920): every complete line in the input buffer is answered before the
 *    replies are flushed together. While a message is being queued, further
 *    input waits in the buffer;
 *  - every state change goes through smtp_server__set_state(), which
 *    checks it against smtp_server__transition_ok() (smtp_server_state.c,
 *    where the legal transitions are listed) and traces it at debug;
 *  - the transaction being built lives in the session (arena, rcpt, body)
 *    and is handed to the engine whole; the session keeps it unchanged
 *    until smtp_server__txn_finished();
 *  - a client that disconnects while QUEUEING goes to CLOSING/CLOSED; the
 *    session is freed when txn_done arrives (smtp_server__txn_finished).
 * The connection under it (replies, reading, closing) is
 * smtp_server_conn.c's.
 */
#include "net/rfc5322.h"
#include "net/smtp_server_session.h"
#include "net/tls.h"

#include "base/postern_err.h"
#include "base/postern_utf8.h"
#include "base/postern_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- state ------------------------------------------------------------ */

void smtp_server__set_state(struct session *s, enum smtp_server__state to) {
  enum smtp_server__state from = s->st;
  if (from == to)
    return; /* RCPT after RCPT, EHLO again in READY: nothing changes */
  bool ok = smtp_server__transition_ok(from, to);
  enum postern_log_level lvl = ok ? POSTERN_LOG_DEBUG : POSTERN_LOG_ERROR;
  if (postern_log_enabled(lvl)) {
    struct postern_log_rec r;
    postern_log_begin(&r, lvl, ok ? "smtpd_state" : "smtpd_bad_transition");
    postern_log_uint(&r, "sess", s->id);
    postern_log_str(&r, "from", smtp_server__state_name(from));
    postern_log_str(&r, "to", smtp_server__state_name(to));
    postern_log_end(&r);
  }
  s->st = to;
}

void smtp_server__txn_reset(struct session *s) {
  s->arena_len = 0;
  s->nrcpt = 0;
  s->envid_off = SIZE_MAX;
  s->body_type = SMTP_SERVER_BODY_NONE;
  s->ret = SMTP_SERVER_RET_NONE;
  s->smtputf8 = false;
  s->requiretls = false;
  s->size_hint = 0;
  s->qid[0] = '\0';
  free(s->body);
  s->body = NULL;
  s->body_len = s->body_cap = s->hdr_len = 0;
  s->data_midline = s->data_bad = s->data_too_long = s->data_oversize = false;
  s->bdat_left = s->bdat_size = 0;
  s->bdat_line = s->bdat_progress = 0;
  s->bdat_last = s->bdat_cr = false;
  free(s->env_rcpt);
  s->env_rcpt = NULL;
}

/* ---- commands --------------------------------------------------------- */

static size_t arena_put(struct session *s, const char *p, size_t n) {
  if (!smtp_server__grow(&s->arena, &s->arena_cap, s->arena_len + n + 1))
    return SIZE_MAX;
  size_t off = s->arena_len;
  memcpy(s->arena + off, p, n);
  s->arena[off + n] = '\0';
  s->arena_len += n + 1;
  return off;
}

static void send_ehlo(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  smtp_server__replyf(s, "250-%s Hello %s [%s]", srv->hostname, s->helo, s->ip);
  smtp_server__reply(s, "250-PIPELINING");
  smtp_server__replyf(s, "250-SIZE %llu", (unsigned long long)srv->max_size);
  smtp_server__reply(s, "250-8BITMIME");
  smtp_server__reply(s, "250-ENHANCEDSTATUSCODES");
  smtp_server__reply(s, "250-SMTPUTF8");
  smtp_server__reply(s, "250-CHUNKING");
  if (srv->tls != NULL && stream_tls(&s->io) == NULL)
    smtp_server__reply(s, "250-STARTTLS");
  /* RFC 8689 §2: REQUIRETLS is used only on a session that employs TLS,
   * so it is offered only once TLS is up (§4.2.1 looks for it in the EHLO
   * reply after the handshake). */
  if (stream_tls(&s->io) != NULL)
    smtp_server__reply(s, "250-REQUIRETLS");
  const char *auth = smtp_server__auth_ehlo(s);
  if (auth != NULL)
    smtp_server__reply(s, auth);
  smtp_server__reply(s, "250 DSN");
}

static bool helo_done(struct session *s) {
  return s->st != SMTP_SERVER__S_CONNECTED;
}

/* RFC 5321 §4.4 trace field, written as the first bytes of the body so
 * that the client's content is appended right behind it (one buffer, no
 * copy later). "for" names the recipient only when there is exactly one,
 * so that a message to many does not disclose the others (§7.2), and only
 * when it is ASCII: the clause is optional, and a UTF-8 address in it
 * would make the whole message need SMTPUTF8 downstream (RFC 6531 §3.7.3)
 * where only its domain does, which an A-label can carry. */
static bool start_body(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  char date[RFC5322_DATE_MAX];
  rfc5322_date_format(time(NULL), date, sizeof date);
  bool tls = stream_tls(&s->io) != NULL;
  /* RFC 3848 §1 (RFC 6531 §3.7.4 for UTF8): "A" for an authenticated
   * client; only ever with "S", AUTH needs TLS here. */
  bool sa = tls && s->auth_user[0] != '\0';
  const char *proto = s->smtputf8 ? (sa    ? "UTF8SMTPSA"
                                     : tls ? "UTF8SMTPS"
                                           : "UTF8SMTP")
                      : s->esmtp  ? (sa    ? "ESMTPSA"
                                     : tls ? "ESMTPS"
                                           : "ESMTP")
                                  : "SMTP";
  bool v6 = strchr(s->ip, ':') != NULL;
  char fr[SMTP_SERVER__PATH_MAX + 16] = "";
  const char *for_addr = s->nrcpt == 1 ? s->arena + s->rcpt[0].addr_off : NULL;
  if (postern_has_8bit_str(for_addr))
    for_addr = NULL;
  if (for_addr != NULL)
    snprintf(fr, sizeof fr, "\r\n\tfor <%s>", for_addr);
  char hdr[1400];
  int n = snprintf(hdr, sizeof hdr,
                   "Received: from %s ([%s%s])\r\n\tby %s (Postern) with %s "
                   "id %s%s;\r\n\t%s\r\n",
                   s->helo, v6 ? "IPv6:" : "", s->ip, srv->hostname, proto,
                   s->qid, fr, date);
  if (n < 0 || (size_t)n >= sizeof hdr)
    return false;
  uint64_t pre = s->size_hint ? s->size_hint + s->size_hint / 8 : 16384;
  if (pre > srv->max_size)
    pre = srv->max_size;
  if (pre > (4u << 20))
    pre = 4u << 20; /* a SIZE= hint is a claim, not a reservation */
  s->body_cap = (size_t)n + (size_t)pre + 2;
  s->body = malloc(s->body_cap);
  if (s->body == NULL)
    return false;
  memcpy(s->body, hdr, (size_t)n);
  s->body_len = s->hdr_len = (size_t)n;
  return true;
}

static void cmd_mail(struct session *s, const struct smtp_server__cmd *c) {
  struct smtp_server *srv = s->lc->srv;
  if (s->st == SMTP_SERVER__S_CONNECTED) {
    smtp_server__reply(s, "503 5.5.1 Error: send HELO/EHLO first");
    return;
  }
  if (s->st != SMTP_SERVER__S_READY) {
    smtp_server__reply(s, "503 5.5.1 Error: nested MAIL command");
    return;
  }
  const char *refusal = smtp_server__auth_mail_refusal(s);
  if (refusal != NULL) {
    smtp_server__reply(s, refusal);
    return;
  }
  if (c->requiretls && stream_tls(&s->io) == NULL) {
    /* RFC 8689 §2: the option MUST only be given on a session that
     * employs TLS, and the extension is not offered without it. RFC 8689
     * defines no reply for this; RFC 3207 §4's 530 is what a server says
     * to a command that needs TLS first, with X.7.0 (RFC 3463 §3.8). */
    smtp_server__reply(
        s, "530 5.7.0 REQUIRETLS needs a TLS session, issue STARTTLS first");
    return;
  }
  if (c->has_size && c->size > srv->max_size) {
    smtp_server__reply(s, "552 5.3.4 Message size exceeds fixed limit");
    return;
  }
  if (c->addr_utf8 && !c->smtputf8) {
    smtp_server__reply(s, "553 5.6.7 Non-ASCII sender address needs SMTPUTF8");
    return;
  }
  smtp_server__txn_reset(s);
  s->from_off = arena_put(s, c->addr.p, c->addr.n);
  if (c->envid.p)
    s->envid_off = arena_put(s, c->envid.p, c->envid.n);
  if (s->from_off == SIZE_MAX || (c->envid.p && s->envid_off == SIZE_MAX)) {
    smtp_server__reply(s, "451 4.3.0 Error: out of memory");
    smtp_server__txn_reset(s);
    return;
  }
  int r = srv->h.assign_id(srv->ud, s->qid);
  s->qid[SMTP_SERVER_ID_MAX] = '\0';
  if (r < 0 || s->qid[0] == '\0') {
    smtp_server__reply(
        s, "451 4.3.0 Error: cannot assign a queue id, try again later");
    smtp_server__txn_reset(s);
    return;
  }
  s->body_type = c->body;
  s->ret = c->ret;
  s->smtputf8 = c->smtputf8;
  s->requiretls = c->requiretls;
  s->size_hint = c->has_size ? c->size : 0;
  smtp_server__set_state(s, SMTP_SERVER__S_MAIL);
  smtp_server__reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct session *s, const struct smtp_server__cmd *c) {
  struct smtp_server *srv = s->lc->srv;
  if (s->st == SMTP_SERVER__S_CHUNKING) {
    smtp_server__reply(s, "503 5.5.1 Error: no RCPT after BDAT (RFC 3030)");
    return;
  }
  if (s->st != SMTP_SERVER__S_MAIL && s->st != SMTP_SERVER__S_RCPT) {
    smtp_server__reply(s, "503 5.5.1 Error: need MAIL command");
    return;
  }
  if (s->nrcpt >= srv->max_rcpt) {
    /* RFC 5321 §4.5.3.1.10: 452 makes the client send the rest later. */
    smtp_server__reply(s, "452 4.5.3 Error: too many recipients");
    return;
  }
  if (c->postmaster) {
    smtp_server__reply(
        s, "550 5.1.1 <postmaster>: no local mailboxes, this is an outbound "
           "relay");
    return;
  }
  if (c->addr_utf8 && !s->smtputf8) {
    smtp_server__reply(s,
                       "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8");
    return;
  }
  if (s->nrcpt == s->rcpt_cap) {
    size_t n = s->rcpt_cap ? s->rcpt_cap * 2 : 8;
    struct rcpt_rec *p = realloc(s->rcpt, n * sizeof *p);
    if (p == NULL) {
      smtp_server__reply(s, "452 4.3.0 Error: out of memory");
      return;
    }
    s->rcpt = p;
    s->rcpt_cap = n;
  }
  struct rcpt_rec *r = &s->rcpt[s->nrcpt];
  r->addr_off = arena_put(s, c->addr.p, c->addr.n);
  r->orcpt_off = c->orcpt.p ? arena_put(s, c->orcpt.p, c->orcpt.n) : SIZE_MAX;
  r->notify = c->notify;
  if (r->addr_off == SIZE_MAX || (c->orcpt.p && r->orcpt_off == SIZE_MAX)) {
    smtp_server__reply(s, "452 4.3.0 Error: out of memory");
    return;
  }
  s->nrcpt++;
  smtp_server__set_state(s, SMTP_SERVER__S_RCPT);
  smtp_server__reply(s, "250 2.1.5 Ok");
}

static void cmd_data(struct session *s) {
  if (s->st == SMTP_SERVER__S_MAIL) {
    smtp_server__reply(s, "554 5.5.1 Error: no valid recipients");
    return;
  }
  if (s->st != SMTP_SERVER__S_RCPT) {
    smtp_server__reply(s, "503 5.5.1 Error: need RCPT command");
    return;
  }
  if (!start_body(s)) {
    smtp_server__reply(s, "451 4.3.0 Error: out of memory");
    return;
  }
  smtp_server__set_state(s, SMTP_SERVER__S_DATA);
  smtp_server__reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void chunk_done(struct session *s);

/* RFC 3030: BDAT's chunk follows the command line at once, so even a
 * refused BDAT must have its chunk read and dropped (skip_left) or those
 * bytes would be taken for commands. */
static void cmd_bdat(struct session *s, const struct smtp_server__cmd *c) {
  struct smtp_server *srv = s->lc->srv;
  if (s->st != SMTP_SERVER__S_RCPT && s->st != SMTP_SERVER__S_CHUNKING) {
    s->skip_left = c->size;
    smtp_server__reply(s, s->st == SMTP_SERVER__S_MAIL
                              ? "554 5.5.1 Error: no valid recipients"
                              : "503 5.5.1 Error: need RCPT command");
    return;
  }
  if (s->st == SMTP_SERVER__S_RCPT && !start_body(s)) {
    s->skip_left = c->size;
    smtp_server__reply(s, "451 4.3.0 Error: out of memory");
    return;
  }
  uint64_t content = s->body_len - s->hdr_len;
  if (c->size > srv->max_size || content + c->size > srv->max_size) {
    /* RFC 3030 §2: a failed chunk fails the transaction. */
    s->skip_left = c->size;
    smtp_server__reply(
        s, "552 5.3.4 Error: message exceeds fixed maximum message size");
    smtp_server__txn_reset(s);
    smtp_server__set_state(s, SMTP_SERVER__S_READY);
    return;
  }
  s->bdat_left = s->bdat_size = c->size;
  s->bdat_last = c->last;
  smtp_server__set_state(s, SMTP_SERVER__S_BDAT);
  if (c->size == 0)
    chunk_done(s);
}

static void cmd_starttls(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  if (srv->tls == NULL) {
    smtp_server__reply(s, "502 5.5.1 Error: command not implemented");
    return;
  }
  if (stream_tls(&s->io) != NULL) {
    smtp_server__reply(s, "503 5.5.1 Error: TLS already active");
    return;
  }
  if (s->st != SMTP_SERVER__S_READY || !s->esmtp) {
    smtp_server__reply(
        s, "503 5.5.1 Error: send EHLO first, and no STARTTLS inside a "
           "transaction");
    return;
  }
  int r = tls_conn_new(&s->tls_pending, srv->tls, (uv_stream_t *)&s->io.tcp,
                       NULL, NULL);
  if (r == 0 && s->tls_rbuf == NULL) {
    s->tls_rbuf = malloc(TLS_RBUF);
    if (s->tls_rbuf == NULL)
      r = POSTERN_ENOMEM;
  }
  if (r < 0) {
    tls_conn_free(s->tls_pending);
    s->tls_pending = NULL;
    smtp_server__reply(s,
                       "454 4.7.0 TLS not available due to temporary reason");
    return;
  }
  smtp_server__reply(s, "220 2.0.0 Ready to start TLS");
  /* RFC 3207 §6: whatever the client pipelined after STARTTLS was sent in
   * plaintext and must not be acted upon once TLS is up (the "STARTTLS
   * command injection" attack): drop it. */
  s->in_off = s->in_len;
  smtp_server__set_state(s, SMTP_SERVER__S_TLS_HANDSHAKE);
}

static void handle_cmd(struct session *s, const struct smtp_server__cmd *c) {
  struct smtp_server *srv = s->lc->srv;
  switch (c->verb) {
  case SMTP_SERVER__V_EHLO:
  case SMTP_SERVER__V_HELO:
    smtp_server__txn_reset(s);
    if (helo_done(s))
      s->njunk++;
    memcpy(s->helo, c->arg.p, c->arg.n);
    s->helo[c->arg.n] = '\0';
    s->esmtp = c->verb == SMTP_SERVER__V_EHLO;
    smtp_server__set_state(s, SMTP_SERVER__S_READY);
    if (s->esmtp)
      send_ehlo(s);
    else
      smtp_server__replyf(s, "250 %s", srv->hostname);
    break;
  case SMTP_SERVER__V_MAIL:
    cmd_mail(s, c);
    break;
  case SMTP_SERVER__V_RCPT:
    cmd_rcpt(s, c);
    break;
  case SMTP_SERVER__V_DATA:
    cmd_data(s);
    break;
  case SMTP_SERVER__V_RSET:
    s->njunk++;
    smtp_server__txn_reset(s);
    if (helo_done(s))
      smtp_server__set_state(s, SMTP_SERVER__S_READY);
    smtp_server__reply(s, "250 2.0.0 Ok");
    break;
  case SMTP_SERVER__V_NOOP:
    s->njunk++;
    smtp_server__reply(s, "250 2.0.0 Ok");
    break;
  case SMTP_SERVER__V_QUIT:
    smtp_server__replyf(s, "221 2.0.0 %s closing connection", srv->hostname);
    /* Nothing after QUIT in the buffer: see maybe_finish_close. */
    s->quit = s->in_off + c->consumed == s->in_len;
    smtp_server__session_close(s);
    break;
  case SMTP_SERVER__V_VRFY:
    /* RFC 5321 §3.5.3: a server that cannot verify an address but will
     * accept mail for it answers 252, not 502 (which would say VRFY is not
     * implemented at all, and §3.5.2 asks servers to implement it). A relay
     * can never verify remote mailboxes, yet it accepts and attempts
     * delivery, which is exactly what 252 says. */
    s->njunk++;
    smtp_server__reply(
        s, "252 2.0.0 Cannot VRFY user, but will accept message and attempt "
           "delivery");
    break;
  case SMTP_SERVER__V_EXPN:
    s->njunk++;
    smtp_server__reply(
        s, "502 5.5.1 Error: EXPN not supported, this relay has no lists");
    break;
  case SMTP_SERVER__V_HELP:
    s->njunk++;
    smtp_server__reply(
        s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT "
           "VRFY "
           "STARTTLS (RFC 5321)");
    break;
  case SMTP_SERVER__V_STARTTLS:
    cmd_starttls(s);
    break;
  case SMTP_SERVER__V_BDAT:
    cmd_bdat(s, c);
    break;
  case SMTP_SERVER__V_AUTH:
    smtp_server__cmd_auth(s, c);
    break;
  case SMTP_SERVER__V_NONE:
    smtp_server__reply(s, "500 5.5.1 Command unrecognized");
    break;
  }
}

/* ---- DATA ------------------------------------------------------------- */

static void finish_data(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  if (s->data_oversize || s->data_too_long || s->data_bad) {
    if (s->data_oversize)
      smtp_server__reply(
          s, "552 5.3.4 Error: message exceeds fixed maximum message size");
    else if (s->data_too_long)
      smtp_server__reply(
          s, "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6: 1000 octets)");
    else
      smtp_server__reply(
          s, "554 5.6.0 Message contains NUL, bare CR or bare LF (RFC 5321 "
             "2.3.8)");
    smtp_server__log(s, POSTERN_LOG_INFO, "smtpd_reject_message",
                     s->data_oversize   ? "size"
                     : s->data_too_long ? "line_length"
                                        : "content");
    smtp_server__txn_reset(s);
    smtp_server__set_state(s, SMTP_SERVER__S_READY);
    return;
  }
  s->env_rcpt = calloc(s->nrcpt, sizeof *s->env_rcpt);
  if (s->env_rcpt == NULL) {
    smtp_server__reply(s, "451 4.3.0 Error: out of memory");
    smtp_server__txn_reset(s);
    smtp_server__set_state(s, SMTP_SERVER__S_READY);
    return;
  }
  for (size_t i = 0; i < s->nrcpt; i++) {
    s->env_rcpt[i].addr = s->arena + s->rcpt[i].addr_off;
    s->env_rcpt[i].notify = s->rcpt[i].notify;
    s->env_rcpt[i].orcpt = s->rcpt[i].orcpt_off == SIZE_MAX
                               ? NULL
                               : s->arena + s->rcpt[i].orcpt_off;
  }
  struct smtp_server_envelope *e = &s->env;
  memset(e, 0, sizeof *e);
  e->mail_from = s->arena + s->from_off;
  e->rcpt = s->env_rcpt;
  e->nrcpt = s->nrcpt;
  e->body_type = s->body_type;
  e->smtputf8 = s->smtputf8;
  e->ret = s->ret;
  e->envid = s->envid_off == SIZE_MAX ? NULL : s->arena + s->envid_off;
  e->helo = s->helo;
  e->client_ip = s->ip;
  e->client_addr = (const struct sockaddr *)&s->peer;
  e->tls = stream_tls(&s->io) != NULL;
  e->requiretls = s->requiretls && e->tls;
  e->auth_user = s->auth_user[0] ? s->auth_user : NULL;
  e->id = s->qid;
  e->loop_index = s->lc->index;
  s->txn.s = s;
  s->txn.next = NULL;
  s->txn_pending = true;
  smtp_server__set_state(s, SMTP_SERVER__S_QUEUEING);
  uv_timer_stop(&s->timer); /* the engine, not the client, is slow now */
  srv->h.message(srv->ud, &s->txn, e, s->body, s->body_len);
}

/* Consumes one DATA line from the input. Returns false when more input is
 * needed. */
static bool data_step(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  const char *b = s->in + s->in_off;
  size_t n = s->in_len - s->in_off;
  struct smtp_server__data_line l;
  bool partial_ok = n > SMTP_SERVER__TEXT_LINE_MAX;
  if (smtp_server__data_scan(b, n, s->data_midline, partial_ok, &l) !=
      SMTP_SERVER__OK)
    return false;
  s->in_off += l.consumed;
  bool was_mid = s->data_midline;
  s->data_midline = l.partial;
  if (l.end) {
    finish_data(s);
    return true;
  }
  s->data_bad |= l.bad;
  s->data_too_long |= l.too_long;
  if (!was_mid && !l.partial)
    smtp_server__arm_timer(s); /* a complete line is progress */
  if (s->data_bad || s->data_too_long || s->data_oversize)
    return true; /* rejected at the end; keep reading to the dot */
  size_t content = s->body_len - s->hdr_len;
  if (content + l.n + 2 > srv->max_size) {
    s->data_oversize = true;
    free(s->body); /* nothing of it will be used */
    s->body = NULL;
    s->body_cap = s->body_len = s->hdr_len = 0;
    return true;
  }
  if (!smtp_server__grow(&s->body, &s->body_cap, s->body_len + l.n + 2)) {
    s->data_oversize = true;
    return true;
  }
  memcpy(s->body + s->body_len, l.p, l.n);
  memcpy(s->body + s->body_len + l.n, "\r\n", 2);
  s->body_len += l.n + 2;
  return true;
}

/* ---- BDAT ------------------------------------------------------------- */

/* A chunk is complete: 250 for an intermediate one; for the LAST one the
 * same checks and hand-over as after DATA's final dot. */
static void chunk_done(struct session *s) {
  if (!s->bdat_last) {
    smtp_server__replyf(s, "250 2.0.0 %llu octets received",
                        (unsigned long long)s->bdat_size);
    smtp_server__set_state(s, SMTP_SERVER__S_CHUNKING);
    return;
  }
  /* Content must be CRLF lines (we offer no BINARYMIME); a final line
   * without CRLF is completed rather than refused, a trailing lone CR is
   * a bare CR. */
  if (s->bdat_cr)
    s->data_bad = true;
  else if (s->bdat_line > 0 && !s->data_bad && !s->data_too_long) {
    if (!smtp_server__grow(&s->body, &s->body_cap, s->body_len + 2)) {
      s->data_oversize = true;
    } else {
      memcpy(s->body + s->body_len, "\r\n", 2);
      s->body_len += 2;
    }
  }
  finish_data(s);
}

/* Takes chunk bytes from the input into the body, checking line rules
 * across chunk boundaries (RFC 5321 §2.3.8 and §4.5.3.1.6, as for DATA:
 * BDAT content is not dot-stuffed, so it is copied as it is). */
static void bdat_step(struct session *s) {
  size_t n = s->in_len - s->in_off;
  if ((uint64_t)n > s->bdat_left)
    n = (size_t)s->bdat_left;
  const unsigned char *p = (const unsigned char *)s->in + s->in_off;
  bool bad = false, too_long = false, cr = s->bdat_cr;
  size_t line = s->bdat_line;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = p[i];
    if (cr) {
      cr = false;
      if (ch == '\n') {
        line = 0;
        continue;
      }
      bad = true; /* bare CR */
    }
    if (ch == '\r') {
      cr = true;
    } else if (ch == '\n' || ch == '\0') {
      bad = true;
    } else if (++line > SMTP_SERVER__TEXT_LINE_MAX - 2) {
      too_long = true;
    }
  }
  s->bdat_cr = cr;
  s->bdat_line = line;
  s->data_bad |= bad;
  s->data_too_long |= too_long;
  if (!s->data_bad && !s->data_too_long) {
    if (!smtp_server__grow(&s->body, &s->body_cap, s->body_len + n)) {
      s->data_oversize = true;
    } else {
      memcpy(s->body + s->body_len, p, n);
      s->body_len += n;
    }
  }
  s->in_off += n;
  s->bdat_left -= n;
  s->bdat_progress += n;
  if (s->bdat_progress >= SMTP_SERVER__TEXT_LINE_MAX) {
    s->bdat_progress = 0;
    smtp_server__arm_timer(s); /* a kilobyte is progress */
  }
  if (s->bdat_left == 0)
    chunk_done(s);
}

/* ---- the input pump --------------------------------------------------- */

static bool limits_hit(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  const char *why = NULL;
  if (s->nerr >= srv->max_errors)
    why = "errors";
  else if (s->ncmd_idle > srv->max_commands)
    why = "commands";
  else if (s->njunk > srv->max_junk)
    why = "junk_commands";
  if (why == NULL)
    return false;
  smtp_server__log(s, POSTERN_LOG_INFO, "smtpd_limit", why);
  smtp_server__reply(
      s, "421 4.7.0 Error: too many errors or commands, closing connection");
  smtp_server__session_close(s);
  return true;
}

/* Processes buffered input in order until it runs out, the session must
 * wait (queueing, TLS handshake, closing) or replies back up. */
static void pump_once(struct session *s) {
  while (!s->handles_closing) {
    enum smtp_server__state st = s->st;
    if (st == SMTP_SERVER__S_QUEUEING || st == SMTP_SERVER__S_CLOSING ||
        st == SMTP_SERVER__S_TLS_HANDSHAKE || st == SMTP_SERVER__S_GREETING ||
        st == SMTP_SERVER__S_CLOSED || st == SMTP_SERVER__S_AUTH_CHECK)
      break;
    if (smtp_server__busy_writing(s) && s->out_len > OUT_SOFT)
      break;
    if (s->in_off == s->in_len)
      break;
    if (st == SMTP_SERVER__S_DATA) {
      if (!data_step(s))
        break;
      continue;
    }
    if (st == SMTP_SERVER__S_BDAT) {
      bdat_step(s);
      continue;
    }
    if (st == SMTP_SERVER__S_AUTH) {
      if (!smtp_server__auth_step(s))
        break;
      if (s->st != SMTP_SERVER__S_CLOSING && limits_hit(s))
        break;
      continue;
    }
    const char *b = s->in + s->in_off;
    size_t n = s->in_len - s->in_off;
    if (s->skip_left > 0) {
      size_t k = (uint64_t)n < s->skip_left ? n : (size_t)s->skip_left;
      s->in_off += k;
      s->skip_left -= k;
      continue;
    }
    if (s->discard_line) {
      const char *lf = memchr(b, '\n', n);
      if (lf == NULL) {
        s->in_off = s->in_len;
        break;
      }
      s->in_off += (size_t)(lf - b) + 1;
      s->discard_line = false;
      continue;
    }
    struct smtp_server__cmd c;
    enum smtp_server__parse r = smtp_server__cmd_parse(b, n, &c);
    if (r == SMTP_SERVER__NEED_MORE)
      break;
    s->ncmd++;
    s->ncmd_idle++;
    smtp_server__arm_timer(s);
    if (r == SMTP_SERVER__PROTO_ERROR) {
      if (c.consumed == 0)
        s->discard_line = true;
      else
        s->in_off += c.consumed;
      smtp_server__reply(s, c.reply);
      if (c.verb == SMTP_SERVER__V_BDAT) {
        /* The chunk length is unknown, so the bytes that follow cannot be
         * told apart from commands: the session cannot continue. */
        smtp_server__reply(
            s, "421 4.5.0 Error: cannot resynchronise after a bad BDAT");
        smtp_server__session_close(s);
      }
    } else {
      handle_cmd(s, &c);
      /* After STARTTLS the rest of the buffer is already discarded. */
      if (s->st != SMTP_SERVER__S_TLS_HANDSHAKE)
        s->in_off += c.consumed;
    }
    if (s->st != SMTP_SERVER__S_CLOSING && limits_hit(s))
      break;
  }
  if (s->in_off > 0) {
    memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
    s->in_len -= s->in_off;
    s->in_off = 0;
  }
  smtp_server__flush(s);
}

static void on_handshake(struct tls_conn *t, int status, void *arg) {
  struct session *s = arg;
  if (status < 0) {
    smtp_server__log(s, POSTERN_LOG_INFO, "smtpd_tls_failed",
                     tls_conn_error(t));
    smtp_server__close_handles(s);
    return;
  }
  if (postern_log_enabled(POSTERN_LOG_INFO)) {
    struct postern_log_rec r;
    postern_log_begin(&r, POSTERN_LOG_INFO, "smtpd_tls");
    postern_log_uint(&r, "sess", s->id);
    postern_log_str(&r, "version", tls_conn_version(t));
    postern_log_str(&r, "cipher", tls_conn_cipher(t));
    postern_log_end(&r);
  }
  /* RFC 3207 §4.2: the server discards all knowledge from before TLS; the
   * client starts again with EHLO. */
  s->tls_done = true;
  smtp_server__txn_reset(s);
  s->helo[0] = '\0';
  s->esmtp = false;
  smtp_server__set_state(s, SMTP_SERVER__S_CONNECTED);
  smtp_server__arm_timer(s);
  /* Decrypted input is pulled by on_read right after this returns. */
}

/* Runs the session on whatever input is buffered, also pulling decrypted
 * bytes that TLS holds back while s->in was full. */
void smtp_server__pump(struct session *s) {
  for (;;) {
    pump_once(s);
    if (s->handles_closing)
      return;
    if (s->st == SMTP_SERVER__S_TLS_HANDSHAKE && stream_tls(&s->io) == NULL) {
      if (s->out_len > 0)
        return; /* the 220 waits behind a write; on_written pumps again */
      /* The 220 is queued on the stream in plaintext; TLS records follow it
       * in the same write queue. */
      stream_set_tls(&s->io, s->tls_pending);
      s->tls_pending = NULL;
      s->in_len = s->in_off = 0;
      if (tls_conn_handshake(stream_tls(&s->io), on_handshake, s) < 0) {
        smtp_server__close_handles(s);
        return;
      }
      /* Switch reads to the ciphertext buffer. */
      if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->io.tcp);
        s->reading = false;
      }
      smtp_server__update_reading(s);
      return;
    }
    if (stream_tls(&s->io) == NULL || s->in_len >= IN_CAP ||
        s->st == SMTP_SERVER__S_QUEUEING)
      break;
    ssize_t got = smtp_server__tls_pull(s);
    if (got <= 0)
      break;
  }
  smtp_server__maybe_finish_close(s);
  if (s->handles_closing)
    return;
  /* After a half-close, once all complete input is answered (nothing waits
   * for the engine or for replies to drain), the session ends. */
  if (s->eof && s->st != SMTP_SERVER__S_QUEUEING &&
      s->st != SMTP_SERVER__S_AUTH_CHECK && s->st != SMTP_SERVER__S_CLOSING &&
      !(smtp_server__busy_writing(s) && s->out_len > OUT_SOFT)) {
    smtp_server__session_close(s);
    return;
  }
  /* Input was consumed (or writes completed): reading may resume. */
  smtp_server__update_reading(s);
}

/* ---- timers ----------------------------------------------------------- */

void smtp_server__on_timer(uv_timer_t *t) {
  struct session *s = t->data;
  struct smtp_server *srv = s->lc->srv;
  if (s->st == SMTP_SERVER__S_AUTH_CHECK) {
    smtp_server__auth_timer(s);
    return;
  }
  if (s->st == SMTP_SERVER__S_GREETING) {
    smtp_server__set_state(s, SMTP_SERVER__S_CONNECTED);
    smtp_server__replyf(s, "220 %s ESMTP Postern", srv->hostname);
    smtp_server__arm_timer(s);
    smtp_server__pump(s);
    return;
  }
  uint64_t now = uv_now(s->lc->loop);
  bool total = now >= s->start_ms + srv->session_timeout_ms;
  smtp_server__log(s, POSTERN_LOG_INFO, "smtpd_timeout",
                   total ? "session" : "idle");
  smtp_server__reply(s, total ? "421 4.4.2 Error: session time limit exceeded"
                              : "421 4.4.2 Error: timeout exceeded");
  smtp_server__session_close(s);
}

void smtp_server__arm_timer(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  if (s->st == SMTP_SERVER__S_CLOSING || s->handles_closing)
    return;
  uint64_t now = uv_now(s->lc->loop);
  uint64_t end = s->start_ms + srv->session_timeout_ms;
  uint64_t left = end > now ? end - now : 0;
  uint64_t t = srv->timeout_ms < left ? srv->timeout_ms : left;
  s->timer.data = s;
  uv_timer_start(&s->timer, smtp_server__on_timer, t, 0);
}

/* ---- the beginning and the engine's answers --------------------------- */

void smtp_server__session_begin(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  smtp_server__update_reading(s);
  if (srv->greet_delay_ms > 0) {
    uv_timer_start(&s->timer, smtp_server__on_timer, srv->greet_delay_ms, 0);
    return;
  }
  smtp_server__set_state(s, SMTP_SERVER__S_CONNECTED);
  smtp_server__replyf(s, "220 %s ESMTP Postern", srv->hostname);
  smtp_server__flush(s);
  smtp_server__arm_timer(s);
}

static void txn_reply(struct session *s, struct smtp_server_txn *t) {
  const char *id = t->has_id ? t->id : s->qid;
  switch (t->status) {
  case 0:
    smtp_server__replyf(s, "250 2.0.0 Ok: queued as %s", id);
    s->nmsg++;
    s->njunk = 0;
    s->ncmd_idle = 0;
    s->nerr = 0;
    if (postern_log_enabled(POSTERN_LOG_INFO)) {
      struct postern_log_rec r;
      postern_log_begin(&r, POSTERN_LOG_INFO, "smtpd_queued");
      postern_log_uint(&r, "sess", s->id);
      postern_log_str(&r, "id", id);
      postern_log_str(&r, "client", s->ip);
      postern_log_str(&r, "from", s->env.mail_from);
      if (s->auth_user[0])
        postern_log_str(&r, "user", s->auth_user);
      postern_log_uint(&r, "nrcpt", s->nrcpt);
      postern_log_uint(&r, "size", s->body_len - s->hdr_len);
      postern_log_end(&r);
    }
    break;
  case POSTERN_EQFULL:
    smtp_server__reply(s, "452 4.3.1 Error: queue full, try again later");
    break;
  case POSTERN_ENOSPC:
  case POSTERN_EIO:
    smtp_server__reply(
        s, "452 4.3.1 Error: insufficient system storage, try again later");
    break;
  case POSTERN_ETOOBIG:
    smtp_server__reply(s, "552 5.3.4 Error: message too big");
    break;
  default:
    smtp_server__reply(
        s, "451 4.3.0 Error: local error in processing, try again later");
    break;
  }
  if (t->status != 0)
    smtp_server__log(s, POSTERN_LOG_WARN, "smtpd_queue_failed",
                     postern_strerror(t->status));
}

/* The engine's answer reached the session's loop (smtp_server_loop.c):
 * the reply for the message, then the next command; or, when the client
 * has left meanwhile, the session's memory goes. */
void smtp_server__txn_finished(struct session *s, struct smtp_server_txn *t) {
  struct loop_ctx *lc = s->lc;
  s->txn_pending = false;
  if (s->st == SMTP_SERVER__S_CLOSED) {
    /* the client left before the commit finished */
    if (smtp_server__session_idle(s))
      smtp_server__session_free(s);
  } else if (!s->handles_closing && s->st == SMTP_SERVER__S_QUEUEING) {
    txn_reply(s, t);
    smtp_server__txn_reset(s);
    smtp_server__set_state(s, SMTP_SERVER__S_READY);
    if (s->close_after || lc->closing) {
      smtp_server__reply(s,
                         "421 4.3.2 Service shutting down, closing connection");
      smtp_server__session_close(s);
    } else {
      smtp_server__arm_timer(s);
      smtp_server__pump(s);
      smtp_server__update_reading(s);
    }
  }
  /* else: handles are closing; on_handle_close frees the session. */
}
