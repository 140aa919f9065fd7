/*
 * smtp_server_conn.c - a server session's connection: replies out (through
 * net/stream), input in, flow control, the close sequence, and the
 * session's memory from accept to free. What the bytes mean is
 * smtp_server_session.c's job; the objects are in smtp_server_session.h.
 *
 * Invariants:
 *  - replies are queued in `out` and written together once the input at
 *    hand is answered (smtp_server__flush), so a pipelined group (RFC 2920)
 *    gets its replies in one write;
 *  - the session reads only while s->in has room and the session consumes
 *    it (smtp_server__update_reading): a client that does not read its replies
 * stops being read too (OUT_SOFT in smtp_server_session.c);
 *  - a session ends with its replies flushed, then FIN, then both handles
 *    closed when the client closes or after CLOSE_LINGER_MS; its memory is
 *    freed when both handles are closed and no transaction is pending
 *    (the engine may answer after the client left).
 */
#include "net/smtp_server_session.h"
#include "net/tls.h"

#include "base/postern_err.h"
#include "base/postern_log.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void smtp_server__log(struct session *s, enum postern_log_level lvl,
                      const char *event, const char *reason) {
  if (!postern_log_enabled(lvl))
    return;
  struct postern_log_rec r;
  postern_log_begin(&r, lvl, event);
  postern_log_uint(&r, "sess", s->id);
  postern_log_str(&r, "client", s->ip);
  if (reason)
    postern_log_str(&r, "reason", reason);
  postern_log_end(&r);
}

bool smtp_server__grow(char **buf, size_t *cap, size_t need) {
  if (need <= *cap)
    return true;
  size_t n = *cap ? *cap : 256;
  while (n < need)
    n *= 2;
  char *p = realloc(*buf, n);
  if (p == NULL)
    return false;
  *buf = p;
  *cap = n;
  return true;
}

/* Queues one reply line (without CRLF). 5xx replies count as errors. */
void smtp_server__reply(struct session *s, const char *line) {
  size_t n = strlen(line);
  if (!smtp_server__grow(&s->out, &s->out_cap, s->out_len + n + 2)) {
    smtp_server__session_close(s);
    return;
  }
  memcpy(s->out + s->out_len, line, n);
  memcpy(s->out + s->out_len + n, "\r\n", 2);
  s->out_len += n + 2;
  if (line[0] == '5')
    s->nerr++;
}

void smtp_server__replyf(struct session *s, const char *fmt, ...) {
  char line[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  smtp_server__reply(s, line);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  struct session *s = req->data;
  /* Keep reading until the client closes too, so that bytes it sent after
   * our last reply do not turn our FIN into a RST that could destroy the
   * reply in flight; the linger timer bounds the wait. */
  if (status < 0 || s->eof)
    smtp_server__close_handles(s);
}

bool smtp_server__busy_writing(const struct session *s) {
  return stream_writes_pending(&s->io) > 0;
}

void smtp_server__maybe_finish_close(struct session *s) {
  if (s->st != SMTP_SERVER__S_CLOSING || smtp_server__busy_writing(s) ||
      s->out_len > 0 || s->handles_closing || s->shut)
    return;
  s->shut = true;
  struct tls_conn *tls = stream_tls(&s->io);
  if (tls != NULL && s->tls_done)
    tls_conn_shutdown(tls); /* close_notify, best effort */
  if (s->eof || (s->quit && tls == NULL)) {
    /* The client has closed already (a FIN now would only fail with
     * ENOTCONN), or it sent QUIT and nothing after it: the 221 is with the
     * kernel and close(2) sends it before the FIN (RFC 5321 §4.1.1.10), so
     * close at once instead of waiting for the client's FIN. With TLS the
     * close_notify just queued must go out first: shut down as below. */
    smtp_server__close_handles(s);
    return;
  }
  s->sreq.data = s;
  if (uv_shutdown(&s->sreq, (uv_stream_t *)&s->io.tcp, on_shutdown) < 0)
    smtp_server__close_handles(s);
}

/* A queued write completed (net/stream.h). */
static void on_written(void *arg, int status, int tag) {
  struct session *s = arg;
  if (s->handles_closing)
    return;
  if (status < 0) {
    smtp_server__close_handles(s);
    return;
  }
  smtp_server__pump(s);
  smtp_server__maybe_finish_close(s);
}

/* Writes whatever replies are queued (net/stream: write(2) first). In
 * plaintext only one write is queued at a time: replies that come meanwhile
 * gather in `out` and go out together when it completes (on_written pumps
 * again), instead of each being copied into a request of its own; and
 * pump_once stops taking input while they back up (OUT_SOFT). Under TLS
 * the replies are encrypted (copied) at once whatever is queued. */
void smtp_server__flush(struct session *s) {
  if (s->out_len == 0 || s->handles_closing)
    return;
  if (stream_tls(&s->io) == NULL && smtp_server__busy_writing(s))
    return;
  uv_buf_t b = uv_buf_init(s->out, (unsigned)s->out_len);
  int r = stream_write(&s->io, &b, 1, STREAM_COPY, 0);
  s->out_len = 0;
  if (r < 0)
    smtp_server__close_handles(s);
}

void smtp_server__session_free(struct session *s) {
  struct loop_ctx *lc = s->lc;
  if (s->prev)
    s->prev->next = s->next;
  else
    lc->sessions = s->next;
  if (s->next)
    s->next->prev = s->prev;
  lc->nsess--;
  if (s->counted)
    atomic_fetch_sub(&lc->srv->nsessions, 1);
  if (postern_log_enabled(POSTERN_LOG_INFO)) {
    struct postern_log_rec r;
    postern_log_begin(&r, POSTERN_LOG_INFO, "smtpd_disconnect");
    postern_log_uint(&r, "sess", s->id);
    postern_log_str(&r, "client", s->ip);
    postern_log_uint(&r, "commands", s->ncmd);
    postern_log_uint(&r, "messages", s->nmsg);
    postern_log_end(&r);
  }
  smtp_server__txn_reset(s);
  smtp_server__auth_reset(s);
  stream_free(&s->io);
  tls_conn_free(s->tls_pending);
  free(s->tls_rbuf);
  free(s->arena);
  free(s->rcpt);
  free(s->out);
  free(s);
  smtp_server__loop_maybe_finish(lc);
}

static void on_handle_close(uv_handle_t *h) {
  struct session *s = h->data;
  if (--s->open_handles > 0)
    return;
  smtp_server__set_state(s, SMTP_SERVER__S_CLOSED);
  if (smtp_server__session_idle(s))
    smtp_server__session_free(s);
}

void smtp_server__close_handles(struct session *s) {
  if (s->handles_closing)
    return;
  s->handles_closing = true;
  if (s->st != SMTP_SERVER__S_CLOSED)
    smtp_server__set_state(s, SMTP_SERVER__S_CLOSING);
  uv_close((uv_handle_t *)&s->io.tcp, on_handle_close);
  uv_close((uv_handle_t *)&s->timer, on_handle_close);
}

static void on_linger(uv_timer_t *t) {
  smtp_server__close_handles(t->data);
}

/* Ends the session gracefully: queued replies are flushed, then FIN, then
 * the handles close when the client closes (its input is read and
 * dropped meanwhile) or after CLOSE_LINGER_MS. */
void smtp_server__session_close(struct session *s) {
  if (s->handles_closing || s->st == SMTP_SERVER__S_CLOSING)
    return;
  smtp_server__set_state(s, SMTP_SERVER__S_CLOSING);
  s->timer.data = s;
  uv_timer_start(&s->timer, on_linger, CLOSE_LINGER_MS, 0);
  smtp_server__flush(s);
  smtp_server__maybe_finish_close(s);
  smtp_server__update_reading(s);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  struct session *s = h->data;
  if (stream_tls(&s->io) != NULL) {
    *buf = uv_buf_init(s->tls_rbuf, TLS_RBUF);
    return;
  }
  *buf = uv_buf_init(s->in + s->in_len, (unsigned)(IN_CAP - s->in_len));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* Reads only while there is room for input and the session consumes it. */
void smtp_server__update_reading(struct session *s) {
  bool want = !s->handles_closing && !s->eof && s->in_len < IN_CAP;
  if (want && !s->reading) {
    if (uv_read_start((uv_stream_t *)&s->io.tcp, on_alloc, on_read) == 0)
      s->reading = true;
  } else if (!want && s->reading) {
    uv_read_stop((uv_stream_t *)&s->io.tcp);
    s->reading = false;
  }
}

/* Moves decrypted input into s->in while there is room. Returns the bytes
 * moved or a negative code (the session is then closing). */
ssize_t smtp_server__tls_pull(struct session *s) {
  ssize_t total = 0;
  while (s->tls_done && s->in_len < IN_CAP) {
    ssize_t n = tls_conn_read(stream_tls(&s->io), s->in + s->in_len,
                              IN_CAP - s->in_len);
    if (n == 0)
      break;
    if (n < 0) {
      if (n != POSTERN_ECLOSED)
        smtp_server__log(s, POSTERN_LOG_INFO, "smtpd_tls_error",
                         tls_conn_error(stream_tls(&s->io)));
      smtp_server__close_handles(s);
      return n;
    }
    s->in_len += (size_t)n;
    total += n;
  }
  return total;
}

/* New plaintext has been appended to s->in. */
static void on_plaintext(struct session *s) {
  if (s->st == SMTP_SERVER__S_GREETING) {
    /* An early talker: a client that speaks before our greeting does not
     * follow the protocol (RFC 5321 §3.1) and is most often a spam engine. */
    smtp_server__log(s, POSTERN_LOG_INFO, "smtpd_reject", "early_talker");
    smtp_server__reply(
        s, "554 5.5.0 Error: SMTP protocol synchronization (input before "
           "greeting)");
    s->in_len = s->in_off = 0;
    smtp_server__session_close(s);
    return;
  }
  if (s->st == SMTP_SERVER__S_CLOSING) {
    s->in_len = s->in_off = 0; /* draining until the client closes */
    return;
  }
  smtp_server__pump(s);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  struct session *s = st->data;
  if (nread == UV_ENOBUFS) {
    uv_read_stop(st);
    s->reading = false;
    return;
  }
  if (nread == UV_EOF && s->st != SMTP_SERVER__S_CLOSING &&
      s->st != SMTP_SERVER__S_GREETING) {
    /* A half-close ("printf ... | nc") still wants the replies to what it
     * sent: process the buffered input, then close (see smtp_server__pump). */
    smtp_server__log(s, POSTERN_LOG_DEBUG, "smtpd_eof", "half-close");
    s->eof = true;
    uv_read_stop(st);
    s->reading = false;
    smtp_server__pump(s);
    return;
  }
  if (nread < 0) {
    if (s->st != SMTP_SERVER__S_CLOSING)
      smtp_server__log(s, POSTERN_LOG_DEBUG, "smtpd_eof",
                       uv_err_name((int)nread));
    smtp_server__close_handles(s);
    return;
  }
  if (nread == 0)
    return;
  if (stream_tls(&s->io) != NULL) {
    if (tls_conn_feed(stream_tls(&s->io), buf->base, (size_t)nread) < 0) {
      smtp_server__close_handles(s);
      return;
    }
    if (s->handles_closing || smtp_server__tls_pull(s) < 0)
      return;
  } else {
    s->in_len += (size_t)nread;
  }
  on_plaintext(s);
  if (!s->handles_closing)
    smtp_server__update_reading(s);
}

static void format_ip(const struct sockaddr_storage *ss, char *buf,
                      size_t cap) {
  if (ss->ss_family == AF_INET) {
    inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf,
              (socklen_t)cap);
  } else if (ss->ss_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a))
      inet_ntop(AF_INET, a->s6_addr + 12, buf, (socklen_t)cap);
    else
      inet_ntop(AF_INET6, a, buf, (socklen_t)cap);
  } else {
    snprintf(buf, cap, "unknown");
  }
}

void smtp_server__session_accept(struct loop_ctx *lc, uv_stream_t *server) {
  struct smtp_server *srv = lc->srv;
  struct session *s = calloc(1, sizeof *s);
  if (s == NULL) {
    postern_log(POSTERN_LOG_ERROR, "smtpd_accept_failed", "error",
                "out of memory", NULL);
    return;
  }
  s->lc = lc;
  s->id = atomic_fetch_add(&srv->next_sess_id, 1) + 1;
  s->st = SMTP_SERVER__S_GREETING;
  s->envid_off = SIZE_MAX;
  s->start_ms = uv_now(lc->loop);
  stream_init(&s->io, lc->loop, on_written, s);
  uv_timer_init(lc->loop, &s->timer);
  s->io.tcp.data = s;
  s->timer.data = s;
  s->open_handles = 2;
  s->next = lc->sessions;
  if (lc->sessions)
    lc->sessions->prev = s;
  lc->sessions = s;
  lc->nsess++;

  if (uv_accept(server, (uv_stream_t *)&s->io.tcp) < 0) {
    smtp_server__close_handles(s);
    return;
  }
  int len = sizeof s->peer;
  uv_tcp_getpeername(&s->io.tcp, (struct sockaddr *)&s->peer, &len);
  format_ip(&s->peer, s->ip, sizeof s->ip);
  uv_tcp_nodelay(&s->io.tcp, 1);
  smtp_server__log(s, POSTERN_LOG_INFO, "smtpd_connect", NULL);

  if (!smtp_server__auth_connect_ok(srv, (const struct sockaddr *)&s->peer)) {
    /* Never an open relay: refuse before any command can be given. */
    smtp_server__log(s, POSTERN_LOG_WARN, "smtpd_reject", "accept_from");
    smtp_server__reply(s, "554 5.7.1 Access denied: client not in accept_from");
    smtp_server__session_close(s);
    return;
  }
  s->counted = true;
  unsigned n = atomic_fetch_add(&srv->nsessions, 1) + 1;
  if (n > srv->max_sessions || lc->closing) {
    /* A refused session does not hold a slot while it lingers. */
    atomic_fetch_sub(&srv->nsessions, 1);
    s->counted = false;
    smtp_server__log(s, POSTERN_LOG_WARN, "smtpd_reject", "max_sessions");
    smtp_server__replyf(
        s, "421 4.3.2 %s Error: too many sessions, try again later",
        srv->hostname);
    smtp_server__session_close(s);
    return;
  }
  smtp_server__session_begin(s);
}
