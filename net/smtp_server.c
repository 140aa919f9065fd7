/*
 * smtp_server.c - the SMTP server's sessions, listeners and loop glue.
 *
 * Ownership and invariants:
 *  - struct smtp_server owns one struct loop_ctx per loop. A loop_ctx owns a
 *    listening descriptor (see open_listeners: up to LOOPS_PER_LISTENER
 *    loops share one socket, the sockets share the port), a
 *    uv_async_t through which other threads reach the loop (txn_done, stop,
 *    close) and the list of its sessions. Only the loop's own thread touches
 *    a loop_ctx, except `done` and the request flags, which are guarded by
 *    `mu` / atomics.
 *  - A session owns its tcp and timer handles, its buffers and the one
 *    transaction that may be in flight. It is freed only when both its
 *    handles are closed (close_cb) and no transaction is pending: the engine
 *    may call smtp_server_txn_done() after the client left, and the session
 *    memory must still be there to receive it.
 *  - Input is processed in order, one command at a time (PIPELINING, RFC
 *    2920): every complete line in the input buffer is answered before the
 *    replies are flushed together. While a message is being queued, further
 *    input waits in the buffer.
 *  - The server frees itself after the last loop closed its async handle,
 *    which happens only when that loop has no session and no listener left;
 *    so no txn_done can ever reach freed memory.
 *
 * Session states (SMTP_SERVER__STATE_MAP) and their legal transitions are
 * in the table below.
 * A client that disconnects while QUEUEING goes to CLOSING/CLOSED; the
 * session is freed when txn_done arrives.
 */
/* clang-format off */
/*
 * Legal state transitions:
 *   GREETING  -> CONNECTED      greeting sent (after greet_delay)
 *   GREETING  -> CLOSING        refused (accept_from, max_sessions), early talker
 *   CONNECTED -> READY          EHLO/HELO accepted
 *   READY     -> MAIL           MAIL accepted
 *   MAIL      -> RCPT           first RCPT accepted
 *   RCPT      -> DATA           DATA answered 354
 *   DATA      -> QUEUEING       final "." of an acceptable message: handed over
 *   DATA      -> READY          final "." of a rejected message (size, content)
 *   RCPT|CHUNKING -> BDAT       BDAT accepted: reading its chunk (RFC 3030)
 *   BDAT      -> CHUNKING       chunk read, not LAST: 250, more BDAT may come
 *   BDAT      -> QUEUEING       LAST chunk read, acceptable message handed over
 *   BDAT      -> READY          LAST chunk read, message rejected (content)
 *   QUEUEING  -> READY          txn_done reply sent
 *   MAIL|RCPT|CHUNKING -> READY RSET, EHLO/HELO, oversize BDAT
 *   CONNECTED|READY -> TLS_HANDSHAKE  STARTTLS answered 220
 *   TLS_HANDSHAKE -> CONNECTED  handshake done (RFC 3207 §4.2: forget all)
 *   any but CLOSED -> CLOSING   QUIT, timeout, limits, errors, shutdown, EOF
 *   CLOSING   -> CLOSED         both handles closed
 */
/* clang-format on */
#include "net/smtp_server.h"
#include "net/rfc5322.h"
#include "net/smtp_server_internal.h"
#include "net/stream.h"
#include "net/tls.h"

#include "base/postern_err.h"
#include "base/postern_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP 8192    /* input buffer per session */
#define OUT_SOFT 16384 /* stop processing input while replies back up */
#define CLOSE_LINGER_MS 5000
#define LOOPS_PER_LISTENER 4 /* see open_listeners */

struct session;

struct smtp_server_txn {
  struct session *s;
  int status;
  bool has_id;
  char id[SMTP_SERVER_ID_MAX + 1];
  struct smtp_server_txn *next; /* in loop_ctx.done */
};

struct loop_ctx {
  struct smtp_server *srv;
  uv_loop_t *loop;
  unsigned index;
  uv_tcp_t listener;
  uv_async_t async;
  bool listener_open;
  bool listener_closing;
  bool async_closing;
  bool stopping; /* this loop has handled the stop request */
  bool closing;  /* this loop has handled the close request */
  pthread_mutex_t mu;
  struct smtp_server_txn *done; /* guarded by mu */
  struct session *sessions;     /* doubly linked; loop thread only */
  unsigned nsess;
};

struct smtp_server {
  struct loop_ctx *lcs;
  unsigned nloops;
  struct sockaddr_storage addr;
  unsigned port;
  char hostname[256];
  struct cidr *accept;
  size_t naccept;
  uint64_t max_size, timeout_ms, session_timeout_ms, greet_delay_ms;
  uint32_t max_rcpt, max_sessions, max_commands, max_junk, max_errors;
  struct tls_ctx *tls;
  struct smtp_server_handlers h;
  void *ud;
  atomic_uint nsessions;
  atomic_ulong next_sess_id;
  atomic_bool stop_req, close_req;
  atomic_uint handles_live; /* listeners + asyncs not yet closed */
  void (*closed_cb)(void *);
  void *closed_ud;
};

struct rcpt_rec {
  size_t addr_off;
  size_t orcpt_off; /* SIZE_MAX: absent */
  unsigned notify;
};

struct session {
  struct stream io; /* the client's connection, plaintext or TLS */
  uv_timer_t timer;
  uv_shutdown_t sreq;
  struct loop_ctx *lc;
  struct session *prev, *next;
  unsigned long id;
  enum smtp_server__state st;
  int open_handles;
  bool handles_closing;
  bool counted;      /* counted in srv->nsessions */
  bool txn_pending;  /* handed to the engine, txn_done not yet processed */
  bool close_after;  /* close once the pending reply is sent */
  bool shut;         /* FIN sent */
  bool discard_line; /* skipping the rest of an overlong command */
  bool esmtp;
  bool reading;
  bool eof;  /* the client half-closed: finish what it sent, then close */
  bool quit; /* QUIT answered and nothing followed it */
  uint64_t start_ms;
  struct sockaddr_storage peer;
  char ip[INET6_ADDRSTRLEN];
  char helo[SMTP_SERVER__DOMAIN_MAX + 1];
  uint32_t ncmd, nmsg; /* totals, for the log */
  /* Since the last accepted message: a session that keeps sending mail may
   * live long; one that only talks is cut off. */
  uint32_t ncmd_idle, njunk, nerr;

  char in[IN_CAP];
  size_t in_off, in_len;

  char *out; /* replies not yet written */
  size_t out_len, out_cap;

  /* The transaction being built: strings live in `arena`. */
  char *arena;
  size_t arena_len, arena_cap;
  size_t from_off;
  struct rcpt_rec *rcpt;
  size_t nrcpt, rcpt_cap;
  size_t envid_off; /* SIZE_MAX: absent */
  int body_type, ret;
  bool smtputf8;
  uint64_t size_hint;
  char qid[SMTP_SERVER_ID_MAX + 1];

  /* DATA. */
  char *body;
  size_t body_len, body_cap, hdr_len;
  bool data_midline, data_bad, data_too_long, data_oversize;

  /* BDAT (RFC 3030). */
  uint64_t bdat_left; /* chunk bytes still to read */
  uint64_t skip_left; /* bytes of a refused chunk still to drop */
  uint64_t bdat_size; /* size of the current chunk, for the reply */
  size_t bdat_line;   /* payload bytes in the current line */
  size_t bdat_progress;
  bool bdat_last, bdat_cr;

  /* Handed to the engine. */
  struct smtp_server_rcpt *env_rcpt;
  struct smtp_server_envelope env;
  struct smtp_server_txn txn;

  struct tls_conn *tls_pending; /* made by STARTTLS, not yet in use */
  char *tls_rbuf;               /* ciphertext read buffer (TLS only) */
  bool tls_done;                /* handshake completed */
};

#define TLS_RBUF 16384

static void pump(struct session *s);
static void session_close(struct session *s);
static void close_handles(struct session *s);
static void lc_maybe_finish(struct loop_ctx *lc);
static void arm_timer(struct session *s);

/* ---- logging and state ------------------------------------------------ */

static void set_state(struct session *s, enum smtp_server__state to) {
  if (s->st == to)
    return;
  if (postern_log_enabled(POSTERN_LOG_DEBUG)) {
    struct postern_log_rec r;
    postern_log_begin(&r, POSTERN_LOG_DEBUG, "smtpd_state");
    postern_log_uint(&r, "sess", s->id);
    postern_log_str(&r, "from", smtp_server__state_name(s->st));
    postern_log_str(&r, "to", smtp_server__state_name(to));
    postern_log_end(&r);
  }
  s->st = to;
}

static void log_sess(struct session *s, enum postern_log_level lvl,
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

/* ---- output ----------------------------------------------------------- */

static bool grow(char **buf, size_t *cap, size_t need) {
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
static void reply(struct session *s, const char *line) {
  size_t n = strlen(line);
  if (!grow(&s->out, &s->out_cap, s->out_len + n + 2)) {
    session_close(s);
    return;
  }
  memcpy(s->out + s->out_len, line, n);
  memcpy(s->out + s->out_len + n, "\r\n", 2);
  s->out_len += n + 2;
  if (line[0] == '5')
    s->nerr++;
}

__attribute__((format(printf, 2, 3))) static void replyf(struct session *s,
                                                         const char *fmt, ...) {
  char line[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  reply(s, line);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  struct session *s = req->data;
  /* Keep reading until the client closes too, so that bytes it sent after
   * our last reply do not turn our FIN into a RST that could destroy the
   * reply in flight; the linger timer bounds the wait. */
  if (status < 0 || s->eof)
    close_handles(s);
}

static bool busy_writing(const struct session *s) {
  return stream_writes_pending(&s->io) > 0;
}

static void maybe_finish_close(struct session *s) {
  if (s->st != SMTP_SERVER__S_CLOSING || busy_writing(s) || s->out_len > 0 ||
      s->handles_closing || s->shut)
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
    close_handles(s);
    return;
  }
  s->sreq.data = s;
  if (uv_shutdown(&s->sreq, (uv_stream_t *)&s->io.tcp, on_shutdown) < 0)
    close_handles(s);
}

/* A queued write completed (net/stream.h). */
static void on_written(void *arg, int status, int tag) {
  struct session *s = arg;
  if (s->handles_closing)
    return;
  if (status < 0) {
    close_handles(s);
    return;
  }
  pump(s);
  maybe_finish_close(s);
}

/* Writes whatever replies are queued (net/stream: write(2) first). In
 * plaintext only one write is queued at a time: replies that come meanwhile
 * gather in `out` and go out together when it completes (on_written pumps
 * again), instead of each being copied into a request of its own; and
 * pump_once stops taking input while they back up (OUT_SOFT). Under TLS
 * the replies are encrypted (copied) at once whatever is queued. */
static void flush(struct session *s) {
  if (s->out_len == 0 || s->handles_closing)
    return;
  if (stream_tls(&s->io) == NULL && busy_writing(s))
    return;
  uv_buf_t b = uv_buf_init(s->out, (unsigned)s->out_len);
  int r = stream_write(&s->io, &b, 1, STREAM_COPY, 0);
  s->out_len = 0;
  if (r < 0)
    close_handles(s);
}

/* ---- session lifetime ------------------------------------------------- */

static void txn_reset(struct session *s) {
  s->arena_len = 0;
  s->nrcpt = 0;
  s->envid_off = SIZE_MAX;
  s->body_type = SMTP_SERVER_BODY_NONE;
  s->ret = SMTP_SERVER_RET_NONE;
  s->smtputf8 = false;
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

static void session_free(struct session *s) {
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
  txn_reset(s);
  stream_free(&s->io);
  tls_conn_free(s->tls_pending);
  free(s->tls_rbuf);
  free(s->arena);
  free(s->rcpt);
  free(s->out);
  free(s);
  lc_maybe_finish(lc);
}

static void on_handle_close(uv_handle_t *h) {
  struct session *s = h->data;
  if (--s->open_handles > 0)
    return;
  set_state(s, SMTP_SERVER__S_CLOSED);
  if (!s->txn_pending)
    session_free(s);
}

static void close_handles(struct session *s) {
  if (s->handles_closing)
    return;
  s->handles_closing = true;
  if (s->st != SMTP_SERVER__S_CLOSED)
    set_state(s, SMTP_SERVER__S_CLOSING);
  uv_close((uv_handle_t *)&s->io.tcp, on_handle_close);
  uv_close((uv_handle_t *)&s->timer, on_handle_close);
}

static void on_linger(uv_timer_t *t) {
  close_handles(t->data);
}

static void update_reading(struct session *s);

/* Ends the session gracefully: queued replies are flushed, then FIN, then
 * the handles close when the client closes (its input is read and
 * dropped meanwhile) or after CLOSE_LINGER_MS. */
static void session_close(struct session *s) {
  if (s->handles_closing || s->st == SMTP_SERVER__S_CLOSING)
    return;
  set_state(s, SMTP_SERVER__S_CLOSING);
  s->timer.data = s;
  uv_timer_start(&s->timer, on_linger, CLOSE_LINGER_MS, 0);
  flush(s);
  maybe_finish_close(s);
  update_reading(s);
}

/* ---- input ------------------------------------------------------------ */

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
static void update_reading(struct session *s) {
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
static ssize_t tls_pull(struct session *s) {
  ssize_t total = 0;
  while (s->tls_done && s->in_len < IN_CAP) {
    ssize_t n = tls_conn_read(stream_tls(&s->io), s->in + s->in_len,
                              IN_CAP - s->in_len);
    if (n == 0)
      break;
    if (n < 0) {
      if (n != POSTERN_ECLOSED)
        log_sess(s, POSTERN_LOG_INFO, "smtpd_tls_error",
                 tls_conn_error(stream_tls(&s->io)));
      close_handles(s);
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
    log_sess(s, POSTERN_LOG_INFO, "smtpd_reject", "early_talker");
    reply(s, "554 5.5.0 Error: SMTP protocol synchronization (input before "
             "greeting)");
    s->in_len = s->in_off = 0;
    session_close(s);
    return;
  }
  if (s->st == SMTP_SERVER__S_CLOSING) {
    s->in_len = s->in_off = 0; /* draining until the client closes */
    return;
  }
  pump(s);
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
     * sent: process the buffered input, then close (see pump). */
    log_sess(s, POSTERN_LOG_DEBUG, "smtpd_eof", "half-close");
    s->eof = true;
    uv_read_stop(st);
    s->reading = false;
    pump(s);
    return;
  }
  if (nread < 0) {
    if (s->st != SMTP_SERVER__S_CLOSING)
      log_sess(s, POSTERN_LOG_DEBUG, "smtpd_eof", uv_err_name((int)nread));
    close_handles(s);
    return;
  }
  if (nread == 0)
    return;
  if (stream_tls(&s->io) != NULL) {
    if (tls_conn_feed(stream_tls(&s->io), buf->base, (size_t)nread) < 0) {
      close_handles(s);
      return;
    }
    if (s->handles_closing || tls_pull(s) < 0)
      return;
  } else {
    s->in_len += (size_t)nread;
  }
  on_plaintext(s);
  if (!s->handles_closing)
    update_reading(s);
}

/* ---- commands --------------------------------------------------------- */

static size_t arena_put(struct session *s, const char *p, size_t n) {
  if (!grow(&s->arena, &s->arena_cap, s->arena_len + n + 1))
    return SIZE_MAX;
  size_t off = s->arena_len;
  memcpy(s->arena + off, p, n);
  s->arena[off + n] = '\0';
  s->arena_len += n + 1;
  return off;
}

static void send_ehlo(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  replyf(s, "250-%s Hello %s [%s]", srv->hostname, s->helo, s->ip);
  reply(s, "250-PIPELINING");
  replyf(s, "250-SIZE %llu", (unsigned long long)srv->max_size);
  reply(s, "250-8BITMIME");
  reply(s, "250-ENHANCEDSTATUSCODES");
  reply(s, "250-SMTPUTF8");
  reply(s, "250-CHUNKING");
  if (srv->tls != NULL && stream_tls(&s->io) == NULL)
    reply(s, "250-STARTTLS");
  reply(s, "250 DSN");
}

static bool helo_done(struct session *s) {
  return s->st != SMTP_SERVER__S_CONNECTED;
}

/* RFC 5321 §4.4 trace field, written as the first bytes of the body so
 * that the client's content is appended right behind it (one buffer, no
 * copy later). "for" names the recipient only when there is exactly one,
 * so that a message to many does not disclose the others (§7.2). */
static bool start_body(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  char date[RFC5322_DATE_MAX];
  rfc5322_date_format(time(NULL), date, sizeof date);
  bool tls = stream_tls(&s->io) != NULL;
  const char *proto = s->smtputf8 ? (tls ? "UTF8SMTPS" : "UTF8SMTP")
                      : s->esmtp  ? (tls ? "ESMTPS" : "ESMTP")
                                  : "SMTP";
  bool v6 = strchr(s->ip, ':') != NULL;
  char fr[SMTP_SERVER__PATH_MAX + 16] = "";
  if (s->nrcpt == 1)
    snprintf(fr, sizeof fr, "\r\n\tfor <%s>", s->arena + s->rcpt[0].addr_off);
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
    reply(s, "503 5.5.1 Error: send HELO/EHLO first");
    return;
  }
  if (s->st != SMTP_SERVER__S_READY) {
    reply(s, "503 5.5.1 Error: nested MAIL command");
    return;
  }
  if (c->has_size && c->size > srv->max_size) {
    reply(s, "552 5.3.4 Message size exceeds fixed limit");
    return;
  }
  if (c->addr_utf8 && !c->smtputf8) {
    reply(s, "553 5.6.7 Non-ASCII sender address needs SMTPUTF8");
    return;
  }
  txn_reset(s);
  s->from_off = arena_put(s, c->addr.p, c->addr.n);
  if (c->envid.p)
    s->envid_off = arena_put(s, c->envid.p, c->envid.n);
  if (s->from_off == SIZE_MAX || (c->envid.p && s->envid_off == SIZE_MAX)) {
    reply(s, "451 4.3.0 Error: out of memory");
    txn_reset(s);
    return;
  }
  int r = srv->h.assign_id(srv->ud, s->qid);
  s->qid[SMTP_SERVER_ID_MAX] = '\0';
  if (r < 0 || s->qid[0] == '\0') {
    reply(s, "451 4.3.0 Error: cannot assign a queue id, try again later");
    txn_reset(s);
    return;
  }
  s->body_type = c->body;
  s->ret = c->ret;
  s->smtputf8 = c->smtputf8;
  s->size_hint = c->has_size ? c->size : 0;
  set_state(s, SMTP_SERVER__S_MAIL);
  reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct session *s, const struct smtp_server__cmd *c) {
  struct smtp_server *srv = s->lc->srv;
  if (s->st == SMTP_SERVER__S_CHUNKING) {
    reply(s, "503 5.5.1 Error: no RCPT after BDAT (RFC 3030)");
    return;
  }
  if (s->st != SMTP_SERVER__S_MAIL && s->st != SMTP_SERVER__S_RCPT) {
    reply(s, "503 5.5.1 Error: need MAIL command");
    return;
  }
  if (s->nrcpt >= srv->max_rcpt) {
    /* RFC 5321 §4.5.3.1.10: 452 makes the client send the rest later. */
    reply(s, "452 4.5.3 Error: too many recipients");
    return;
  }
  if (c->postmaster) {
    reply(s, "550 5.1.1 <postmaster>: no local mailboxes, this is an outbound "
             "relay");
    return;
  }
  if (c->addr_utf8 && !s->smtputf8) {
    reply(s, "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8");
    return;
  }
  if (s->nrcpt == s->rcpt_cap) {
    size_t n = s->rcpt_cap ? s->rcpt_cap * 2 : 8;
    struct rcpt_rec *p = realloc(s->rcpt, n * sizeof *p);
    if (p == NULL) {
      reply(s, "452 4.3.0 Error: out of memory");
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
    reply(s, "452 4.3.0 Error: out of memory");
    return;
  }
  s->nrcpt++;
  set_state(s, SMTP_SERVER__S_RCPT);
  reply(s, "250 2.1.5 Ok");
}

static void cmd_data(struct session *s) {
  if (s->st == SMTP_SERVER__S_MAIL) {
    reply(s, "554 5.5.1 Error: no valid recipients");
    return;
  }
  if (s->st != SMTP_SERVER__S_RCPT) {
    reply(s, "503 5.5.1 Error: need RCPT command");
    return;
  }
  if (!start_body(s)) {
    reply(s, "451 4.3.0 Error: out of memory");
    return;
  }
  set_state(s, SMTP_SERVER__S_DATA);
  reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void chunk_done(struct session *s);

/* RFC 3030: BDAT's chunk follows the command line at once, so even a
 * refused BDAT must have its chunk read and dropped (skip_left) or those
 * bytes would be taken for commands. */
static void cmd_bdat(struct session *s, const struct smtp_server__cmd *c) {
  struct smtp_server *srv = s->lc->srv;
  if (s->st != SMTP_SERVER__S_RCPT && s->st != SMTP_SERVER__S_CHUNKING) {
    s->skip_left = c->size;
    reply(s, s->st == SMTP_SERVER__S_MAIL
                 ? "554 5.5.1 Error: no valid recipients"
                 : "503 5.5.1 Error: need RCPT command");
    return;
  }
  if (s->st == SMTP_SERVER__S_RCPT && !start_body(s)) {
    s->skip_left = c->size;
    reply(s, "451 4.3.0 Error: out of memory");
    return;
  }
  uint64_t content = s->body_len - s->hdr_len;
  if (c->size > srv->max_size || content + c->size > srv->max_size) {
    /* RFC 3030 §2: a failed chunk fails the transaction. */
    s->skip_left = c->size;
    reply(s, "552 5.3.4 Error: message exceeds fixed maximum message size");
    txn_reset(s);
    set_state(s, SMTP_SERVER__S_READY);
    return;
  }
  s->bdat_left = s->bdat_size = c->size;
  s->bdat_last = c->last;
  set_state(s, SMTP_SERVER__S_BDAT);
  if (c->size == 0)
    chunk_done(s);
}

static void cmd_starttls(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  if (srv->tls == NULL) {
    reply(s, "502 5.5.1 Error: command not implemented");
    return;
  }
  if (stream_tls(&s->io) != NULL) {
    reply(s, "503 5.5.1 Error: TLS already active");
    return;
  }
  if (s->st != SMTP_SERVER__S_READY || !s->esmtp) {
    reply(s, "503 5.5.1 Error: send EHLO first, and no STARTTLS inside a "
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
    reply(s, "454 4.7.0 TLS not available due to temporary reason");
    return;
  }
  reply(s, "220 2.0.0 Ready to start TLS");
  /* RFC 3207 §6: whatever the client pipelined after STARTTLS was sent in
   * plaintext and must not be acted upon once TLS is up (the "STARTTLS
   * command injection" attack): drop it. */
  s->in_off = s->in_len;
  set_state(s, SMTP_SERVER__S_TLS_HANDSHAKE);
}

static void handle_cmd(struct session *s, const struct smtp_server__cmd *c) {
  struct smtp_server *srv = s->lc->srv;
  switch (c->verb) {
  case SMTP_SERVER__V_EHLO:
  case SMTP_SERVER__V_HELO:
    txn_reset(s);
    if (helo_done(s))
      s->njunk++;
    memcpy(s->helo, c->arg.p, c->arg.n);
    s->helo[c->arg.n] = '\0';
    s->esmtp = c->verb == SMTP_SERVER__V_EHLO;
    set_state(s, SMTP_SERVER__S_READY);
    if (s->esmtp)
      send_ehlo(s);
    else
      replyf(s, "250 %s", srv->hostname);
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
    txn_reset(s);
    if (helo_done(s))
      set_state(s, SMTP_SERVER__S_READY);
    reply(s, "250 2.0.0 Ok");
    break;
  case SMTP_SERVER__V_NOOP:
    s->njunk++;
    reply(s, "250 2.0.0 Ok");
    break;
  case SMTP_SERVER__V_QUIT:
    replyf(s, "221 2.0.0 %s closing connection", srv->hostname);
    /* Nothing after QUIT in the buffer: see maybe_finish_close. */
    s->quit = s->in_off + c->consumed == s->in_len;
    session_close(s);
    break;
  case SMTP_SERVER__V_VRFY:
    /* RFC 5321 §3.5.3: a server that cannot verify an address but will
     * accept mail for it answers 252, not 502 (which would say VRFY is not
     * implemented at all, and §3.5.2 asks servers to implement it). A relay
     * can never verify remote mailboxes, yet it accepts and attempts
     * delivery, which is exactly what 252 says. */
    s->njunk++;
    reply(s, "252 2.0.0 Cannot VRFY user, but will accept message and attempt "
             "delivery");
    break;
  case SMTP_SERVER__V_EXPN:
    s->njunk++;
    reply(s, "502 5.5.1 Error: EXPN not supported, this relay has no lists");
    break;
  case SMTP_SERVER__V_HELP:
    s->njunk++;
    reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT "
             "VRFY "
             "STARTTLS (RFC 5321)");
    break;
  case SMTP_SERVER__V_STARTTLS:
    cmd_starttls(s);
    break;
  case SMTP_SERVER__V_BDAT:
    cmd_bdat(s, c);
    break;
  case SMTP_SERVER__V_NONE:
    reply(s, "500 5.5.1 Command unrecognized");
    break;
  }
}

/* ---- DATA ------------------------------------------------------------- */

static void finish_data(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  if (s->data_oversize || s->data_too_long || s->data_bad) {
    if (s->data_oversize)
      reply(s, "552 5.3.4 Error: message exceeds fixed maximum message size");
    else if (s->data_too_long)
      reply(s, "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6: 1000 octets)");
    else
      reply(s, "554 5.6.0 Message contains NUL, bare CR or bare LF (RFC 5321 "
               "2.3.8)");
    log_sess(s, POSTERN_LOG_INFO, "smtpd_reject_message",
             s->data_oversize   ? "size"
             : s->data_too_long ? "line_length"
                                : "content");
    txn_reset(s);
    set_state(s, SMTP_SERVER__S_READY);
    return;
  }
  s->env_rcpt = calloc(s->nrcpt, sizeof *s->env_rcpt);
  if (s->env_rcpt == NULL) {
    reply(s, "451 4.3.0 Error: out of memory");
    txn_reset(s);
    set_state(s, SMTP_SERVER__S_READY);
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
  e->id = s->qid;
  e->loop_index = s->lc->index;
  s->txn.s = s;
  s->txn.next = NULL;
  s->txn_pending = true;
  set_state(s, SMTP_SERVER__S_QUEUEING);
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
    arm_timer(s); /* a complete line is progress */
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
  if (!grow(&s->body, &s->body_cap, s->body_len + l.n + 2)) {
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
    replyf(s, "250 2.0.0 %llu octets received",
           (unsigned long long)s->bdat_size);
    set_state(s, SMTP_SERVER__S_CHUNKING);
    return;
  }
  /* Content must be CRLF lines (we offer no BINARYMIME); a final line
   * without CRLF is completed rather than refused, a trailing lone CR is
   * a bare CR. */
  if (s->bdat_cr)
    s->data_bad = true;
  else if (s->bdat_line > 0 && !s->data_bad && !s->data_too_long) {
    if (!grow(&s->body, &s->body_cap, s->body_len + 2)) {
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
    if (!grow(&s->body, &s->body_cap, s->body_len + n)) {
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
    arm_timer(s); /* a kilobyte is progress */
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
  log_sess(s, POSTERN_LOG_INFO, "smtpd_limit", why);
  reply(s, "421 4.7.0 Error: too many errors or commands, closing connection");
  session_close(s);
  return true;
}

/* Processes buffered input in order until it runs out, the session must
 * wait (queueing, TLS handshake, closing) or replies back up. */
static void pump_once(struct session *s) {
  while (!s->handles_closing) {
    enum smtp_server__state st = s->st;
    if (st == SMTP_SERVER__S_QUEUEING || st == SMTP_SERVER__S_CLOSING ||
        st == SMTP_SERVER__S_TLS_HANDSHAKE || st == SMTP_SERVER__S_GREETING ||
        st == SMTP_SERVER__S_CLOSED)
      break;
    if (busy_writing(s) && s->out_len > OUT_SOFT)
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
    arm_timer(s);
    if (r == SMTP_SERVER__PROTO_ERROR) {
      if (c.consumed == 0)
        s->discard_line = true;
      else
        s->in_off += c.consumed;
      reply(s, c.reply);
      if (c.verb == SMTP_SERVER__V_BDAT) {
        /* The chunk length is unknown, so the bytes that follow cannot be
         * told apart from commands: the session cannot continue. */
        reply(s, "421 4.5.0 Error: cannot resynchronise after a bad BDAT");
        session_close(s);
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
  flush(s);
}

static void on_handshake(struct tls_conn *t, int status, void *arg) {
  struct session *s = arg;
  if (status < 0) {
    log_sess(s, POSTERN_LOG_INFO, "smtpd_tls_failed", tls_conn_error(t));
    close_handles(s);
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
  txn_reset(s);
  s->helo[0] = '\0';
  s->esmtp = false;
  set_state(s, SMTP_SERVER__S_CONNECTED);
  arm_timer(s);
  /* Decrypted input is pulled by on_read right after this returns. */
}

/* Runs the session on whatever input is buffered, also pulling decrypted
 * bytes that TLS holds back while s->in was full. */
static void pump(struct session *s) {
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
        close_handles(s);
        return;
      }
      /* Switch reads to the ciphertext buffer. */
      if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->io.tcp);
        s->reading = false;
      }
      update_reading(s);
      return;
    }
    if (stream_tls(&s->io) == NULL || s->in_len >= IN_CAP ||
        s->st == SMTP_SERVER__S_QUEUEING)
      break;
    ssize_t got = tls_pull(s);
    if (got <= 0)
      break;
  }
  maybe_finish_close(s);
  if (s->handles_closing)
    return;
  /* After a half-close, once all complete input is answered (nothing waits
   * for the engine or for replies to drain), the session ends. */
  if (s->eof && s->st != SMTP_SERVER__S_QUEUEING &&
      s->st != SMTP_SERVER__S_CLOSING &&
      !(busy_writing(s) && s->out_len > OUT_SOFT)) {
    session_close(s);
    return;
  }
  /* Input was consumed (or writes completed): reading may resume. */
  update_reading(s);
}

/* ---- timers ----------------------------------------------------------- */

static void on_timer(uv_timer_t *t) {
  struct session *s = t->data;
  struct smtp_server *srv = s->lc->srv;
  if (s->st == SMTP_SERVER__S_GREETING) {
    set_state(s, SMTP_SERVER__S_CONNECTED);
    replyf(s, "220 %s ESMTP Postern", srv->hostname);
    arm_timer(s);
    pump(s);
    return;
  }
  uint64_t now = uv_now(s->lc->loop);
  bool total = now >= s->start_ms + srv->session_timeout_ms;
  log_sess(s, POSTERN_LOG_INFO, "smtpd_timeout", total ? "session" : "idle");
  reply(s, total ? "421 4.4.2 Error: session time limit exceeded"
                 : "421 4.4.2 Error: timeout exceeded");
  session_close(s);
}

static void arm_timer(struct session *s) {
  struct smtp_server *srv = s->lc->srv;
  if (s->st == SMTP_SERVER__S_CLOSING || s->handles_closing)
    return;
  uint64_t now = uv_now(s->lc->loop);
  uint64_t end = s->start_ms + srv->session_timeout_ms;
  uint64_t left = end > now ? end - now : 0;
  uint64_t t = srv->timeout_ms < left ? srv->timeout_ms : left;
  s->timer.data = s;
  uv_timer_start(&s->timer, on_timer, t, 0);
}

/* ---- accepting -------------------------------------------------------- */

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

static void on_connection(uv_stream_t *server, int status) {
  struct loop_ctx *lc = server->data;
  struct smtp_server *srv = lc->srv;
  if (status < 0) {
    postern_log(POSTERN_LOG_WARN, "smtpd_accept_failed", "error",
                uv_strerror(status), NULL);
    return;
  }
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
    close_handles(s);
    return;
  }
  int len = sizeof s->peer;
  uv_tcp_getpeername(&s->io.tcp, (struct sockaddr *)&s->peer, &len);
  format_ip(&s->peer, s->ip, sizeof s->ip);
  uv_tcp_nodelay(&s->io.tcp, 1);
  log_sess(s, POSTERN_LOG_INFO, "smtpd_connect", NULL);

  if (!cidr_list_match(srv->accept, srv->naccept,
                       (const struct sockaddr *)&s->peer)) {
    /* Never an open relay: refuse before any command can be given. */
    log_sess(s, POSTERN_LOG_WARN, "smtpd_reject", "accept_from");
    reply(s, "554 5.7.1 Access denied: client not in accept_from");
    session_close(s);
    return;
  }
  s->counted = true;
  unsigned n = atomic_fetch_add(&srv->nsessions, 1) + 1;
  if (n > srv->max_sessions || lc->closing) {
    /* A refused session does not hold a slot while it lingers. */
    atomic_fetch_sub(&srv->nsessions, 1);
    s->counted = false;
    log_sess(s, POSTERN_LOG_WARN, "smtpd_reject", "max_sessions");
    replyf(s, "421 4.3.2 %s Error: too many sessions, try again later",
           srv->hostname);
    session_close(s);
    return;
  }
  update_reading(s);
  if (srv->greet_delay_ms > 0) {
    uv_timer_start(&s->timer, on_timer, srv->greet_delay_ms, 0);
    return;
  }
  set_state(s, SMTP_SERVER__S_CONNECTED);
  replyf(s, "220 %s ESMTP Postern", srv->hostname);
  flush(s);
  arm_timer(s);
}

/* ---- cross-thread: txn_done, stop, close ------------------------------ */

static void txn_reply(struct session *s, struct smtp_server_txn *t) {
  const char *id = t->has_id ? t->id : s->qid;
  switch (t->status) {
  case 0:
    replyf(s, "250 2.0.0 Ok: queued as %s", id);
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
      postern_log_uint(&r, "nrcpt", s->nrcpt);
      postern_log_uint(&r, "size", s->body_len - s->hdr_len);
      postern_log_end(&r);
    }
    break;
  case POSTERN_EQFULL:
    reply(s, "452 4.3.1 Error: queue full, try again later");
    break;
  case POSTERN_ENOSPC:
  case POSTERN_EIO:
    reply(s, "452 4.3.1 Error: insufficient system storage, try again later");
    break;
  case POSTERN_ETOOBIG:
    reply(s, "552 5.3.4 Error: message too big");
    break;
  default:
    reply(s, "451 4.3.0 Error: local error in processing, try again later");
    break;
  }
  if (t->status != 0)
    log_sess(s, POSTERN_LOG_WARN, "smtpd_queue_failed",
             postern_strerror(t->status));
}

static void process_done(struct loop_ctx *lc) {
  pthread_mutex_lock(&lc->mu);
  struct smtp_server_txn *t = lc->done;
  lc->done = NULL;
  pthread_mutex_unlock(&lc->mu);
  /* The list is in reverse order of arrival, which does not matter: each
   * session has at most one transaction in flight. */
  while (t != NULL) {
    struct smtp_server_txn *next = t->next;
    struct session *s = t->s;
    s->txn_pending = false;
    if (s->st == SMTP_SERVER__S_CLOSED) {
      session_free(s); /* the client left before the commit finished */
    } else if (!s->handles_closing && s->st == SMTP_SERVER__S_QUEUEING) {
      txn_reply(s, t);
      txn_reset(s);
      set_state(s, SMTP_SERVER__S_READY);
      if (s->close_after || lc->closing) {
        reply(s, "421 4.3.2 Service shutting down, closing connection");
        session_close(s);
      } else {
        arm_timer(s);
        pump(s);
        update_reading(s);
      }
    }
    /* else: handles are closing; on_handle_close frees the session. */
    t = next;
  }
}

static void on_listener_close(uv_handle_t *h) {
  struct loop_ctx *lc = h->data;
  lc->listener_open = false;
  lc_maybe_finish(lc);
}

static void lc_stop_listening(struct loop_ctx *lc) {
  if (lc->listener_open && !lc->listener_closing) {
    lc->listener_closing = true;
    uv_close((uv_handle_t *)&lc->listener, on_listener_close);
  }
}

static void srv_free(struct smtp_server *srv) {
  for (unsigned i = 0; i < srv->nloops; i++)
    pthread_mutex_destroy(&srv->lcs[i].mu);
  free(srv->lcs);
  free(srv->accept);
  free(srv);
}

static void on_async_close(uv_handle_t *h) {
  struct loop_ctx *lc = h->data;
  struct smtp_server *srv = lc->srv;
  if (atomic_fetch_sub(&srv->handles_live, 1) == 1) {
    void (*cb)(void *) = srv->closed_cb;
    void *ud = srv->closed_ud;
    srv_free(srv);
    if (cb)
      cb(ud);
  }
}

static void lc_maybe_finish(struct loop_ctx *lc) {
  if (!lc->closing || lc->listener_open || lc->nsess > 0 || lc->async_closing)
    return;
  lc->async_closing = true;
  uv_close((uv_handle_t *)&lc->async, on_async_close);
}

static void on_async(uv_async_t *a) {
  struct loop_ctx *lc = a->data;
  struct smtp_server *srv = lc->srv;
  process_done(lc);
  if (atomic_load(&srv->stop_req) && !lc->stopping) {
    lc->stopping = true;
    lc_stop_listening(lc);
  }
  if (atomic_load(&srv->close_req) && !lc->closing) {
    lc->closing = true;
    lc_stop_listening(lc);
    for (struct session *s = lc->sessions, *next; s != NULL; s = next) {
      next = s->next;
      if (s->txn_pending) {
        s->close_after = true;
      } else if (!s->handles_closing && s->st != SMTP_SERVER__S_CLOSING) {
        reply(s, "421 4.3.2 Service shutting down, closing connection");
        session_close(s);
      }
    }
    lc_maybe_finish(lc);
  }
}

void smtp_server_txn_done(struct smtp_server_txn *txn, int status,
                          const char *id) {
  struct loop_ctx *lc = txn->s->lc;
  txn->status = status;
  txn->has_id = id != NULL;
  if (id != NULL) {
    snprintf(txn->id, sizeof txn->id, "%s", id);
  }
  pthread_mutex_lock(&lc->mu);
  txn->next = lc->done;
  lc->done = txn;
  pthread_mutex_unlock(&lc->mu);
  uv_async_send(&lc->async);
}

void smtp_server_stop(struct smtp_server *srv) {
  atomic_store(&srv->stop_req, true);
  for (unsigned i = 0; i < srv->nloops; i++)
    uv_async_send(&srv->lcs[i].async);
}

void smtp_server_close(struct smtp_server *srv, void (*closed_cb)(void *),
                       void *ud) {
  srv->closed_cb = closed_cb;
  srv->closed_ud = ud;
  /* A loop woken by something else may see close_req, and the last loop
   * to finish frees the server, before this loop has signalled them all:
   * hold one reference of our own until it has. */
  atomic_fetch_add(&srv->handles_live, 1);
  atomic_store(&srv->close_req, true);
  for (unsigned i = 0; i < srv->nloops; i++)
    uv_async_send(&srv->lcs[i].async);
  if (atomic_fetch_sub(&srv->handles_live, 1) == 1) {
    /* Every loop finished meanwhile: this thread is the last one out. */
    void (*cb)(void *) = srv->closed_cb;
    void *cud = srv->closed_ud;
    srv_free(srv);
    if (cb)
      cb(cud);
  }
}

unsigned smtp_server_sessions(const struct smtp_server *srv) {
  return atomic_load(&((struct smtp_server *)srv)->nsessions);
}

unsigned smtp_server_port(const struct smtp_server *srv) {
  return srv->port;
}

/* ---- start ------------------------------------------------------------ */

int smtp_server_addr_parse(const char *s, struct sockaddr_storage *out) {
  char host[INET6_ADDRSTRLEN + 1];
  const char *port;
  memset(out, 0, sizeof *out);
  if (s[0] == '[') {
    const char *e = strchr(s, ']');
    if (e == NULL || e[1] != ':' || (size_t)(e - s - 1) >= sizeof host)
      return POSTERN_ESYNTAX;
    memcpy(host, s + 1, (size_t)(e - s - 1));
    host[e - s - 1] = '\0';
    port = e + 2;
  } else {
    const char *c = strrchr(s, ':');
    if (c == NULL || (size_t)(c - s) >= sizeof host ||
        memchr(s, ':', (size_t)(c - s)))
      return POSTERN_ESYNTAX;
    memcpy(host, s, (size_t)(c - s));
    host[c - s] = '\0';
    port = c + 1;
  }
  size_t pn = strspn(port, "0123456789");
  if (pn == 0 || pn > 5 || port[pn] != '\0')
    return POSTERN_ESYNTAX;
  unsigned long p = strtoul(port, NULL, 10);
  if (p > 65535)
    return POSTERN_ESYNTAX;
  struct sockaddr_in *in = (struct sockaddr_in *)out;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
  if (s[0] != '[' && inet_pton(AF_INET, host, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)p);
    return 0;
  }
  if (s[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)p);
    return 0;
  }
  return POSTERN_ESYNTAX;
}

/* One listening socket, bound with SO_REUSEPORT (see open_listeners).
 * IPv6 sockets are IPv6-only: listening on both families takes two `listen`
 * lines, and a [::] socket never silently takes over IPv4. */
static int open_listener(const struct sockaddr_storage *addr, int *out) {
  int fd =
      socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return postern_err_from_errno(errno);
  int one = 1;
  socklen_t alen = addr->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                              : sizeof(struct sockaddr_in6);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
      (addr->ss_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
      bind(fd, (const struct sockaddr *)addr, alen) < 0 ||
      listen(fd, 511) < 0) {
    int e = postern_err_from_errno(errno);
    close(fd);
    return e;
  }
  *out = fd;
  return 0;
}

/*
 * Gives each of the n loops a listening descriptor in fds. Loops share
 * sockets in groups of at most LOOPS_PER_LISTENER (loop i uses socket
 * i % groups, through its own dup), and the groups share the port through
 * SO_REUSEPORT. Within a group the connection goes to whichever loop
 * accepts first, i.e. to a loop that is free: SO_REUSEPORT alone hashes
 * connections evenly over the loops whatever their load, and a loop that
 * also carries a busy destination's deliveries then holds its sessions
 * back while the others idle (about 10% of the throughput on two cores
 * with lock-step clients). Bounding the group keeps the wake-ups per
 * connection (every loop of the group is woken) small on big machines.
 * On failure nothing is left open. Returns 0 or a POSTERN code.
 */
static int open_listeners(struct sockaddr_storage *a, int *fds, unsigned n,
                          unsigned *port) {
  unsigned groups = (n + LOOPS_PER_LISTENER - 1) / LOOPS_PER_LISTENER;
  unsigned made = 0;
  int r = 0;
  for (; made < n; made++) {
    if (made < groups) {
      r = open_listener(a, &fds[made]);
      if (r == 0 && made == 0) {
        /* Port 0 asks for any port: the other sockets take the same. */
        socklen_t sl = sizeof *a;
        getsockname(fds[0], (struct sockaddr *)a, &sl);
        *port = ntohs(a->ss_family == AF_INET
                          ? ((struct sockaddr_in *)a)->sin_port
                          : ((struct sockaddr_in6 *)a)->sin6_port);
      }
    } else {
      fds[made] = fcntl(fds[made % groups], F_DUPFD_CLOEXEC, 0);
      r = fds[made] < 0 ? postern_err_from_errno(errno) : 0;
    }
    if (r < 0)
      break;
  }
  if (r < 0) {
    while (made > 0)
      close(fds[--made]);
  }
  return r;
}

int smtp_server_start(uv_loop_t **loops, unsigned nloops,
                      const struct smtp_server_opts *o,
                      const struct smtp_server_handlers *h, void *ud,
                      struct smtp_server **out) {
  if (loops == NULL || nloops == 0 || o == NULL || h == NULL ||
      h->assign_id == NULL || h->message == NULL || o->listen == NULL)
    return POSTERN_EINVAL;
  struct smtp_server *srv = calloc(1, sizeof *srv);
  if (srv == NULL)
    return POSTERN_ENOMEM;
  int r = smtp_server_addr_parse(o->listen, &srv->addr);
  if (r < 0) {
    free(srv);
    return r;
  }
  srv->h = *h;
  srv->ud = ud;
  srv->tls = o->tls;
  srv->max_size = o->max_message_size ? o->max_message_size : 32u << 20;
  srv->max_rcpt = o->max_recipients ? o->max_recipients : 1000;
  srv->max_sessions = o->max_sessions ? o->max_sessions : 2000;
  srv->timeout_ms = o->timeout_ms ? o->timeout_ms : 5 * 60 * 1000;
  srv->session_timeout_ms =
      o->session_timeout_ms ? o->session_timeout_ms : 60 * 60 * 1000;
  srv->max_commands = o->max_commands ? o->max_commands : 100000;
  srv->max_junk = o->max_junk_commands ? o->max_junk_commands : 100;
  srv->max_errors = o->max_errors ? o->max_errors : 20;
  srv->greet_delay_ms = o->greet_delay_ms;
  if (o->hostname) {
    if (strlen(o->hostname) >= sizeof srv->hostname ||
        !smtp_server__helo_ok(o->hostname, strlen(o->hostname))) {
      free(srv);
      return POSTERN_EINVAL;
    }
    strcpy(srv->hostname, o->hostname);
  } else if (gethostname(srv->hostname, sizeof srv->hostname - 1) < 0 ||
             srv->hostname[0] == '\0') {
    strcpy(srv->hostname, "localhost");
  }
  size_t na = o->naccept_from ? o->naccept_from : 2;
  srv->accept = calloc(na, sizeof *srv->accept);
  srv->lcs = calloc(nloops, sizeof *srv->lcs);
  int *fds = calloc(nloops, sizeof *fds);
  if (srv->accept == NULL || srv->lcs == NULL || fds == NULL) {
    free(fds);
    free(srv->accept);
    free(srv->lcs);
    free(srv);
    return POSTERN_ENOMEM;
  }
  if (o->naccept_from) {
    memcpy(srv->accept, o->accept_from, na * sizeof *srv->accept);
  } else {
    cidr_parse("127.0.0.0/8", &srv->accept[0]);
    cidr_parse("::1", &srv->accept[1]);
  }
  srv->naccept = na;
  srv->nloops = nloops;

  /* Every fallible socket step first, so a failure leaves no uv handle. */
  struct sockaddr_storage a = srv->addr;
  r = open_listeners(&a, fds, nloops, &srv->port);
  if (r < 0) {
    free(fds);
    free(srv->accept);
    free(srv->lcs);
    free(srv);
    return r;
  }
  for (unsigned i = 0; i < nloops; i++) {
    struct loop_ctx *lc = &srv->lcs[i];
    lc->srv = srv;
    lc->loop = loops[i];
    lc->index = i;
    pthread_mutex_init(&lc->mu, NULL);
    uv_tcp_init(lc->loop, &lc->listener);
    lc->listener.data = lc;
    lc->async.data = lc;
    uv_async_init(lc->loop, &lc->async, on_async);
    uv_tcp_open(&lc->listener, fds[i]);
    lc->listener_open = true;
    atomic_fetch_add(&srv->handles_live, 1);
    r = uv_listen((uv_stream_t *)&lc->listener, 511, on_connection);
    if (r < 0) {
      /* listen(2) already succeeded above, so this is not expected; the
       * handles are closed by the usual path once the loops run. */
      postern_log(POSTERN_LOG_ERROR, "smtpd_listen_failed", "error",
                  uv_strerror(r), NULL);
    }
  }
  free(fds);
  {
    struct postern_log_rec lr;
    postern_log_begin(&lr, POSTERN_LOG_INFO, "smtpd_listen");
    postern_log_str(&lr, "listen", o->listen);
    postern_log_uint(&lr, "port", srv->port);
    postern_log_uint(&lr, "loops", nloops);
    postern_log_end(&lr);
  }
  *out = srv;
  return 0;
}
