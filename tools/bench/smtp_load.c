/*
 * smtp_load.c - an SMTP load generator for tools/bench/delivery, on libuv and
 * BoringSSL, self-contained (it shares no code with net/, which changes
 * under it).
 *
 * Two jobs, one program:
 *   - inject mail into a relay: plaintext SMTP to one address, the
 *     recipients spread over many domains (smtp-source has one recipient
 *     domain per process, and the delivery benchmark has a thousand);
 *   - measure the TLS sink's ceiling: STARTTLS to many MX addresses, each
 *     recipient sent to the address of its domain's MX, TLS sessions resumed
 *     per address as a relay would, so the benchmark can say how close to
 *     that ceiling each relay comes.
 *
 *   smtp_load --rcpts FILE [--connect HOST:PORT] [--sessions S]
 *             [--per-conn M] [--size BYTES] [--starttls] [--no-resume]
 *             [--no-pipelining] [--from ADDR] [--helo NAME]
 *             [--timeout SECONDS]
 *
 * FILE has one message per line: "RCPT" (sent to --connect) or
 * "ADDR:PORT RCPT" (sent to that IPv4 address). Each message has one
 * recipient and a body of about BYTES octets. Messages for one target are
 * cut into connections of at most M messages (default 100), in file order;
 * connections to different targets are interleaved so every target is busy
 * at once; S connections (default 20) run at the same time.
 *
 * Per message: MAIL, RCPT and DATA in one write when the server offers
 * PIPELINING (RFC 2920; DATA ends the group), the body after 354, and the
 * next message only after the reply to its end of data. Any unexpected
 * reply or a broken connection fails the messages it concerns; nothing is
 * retried. With --starttls a server that does not offer STARTTLS or a
 * failed handshake fails the connection's messages. Certificates are not
 * verified: the source measures the sink, it does not judge it.
 *
 * Output: one JSON object on standard output at the end: messages sent and
 * failed, connections, TLS handshakes (full, resumed), the first errors,
 * elapsed seconds and messages per second. Exit status 0 when every message
 * was accepted, 1 when some failed, 2 on a usage error.
 *
 * Ownership: the session table owns each session; a session owns its SSL
 * (and through it both memory BIOs) and is freed only in its close
 * callback. One thread, one loop.
 */
#include "base/postern_json.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_TARGETS 4096
#define REPLY_MAX 4096
#define MAX_ERRORS 5

/* ---- configuration and the work list ---- */

struct target {
  char text[64];
  struct sockaddr_in addr;
  SSL_SESSION *session; /* the latest resumable session, or NULL */
};

struct msg {
  const char *rcpt;
};

struct batch {
  int target;
  size_t first, count; /* indexes into the target's message list */
};

static struct target targets[MAX_TARGETS];
static size_t ntargets;
static struct msg **tmsgs; /* per target: its messages in file order */
static size_t *tcount, *tcap;
static struct batch *batches;
static size_t nbatches, next_batch;

static int opt_sessions = 20;
static int opt_per_conn = 100;
static size_t opt_size = 1024;
static bool opt_starttls, opt_resume = true, opt_pipelining = true;
static const char *opt_from = "bench@source.test";
static const char *opt_helo = "source.test";
static uint64_t opt_timeout_ms = 60000;

static SSL_CTX *client_ctx;
static char *body; /* the message body after the headers, ending CRLF.CRLF */
static size_t body_len;

static struct {
  uint64_t sent, failed, connections, connect_failed, tls, resumed;
  char errors[MAX_ERRORS][256];
  int nerrors;
} stats;

static void note_error(const char *fmt, ...) {
  if (stats.nerrors >= MAX_ERRORS)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(stats.errors[stats.nerrors++], sizeof stats.errors[0], fmt, ap);
  va_end(ap);
}

/* ---- a session ---- */

/* What the next reply answers. */
#define EXPECT_MAP(X)                                                          \
  X(GREETING)                                                                  \
  X(EHLO)                                                                      \
  X(STARTTLS)                                                                  \
  X(MAIL)                                                                      \
  X(RCPT)                                                                      \
  X(DATA)                                                                      \
  X(DOT)                                                                       \
  X(RSET)                                                                      \
  X(QUIT)

enum expect {
#define X(n) E_##n,
  EXPECT_MAP(X)
#undef X
};

static const char *const expect_names[] = {
#define X(n) #n,
    EXPECT_MAP(X)
#undef X
};

struct session {
  uv_tcp_t tcp;
  uv_connect_t conn;
  uv_timer_t timer;
  int handles; /* open handles; freed when both closed */
  struct batch b;
  size_t done; /* messages of the batch finished (sent or failed) */
  bool closing, tls_on, handshaking, ehlo_tls, pipelining, starttls_offered;
  bool rcpt_ok, data_ok; /* of the message in flight */
  SSL *ssl;
  BIO *rbio, *wbio;
  enum expect q[8]; /* replies awaited, oldest first */
  int qh, qn;
  char line[REPLY_MAX];
  size_t llen;
};

static int active;
static uv_loop_t *loop;

static void session_start_next(void);
static void sess_fail_rest(struct session *s, const char *why);

static void on_handle_closed(uv_handle_t *h) {
  struct session *s = h->data;
  if (--s->handles == 0) {
    if (s->ssl)
      SSL_free(s->ssl);
    free(s);
  }
}

static void sess_close(struct session *s) {
  if (s->closing)
    return;
  s->closing = true;
  uv_timer_stop(&s->timer);
  uv_close((uv_handle_t *)&s->timer, on_handle_closed);
  uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
  active--;
  session_start_next();
}

struct wreq {
  uv_write_t w;
  char data[];
};

static void on_written(uv_write_t *w, int status) {
  (void)status; /* a failed write shows up as a read error */
  free(w);
}

static void raw_write(struct session *s, const char *p, size_t n) {
  if (n == 0 || s->closing)
    return;
  struct wreq *r = malloc(sizeof *r + n);
  if (r == NULL) {
    sess_fail_rest(s, "out of memory");
    return;
  }
  memcpy(r->data, p, n);
  uv_buf_t b = uv_buf_init(r->data, (unsigned)n);
  if (uv_write(&r->w, (uv_stream_t *)&s->tcp, &b, 1, on_written) != 0) {
    free(r);
    sess_fail_rest(s, "write failed");
  }
}

static void flush_wbio(struct session *s) {
  char buf[16384];
  int n;
  while ((n = BIO_read(s->wbio, buf, sizeof buf)) > 0)
    raw_write(s, buf, (size_t)n);
}

/* Sends SMTP text, through TLS once it is up. */
static void send_text(struct session *s, const char *p, size_t n) {
  if (s->closing)
    return;
  if (!s->tls_on) {
    raw_write(s, p, n);
    return;
  }
  size_t off = 0;
  while (off < n) {
    int w = SSL_write(s->ssl, p + off, (int)(n - off));
    if (w <= 0) {
      sess_fail_rest(s, "TLS write failed");
      return;
    }
    off += (size_t)w;
  }
  flush_wbio(s);
}

static void expect_push(struct session *s, enum expect e) {
  s->q[(s->qh + s->qn++) % 8] = e;
}

static void touch(struct session *s) {
  uv_timer_again(&s->timer);
}

/* Fails the messages of the batch not yet finished; closes the session. */
static void sess_fail_rest(struct session *s, const char *why) {
  if (s->closing)
    return;
  if (s->done < s->b.count) {
    note_error("%s: %s (%zu messages failed)", targets[s->b.target].text, why,
               s->b.count - s->done);
    stats.failed += s->b.count - s->done;
    s->done = s->b.count;
  }
  sess_close(s);
}

static void send_ehlo(struct session *s) {
  char buf[300];
  int n = snprintf(buf, sizeof buf, "EHLO %s\r\n", opt_helo);
  s->pipelining = s->starttls_offered = false;
  expect_push(s, E_EHLO);
  send_text(s, buf, (size_t)n);
}

static void send_message(struct session *s) {
  const struct msg *m = &tmsgs[s->b.target][s->b.first + s->done];
  char buf[2048];
  s->rcpt_ok = s->data_ok = false;
  int n = snprintf(buf, sizeof buf, "MAIL FROM:<%s>\r\n", opt_from);
  expect_push(s, E_MAIL);
  if (!s->pipelining) {
    send_text(s, buf, (size_t)n);
    return;
  }
  n += snprintf(buf + n, sizeof buf - (size_t)n, "RCPT TO:<%s>\r\nDATA\r\n",
                m->rcpt);
  expect_push(s, E_RCPT);
  expect_push(s, E_DATA);
  send_text(s, buf, (size_t)n);
}

static void send_quit(struct session *s) {
  expect_push(s, E_QUIT);
  send_text(s, "QUIT\r\n", 6);
}

static void next_or_quit(struct session *s) {
  if (s->done < s->b.count)
    send_message(s);
  else
    send_quit(s);
}

static void start_tls(struct session *s);

/* One complete reply (the last line of a multi-line one, with the code of
 * all of them: RFC 5321 §4.2.1). `text` is the whole last line. */
static void on_reply(struct session *s, int code, const char *text) {
  if (s->qn == 0) {
    sess_fail_rest(s, "unexpected reply");
    return;
  }
  enum expect e = s->q[s->qh];
  s->qh = (s->qh + 1) % 8;
  s->qn--;
  switch (e) {
  case E_GREETING:
    if (code != 220) {
      sess_fail_rest(s, "greeting not 220");
      return;
    }
    send_ehlo(s);
    return;
  case E_EHLO:
    if (code != 250) {
      sess_fail_rest(s, "EHLO refused");
      return;
    }
    s->pipelining = s->pipelining && opt_pipelining;
    if (opt_starttls && !s->tls_on) {
      if (!s->starttls_offered) {
        sess_fail_rest(s, "no STARTTLS offered");
        return;
      }
      expect_push(s, E_STARTTLS);
      send_text(s, "STARTTLS\r\n", 10);
      return;
    }
    next_or_quit(s);
    return;
  case E_STARTTLS:
    if (code != 220) {
      sess_fail_rest(s, "STARTTLS refused");
      return;
    }
    start_tls(s);
    return;
  case E_MAIL:
    if (code != 250) {
      /* With pipelining RCPT and DATA replies follow; they fail too. */
      if (!s->pipelining) {
        note_error("MAIL: %.200s", text);
        stats.failed++;
        s->done++;
        next_or_quit(s);
      }
      return;
    }
    if (!s->pipelining) {
      char buf[1100];
      const struct msg *m = &tmsgs[s->b.target][s->b.first + s->done];
      int n = snprintf(buf, sizeof buf, "RCPT TO:<%s>\r\n", m->rcpt);
      expect_push(s, E_RCPT);
      send_text(s, buf, (size_t)n);
    }
    return;
  case E_RCPT:
    s->rcpt_ok = code == 250 || code == 251;
    if (!s->rcpt_ok)
      note_error("RCPT: %.200s", text);
    if (!s->pipelining) {
      if (!s->rcpt_ok) {
        stats.failed++;
        s->done++;
        expect_push(s, E_RSET);
        send_text(s, "RSET\r\n", 6);
        return;
      }
      expect_push(s, E_DATA);
      send_text(s, "DATA\r\n", 6);
    }
    return;
  case E_DATA:
    if (code != 354) {
      stats.failed++;
      s->done++;
      if (s->rcpt_ok)
        note_error("DATA: %.200s", text);
      next_or_quit(s);
      return;
    }
    expect_push(s, E_DOT);
    send_text(s, body, body_len);
    return;
  case E_DOT:
    if (code == 250) {
      stats.sent++;
    } else {
      stats.failed++;
      note_error("end of data: %.200s", text);
    }
    s->done++;
    next_or_quit(s);
    return;
  case E_RSET:
    next_or_quit(s);
    return;
  case E_QUIT:
    sess_close(s);
    return;
  }
}

/* Feeds server text: lines into replies. */
static void feed(struct session *s, const char *p, size_t n) {
  for (size_t i = 0; i < n && !s->closing; i++) {
    char ch = p[i];
    if (ch != '\n') {
      if (s->llen < sizeof s->line - 1)
        s->line[s->llen++] = ch;
      continue;
    }
    if (s->llen && s->line[s->llen - 1] == '\r')
      s->llen--;
    s->line[s->llen] = '\0';
    s->llen = 0;
    if (strlen(s->line) < 3) {
      sess_fail_rest(s, "malformed reply");
      return;
    }
    /* EHLO keywords (RFC 5321 §4.1.1.1) */
    if (s->qn && s->q[s->qh] == E_EHLO && strlen(s->line) > 4) {
      const char *kw = s->line + 4;
      if (strncasecmp(kw, "PIPELINING", 10) == 0)
        s->pipelining = true;
      else if (strncasecmp(kw, "STARTTLS", 8) == 0)
        s->starttls_offered = true;
    }
    if (s->line[3] == '-')
      continue;
    int code = atoi(s->line);
    on_reply(s, code, s->line);
    if (s->tls_on == false && s->handshaking)
      return; /* bytes after 220 to STARTTLS belong to TLS (none expected) */
  }
}

static void handshake_step(struct session *s) {
  int r = SSL_do_handshake(s->ssl);
  flush_wbio(s);
  if (r == 1) {
    s->handshaking = false;
    s->tls_on = true;
    stats.tls++;
    if (SSL_session_reused(s->ssl))
      stats.resumed++;
    send_ehlo(s);
    return;
  }
  int e = SSL_get_error(s->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return;
  char buf[160];
  ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
  ERR_clear_error();
  sess_fail_rest(s, buf);
}

static void start_tls(struct session *s) {
  s->ssl = SSL_new(client_ctx);
  s->rbio = BIO_new(BIO_s_mem());
  s->wbio = BIO_new(BIO_s_mem());
  if (s->ssl == NULL || s->rbio == NULL || s->wbio == NULL) {
    BIO_free(s->rbio);
    BIO_free(s->wbio);
    s->rbio = s->wbio = NULL;
    sess_fail_rest(s, "TLS setup failed");
    return;
  }
  SSL_set_bio(s->ssl, s->rbio, s->wbio);
  SSL_set_connect_state(s->ssl);
  SSL_set_app_data(s->ssl, &targets[s->b.target]);
  struct target *t = &targets[s->b.target];
  if (opt_resume && t->session)
    SSL_set_session(s->ssl, t->session);
  s->handshaking = true;
  handshake_step(s);
}

/* BoringSSL hands over each new session (TLS 1.3: each ticket). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess) {
  struct target *t = SSL_get_app_data(ssl);
  if (t == NULL || !opt_resume)
    return 0;
  if (t->session)
    SSL_SESSION_free(t->session);
  t->session = sess;
  return 1; /* we keep the reference */
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)h;
  (void)hint;
  static char buf[65536];
  *b = uv_buf_init(buf, sizeof buf);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  struct session *s = st->data;
  if (n < 0) {
    if (s->qn == 1 && s->q[s->qh] == E_QUIT) {
      sess_close(s); /* closed right after 221 or before: fine */
      return;
    }
    sess_fail_rest(s, n == UV_EOF ? "connection closed" : uv_strerror((int)n));
    return;
  }
  if (n == 0)
    return;
  touch(s);
  if (!s->handshaking && !s->tls_on) {
    feed(s, b->base, (size_t)n);
    return;
  }
  BIO_write(s->rbio, b->base, (int)n);
  if (s->handshaking) {
    handshake_step(s);
    if (s->handshaking || s->closing)
      return;
  }
  char plain[16384];
  for (;;) {
    int r = SSL_read(s->ssl, plain, sizeof plain);
    if (r > 0) {
      feed(s, plain, (size_t)r);
      if (s->closing)
        return;
      continue;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_ZERO_RETURN && s->qn == 1 && s->q[s->qh] == E_QUIT) {
      sess_close(s);
      return;
    }
    if (e != SSL_ERROR_WANT_READ) {
      ERR_clear_error();
      sess_fail_rest(s, "TLS read failed");
      return;
    }
    break;
  }
  flush_wbio(s);
}

static void on_connected(uv_connect_t *c, int status) {
  struct session *s = c->data;
  if (s->closing)
    return;
  if (status < 0) {
    stats.connect_failed++;
    sess_fail_rest(s, uv_strerror(status));
    return;
  }
  stats.connections++;
  uv_tcp_nodelay(&s->tcp, 1);
  expect_push(s, E_GREETING);
  uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
}

static void on_timeout(uv_timer_t *t) {
  struct session *s = t->data;
  char why[64];
  snprintf(why, sizeof why, "timeout waiting for %s reply",
           s->qn ? expect_names[s->q[s->qh]] : "any");
  sess_fail_rest(s, why);
}

static void session_start_next(void) {
  while (active < opt_sessions && next_batch < nbatches) {
    struct session *s = calloc(1, sizeof *s);
    if (s == NULL) {
      fprintf(stderr, "smtp_load: out of memory\n");
      exit(1);
    }
    s->b = batches[next_batch++];
    s->tcp.data = s->timer.data = s->conn.data = s;
    uv_tcp_init(loop, &s->tcp);
    uv_timer_init(loop, &s->timer);
    s->handles = 2;
    active++;
    uv_timer_start(&s->timer, on_timeout, opt_timeout_ms, opt_timeout_ms);
    int rc = uv_tcp_connect(&s->conn, &s->tcp,
                            (const struct sockaddr *)&targets[s->b.target].addr,
                            on_connected);
    if (rc != 0) {
      stats.connect_failed++;
      sess_fail_rest(s, uv_strerror(rc));
    }
  }
}

/* ---- setup ---- */

static int target_of(const char *text) {
  for (size_t i = 0; i < ntargets; i++)
    if (strcmp(targets[i].text, text) == 0)
      return (int)i;
  if (ntargets == MAX_TARGETS) {
    fprintf(stderr, "smtp_load: more than %d targets\n", MAX_TARGETS);
    exit(2);
  }
  struct target *t = &targets[ntargets];
  char host[64];
  const char *colon = strrchr(text, ':');
  if (colon == NULL || (size_t)(colon - text) >= sizeof host ||
      strlen(text) >= sizeof t->text) {
    fprintf(stderr, "smtp_load: bad target %s (want IPv4:PORT)\n", text);
    exit(2);
  }
  memcpy(host, text, (size_t)(colon - text));
  host[colon - text] = '\0';
  int port = atoi(colon + 1);
  if (port <= 0 || port > 65535 || uv_ip4_addr(host, port, &t->addr) != 0) {
    fprintf(stderr, "smtp_load: bad target %s (want IPv4:PORT)\n", text);
    exit(2);
  }
  memcpy(t->text, text, strlen(text) + 1); /* length checked above */
  return (int)ntargets++;
}

static void add_msg(int t, const char *rcpt) {
  if (tcount[t] == tcap[t]) {
    tcap[t] = tcap[t] ? tcap[t] * 2 : 64;
    tmsgs[t] = realloc(tmsgs[t], tcap[t] * sizeof *tmsgs[t]);
    if (tmsgs[t] == NULL) {
      fprintf(stderr, "smtp_load: out of memory\n");
      exit(1);
    }
  }
  struct msg m = {strdup(rcpt)};
  if (m.rcpt == NULL) {
    fprintf(stderr, "smtp_load: out of memory\n");
    exit(1);
  }
  tmsgs[t][tcount[t]++] = m;
}

static size_t read_rcpts(const char *path, const char *connect) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    fprintf(stderr, "smtp_load: %s: %s\n", path, strerror(errno));
    exit(2);
  }
  tmsgs = calloc(MAX_TARGETS, sizeof *tmsgs);
  tcount = calloc(MAX_TARGETS, sizeof *tcount);
  tcap = calloc(MAX_TARGETS, sizeof *tcap);
  if (tmsgs == NULL || tcount == NULL || tcap == NULL)
    exit(1);
  char line[1100];
  size_t n = 0, lineno = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0' || line[0] == '#')
      continue;
    char *sp = strchr(line, ' ');
    const char *rcpt = line, *tgt = connect;
    if (sp) {
      *sp = '\0';
      tgt = line;
      rcpt = sp + 1;
    }
    if (tgt == NULL || strlen(rcpt) > 900 || strchr(rcpt, '@') == NULL) {
      fprintf(stderr, "smtp_load: %s:%zu: want [ADDR:PORT] RCPT%s\n", path,
              lineno, tgt ? "" : " (no --connect given)");
      exit(2);
    }
    add_msg(target_of(tgt), rcpt);
    n++;
  }
  fclose(f);
  /* Batches: per target in file order; round robin over the targets. */
  size_t total = 0;
  for (size_t t = 0; t < ntargets; t++)
    total += (tcount[t] + (size_t)opt_per_conn - 1) / (size_t)opt_per_conn;
  batches = calloc(total ? total : 1, sizeof *batches);
  size_t *off = calloc(ntargets ? ntargets : 1, sizeof *off);
  if (batches == NULL || off == NULL)
    exit(1);
  while (nbatches < total) {
    for (size_t t = 0; t < ntargets; t++) {
      if (off[t] >= tcount[t])
        continue;
      size_t c = tcount[t] - off[t];
      if (c > (size_t)opt_per_conn)
        c = (size_t)opt_per_conn;
      batches[nbatches++] = (struct batch){(int)t, off[t], c};
      off[t] += c;
    }
  }
  free(off);
  return n;
}

/* Headers, then lines of 76 letters to about `size` octets, then the end
 * of data. No line starts with a dot, so nothing needs stuffing. */
static void make_body(void) {
  size_t cap = opt_size + 512;
  body = malloc(cap);
  if (body == NULL)
    exit(1);
  int n = snprintf(body, cap,
                   "From: <%s>\r\nSubject: delivery benchmark\r\n"
                   "Message-ID: <bench@source.test>\r\n\r\n",
                   opt_from);
  size_t len = (size_t)n;
  while (len + 78 <= opt_size) {
    memset(body + len, 'x', 76);
    len += 76;
    body[len++] = '\r';
    body[len++] = '\n';
  }
  memcpy(body + len, ".\r\n", 3);
  body_len = len + 3;
}

static void usage(void) {
  fprintf(stderr,
          "usage: smtp_load --rcpts FILE [--connect IPv4:PORT] [--sessions S]\n"
          "                 [--per-conn M] [--size BYTES] [--starttls]\n"
          "                 [--no-resume] [--no-pipelining] [--from ADDR]\n"
          "                 [--helo NAME] [--timeout SECONDS]\n"
          "FILE: one message per line, 'RCPT' (to --connect) or\n"
          "'IPv4:PORT RCPT'. JSON statistics on standard output.\n");
  exit(2);
}

static double now_s(void) {
  return (double)uv_hrtime() / 1e9;
}

int main(int argc, char **argv) {
  const char *rcpts = NULL, *connect = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    bool has = i + 1 < argc;
    if (strcmp(a, "--rcpts") == 0 && has)
      rcpts = argv[++i];
    else if (strcmp(a, "--connect") == 0 && has)
      connect = argv[++i];
    else if (strcmp(a, "--sessions") == 0 && has)
      opt_sessions = atoi(argv[++i]);
    else if (strcmp(a, "--per-conn") == 0 && has)
      opt_per_conn = atoi(argv[++i]);
    else if (strcmp(a, "--size") == 0 && has)
      opt_size = (size_t)strtoul(argv[++i], NULL, 10);
    else if (strcmp(a, "--starttls") == 0)
      opt_starttls = true;
    else if (strcmp(a, "--no-resume") == 0)
      opt_resume = false;
    else if (strcmp(a, "--no-pipelining") == 0)
      opt_pipelining = false;
    else if (strcmp(a, "--from") == 0 && has)
      opt_from = argv[++i];
    else if (strcmp(a, "--helo") == 0 && has)
      opt_helo = argv[++i];
    else if (strcmp(a, "--timeout") == 0 && has)
      opt_timeout_ms = (uint64_t)(atof(argv[++i]) * 1000);
    else
      usage();
  }
  if (rcpts == NULL || opt_sessions < 1 || opt_sessions > 100000 ||
      opt_per_conn < 1 || opt_size > (64u << 20) || opt_timeout_ms == 0 ||
      strlen(opt_from) > 200 || strlen(opt_helo) > 200)
    usage();
  signal(SIGPIPE, SIG_IGN);
  size_t n = read_rcpts(rcpts, connect);
  make_body();
  client_ctx = SSL_CTX_new(TLS_client_method());
  if (client_ctx == NULL)
    return 1;
  SSL_CTX_set_min_proto_version(client_ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_CLIENT |
                                                 SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(client_ctx, on_new_session);

  loop = uv_default_loop();
  double t0 = now_s();
  session_start_next();
  uv_run(loop, UV_RUN_DEFAULT);
  double el = now_s() - t0;

  json_t *errors = json_array();
  for (int i = 0; errors && i < stats.nerrors; i++)
    json_array_append_new(errors, postern_json_cstr(stats.errors[i]));
  json_t *o = json_pack(
      "{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:f, s:f, s:o}", "messages",
      postern_json_u64(n), "sent", postern_json_u64(stats.sent), "failed",
      postern_json_u64(stats.failed), "connections",
      postern_json_u64(stats.connections), "connect_failed",
      postern_json_u64(stats.connect_failed), "tls",
      postern_json_u64(stats.tls), "resumed", postern_json_u64(stats.resumed),
      "targets", postern_json_u64(ntargets), "elapsed_s", el, "msgs_per_s",
      el > 0 ? (double)stats.sent / el : 0.0, "errors", errors);
  if (o == NULL || postern_json_print(o, stdout, 1) != 0) {
    fputs("smtp_load: cannot write the result\n", stderr);
    json_decref(o);
    return 1;
  }
  json_decref(o);
  return stats.sent == n && stats.failed == 0 ? 0 : 1;
}
