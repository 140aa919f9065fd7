/*
 * net/smtp_client.c - the SMTP client state machine (see smtp_client.h).
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
 * Ownership and lifetime: the client owns two libuv handles, the TCP handle
 * and a timer. The TCP handle is closed as soon as the session fails (so
 * libuv stops reading the caller's body at once) or at smtp_client_close();
 * the timer only at smtp_client_close(). The struct is freed in the close
 * callback of whichever handle closes last, always after the caller asked
 * for it. The timer doubles as the way to report synchronous failures
 * later (fail_soon), so no callback ever runs inside the caller's call.
 *
 * Input: bytes read (decrypted when TLS is on) are appended to `rbuf` and
 * parsed by smtp_reply_parse(); the buffer is bounded, so a hostile server
 * gets a protocol error, never unbounded memory.
 */
#include "net/smtp_client.h"
#include "net/smtp_client_internal.h"
#include "net/smtp_syntax.h"
#include "net/stream.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/postern_err.h"
#include "base/postern_log.h"

enum rcpt_state { RCPT_PENDING, RCPT_ACCEPTED, RCPT_FINAL };

/* The tag of a write (net/stream.h): only a body write's completion moves
 * the body on. */
enum write_kind { WRITE_CMD, WRITE_BODY };

struct smtp_client {
  struct stream io; /* the TCP connection, plaintext or TLS */
  uv_timer_t timer;
  uv_connect_t connect_req;
  uv_loop_t *loop;
  enum smtp_client_state state;
  int open_handles;
  bool tcp_closed;
  bool close_requested;
  bool dead; /* the session can no longer be used */
  int deferred_status;
  char deferred_reason[128]; /* why, when known (connect/bind errors) */

  uint64_t connect_to, command_to, data_to;
  char *helo_name, *mx_name, *session_key;
  char *sni; /* NULL: mx_name */
  struct sockaddr_storage local_addr;
  bool has_local;
  struct sockaddr_storage peer;
  char peer_str[64];
  struct tls_ctx *tls_ctx;
  bool want_starttls;

  smtp_client_ready_cb ready_cb;
  void *ready_arg;
  smtp_client_sent_cb sent_cb;
  void *sent_arg;
  smtp_client_close_cb close_cb;
  void *close_arg;

  struct smtp_client_facts facts;
  bool facts_valid;
  struct smtp_reply last_reply;
  char tls_error[SMTP_REPLY_TEXT_MAX + 96];

  char *rbuf;
  size_t rlen;
  char *raw;

  char *cmd;
  size_t cmdlen, cmdcap;

  /* The transaction in progress. */
  const struct smtp_message *msg;
  struct smtp_result *results;
  uint8_t *rstate;
  /* The previous message's results: a sent_cb may call smtp_client_send()
   * and still read what it was given. */
  struct smtp_result *prev_results;
  size_t rcpt_reply; /* index of the RCPT whose reply comes next */
  size_t rcpt_sent;  /* RCPTs written so far (no pipelining) */
  size_t accepted;   /* RCPTs answered 2xx */
  bool pipelined;
  bool mail_ok;
  bool ignore_dot; /* the "." answers a 354 we did not want */
  bool need_rset;
  bool local_finish; /* results decided locally; sent_cb from the timer */
  size_t body_off;
  bool body_line_start;
  bool body_queued; /* the terminating "." is written or queued */
  unsigned messages;

  /* A message queued behind the one in progress (smtp_client_send_next).
   * Its MAIL, RCPT and DATA go out right behind the current "." (RFC 2920
   * §3.1: message content may open a pipelined group), so one write and
   * one read carry the end of one message and the start of the next. */
  const struct smtp_message *next_msg;
  smtp_client_sent_cb next_cb;
  void *next_arg;
  char *next_env; /* its commands, borrowed by a write in progress */
  size_t next_env_len;
  /* The commands of the chained message now in progress: a write may
   * still hold them until the server has answered them. */
  char *cur_env;
  bool next_env_sent;
};

_Static_assert(BODY_BUFS <= STREAM_BUFS_MAX, "a body write fits stream_write");

static const char *const state_names[] = {
#define SMTP__STATE_NAME(name, str) str,
    SMTP_CLIENT_STATE_MAP(SMTP__STATE_NAME)
#undef SMTP__STATE_NAME
};

const char *smtp_client_state_name(enum smtp_client_state s) {
  if ((size_t)s >= sizeof state_names / sizeof state_names[0]) {
    return "unknown";
  }
  return state_names[s];
}

const char *smtp_tls_level_name(enum smtp_tls_level l) {
  switch (l) {
#define SMTP__TLS_NAME(name, str)                                              \
  case SMTP_TLS_##name:                                                        \
    return str;
    SMTP_TLS_LEVEL_MAP(SMTP__TLS_NAME)
#undef SMTP__TLS_NAME
  }
  return "unknown";
}

const char *smtp_starttls_name(enum smtp_starttls s) {
  switch (s) {
#define SMTP__STLS_NAME(name, str)                                             \
  case SMTP_STARTTLS_##name:                                                   \
    return str;
    SMTP_STARTTLS_MAP(SMTP__STLS_NAME)
#undef SMTP__STLS_NAME
  }
  return "unknown";
}

/* ---- forward declarations ---------------------------------------------- */

static void session_failed(struct smtp_client *c, int status, const char *enh,
                           const char *reason, const struct smtp_reply *remote);
static void process_input(struct smtp_client *c);
static void write_body(struct smtp_client *c);
static int write_body_chunk(struct smtp_client *c);
static void finish_txn(struct smtp_client *c, int status);
static int start_txn(struct smtp_client *c, const struct smtp_message *msg,
                     smtp_client_sent_cb cb, void *arg, bool env_sent);

/* ---- small helpers ------------------------------------------------------ */

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

static void set_state(struct smtp_client *c, enum smtp_client_state to) {
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

static bool in_setup(enum smtp_client_state s) {
  return s <= SMTP_CLIENT_EHLO_TLS;
}

static bool in_txn(enum smtp_client_state s) {
  return s >= SMTP_CLIENT_RSET && s <= SMTP_CLIENT_DOT;
}

static void arm(struct smtp_client *c, uint64_t ms);

static void make_reply(struct smtp_reply *r, int code, const char *enh,
                       const char *text) {
  memset(r, 0, sizeof *r);
  r->code = code;
  if (enh) {
    snprintf(r->enh, sizeof r->enh, "%s", enh);
    r->has_enh = true;
  }
  r->lines = 1;
  snprintf(r->text, sizeof r->text, "%s", text);
  r->text_len = strlen(r->text);
}

static enum smtp_outcome outcome_of(const struct smtp_reply *r) {
  switch (smtp_reply_class(r)) {
  case 2:
    return SMTP_OUTCOME_OK;
  case 5:
    return SMTP_OUTCOME_PERM;
  default:
    return SMTP_OUTCOME_TEMP;
  }
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

static void close_all(struct smtp_client *c) {
  set_state(c, SMTP_CLIENT_CLOSING);
  uv_timer_stop(&c->timer);
  close_tcp(c);
  if (!uv_is_closing((uv_handle_t *)&c->timer)) {
    uv_close((uv_handle_t *)&c->timer, handle_closed);
  }
}

static void on_timer(uv_timer_t *t) {
  struct smtp_client *c = t->data;
  int status = c->deferred_status;
  c->deferred_status = 0;
  if (c->close_requested) {
    /* Only QUIT waits after close was asked for. */
    close_all(c);
    return;
  }
  if (c->local_finish) {
    c->local_finish = false;
    finish_txn(c, 0);
    return;
  }
  if (status < 0) {
    const char *enh = c->state == SMTP_CLIENT_CONNECTING ? "4.4.1" : "4.4.2";
    session_failed(c, status, enh,
                   c->deferred_reason[0] ? c->deferred_reason
                                         : postern_strerror(status),
                   NULL);
    return;
  }
  char why[96];
  snprintf(why, sizeof why, "timed out in state %s",
           smtp_client_state_name(c->state));
  session_failed(c, POSTERN_ETIMEOUT, "4.4.1", why, NULL);
}

static void arm(struct smtp_client *c, uint64_t ms) {
  if (c->deferred_status < 0) {
    return; /* a failure is already due at once; keep it due */
  }
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* Reports `status` from the timer, i.e. after the current call returned. */
static void fail_soon(struct smtp_client *c, int status) {
  c->deferred_status = status;
  uv_timer_start(&c->timer, on_timer, 0, 0);
}

/* ---- writing ------------------------------------------------------------ */

/* A queued write completed (net/stream.h). */
static void write_done(void *arg, int status, int kind) {
  struct smtp_client *c = arg;
  if (c->close_requested || c->dead) {
    return;
  }
  if (status < 0) {
    session_failed(c, status, "4.4.2", "lost connection while writing", NULL);
    return;
  }
  if (kind == WRITE_BODY && c->state == SMTP_CLIENT_BODY) {
    arm(c, c->data_to);
    write_body(c);
  }
}

static int cmd_append(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int cmd_append(struct smtp_client *c, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->cmd + c->cmdlen, c->cmdcap - c->cmdlen, fmt, ap);
    va_end(ap);
    if (n < 0) {
      return POSTERN_EINTERNAL;
    }
    if ((size_t)n < c->cmdcap - c->cmdlen) {
      c->cmdlen += (size_t)n;
      return 0;
    }
    size_t cap = c->cmdcap * 2 + (size_t)n;
    char *p = realloc(c->cmd, cap);
    if (!p) {
      return POSTERN_ENOMEM;
    }
    c->cmd = p;
    c->cmdcap = cap;
  }
}

/* Writes the accumulated commands as one write (one pipelining group). A
 * failure is reported through fail_soon(). */
static void cmd_flush(struct smtp_client *c) {
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
    fail_soon(c, rc);
  }
}

static void send_cmd(struct smtp_client *c, const char *fmt, const char *arg,
                     uint64_t timeout) {
  if (cmd_append(c, fmt, arg) < 0) {
    fail_soon(c, POSTERN_ENOMEM);
    return;
  }
  cmd_flush(c);
  arm(c, timeout);
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
    uv_timer_stop(&c->timer);
    set_state(c, SMTP_CLIENT_READY);
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

/* Reads the EHLO keywords we care about (RFC 5321 §4.1.1.1: the first line
 * is the domain, every following line one extension). */
static void parse_ehlo(struct smtp_client *c, const char *raw, size_t len) {
  struct smtp_client_facts *f = &c->facts;
  f->caps = 0;
  f->size_limit = 0;
  size_t pos = 0;
  unsigned line = 0;
  while (pos < len) {
    const char *nl = memchr(raw + pos, '\n', len - pos);
    size_t end = nl ? (size_t)(nl - raw) : len;
    const char *kw = raw + pos + 4;
    size_t n = end > pos + 4 ? end - pos - 4 : 0;
    if (n > 0 && kw[n - 1] == '\r') {
      n--;
    }
    pos = end + 1;
    if (line++ == 0) {
      continue;
    }
    size_t kl = 0;
    while (kl < n && kw[kl] != ' ') {
      kl++;
    }
    static const struct {
      const char *name;
      unsigned flag;
    } known[] = {
        {"PIPELINING", SMTP_CAP_PIPELINING},
        {"STARTTLS", SMTP_CAP_STARTTLS},
        {"8BITMIME", SMTP_CAP_8BITMIME},
        {"SIZE", SMTP_CAP_SIZE},
        {"DSN", SMTP_CAP_DSN},
        {"SMTPUTF8", SMTP_CAP_SMTPUTF8},
        {"ENHANCEDSTATUSCODES", SMTP_CAP_ENHANCEDSTATUSCODES},
        {"CHUNKING", SMTP_CAP_CHUNKING},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
      if (strlen(known[i].name) == kl &&
          strncasecmp(kw, known[i].name, kl) == 0) {
        f->caps |= known[i].flag;
        if (known[i].flag == SMTP_CAP_SIZE && kl < n) {
          /* RFC 1870: SIZE [number]; ignore values we cannot parse. */
          uint64_t v = 0;
          size_t j = kl + 1;
          bool ok = j < n;
          for (; j < n && ok; j++) {
            if (kw[j] < '0' || kw[j] > '9' || v > (UINT64_MAX - 9) / 10) {
              ok = false;
            } else {
              v = v * 10 + (uint64_t)(kw[j] - '0');
            }
          }
          f->size_limit = ok ? v : 0;
        }
      }
    }
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
    session_failed(c, POSTERN_ETLS, "4.7.0", c->tls_error, NULL);
    return;
  }
  c->facts.starttls = SMTP_STARTTLS_DONE;
  fill_facts_tls(c);
  /* RFC 3207 §4.2: forget everything learnt before TLS, EHLO again. */
  c->facts.caps = 0;
  c->facts.size_limit = 0;
  set_state(c, SMTP_CLIENT_EHLO_TLS);
  send_cmd(c, "EHLO %s\r\n", c->helo_name, c->command_to);
}

static void start_tls(struct smtp_client *c) {
  /* RFC 3207 §5: plaintext the server sent after its 220 could be injected
   * by an attacker; a correct server sends nothing before the handshake. */
  if (c->rlen > 0) {
    c->facts.starttls = SMTP_STARTTLS_FAILED;
    snprintf(c->tls_error, sizeof c->tls_error,
             "server sent plaintext after its STARTTLS reply");
    session_failed(c, POSTERN_EPROTO, "4.7.0", c->tls_error, NULL);
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
  if (rc == 0) {
    set_state(c, SMTP_CLIENT_TLS_HANDSHAKE);
    rc = tls_conn_handshake(t, on_handshake, c);
  }
  if (rc < 0) {
    c->facts.starttls = SMTP_STARTTLS_FAILED;
    snprintf(c->tls_error, sizeof c->tls_error, "%s",
             t ? tls_conn_error(t) : postern_strerror(rc));
    session_failed(c, POSTERN_ETLS, "4.7.0", c->tls_error, NULL);
    return;
  }
  arm(c, c->command_to);
}

/* A reply that ends the setup: remember it and fail. */
static void setup_refused(struct smtp_client *c, const struct smtp_reply *r) {
  char why[SMTP_REPLY_TEXT_MAX + 64];
  smtp_reply_format(r, why, sizeof why);
  session_failed(c, POSTERN_EPROTO, NULL, why, r);
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
    set_state(c, SMTP_CLIENT_EHLO);
    send_cmd(c, "EHLO %s\r\n", c->helo_name, c->command_to);
    return;
  case SMTP_CLIENT_EHLO:
    if (cls == 5 && r->code != 554) {
      /* RFC 5321 §3.2: an old server refuses EHLO; try HELO. */
      set_state(c, SMTP_CLIENT_HELO);
      send_cmd(c, "HELO %s\r\n", c->helo_name, c->command_to);
      return;
    }
    if (cls != 2) {
      setup_refused(c, r);
      return;
    }
    c->facts.esmtp = true;
    parse_ehlo(c, raw, rawlen);
    if (!(c->facts.caps & SMTP_CAP_STARTTLS)) {
      c->facts.starttls = SMTP_STARTTLS_NOT_OFFERED;
      report_ready(c, 0);
    } else if (!c->want_starttls || !c->tls_ctx) {
      c->facts.starttls = SMTP_STARTTLS_NOT_WANTED;
      report_ready(c, 0);
    } else {
      set_state(c, SMTP_CLIENT_STARTTLS);
      send_cmd(c, "STARTTLS\r\n%s", "", c->command_to);
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
    parse_ehlo(c, raw, rawlen);
    report_ready(c, 0);
    return;
  default:
    /* CONNECTING and TLS_HANDSHAKE read no plaintext replies. */
    session_failed(c, POSTERN_EPROTO, "4.5.0", "unexpected reply", r);
    return;
  }
}

/* ---- transactions ------------------------------------------------------- */

static void set_result(struct smtp_client *c, size_t i,
                       const struct smtp_reply *r, bool remote,
                       const char *stage) {
  struct smtp_result *res = &c->results[i];
  res->outcome = outcome_of(r);
  res->remote = remote;
  res->reply = *r;
  res->stage = stage;
}

/* Reports the chained message as failed with r (the session is over):
 * its commands may have been written but it never reached DATA. */
static void fail_next(struct smtp_client *c, int status,
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
      res[i] = (struct smtp_result){.outcome = outcome_of(r),
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
 * follow in the input. A failure is reported through fail_soon(). */
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
    fail_soon(c, POSTERN_ENOMEM);
  }
}

static void finish_txn(struct smtp_client *c, int status) {
  struct smtp_send_result sr = {.nrcpts = c->msg->nrcpts, .rcpt = c->results};
  for (size_t i = 0; i < sr.nrcpts; i++) {
    sr.accepted += c->results[i].outcome == SMTP_OUTCOME_OK;
  }
  smtp_client_sent_cb cb = c->sent_cb;
  void *arg = c->sent_arg;
  c->msg = NULL;
  if (status == 0) {
    uv_timer_stop(&c->timer);
    set_state(c, SMTP_CLIENT_READY);
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
static void fail_pending(struct smtp_client *c, const struct smtp_reply *r,
                         bool remote, const char *stage) {
  for (size_t i = 0; i < c->msg->nrcpts; i++) {
    if (c->rstate[i] != RCPT_FINAL) {
      set_result(c, i, r, remote, stage);
      c->rstate[i] = RCPT_FINAL;
    }
  }
}

static const char *stage_of(enum smtp_client_state s) {
  switch (s) {
  case SMTP_CLIENT_RSET:
    return "RSET";
  case SMTP_CLIENT_MAIL:
    return "MAIL";
  case SMTP_CLIENT_RCPT:
    return "RCPT";
  case SMTP_CLIENT_DATA:
    return "DATA";
  case SMTP_CLIENT_BODY:
  case SMTP_CLIENT_DOT:
    return "end of DATA";
  default:
    return smtp_client_state_name(s);
  }
}

static bool param_ok(const char *s, size_t max) {
  if (!s) {
    return true;
  }
  size_t n = strlen(s);
  if (n > max) {
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch == 0x7f || ch == '<' || ch == '>') {
      return false;
    }
  }
  return true;
}

/* An optional esmtp-value: absent (NULL), or at most PARAM_MAX bytes that
 * `ok` accepts. ENVID is xtext (RFC 3461 §4.4), and so are the keywords of
 * RET and NOTIFY; ORCPT is addr-type ";" xtext (§4.2). */
static bool value_ok(const char *s, bool (*ok)(const char *, size_t)) {
  if (!s) {
    return true;
  }
  size_t n = strlen(s);
  return n <= PARAM_MAX && ok(s, n);
}

static int append_mail(struct smtp_client *c, const struct smtp_message *m) {
  unsigned caps = c->facts.caps;
  int rc = cmd_append(c, "MAIL FROM:<%s>", m->sender);
  if (rc == 0 && (caps & SMTP_CAP_SIZE)) {
    rc = cmd_append(c, " SIZE=%zu", m->body_len);
  }
  if (rc == 0 && m->body_8bit && (caps & SMTP_CAP_8BITMIME)) {
    rc = cmd_append(c, " BODY=8BITMIME");
  }
  if (rc == 0 && m->smtputf8 && (caps & SMTP_CAP_SMTPUTF8)) {
    rc = cmd_append(c, " SMTPUTF8");
  }
  if (rc == 0 && (caps & SMTP_CAP_DSN) && m->ret) {
    rc = cmd_append(c, " RET=%s", m->ret);
  }
  if (rc == 0 && (caps & SMTP_CAP_DSN) && m->envid) {
    rc = cmd_append(c, " ENVID=%s", m->envid);
  }
  return rc == 0 ? cmd_append(c, "\r\n") : rc;
}

static int append_rcpt(struct smtp_client *c, const struct smtp_message *m,
                       size_t i) {
  const struct smtp_rcpt *r = &m->rcpts[i];
  bool dsn = c->facts.caps & SMTP_CAP_DSN;
  int rc = cmd_append(c, "RCPT TO:<%s>", r->addr);
  if (rc == 0 && dsn && r->notify) {
    rc = cmd_append(c, " NOTIFY=%s", r->notify);
  }
  if (rc == 0 && dsn && r->orcpt) {
    rc = cmd_append(c, " ORCPT=%s", r->orcpt);
  }
  return rc == 0 ? cmd_append(c, "\r\n") : rc;
}

/* Appends m's MAIL, every RCPT and DATA: one pipelined group. */
static int append_envelope(struct smtp_client *c,
                           const struct smtp_message *m) {
  int rc = append_mail(c, m);
  for (size_t i = 0; i < m->nrcpts && rc == 0; i++) {
    rc = append_rcpt(c, m, i);
  }
  return rc == 0 ? cmd_append(c, "DATA\r\n") : rc;
}

/* Sends what comes after RSET: MAIL (and with PIPELINING every RCPT and
 * DATA in the same write). */
static int send_envelope(struct smtp_client *c) {
  if (!c->pipelined) {
    return append_mail(c, c->msg);
  }
  c->rcpt_sent = c->msg->nrcpts;
  return append_envelope(c, c->msg);
}

/* The checks both send calls make on the caller's message. */
static int msg_valid(const struct smtp_message *msg) {
  if (!msg || !msg->sender || !msg->rcpts || msg->nrcpts == 0 ||
      (!msg->body && msg->body_len > 0)) {
    return POSTERN_EINVAL;
  }
  if (!param_ok(msg->sender, ADDR_MAX) ||
      !value_ok(msg->ret, smtp_syntax_xtext_ok) ||
      !value_ok(msg->envid, smtp_syntax_xtext_ok)) {
    return POSTERN_EINVAL;
  }
  for (size_t i = 0; i < msg->nrcpts; i++) {
    const struct smtp_rcpt *r = &msg->rcpts[i];
    if (!r->addr || !r->addr[0] || !param_ok(r->addr, ADDR_MAX) ||
        !value_ok(r->notify, smtp_syntax_xtext_ok) ||
        !value_ok(r->orcpt, smtp_syntax_orcpt_ok)) {
      return POSTERN_EINVAL;
    }
  }
  return 0;
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
    set_state(c, SMTP_CLIENT_MAIL);
    arm(c, c->command_to);
    return 0;
  }
  /* Commands of an earlier chained message: all answered, or never
   * written (a chain that fell through). */
  free(c->cur_env);
  c->cur_env = NULL;
  /* Messages this server cannot take fail here, without a command: RFC
   * 6531 §3.2 (SMTPUTF8 not offered) and RFC 1870 §6 (over the SIZE the
   * server declared). The results are reported from the timer. */
  struct smtp_reply local;
  bool refuse = false;
  if (msg->smtputf8 && !(c->facts.caps & SMTP_CAP_SMTPUTF8)) {
    make_reply(&local, 553, "5.6.7",
               "message needs SMTPUTF8, which the server does not offer");
    refuse = true;
  } else if ((c->facts.caps & SMTP_CAP_SIZE) && c->facts.size_limit > 0 &&
             msg->body_len > c->facts.size_limit) {
    char text[128];
    snprintf(text, sizeof text,
             "message size %zu exceeds the server's limit of %llu bytes",
             msg->body_len, (unsigned long long)c->facts.size_limit);
    make_reply(&local, 552, "5.3.4", text);
    refuse = true;
  }
  if (refuse) {
    for (size_t i = 0; i < msg->nrcpts; i++) {
      set_result(c, i, &local, false, "MAIL");
      c->rstate[i] = RCPT_FINAL;
    }
    set_state(c, SMTP_CLIENT_MAIL);
    c->local_finish = true;
    uv_timer_start(&c->timer, on_timer, 0, 0);
    return 0;
  }
  int rc = 0;
  if (c->need_rset) {
    /* RFC 2920 §3.1: RSET may be pipelined with what follows. */
    rc = cmd_append(c, "RSET\r\n");
    if (rc == 0 && c->pipelined) {
      rc = send_envelope(c);
    }
    set_state(c, SMTP_CLIENT_RSET);
  } else {
    rc = send_envelope(c);
    set_state(c, SMTP_CLIENT_MAIL);
  }
  c->need_rset = true;
  if (rc < 0) {
    c->cmdlen = 0;
    fail_soon(c, rc);
    return 0;
  }
  cmd_flush(c);
  arm(c, c->command_to);
  return 0;
}

int smtp_client_send(struct smtp_client *c, const struct smtp_message *msg,
                     smtp_client_sent_cb cb, void *arg) {
  int rc = c ? msg_valid(msg) : POSTERN_EINVAL;
  if (rc != 0) {
    return rc;
  }
  if (c->close_requested) {
    return POSTERN_ESTATE;
  }
  if (c->dead) {
    return POSTERN_ECLOSED;
  }
  if (c->state != SMTP_CLIENT_READY) {
    return POSTERN_ESTATE;
  }
  return start_txn(c, msg, cb, arg, false);
}

/* Writes the chained message's commands (kept in next_env until it is
 * current). A failure is reported through fail_soon(). */
static void write_next_env(struct smtp_client *c) {
  uv_buf_t b = uv_buf_init(c->next_env, (unsigned)c->next_env_len);
  c->next_env_sent = true;
  int rc = stream_write(&c->io, &b, 1, STREAM_BORROW, WRITE_CMD);
  if (rc < 0) {
    fail_soon(c, rc);
  }
}

int smtp_client_send_next(struct smtp_client *c, const struct smtp_message *msg,
                          smtp_client_sent_cb cb, void *arg) {
  int rc = c ? msg_valid(msg) : POSTERN_EINVAL;
  if (rc != 0) {
    return rc;
  }
  if (c->close_requested) {
    return POSTERN_ESTATE;
  }
  if (c->dead) {
    return POSTERN_ECLOSED;
  }
  /* Only behind a transaction that is on the wire, on a pipelining
   * server, and only a message the server can take as it is (the local
   * refusals of smtp_client_send need no chaining). */
  if (!in_txn(c->state) || c->next_msg || c->local_finish || !c->msg ||
      !(c->facts.caps & SMTP_CAP_PIPELINING) ||
      (msg->smtputf8 && !(c->facts.caps & SMTP_CAP_SMTPUTF8)) ||
      ((c->facts.caps & SMTP_CAP_SIZE) && c->facts.size_limit > 0 &&
       msg->body_len > c->facts.size_limit)) {
    return POSTERN_ESTATE;
  }
  c->cmdlen = 0;
  if ((rc = append_envelope(c, msg)) < 0) {
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

/* Pulls the next piece of the body: the stored body is CRLF lines without
 * dot-stuffing; RFC 5321 §4.5.2 wants a '.' added before every line that
 * starts with one. The buffers point into the caller's body; only the
 * added dots and the terminator are ours (static). */
/* Writes the body from body_off, chunk by chunk while the kernel takes
 * each at once; a chunk that has to wait continues from its completion
 * (write_done_common). */
static void write_body(struct smtp_client *c) {
  while (write_body_chunk(c) == 1 && c->state == SMTP_CLIENT_BODY) {
    arm(c, c->data_to);
  }
}

/* One chunk; returns stream_write's answer (a failure is reported through
 * fail_soon). */
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
    set_state(c, SMTP_CLIENT_DOT);
    if (c->next_msg && !c->next_env_sent) {
      /* RFC 2920 §3.1: the chained message's commands share this write. */
      bufs[nb++] = uv_buf_init(c->next_env, (unsigned)c->next_env_len);
      c->next_env_sent = true;
    }
  }
  int rc = stream_write(&c->io, bufs, nb, STREAM_BORROW, WRITE_BODY);
  if (rc < 0) {
    fail_soon(c, rc);
  }
  return rc;
}

static void txn_reply(struct smtp_client *c, const struct smtp_reply *r) {
  int cls = smtp_reply_class(r);
  const char *stage = stage_of(c->state);
  if (r->code == 421) {
    /* RFC 5321 §3.8: the server is closing; whatever is not final gets
     * its 421, and the session is over. */
    session_failed(c, POSTERN_ECLOSED, NULL, NULL, r);
    return;
  }
  switch (c->state) {
  case SMTP_CLIENT_RSET:
    if (cls != 2) {
      session_failed(c, POSTERN_EPROTO, NULL, NULL, r);
      return;
    }
    set_state(c, SMTP_CLIENT_MAIL);
    if (!c->pipelined) {
      if (send_envelope(c) < 0) {
        fail_soon(c, POSTERN_ENOMEM);
        return;
      }
      cmd_flush(c);
    }
    arm(c, c->command_to);
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
        finish_txn(c, 0);
        return;
      }
    }
    set_state(c, SMTP_CLIENT_RCPT);
    if (!c->pipelined) {
      if (append_rcpt(c, c->msg, c->rcpt_sent++) < 0) {
        fail_soon(c, POSTERN_ENOMEM);
        return;
      }
      cmd_flush(c);
    }
    arm(c, c->command_to);
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
      set_state(c, SMTP_CLIENT_RCPT);
      if (!c->pipelined) {
        if (append_rcpt(c, c->msg, c->rcpt_sent++) < 0) {
          fail_soon(c, POSTERN_ENOMEM);
          return;
        }
        cmd_flush(c);
      }
      arm(c, c->command_to);
      return;
    }
    if (!c->pipelined && c->accepted == 0) {
      finish_txn(c, 0);
      return;
    }
    set_state(c, SMTP_CLIENT_DATA);
    if (!c->pipelined) {
      send_cmd(c, "DATA\r\n%s", "", c->command_to);
    } else {
      arm(c, c->command_to);
    }
    return;
  }
  case SMTP_CLIENT_DATA:
    if (r->code == 354) {
      if (c->accepted == 0) {
        /* RFC 2920 §3.1: a server should refuse DATA when no RCPT was
         * accepted; if it does not, end the empty message at once. */
        c->ignore_dot = true;
        set_state(c, SMTP_CLIENT_DOT);
        send_cmd(c, ".\r\n%s", "", c->data_to);
        return;
      }
      set_state(c, SMTP_CLIENT_BODY);
      arm(c, c->data_to);
      write_body(c);
      return;
    }
    if (c->accepted > 0 || c->mail_ok) {
      fail_pending(c, r, true, stage);
    }
    finish_txn(c, 0);
    return;
  case SMTP_CLIENT_BODY:
  case SMTP_CLIENT_DOT:
    if (c->state == SMTP_CLIENT_BODY || r->code == 354 || cls == 3) {
      /* A reply before our "." was sent (or a nonsense one): the server
       * gave up on the message; the session cannot be trusted. */
      fail_pending(c, r, true, stage);
      session_failed(c, POSTERN_EPROTO, NULL, NULL, r);
      return;
    }
    if (!c->ignore_dot) {
      fail_pending(c, r, true, stage);
      if (cls == 2) {
        c->messages++;
      }
    }
    /* RFC 5321 §4.1.1.4: the reply to the final "." ends the transaction
     * whatever its code, so the next MAIL needs no RSET. */
    c->need_rset = false;
    finish_txn(c, 0);
    return;
  default:
    return;
  }
}

/* ---- failures ----------------------------------------------------------- */

static void session_failed(struct smtp_client *c, int status, const char *enh,
                           const char *reason,
                           const struct smtp_reply *remote) {
  if (c->dead) {
    return;
  }
  enum smtp_client_state st = c->state;
  c->dead = true;
  c->facts.failed_state = st;
  uv_timer_stop(&c->timer);
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
  set_state(c, SMTP_CLIENT_FAILED);
  if (in_setup(st)) {
    if (!remote) {
      /* A local reason: keep it as the last reply for the caller's logs. */
      make_reply(&c->last_reply, 421, enh ? enh : "4.4.2",
                 reason ? reason : postern_strerror(status));
      c->last_reply.code = 0;
    }
    report_ready(c, status);
    return;
  }
  struct smtp_reply made;
  if (!remote) {
    make_reply(&made, 421, enh ? enh : "4.4.2",
               reason ? reason : postern_strerror(status));
  }
  if (in_txn(st) && c->msg) {
    fail_pending(c, remote ? remote : &made, remote != NULL, stage_of(st));
    finish_txn(c, status);
  }
  if (c->next_msg) {
    /* Unless the caller closed the client from the callback above. */
    fail_next(c, status, remote ? remote : &made, remote != NULL);
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
  if (in_setup(c->state)) {
    c->last_reply = *r;
    setup_reply(c, r, raw, rawlen);
  } else if (in_txn(c->state)) {
    txn_reply(c, r);
  } else if (c->state == SMTP_CLIENT_QUIT) {
    close_all(c);
  } else {
    /* READY: a reply nobody asked for - usually a 421 before the server
     * hangs up an idle session (RFC 5321 §3.8). */
    c->last_reply = *r;
    session_failed(c, POSTERN_ECLOSED, NULL, NULL, r);
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
      session_failed(c, POSTERN_EPROTO, "4.5.0", reason, NULL);
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
        session_failed(c, POSTERN_ENOMEM, "4.3.0", "out of memory", NULL);
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
      session_failed(c, POSTERN_EPROTO, "4.5.0", "reply too long", NULL);
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
  session_failed(c, status, "4.4.2", reason, NULL);
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
      session_failed(c, POSTERN_ETLS, "4.7.0", c->tls_error, NULL);
    }
    return;
  }
  while (!c->dead && c->state != SMTP_CLIENT_TLS_HANDSHAKE) {
    size_t room = RBUF_CAP - c->rlen;
    if (room == 0) {
      session_failed(c, POSTERN_EPROTO, "4.5.0", "reply too long", NULL);
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
    session_failed(c, postern_err_from_errno(-status), "4.4.1", reason, NULL);
    return;
  }
  int rc = uv_read_start((uv_stream_t *)&c->io.tcp, on_alloc, on_read);
  if (rc < 0) {
    session_failed(c, postern_err_from_errno(-rc), "4.4.1", uv_strerror(rc),
                   NULL);
    return;
  }
  set_state(c, SMTP_CLIENT_GREETING);
  /* RFC 5321 §4.5.3.2.1: the greeting gets the command timeout. */
  arm(c, c->command_to);
}

/* ---- public entry points ------------------------------------------------ */

int smtp_client_connect(struct smtp_client **out, uv_loop_t *loop,
                        const struct smtp_client_opts *opts,
                        const struct sockaddr *addr, const char *mx_name,
                        smtp_client_ready_cb ready_cb, void *arg) {
  if (!out || !loop || !opts || !addr || !mx_name || !mx_name[0] ||
      !opts->helo_name || !param_ok(opts->helo_name, 255) ||
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
  c->io.tcp.data = c;
  c->timer.data = c;
  c->connect_req.data = c;
  c->open_handles = 2;
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
    fail_soon(c, postern_err_from_errno(-rc));
    return 0;
  }
  arm(c, c->connect_to);
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
    set_state(c, SMTP_CLIENT_QUIT);
    c->cmdlen = 0;
    if (cmd_append(c, "QUIT\r\n") == 0) {
      cmd_flush(c);
      /* The QUIT reply is a courtesy (RFC 5321 §4.1.1.10); do not wait
       * long for it. */
      arm(c, c->command_to < 30000 ? c->command_to : 30000);
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

enum smtp_client_state smtp_client_state(const struct smtp_client *c) {
  return c->state;
}

const struct smtp_client_facts *smtp_client_facts(const struct smtp_client *c) {
  return c->facts_valid ? &c->facts : NULL;
}

unsigned smtp_client_messages(const struct smtp_client *c) {
  return c->messages;
}
