/*
 * net/redis_tls.c - TLS to Redis (rediss://) for a hiredis that has none.
 *
 * hiredis 0.14.1 (Debian 12) speaks only plain TCP or a Unix socket. For a
 * rediss:// URL the client (redis.c) opens a tunnel here first: a TCP
 * connection to Redis, a TLS handshake over it (net/tls.h, BoringSSL; the
 * certificate must chain to the configured roots and name the URL's host,
 * RFC 6125), then a listening Unix socket in a fresh private directory
 * (mkdtemp, mode 0700). hiredis connects to that socket as to any local
 * Redis; the tunnel accepts exactly one connection, checks with
 * SO_PEERCRED that it comes from this process, removes the socket and its
 * directory, and from then on carries bytes both ways: what hiredis
 * writes is encrypted onto the TCP connection, what Redis sends is
 * decrypted into the socket. AUTH and SELECT go through it like any
 * command, encrypted.
 *
 * Lifetime: the tunnel reports once, through its callback, that the socket
 * is ready (status 0 and its path) or that it failed (the reason); never
 * from inside redis__tunnel_open. After that it carries bytes until either
 * side ends, when it closes both (hiredis then sees its socket end and
 * reconnects through a new tunnel). redis__tunnel_close stops it at any
 * time; no callback runs afterwards. The memory goes when the last handle
 * has closed. One loop thread.
 */
#include "net/redis_internal.h"

#include "base/postern_err.h"
#include "base/postern_log.h"
#include "net/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Plaintext read from TLS per pass, and what one tunnel keeps queued for
 * the local socket before it stops reading from Redis. */
#define TUNNEL_CHUNK 16384
#define TUNNEL_QUEUE_MAX (4u << 20)

struct redis__tunnel {
  uv_loop_t *loop;
  uv_tcp_t tcp;       /* to Redis */
  uv_pipe_t listener; /* hiredis connects here */
  uv_pipe_t local;    /* the accepted hiredis connection */
  uv_connect_t creq;
  struct tls_conn *tls;
  bool tcp_open, listener_open, local_open, accepted, closing;
  bool ready_sent, fail_sent; /* what `cb` was told */
  bool tcp_paused; /* reading from Redis stopped: `local` is behind */
  bool answered;   /* Redis has sent plaintext */
  int handles;     /* open handles; freed at 0 */
  size_t queued;   /* bytes written to `local`, not yet done */
  redis__tunnel_cb cb;
  void (*gone)(struct redis__tunnel *t, void *arg);
  void *arg;
  char dir[256];
  char path[300];
  char rbuf[TUNNEL_CHUNK]; /* ciphertext from Redis */
  char lbuf[TUNNEL_CHUNK]; /* plaintext from hiredis */
};

struct local_write {
  uv_write_t req;
  struct redis__tunnel *t;
  size_t len;
  char data[];
};

static void tunnel_shut(struct redis__tunnel *t);

static void unlink_socket(struct redis__tunnel *t) {
  if (t->path[0]) {
    unlink(t->path);
    t->path[0] = '\0';
  }
  if (t->dir[0]) {
    rmdir(t->dir);
    t->dir[0] = '\0';
  }
}

/* Tells the owner: ready once, failed at most once (also after ready: a
 * server that refuses our client certificate says so after a TLS 1.3
 * handshake has completed on our side). */
static void report(struct redis__tunnel *t, int status, const char *what) {
  bool *sent = status == 0 ? &t->ready_sent : &t->fail_sent;
  if (*sent || t->closing)
    return;
  *sent = true;
  t->cb(t, status, what, t->arg);
}

static void fail(struct redis__tunnel *t, int status, const char *why) {
  report(t, status, why && why[0] ? why : "TLS failure");
  tunnel_shut(t);
}

static void handle_closed(uv_handle_t *h) {
  struct redis__tunnel *t = h->data;
  if ((uv_handle_t *)&t->tcp == h) {
    tls_conn_free(t->tls); /* every write callback has run */
    t->tls = NULL;
  }
  if (--t->handles == 0) {
    t->gone(t, t->arg); /* before the free: the caller compares pointers */
    free(t);
  }
}

/* Closes every handle; the memory goes with the last one. */
static void tunnel_shut(struct redis__tunnel *t) {
  unlink_socket(t);
  if (t->tcp_open) {
    t->tcp_open = false;
    uv_close((uv_handle_t *)&t->tcp, handle_closed);
  }
  if (t->listener_open) {
    t->listener_open = false;
    uv_close((uv_handle_t *)&t->listener, handle_closed);
  }
  if (t->local_open) {
    t->local_open = false;
    uv_close((uv_handle_t *)&t->local, handle_closed);
  }
}

void redis__tunnel_close(struct redis__tunnel *t) {
  if (t == NULL || t->closing)
    return;
  t->closing = true;
  tunnel_shut(t);
}

static void alloc_cb(uv_handle_t *h, size_t want, uv_buf_t *buf) {
  (void)want;
  struct redis__tunnel *t = h->data;
  /* Each direction has its buffer: libuv hands it back in the read
   * callback before it asks for the next one. */
  if ((uv_handle_t *)&t->local == h)
    *buf = uv_buf_init(t->lbuf, sizeof t->lbuf);
  else
    *buf = uv_buf_init(t->rbuf, sizeof t->rbuf);
}

static void tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void local_written(uv_write_t *req, int status) {
  struct local_write *w = (struct local_write *)req;
  struct redis__tunnel *t = w->t;
  t->queued -= w->len;
  free(w);
  if (status != 0 && !t->closing) {
    tunnel_shut(t);
    return;
  }
  /* Reading from Redis stopped when too much was queued: go on. */
  if (t->tcp_open && t->tcp_paused && t->queued < TUNNEL_QUEUE_MAX / 2) {
    t->tcp_paused = false;
    uv_read_start((uv_stream_t *)&t->tcp, alloc_cb, tcp_read);
  }
}

/* Decrypted bytes from Redis go to hiredis' socket. */
static int to_local(struct redis__tunnel *t, const char *p, size_t n) {
  if (!t->accepted)
    return POSTERN_EPROTO; /* Redis never speaks first */
  struct local_write *w = malloc(sizeof *w + n);
  if (w == NULL)
    return POSTERN_ENOMEM;
  w->t = t;
  w->len = n;
  memcpy(w->data, p, n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  if (uv_write(&w->req, (uv_stream_t *)&t->local, &b, 1, local_written) != 0) {
    free(w);
    return POSTERN_ECLOSED;
  }
  t->queued += n;
  return 0;
}

static void tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct redis__tunnel *t = s->data;
  if (n == 0 || t->closing)
    return;
  if (n < 0) {
    /* An alert that came with the end (Redis refusing our certificate)
     * says more than the end itself. */
    char scratch[512];
    /* The end may also come as a reset that took the alert with it. A
     * Redis that ends the session before its first answer most often
     * wants a client certificate (tls-auth-clients). */
    const char *why = t->answered
                          ? "connection to Redis closed"
                          : "Redis closed the TLS connection before answering "
                            "(does it require a client certificate?)";
    if (t->ready_sent) {
      ssize_t got;
      while ((got = tls_conn_read(t->tls, scratch, sizeof scratch)) > 0)
        ;
      if (got < 0 && got != POSTERN_ECLOSED && tls_conn_error(t->tls)[0])
        why = tls_conn_error(t->tls);
    }
    fail(t, POSTERN_ECLOSED, why);
    return;
  }
  if (tls_conn_feed(t->tls, buf->base, (size_t)n) != 0) {
    if (!t->closing)
      fail(t, POSTERN_ETLS, tls_conn_error(t->tls));
    return;
  }
  if (t->closing || !t->accepted)
    return; /* handshake bytes, session tickets: nothing for hiredis yet */
  char plain[TUNNEL_CHUNK];
  for (;;) {
    ssize_t got = tls_conn_read(t->tls, plain, sizeof plain);
    if (got == 0)
      break;
    if (got > 0)
      t->answered = true;
    if (got < 0 || to_local(t, plain, (size_t)got) != 0) {
      fail(t, got < 0 ? (int)got : POSTERN_ECLOSED,
           got == POSTERN_ECLOSED ? "Redis closed the TLS session"
           : got < 0              ? tls_conn_error(t->tls)
                                  : "local socket gone");
      return;
    }
  }
  if (t->queued >= TUNNEL_QUEUE_MAX) {
    t->tcp_paused = true;
    uv_read_stop((uv_stream_t *)&t->tcp);
  }
}

static void local_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct redis__tunnel *t = s->data;
  if (n == 0 || t->closing)
    return;
  if (n < 0) {
    tunnel_shut(t); /* hiredis is gone: so is this session */
    return;
  }
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
  if (tls_conn_write(t->tls, &b, 1, NULL, NULL) != 0)
    tunnel_shut(t);
}

/* Only this process may use the tunnel: the socket's directory is private
 * to our user, and the peer must be us. */
static bool peer_is_self(uv_pipe_t *p) {
  uv_os_fd_t fd;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (uv_fileno((uv_handle_t *)p, &fd) != 0 ||
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return false;
  return cred.pid == getpid() && cred.uid == getuid();
}

static void on_local(uv_stream_t *server, int status) {
  struct redis__tunnel *t = server->data;
  if (t->closing || t->accepted)
    return;
  if (status != 0) {
    tunnel_shut(t);
    return;
  }
  uv_pipe_init(t->loop, &t->local, 0);
  t->local.data = t;
  t->local_open = true;
  t->handles++;
  if (uv_accept(server, (uv_stream_t *)&t->local) != 0 ||
      !peer_is_self(&t->local)) {
    postern_log(POSTERN_LOG_WARN, "redis_tls_tunnel_refused", "reason",
                "a connection to the tunnel socket not from this process",
                NULL);
    tunnel_shut(t);
    return;
  }
  t->accepted = true;
  /* One connection only: nobody else gets in, and no file stays behind. */
  t->listener_open = false;
  uv_close((uv_handle_t *)&t->listener, handle_closed);
  unlink_socket(t);
  uv_read_start((uv_stream_t *)&t->local, alloc_cb, local_read);
}

static void handshake_done(struct tls_conn *tc, int status, void *arg) {
  (void)tc;
  struct redis__tunnel *t = arg;
  if (t->closing)
    return;
  if (status != 0) {
    fail(t, status, tls_conn_error(t->tls));
    return;
  }
  struct tls_verify v;
  if (tls_conn_peer_verify(t->tls, &v) != 0 || !v.pkix_ok || !v.name_ok) {
    char why[TLS_ERROR_MAX + 64];
    snprintf(why, sizeof why, "Redis certificate not trusted: %s",
             v.error[0] ? v.error : "not verified");
    fail(t, POSTERN_ETLS, why);
    return;
  }
  const char *base = getenv("TMPDIR");
  snprintf(t->dir, sizeof t->dir, "%s/postern-redis-XXXXXX",
           base && base[0] == '/' && strlen(base) < 180 ? base : "/tmp");
  if (mkdtemp(t->dir) == NULL) {
    t->dir[0] = '\0';
    fail(t, POSTERN_EIO, "cannot make the tunnel's directory");
    return;
  }
  snprintf(t->path, sizeof t->path, "%s/s", t->dir);
  uv_pipe_init(t->loop, &t->listener, 0);
  t->listener.data = t;
  t->listener_open = true;
  t->handles++;
  if (uv_pipe_bind(&t->listener, t->path) != 0 ||
      uv_listen((uv_stream_t *)&t->listener, 1, on_local) != 0) {
    fail(t, POSTERN_EIO, "cannot listen on the tunnel's socket");
    return;
  }
  report(t, 0, t->path);
}

static void tcp_connected(uv_connect_t *req, int status) {
  struct redis__tunnel *t = req->data;
  if (t->closing)
    return;
  if (status != 0) {
    fail(t, POSTERN_ECLOSED, uv_strerror(status));
    return;
  }
  if (uv_read_start((uv_stream_t *)&t->tcp, alloc_cb, tcp_read) != 0 ||
      tls_conn_handshake(t->tls, handshake_done, t) != 0)
    fail(t, POSTERN_ETLS, "TLS handshake could not start");
}

static void gone_nothing(struct redis__tunnel *t, void *arg) {
  (void)t;
  (void)arg;
}

int redis__tunnel_open(uv_loop_t *loop, struct tls_ctx *ctx,
                       const struct sockaddr *addr, const char *server_name,
                       redis__tunnel_cb cb,
                       void (*gone)(struct redis__tunnel *t, void *arg),
                       void *arg, struct redis__tunnel **out) {
  *out = NULL;
  if (ctx == NULL || addr == NULL || server_name == NULL || cb == NULL ||
      gone == NULL || strlen(server_name) > REDIS_HOST_MAX)
    return POSTERN_EINVAL;
  struct redis__tunnel *t = calloc(1, sizeof *t);
  if (t == NULL)
    return POSTERN_ENOMEM;
  t->loop = loop;
  t->cb = cb;
  t->gone = gone;
  t->arg = arg;
  uv_tcp_init(loop, &t->tcp);
  t->tcp.data = t;
  t->tcp_open = true;
  t->handles = 1;
  int rc =
      tls_conn_new(&t->tls, ctx, (uv_stream_t *)&t->tcp, server_name, NULL);
  if (rc == 0) {
    t->creq.data = t;
    rc = uv_tcp_connect(&t->creq, &t->tcp, addr, tcp_connected) == 0
             ? 0
             : POSTERN_ECLOSED;
  }
  if (rc != 0) {
    /* Nothing was reported: the caller counts no tunnel, so `gone` must
     * not run for this one. */
    t->closing = true;
    t->gone = gone_nothing;
    tunnel_shut(t);
    return rc;
  }
  *out = t;
  return 0;
}
