/*
 * tls_sink.c - a fast SMTP sink with STARTTLS for benchmarks and tests
 * (tools/bench/delivery). Postfix's smtp-sink has no STARTTLS and aiosmtpd is
 * far too slow to stand in for thousands of TLS-speaking MX hosts.
 *
 * What it does: accepts SMTP on any number of listening addresses, each with
 * its own certificate (so one process plays many MX hosts on 127.0.0.x),
 * offers STARTTLS, PIPELINING, 8BITMIME, SIZE and ENHANCEDSTATUSCODES,
 * accepts every MAIL, RCPT and message, and counts: messages, exact
 * per-recipient deliveries, sessions, TLS sessions (full and resumed
 * handshakes), the TLS version and cipher and the SNI of each session, per
 * listener. It keeps no message bodies.
 *
 *   tls_sink --listen 127.0.0.11:2525,cert.pem,key.pem [--listen ...]
 *            [--threads N] [--stats FILE] [--hostname NAME] [--no-tls]
 *            [--progress MS]
 *
 * The statistics are written as one JSON object to FILE (or standard
 * output) on SIGUSR1 and once more on SIGTERM/SIGINT, before exiting. The
 * line "ready" on standard output says every listener is bound. With
 * --progress MS, every MS milliseconds in which the totals changed, a line
 * "progress messages=N recipients=R" on standard output (a benchmark waits
 * on it without asking for the whole table).
 *
 * Threads: each thread runs its own libuv loop with its own listening
 * sockets on every address (SO_REUSEPORT), so the kernel spreads sessions.
 * Counters are per thread and summed when written; the one SSL_CTX per
 * certificate is shared (BoringSSL's SSL_CTX is thread-safe, and shared
 * ticket keys let a session resume on any thread).
 *
 * Remote input is hostile even here: command lines are bounded (RFC 5321
 * §4.5.3.1.4, 1000 octets; longer ones get 500 and are skipped), body
 * lines are not kept at all, and TLS runs over memory BIOs only.
 */
#include "base/postern_json.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_LISTEN 256
#define MAX_THREADS 16
#define LINE_MAX_LEN 1000
#define READ_CHUNK 65536

/* ---- a growing string -> counter table (per thread) ---- */

struct ctab_ent {
  char *key;
  uint64_t n;
};

struct ctab {
  struct ctab_ent *e;
  size_t cap, len;
};

static uint64_t hash_str(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

static void ctab_add_n(struct ctab *t, const char *k, size_t kn, uint64_t by);

static void ctab_grow(struct ctab *t) {
  struct ctab old = *t;
  t->cap = old.cap ? old.cap * 2 : 64;
  t->e = calloc(t->cap, sizeof *t->e);
  t->len = 0;
  if (t->e == NULL) {
    perror("tls_sink: calloc");
    exit(1);
  }
  for (size_t i = 0; i < old.cap; i++)
    if (old.e[i].key) {
      ctab_add_n(t, old.e[i].key, strlen(old.e[i].key), old.e[i].n);
      free(old.e[i].key);
    }
  free(old.e);
}

static void ctab_add_n(struct ctab *t, const char *k, size_t kn, uint64_t by) {
  if ((t->len + 1) * 2 > t->cap)
    ctab_grow(t);
  size_t i = hash_str(k, kn) & (t->cap - 1);
  while (t->e[i].key &&
         !(strlen(t->e[i].key) == kn && memcmp(t->e[i].key, k, kn) == 0))
    i = (i + 1) & (t->cap - 1);
  if (t->e[i].key == NULL) {
    t->e[i].key = strndup(k, kn);
    if (t->e[i].key == NULL) {
      perror("tls_sink: strndup");
      exit(1);
    }
    t->len++;
  }
  t->e[i].n += by;
}

static void ctab_add(struct ctab *t, const char *k, uint64_t by) {
  ctab_add_n(t, k, strlen(k), by);
}

/* ---- configuration and per-thread state ---- */

struct listen_spec {
  char addr_text[80];
  struct sockaddr_storage addr;
  SSL_CTX *ctx; /* NULL with --no-tls */
};

struct counters {
  uint64_t sessions, tls_sessions, resumed, messages, recipients;
  uint64_t handshake_failures, long_lines;
  struct ctab rcpt;     /* recipient -> deliveries */
  struct ctab tls;      /* "TLSv1.3 TLS_AES_128_GCM_SHA256" -> sessions */
  struct ctab sni;      /* SNI name ("-" when none) -> sessions */
  struct ctab listener; /* listening address -> sessions */
};

struct thread {
  uv_loop_t loop;
  uv_async_t wake; /* stop request */
  uv_tcp_t servers[MAX_LISTEN];
  pthread_t tid;
  pthread_mutex_t mu; /* guards c against the dumper */
  struct counters c;
  size_t nopen; /* servers + sessions open, for the close at stop */
};

static struct listen_spec listens[MAX_LISTEN];
static size_t nlistens;
static struct thread threads[MAX_THREADS];
static int nthreads = 1;
static const char *hostname = "sink.test";
static const char *stats_path;
static bool no_tls;
static long progress_ms; /* 0: no progress lines */
static uv_timer_t progress_timer;
static uint64_t progress_last;

/* ---- a session ---- */

enum sess_state { S_CMD, S_DATA, S_TLS };

struct session {
  uv_tcp_t tcp;
  struct thread *th;
  const struct listen_spec *ls;
  enum sess_state st;
  bool tls_on, closing, skipping; /* skipping: inside an over-long line */
  SSL *ssl;
  BIO *rbio, *wbio; /* network side: we write rbio, read wbio */
  char line[LINE_MAX_LEN + 2];
  size_t llen;
  /* End-of-data detection across reads: how much of "\r\n.\r\n" matched. */
  int dot_match;
  /* Recipients of the transaction in progress. */
  char **rcpts;
  size_t nrcpt, rcap;
  /* Replies gathered while one read is processed: one write per read. */
  char *out;
  size_t olen, ocap;
};

static void sess_close(struct session *s);

static void reply(struct session *s, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n > sizeof buf - 3)
    n = (int)sizeof buf - 3;
  buf[n++] = '\r';
  buf[n++] = '\n';
  if (s->olen + (size_t)n > s->ocap) {
    size_t nc = s->ocap ? s->ocap * 2 : 1024;
    while (nc < s->olen + (size_t)n)
      nc *= 2;
    char *no = realloc(s->out, nc);
    if (no == NULL) {
      sess_close(s);
      return;
    }
    s->out = no;
    s->ocap = nc;
  }
  memcpy(s->out + s->olen, buf, (size_t)n);
  s->olen += (size_t)n;
}

struct wreq {
  uv_write_t w;
  char data[];
};

static void on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

static void raw_write(struct session *s, const char *p, size_t n) {
  if (n == 0 || s->closing)
    return;
  struct wreq *r = malloc(sizeof *r + n);
  if (r == NULL) {
    sess_close(s);
    return;
  }
  memcpy(r->data, p, n);
  uv_buf_t b = uv_buf_init(r->data, (unsigned)n);
  if (uv_write(&r->w, (uv_stream_t *)&s->tcp, &b, 1, on_written) != 0) {
    free(r);
    sess_close(s);
  }
}

/* Sends what TLS produced (handshake flights, records). */
static void flush_wbio(struct session *s) {
  char buf[16384];
  int n;
  while ((n = BIO_read(s->wbio, buf, sizeof buf)) > 0)
    raw_write(s, buf, (size_t)n);
}

static void flush_out(struct session *s) {
  if (s->olen == 0)
    return;
  if (s->tls_on) {
    size_t off = 0;
    while (off < s->olen) {
      int n = SSL_write(s->ssl, s->out + off, (int)(s->olen - off));
      if (n <= 0) {
        sess_close(s);
        return;
      }
      off += (size_t)n;
    }
    flush_wbio(s);
  } else {
    raw_write(s, s->out, s->olen);
  }
  s->olen = 0;
}

static void txn_reset(struct session *s) {
  for (size_t i = 0; i < s->nrcpt; i++)
    free(s->rcpts[i]);
  s->nrcpt = 0;
}

static void on_closed(uv_handle_t *h) {
  struct session *s = h->data;
  txn_reset(s);
  free(s->rcpts);
  free(s->out);
  if (s->ssl)
    SSL_free(s->ssl); /* frees both BIOs */
  s->th->nopen--;
  free(s);
}

static void sess_close(struct session *s) {
  if (s->closing)
    return;
  s->closing = true;
  uv_close((uv_handle_t *)&s->tcp, on_closed);
}

/* The address inside "<...>", lower-cased domain kept as sent. */
static bool path_of(const char *arg, char *out, size_t cap) {
  const char *lt = strchr(arg, '<');
  const char *gt = lt ? strchr(lt, '>') : NULL;
  if (lt == NULL || gt == NULL || (size_t)(gt - lt - 1) >= cap)
    return false;
  memcpy(out, lt + 1, (size_t)(gt - lt - 1));
  out[gt - lt - 1] = '\0';
  return true;
}

static void start_tls(struct session *s);

static void do_command(struct session *s, char *l) {
  struct counters *c = &s->th->c;
  if (strncasecmp(l, "EHLO", 4) == 0) {
    txn_reset(s);
    reply(s, "250-%s", hostname);
    reply(s, "250-PIPELINING");
    reply(s, "250-SIZE 104857600");
    reply(s, "250-8BITMIME");
    if (!s->tls_on && s->ls->ctx)
      reply(s, "250-STARTTLS");
    reply(s, "250 ENHANCEDSTATUSCODES");
  } else if (strncasecmp(l, "HELO", 4) == 0) {
    txn_reset(s);
    reply(s, "250 %s", hostname);
  } else if (strncasecmp(l, "STARTTLS", 8) == 0 && !s->tls_on && s->ls->ctx) {
    reply(s, "220 2.0.0 ready to start TLS");
    flush_out(s);
    start_tls(s);
  } else if (strncasecmp(l, "MAIL FROM:", 10) == 0) {
    txn_reset(s);
    reply(s, "250 2.1.0 ok");
  } else if (strncasecmp(l, "RCPT TO:", 8) == 0) {
    char addr[LINE_MAX_LEN];
    if (!path_of(l + 8, addr, sizeof addr)) {
      reply(s, "501 5.1.3 bad recipient address syntax");
      return;
    }
    if (s->nrcpt == s->rcap) {
      size_t nc = s->rcap ? s->rcap * 2 : 8;
      char **nr = realloc(s->rcpts, nc * sizeof *nr);
      if (nr == NULL) {
        reply(s, "452 4.3.0 out of memory");
        return;
      }
      s->rcpts = nr;
      s->rcap = nc;
    }
    s->rcpts[s->nrcpt] = strdup(addr);
    if (s->rcpts[s->nrcpt] == NULL) {
      reply(s, "452 4.3.0 out of memory");
      return;
    }
    s->nrcpt++;
    reply(s, "250 2.1.5 ok");
  } else if (strncasecmp(l, "DATA", 4) == 0) {
    if (s->nrcpt == 0) {
      reply(s, "554 5.5.1 no valid recipients");
      return;
    }
    reply(s, "354 end with <CRLF>.<CRLF>");
    s->st = S_DATA;
    s->dot_match = 2; /* the DATA line's CRLF counts as the first "\r\n" */
  } else if (strncasecmp(l, "RSET", 4) == 0) {
    txn_reset(s);
    reply(s, "250 2.0.0 ok");
  } else if (strncasecmp(l, "NOOP", 4) == 0) {
    reply(s, "250 2.0.0 ok");
  } else if (strncasecmp(l, "QUIT", 4) == 0) {
    reply(s, "221 2.0.0 bye");
    flush_out(s);
    sess_close(s);
  } else {
    reply(s, "502 5.5.2 command not recognized");
  }
  (void)c;
}

static void message_done(struct session *s) {
  struct thread *th = s->th;
  pthread_mutex_lock(&th->mu);
  th->c.messages++;
  th->c.recipients += s->nrcpt;
  for (size_t i = 0; i < s->nrcpt; i++)
    ctab_add(&th->c.rcpt, s->rcpts[i], 1);
  pthread_mutex_unlock(&th->mu);
  txn_reset(s);
  reply(s, "250 2.0.0 queued");
  s->st = S_CMD;
}

/* Feeds plaintext SMTP: commands line by line, message bodies by scanning
 * for CRLF "." CRLF (RFC 5321 §4.1.1.4) without keeping them. */
static void feed_plain(struct session *s, const char *p, size_t n) {
  static const char eod[] = "\r\n.\r\n";
  size_t i = 0;
  while (i < n && !s->closing && s->st != S_TLS) {
    if (s->st == S_DATA) {
      for (; i < n; i++) {
        char ch = p[i];
        if (ch == eod[s->dot_match]) {
          s->dot_match++;
          if (s->dot_match == 5) {
            i++;
            message_done(s);
            break;
          }
        } else {
          s->dot_match = ch == '\r' ? 1 : 0;
        }
      }
      continue;
    }
    char ch = p[i++];
    if (ch == '\n') {
      if (s->skipping) {
        s->skipping = false;
        s->llen = 0;
        reply(s, "500 5.5.6 line too long");
        continue;
      }
      if (s->llen && s->line[s->llen - 1] == '\r')
        s->llen--;
      s->line[s->llen] = '\0';
      s->llen = 0;
      do_command(s, s->line);
      if (s->st == S_TLS) {
        /* Bytes after STARTTLS before the handshake are an injection
         * attempt (RFC 3207 §5): drop them. */
        return;
      }
      continue;
    }
    if (s->skipping)
      continue;
    if (s->llen >= LINE_MAX_LEN) {
      s->skipping = true;
      pthread_mutex_lock(&s->th->mu);
      s->th->c.long_lines++;
      pthread_mutex_unlock(&s->th->mu);
      continue;
    }
    s->line[s->llen++] = ch;
  }
}

static void tls_established(struct session *s) {
  struct thread *th = s->th;
  char key[128];
  snprintf(key, sizeof key, "%s %s", SSL_get_version(s->ssl),
           SSL_CIPHER_get_name(SSL_get_current_cipher(s->ssl)));
  const char *sni = SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name);
  pthread_mutex_lock(&th->mu);
  th->c.tls_sessions++;
  if (SSL_session_reused(s->ssl))
    th->c.resumed++;
  ctab_add(&th->c.tls, key, 1);
  ctab_add(&th->c.sni, sni && sni[0] ? sni : "-", 1);
  pthread_mutex_unlock(&th->mu);
  s->tls_on = true;
  s->st = S_CMD;
  s->llen = 0;
}

static void handshake_step(struct session *s) {
  int r = SSL_do_handshake(s->ssl);
  flush_wbio(s);
  if (r == 1) {
    tls_established(s);
    return;
  }
  int e = SSL_get_error(s->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return;
  pthread_mutex_lock(&s->th->mu);
  s->th->c.handshake_failures++;
  pthread_mutex_unlock(&s->th->mu);
  ERR_clear_error();
  sess_close(s);
}

static void start_tls(struct session *s) {
  s->ssl = SSL_new(s->ls->ctx);
  s->rbio = BIO_new(BIO_s_mem());
  s->wbio = BIO_new(BIO_s_mem());
  if (s->ssl == NULL || s->rbio == NULL || s->wbio == NULL) {
    if (s->ssl == NULL) {
      BIO_free(s->rbio);
      BIO_free(s->wbio);
    } else {
      SSL_set_bio(s->ssl, s->rbio, s->wbio);
    }
    sess_close(s);
    return;
  }
  SSL_set_bio(s->ssl, s->rbio, s->wbio);
  SSL_set_accept_state(s->ssl);
  s->st = S_TLS;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)h;
  (void)hint;
  static _Thread_local char buf[READ_CHUNK];
  *b = uv_buf_init(buf, sizeof buf);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  struct session *s = st->data;
  if (n < 0) {
    sess_close(s);
    return;
  }
  if (n == 0)
    return;
  if (s->st != S_TLS && !s->tls_on) {
    feed_plain(s, b->base, (size_t)n);
    flush_out(s);
    return;
  }
  BIO_write(s->rbio, b->base, (int)n);
  if (s->st == S_TLS) {
    handshake_step(s);
    if (s->st == S_TLS || s->closing)
      return;
  }
  char plain[16384];
  for (;;) {
    int r = SSL_read(s->ssl, plain, sizeof plain);
    if (r > 0) {
      feed_plain(s, plain, (size_t)r);
      if (s->closing)
        return;
      continue;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e != SSL_ERROR_WANT_READ) {
      ERR_clear_error();
      sess_close(s);
      return;
    }
    break;
  }
  flush_out(s);
  flush_wbio(s); /* tickets and other post-handshake records */
}

static void on_conn(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  const struct listen_spec *ls = server->data;
  struct thread *th = (struct thread *)server->loop->data;
  struct session *s = calloc(1, sizeof *s);
  if (s == NULL)
    return;
  s->th = th;
  s->ls = ls;
  uv_tcp_init(&th->loop, &s->tcp);
  s->tcp.data = s;
  th->nopen++;
  if (uv_accept(server, (uv_stream_t *)&s->tcp) != 0) {
    sess_close(s);
    return;
  }
  uv_tcp_nodelay(&s->tcp, 1);
  pthread_mutex_lock(&th->mu);
  th->c.sessions++;
  ctab_add(&th->c.listener, ls->addr_text, 1);
  pthread_mutex_unlock(&th->mu);
  reply(s, "220 %s ESMTP tls_sink", hostname);
  flush_out(s);
  uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
}

/* ---- threads, stop and statistics ---- */

static void on_wake(uv_async_t *a) {
  uv_stop(a->loop);
}

/* On thread 0's loop: the totals, when they changed since the last line. */
static void on_progress(uv_timer_t *t) {
  (void)t;
  uint64_t m = 0, r = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_mutex_lock(&threads[i].mu);
    m += threads[i].c.messages;
    r += threads[i].c.recipients;
    pthread_mutex_unlock(&threads[i].mu);
  }
  if (m == progress_last)
    return;
  progress_last = m;
  printf("progress messages=%llu recipients=%llu\n", (unsigned long long)m,
         (unsigned long long)r);
  fflush(stdout);
}

static void *thread_main(void *arg) {
  struct thread *th = arg;
  uv_run(&th->loop, UV_RUN_DEFAULT);
  return NULL;
}

static int bind_listeners(struct thread *th) {
  for (size_t i = 0; i < nlistens; i++) {
    uv_tcp_t *t = &th->servers[i];
    uv_tcp_init_ex(&th->loop, t, listens[i].addr.ss_family);
    uv_os_fd_t fd;
    uv_fileno((uv_handle_t *)t, &fd);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    t->data = &listens[i];
    int rc = uv_tcp_bind(t, (const struct sockaddr *)&listens[i].addr, 0);
    if (rc == 0)
      rc = uv_listen((uv_stream_t *)t, 1024, on_conn);
    if (rc != 0) {
      fprintf(stderr, "tls_sink: cannot listen on %s: %s\n",
              listens[i].addr_text, uv_strerror(rc));
      return -1;
    }
  }
  return 0;
}

static json_t *json_table(struct ctab *merged) {
  json_t *o = json_object();
  for (size_t i = 0; o && i < merged->cap; i++)
    if (merged->e[i].key)
      postern_json_set(o, merged->e[i].key, postern_json_u64(merged->e[i].n));
  return o;
}

static void ctab_merge(struct ctab *into, const struct ctab *from) {
  for (size_t i = 0; i < from->cap; i++)
    if (from->e[i].key)
      ctab_add(into, from->e[i].key, from->e[i].n);
}

static void ctab_free(struct ctab *t) {
  for (size_t i = 0; i < t->cap; i++)
    free(t->e[i].key);
  free(t->e);
  memset(t, 0, sizeof *t);
}

static void write_stats(void) {
  struct counters sum;
  memset(&sum, 0, sizeof sum);
  for (int i = 0; i < nthreads; i++) {
    struct thread *th = &threads[i];
    pthread_mutex_lock(&th->mu);
    sum.sessions += th->c.sessions;
    sum.tls_sessions += th->c.tls_sessions;
    sum.resumed += th->c.resumed;
    sum.messages += th->c.messages;
    sum.recipients += th->c.recipients;
    sum.handshake_failures += th->c.handshake_failures;
    sum.long_lines += th->c.long_lines;
    ctab_merge(&sum.rcpt, &th->c.rcpt);
    ctab_merge(&sum.tls, &th->c.tls);
    ctab_merge(&sum.sni, &th->c.sni);
    ctab_merge(&sum.listener, &th->c.listener);
    pthread_mutex_unlock(&th->mu);
  }
  char tmp[4096];
  FILE *f = stdout;
  if (stats_path) {
    snprintf(tmp, sizeof tmp, "%s.tmp", stats_path);
    f = fopen(tmp, "w");
    if (f == NULL) {
      perror("tls_sink: stats file");
      return;
    }
  }
  json_t *o =
      json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                "sessions", postern_json_u64(sum.sessions), "tls_sessions",
                postern_json_u64(sum.tls_sessions), "resumed",
                postern_json_u64(sum.resumed), "full_handshakes",
                postern_json_u64(sum.tls_sessions - sum.resumed),
                "handshake_failures", postern_json_u64(sum.handshake_failures),
                "messages", postern_json_u64(sum.messages), "recipients",
                postern_json_u64(sum.recipients), "long_lines",
                postern_json_u64(sum.long_lines), "rcpt", json_table(&sum.rcpt),
                "tls", json_table(&sum.tls), "sni", json_table(&sum.sni),
                "listeners", json_table(&sum.listener));
  if (o == NULL || postern_json_print(o, f, 1) != 0)
    fputs("tls_sink: cannot write the statistics\n", stderr);
  json_decref(o);
  if (stats_path) {
    fclose(f);
    rename(tmp, stats_path); /* readers never see half a file */
  } else {
    fflush(f);
  }
  ctab_free(&sum.rcpt);
  ctab_free(&sum.tls);
  ctab_free(&sum.sni);
  ctab_free(&sum.listener);
}

/* ---- setup ---- */

static SSL_CTX *make_ctx(const char *cert, const char *key) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    char e[256];
    ERR_error_string_n(ERR_get_error(), e, sizeof e);
    fprintf(stderr, "tls_sink: certificate %s / key %s: %s\n", cert, key, e);
    exit(2);
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  return ctx;
}

/* ADDR:PORT,CERT,KEY or, with --no-tls, ADDR:PORT. */
static void parse_listen(const char *arg) {
  if (nlistens == MAX_LISTEN) {
    fprintf(stderr, "tls_sink: at most %d listeners\n", MAX_LISTEN);
    exit(2);
  }
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", arg);
  char *cert = strchr(buf, ',');
  char *key = NULL;
  if (cert) {
    *cert++ = '\0';
    key = strchr(cert, ',');
    if (key)
      *key++ = '\0';
  }
  struct listen_spec *ls = &listens[nlistens];
  if (strlen(buf) >= sizeof ls->addr_text) {
    fprintf(stderr, "tls_sink: --listen %s: address too long\n", arg);
    exit(2);
  }
  memcpy(ls->addr_text, buf, strlen(buf) + 1);
  char *colon = strrchr(buf, ':');
  if (colon == NULL) {
    fprintf(stderr, "tls_sink: --listen %s: expected ADDR:PORT\n", arg);
    exit(2);
  }
  *colon = '\0';
  int port = atoi(colon + 1);
  char *host = buf;
  if (host[0] == '[') {
    host++;
    host[strlen(host) - 1] = '\0';
  }
  int rc = strchr(host, ':')
               ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ls->addr)
               : uv_ip4_addr(host, port, (struct sockaddr_in *)&ls->addr);
  if (rc != 0 || port <= 0 || port > 65535) {
    fprintf(stderr, "tls_sink: --listen %s: bad address\n", arg);
    exit(2);
  }
  if (!no_tls) {
    if (cert == NULL || key == NULL) {
      fprintf(stderr, "tls_sink: --listen %s: expected ADDR:PORT,CERT,KEY\n",
              arg);
      exit(2);
    }
    ls->ctx = make_ctx(cert, key);
  }
  nlistens++;
}

static void usage(void) {
  fprintf(stderr, "usage: tls_sink --listen ADDR:PORT,CERT,KEY [--listen "
                  "...] [--threads N] [--stats FILE] [--hostname NAME] "
                  "[--no-tls] [--progress MS]\n");
  exit(2);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  const char *specs[MAX_LISTEN];
  size_t nspecs = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc && nspecs < MAX_LISTEN)
      specs[nspecs++] = argv[++i];
    else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      nthreads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--stats") == 0 && i + 1 < argc)
      stats_path = argv[++i];
    else if (strcmp(argv[i], "--hostname") == 0 && i + 1 < argc)
      hostname = argv[++i];
    else if (strcmp(argv[i], "--no-tls") == 0)
      no_tls = true;
    else if (strcmp(argv[i], "--progress") == 0 && i + 1 < argc)
      progress_ms = atol(argv[++i]);
    else
      usage();
  }
  if (nspecs == 0 || nthreads < 1 || nthreads > MAX_THREADS ||
      progress_ms < 0 || progress_ms > 3600000)
    usage();
  for (size_t i = 0; i < nspecs; i++)
    parse_listen(specs[i]);

  /* Signals are taken by sigwait in the main thread only. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  for (int i = 0; i < nthreads; i++) {
    struct thread *th = &threads[i];
    uv_loop_init(&th->loop);
    th->loop.data = th;
    pthread_mutex_init(&th->mu, NULL);
    uv_async_init(&th->loop, &th->wake, on_wake);
    if (bind_listeners(th) != 0)
      return 1;
  }
  if (progress_ms > 0) {
    uv_timer_init(&threads[0].loop, &progress_timer);
    uv_timer_start(&progress_timer, on_progress, (uint64_t)progress_ms,
                   (uint64_t)progress_ms);
  }
  for (int i = 0; i < nthreads; i++)
    pthread_create(&threads[i].tid, NULL, thread_main, &threads[i]);
  printf("ready\n");
  fflush(stdout);

  for (;;) {
    int sig;
    if (sigwait(&set, &sig) != 0)
      continue;
    write_stats();
    if (sig != SIGUSR1)
      break;
  }
  for (int i = 0; i < nthreads; i++)
    uv_async_send(&threads[i].wake);
  for (int i = 0; i < nthreads; i++)
    pthread_join(threads[i].tid, NULL);
  return 0;
}
