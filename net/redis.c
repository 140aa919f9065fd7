/*
 * net/redis.c - the asynchronous Redis client (redis.h): one hiredis async
 * context at a time, driven by hiredis' libuv adapter on the owner's loop.
 *
 * Connection: (uv_getaddrinfo for TCP) -> redisAsyncConnect -> AUTH, SELECT,
 * PING pipelined -> up when PING answers. `ctimer` bounds that handshake
 * and, while down, times the next attempt (exponential backoff). A loss is
 * reported by hiredis (connect failure, disconnect callback) or decided by
 * us (a timeout, a failed AUTH): we forget `c->ac` first and then free it, so
 * hiredis' callbacks for a context that is not `c->ac` are stale and ignored.
 *
 * Ownership of a struct redis_cmd: alive while hiredis holds it
 * (`in_hiredis`, until hiredis calls cmd_reply exactly once, with a reply or
 * with NULL when the context is freed) or while its callback has not run
 * (`delivered` false). Replies are passed to the caller from cmd_reply (the
 * loop, never inside redis_command); every failure (down, timeout, closed)
 * goes on the delivery list, which a net_defer drains, so no user callback
 * runs inside hiredis' free or inside a call of ours. `pending` lists the
 * commands sent and not finished, by deadline; one timer (`tmo`) watches the
 * earliest.
 *
 * Ownership of the client: freed once its three handles (ctimer, tmo, the
 * defer) are closed and no getaddrinfo request is outstanding. A hiredis
 * context never outlives that: it is freed in redis_client_close (or right
 * after the hiredis callback that called it returns).
 */
#include "net/redis.h"

#include "base/postern_err.h"
#include "base/postern_log.h"
#include "net/defer.h"
#include "net/redis_internal.h"
#include "net/tls.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct redis_cmd {
  struct redis_client *c;
  redis_cb cb;
  void *arg;
  uint64_t deadline;
  int status;      /* failure to deliver */
  bool in_hiredis; /* hiredis will call cmd_reply */
  bool done;       /* outcome decided */
  bool delivered;
  bool on_pending;
  struct redis_cmd *prev, *next; /* pending */
  struct redis_cmd *dnext;       /* delivery list */
};

void redis_opts_init(struct redis_opts *o) {
  memset(o, 0, sizeof *o);
  o->connect_timeout_ms = 2000;
  o->command_timeout_ms = 1000;
  o->reconnect_min_ms = 100;
  o->reconnect_max_ms = 5000;
}

/* ---- Replies ------------------------------------------------------------ */

static const redisReply *rep(const struct redis_value *v) {
  return (const redisReply *)(const void *)v;
}

enum redis_vtype redis_value_type(const struct redis_value *v) {
  switch (rep(v)->type) {
  case REDIS_REPLY_INTEGER:
    return REDIS_V_INT;
  case REDIS_REPLY_STRING:
    return REDIS_V_STR;
  case REDIS_REPLY_STATUS:
    return REDIS_V_STATUS;
  case REDIS_REPLY_ARRAY:
    return REDIS_V_ARRAY;
  case REDIS_REPLY_ERROR:
    return REDIS_V_ERROR;
  default:
    return REDIS_V_NIL;
  }
}

long long redis_value_int(const struct redis_value *v) {
  return rep(v)->type == REDIS_REPLY_INTEGER ? rep(v)->integer : 0;
}

const char *redis_value_str(const struct redis_value *v, size_t *len) {
  const redisReply *r = rep(v);
  if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS &&
      r->type != REDIS_REPLY_ERROR) {
    if (len)
      *len = 0;
    return NULL;
  }
  if (len)
    *len = (size_t)r->len;
  return r->str;
}

size_t redis_value_count(const struct redis_value *v) {
  return rep(v)->type == REDIS_REPLY_ARRAY ? rep(v)->elements : 0;
}

const struct redis_value *redis_value_at(const struct redis_value *v,
                                         size_t i) {
  const redisReply *r = rep(v);
  if (r->type != REDIS_REPLY_ARRAY || i >= r->elements)
    return NULL;
  return (const struct redis_value *)(const void *)r->element[i];
}

/* ---- State -------------------------------------------------------------- */

static void connect_start(struct redis_client *c);
static void deliver_all(struct net_defer *d);

static void set_up(struct redis_client *c, bool up) {
  if (c->up == up)
    return;
  c->up = up;
  if (up)
    c->tls_error[0] = '\0';
  postern_log(up ? POSTERN_LOG_INFO : POSTERN_LOG_WARN,
              up ? "redis_up" : "redis_down", NULL);
  if (c->opts.state_cb != NULL && !c->closing)
    c->opts.state_cb(c, up, c->opts.state_arg);
}

static void pending_remove(struct redis_cmd *m) {
  struct redis_client *c = m->c;
  if (!m->on_pending)
    return;
  if (m->prev)
    m->prev->next = m->next;
  else
    c->pending_head = m->next;
  if (m->next)
    m->next->prev = m->prev;
  else
    c->pending_tail = m->prev;
  m->prev = m->next = NULL;
  m->on_pending = false;
}

static void tmo_cb(uv_timer_t *t);

static void tmo_rearm(struct redis_client *c) {
  if (c->pending_head == NULL || c->closing) {
    uv_timer_stop(&c->tmo);
    return;
  }
  uint64_t now = uv_now(c->loop);
  uint64_t d = c->pending_head->deadline;
  uv_timer_start(&c->tmo, tmo_cb, d > now ? d - now : 0, 0);
}

/* Sorted insert from the tail: deadlines mostly grow. */
static void pending_add(struct redis_cmd *m) {
  struct redis_client *c = m->c;
  struct redis_cmd *p = c->pending_tail;
  while (p != NULL && p->deadline > m->deadline)
    p = p->prev;
  m->prev = p;
  m->next = p ? p->next : c->pending_head;
  if (m->next)
    m->next->prev = m;
  else
    c->pending_tail = m;
  if (p)
    p->next = m;
  else
    c->pending_head = m;
  m->on_pending = true;
  if (c->pending_head == m)
    tmo_rearm(c);
}

/* The outcome of `m` is a failure: deliver it later, from the loop. */
static void cmd_fail(struct redis_cmd *m, int status) {
  struct redis_client *c = m->c;
  if (m->done)
    return;
  m->done = true;
  m->status = status;
  pending_remove(m);
  m->dnext = NULL;
  if (c->dq_tail)
    c->dq_tail->dnext = m;
  else
    c->dq_head = m;
  c->dq_tail = m;
  net_defer_arm(&c->soon, deliver_all);
}

static void cmd_maybe_free(struct redis_cmd *m) {
  if (!m->in_hiredis && m->delivered)
    free(m);
}

/* Forgets the current context and frees it: its commands come back through
 * cmd_reply with NULL (ECLOSED), its callbacks are then stale. */
static void conn_drop(struct redis_client *c) {
  redisAsyncContext *ac = c->ac;
  c->ac = NULL;
  c->hs_left = 0;
  struct redis__tunnel *t = c->tunnel;
  c->tunnel = NULL;
  redis__tunnel_close(t);
  if (ac != NULL)
    redisAsyncFree(ac);
  /* Commands hiredis still holds (a free deferred to the end of a hiredis
   * callback) fail now, not when the context goes. */
  while (c->pending_head != NULL)
    cmd_fail(c->pending_head, POSTERN_ECLOSED);
}

static void backoff_cb(uv_timer_t *t) {
  struct redis_client *c = t->data;
  if (!c->closing)
    connect_start(c);
}

/* The connection is gone (or never came): down, and try again later. */
static void conn_lost(struct redis_client *c, const char *why) {
  conn_drop(c);
  if (c->closing)
    return;
  postern_log(POSTERN_LOG_DEBUG, "redis_conn_lost", "reason", why, NULL);
  set_up(c, false);
  if (c->closing)
    return; /* the state callback closed the client */
  uv_timer_start(&c->ctimer, backoff_cb, c->backoff_ms, 0);
  c->backoff_ms *= 2;
  if (c->backoff_ms > c->opts.reconnect_max_ms)
    c->backoff_ms = c->opts.reconnect_max_ms;
}

static void tmo_cb(uv_timer_t *t) {
  struct redis_client *c = t->data;
  uint64_t now = uv_now(c->loop);
  bool expired = false;
  while (c->pending_head != NULL && c->pending_head->deadline <= now) {
    cmd_fail(c->pending_head, POSTERN_ETIMEOUT);
    expired = true;
  }
  /* A command with no answer leaves the connection in an unknown state
   * (Redis stalled, or the path to it): start afresh. */
  if (expired)
    conn_lost(c, "command timeout");
  else
    tmo_rearm(c);
}

/* ---- Connecting --------------------------------------------------------- */

static void handle_gone(struct redis_client *c);

static void on_connect(const redisAsyncContext *ac, int status) {
  struct redis_client *c = ac->data;
  if (status != REDIS_OK && ac == c->ac) {
    c->ac = NULL; /* hiredis frees it after this callback */
    conn_lost(c, "connect failed");
  }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  struct redis_client *c = ac->data;
  if (ac == c->ac) {
    c->ac = NULL;
    conn_lost(c, "disconnected");
  }
}

static void hs_reply(redisAsyncContext *ac, void *r, void *priv) {
  struct redis_client *c = priv;
  redisReply *reply = r;
  if (reply == NULL || ac != c->ac || c->closing)
    return;
  if (reply->type == REDIS_REPLY_ERROR) {
    postern_log(POSTERN_LOG_ERROR, "redis_handshake_failed", "error",
                reply->str, NULL);
    conn_lost(c, "handshake refused");
    return;
  }
  if (--c->hs_left == 0) {
    uv_timer_stop(&c->ctimer);
    c->backoff_ms = c->opts.reconnect_min_ms;
    set_up(c, true);
  }
}

static void ctimeout_cb(uv_timer_t *t) {
  struct redis_client *c = t->data;
  c->attempt++; /* a lookup still running is abandoned */
  conn_lost(c, "connect timeout");
}

/* hiredis connects to `ip` (TCP), or to the Unix socket `path` (a unix://
 * URL, or the TLS tunnel's). */
static void connect_hiredis(struct redis_client *c, const char *ip,
                            const char *path) {
  const struct redis_url *u = &c->opts.url;
  redisAsyncContext *ac = path != NULL ? redisAsyncConnectUnix(path)
                                       : redisAsyncConnect(ip, u->port);
  if (ac == NULL || ac->err) {
    if (ac != NULL)
      redisAsyncFree(ac);
    conn_lost(c, "connect failed");
    return;
  }
  ac->data = c;
  if (redisLibuvAttach(ac, c->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    conn_lost(c, "attach failed");
    return;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  c->ac = ac;
  c->hs_left = 0;
  /* AUTH and SELECT first, pipelined; PING last says the session works. */
  if (u->password[0] != '\0') {
    const char *argv[3] = {"AUTH", u->user, u->password};
    if (u->user[0] != '\0')
      redisAsyncCommandArgv(ac, hs_reply, c, 3, argv, NULL);
    else {
      argv[1] = u->password;
      redisAsyncCommandArgv(ac, hs_reply, c, 2, argv, NULL);
    }
    c->hs_left++;
  }
  if (u->db != 0) {
    redisAsyncCommand(ac, hs_reply, c, "SELECT %u", u->db);
    c->hs_left++;
  }
  redisAsyncCommand(ac, hs_reply, c, "PING");
  c->hs_left++;
  if (!u->tls) /* the tunnel's connect started the deadline */
    uv_timer_start(&c->ctimer, ctimeout_cb, c->opts.connect_timeout_ms, 0);
}

static void tunnel_ready(struct redis__tunnel *t, int status, const char *what,
                         void *arg) {
  struct redis_client *c = arg;
  if (t != c->tunnel || c->closing)
    return;
  if (status != 0) {
    c->tunnel = NULL; /* it closes itself */
    postern_log(POSTERN_LOG_WARN, "redis_tls_failed", "host", c->opts.url.host,
                "reason", what, NULL);
    conn_lost(c, "TLS connection failed");
    return;
  }
  connect_hiredis(c, NULL, what);
}

static void tunnel_gone(struct redis__tunnel *t, void *arg) {
  struct redis_client *c = arg;
  if (c->tunnel == t)
    c->tunnel = NULL;
  handle_gone(c);
}

static void connect_addr(struct redis_client *c, const char *ip) {
  const struct redis_url *u = &c->opts.url;
  if (u->transport == REDIS_UNIX) {
    connect_hiredis(c, NULL, u->path);
    return;
  }
  if (!u->tls) {
    connect_hiredis(c, ip, NULL);
    return;
  }
  struct sockaddr_storage ss;
  if (uv_ip4_addr(ip, u->port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(ip, u->port, (struct sockaddr_in6 *)&ss) != 0) {
    conn_lost(c, "bad address");
    return;
  }
  struct redis__tunnel *t;
  if (redis__tunnel_open(c->loop, c->tls, (const struct sockaddr *)&ss, u->host,
                         tunnel_ready, tunnel_gone, c, &t) != 0) {
    conn_lost(c, "TLS connection failed");
    return;
  }
  c->tunnel = t;
  c->open_handles++; /* until tunnel_gone */
}

struct redis_gai {
  uv_getaddrinfo_t req;
  struct redis_client *c;
  unsigned attempt;
};

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  struct redis_gai *g = req->data;
  struct redis_client *c = g->c;
  char ip[INET6_ADDRSTRLEN] = "";
  bool current = g->attempt == c->attempt;
  if (c->gai_last == req)
    c->gai_last = NULL;
  free(g);
  c->gai_busy--;
  if (status == 0 && res != NULL) {
    if (res->ai_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
    else if (res->ai_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
  }
  if (res != NULL)
    uv_freeaddrinfo(res);
  if (c->closing) {
    net_defer_arm(&c->soon, deliver_all); /* finishes the close */
    return;
  }
  if (!current)
    return; /* that attempt timed out; another one runs */
  if (ip[0] == '\0') {
    conn_lost(c, "address lookup failed");
    return;
  }
  connect_addr(c, ip);
}

static void connect_start(struct redis_client *c) {
  struct addrinfo hints;
  struct redis_gai *g;
  c->attempt++;
  if (c->opts.url.transport == REDIS_UNIX) {
    connect_addr(c, NULL);
    return;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  g = calloc(1, sizeof *g);
  if (g == NULL) {
    conn_lost(c, "out of memory");
    return;
  }
  g->c = c;
  g->attempt = c->attempt;
  g->req.data = g;
  /* A name resolves in libuv's thread pool, never on the loop. */
  if (uv_getaddrinfo(c->loop, &g->req, gai_cb, c->opts.url.host, NULL,
                     &hints) != 0) {
    free(g);
    conn_lost(c, "address lookup failed");
    return;
  }
  c->gai_busy++;
  c->gai_last = &g->req;
  uv_timer_start(&c->ctimer, ctimeout_cb, c->opts.connect_timeout_ms, 0);
}

/* ---- Client ------------------------------------------------------------- */

int redis_client_new(uv_loop_t *loop, const struct redis_opts *o,
                     struct redis_client **out) {
  struct redis_client *c;
  int rc;
  *out = NULL;
  if (loop == NULL || o == NULL ||
      strnlen(o->key_prefix, sizeof o->key_prefix) > REDIS_PREFIX_MAX ||
      o->connect_timeout_ms == 0 || o->command_timeout_ms == 0 ||
      o->reconnect_min_ms == 0 || o->reconnect_max_ms < o->reconnect_min_ms)
    return POSTERN_EINVAL;
  if (o->url.transport == REDIS_TCP ? o->url.host[0] == '\0'
                                    : o->url.path[0] == '\0')
    return POSTERN_EINVAL;
  c = calloc(1, sizeof *c);
  if (c == NULL)
    return POSTERN_ENOMEM;
  c->loop = loop;
  c->opts = *o;
  c->prefix_len = strlen(c->opts.key_prefix);
  c->backoff_ms = o->reconnect_min_ms;
  rc = redis__scripts_init(c);
  if (rc == 0 && o->url.tls) {
    const struct redis_opts *so = &c->opts;
    char err[256] = "";
    rc =
        tls_ctx_new_client(&c->tls, so->tls_ca_file[0] ? so->tls_ca_file : NULL,
                           NULL, err, sizeof err);
    if (rc == 0 && so->tls_cert_file[0])
      rc = tls_ctx_use_client_cert(c->tls, so->tls_cert_file, so->tls_key_file,
                                   err, sizeof err);
    if (rc != 0)
      postern_log(POSTERN_LOG_ERROR, "redis_tls_config", "reason", err, NULL);
  }
  if (rc != 0) {
    tls_ctx_free(c->tls);
    free(c);
    return rc;
  }
  uv_timer_init(loop, &c->ctimer);
  c->ctimer.data = c;
  uv_timer_init(loop, &c->tmo);
  c->tmo.data = c;
  net_defer_init(loop, &c->soon, c);
  c->open_handles = 3;
  connect_start(c);
  *out = c;
  return 0;
}

bool redis_client_up(const struct redis_client *c) {
  return c->up;
}

int redis_client_key(const struct redis_client *c, const char *name, char *buf,
                     size_t cap) {
  size_t n = strlen(name);
  if (c->prefix_len + n + 1 > cap)
    return POSTERN_ETOOBIG;
  memcpy(buf, c->opts.key_prefix, c->prefix_len);
  memcpy(buf + c->prefix_len, name, n + 1);
  return (int)(c->prefix_len + n);
}

/* One of the client's handles is gone; the last one frees it. */
static void handle_gone(struct redis_client *c) {
  if (--c->open_handles > 0)
    return;
  void (*cb)(void *) = c->close_cb;
  void *arg = c->close_arg;
  tls_ctx_free(c->tls); /* every tunnel (and its tls_conn) is gone */
  free(c);
  if (cb)
    cb(arg);
}

static void handle_closed(uv_handle_t *h) {
  handle_gone(h->data);
}

static void soon_closed(struct net_defer *d) {
  handle_gone(d->data);
}

static void deliver_all(struct net_defer *d) {
  struct redis_client *c = d->data;
  while (c->dq_head != NULL) {
    struct redis_cmd *m = c->dq_head;
    struct redis_result res = {m->status, NULL, NULL};
    c->dq_head = m->dnext;
    if (c->dq_head == NULL)
      c->dq_tail = NULL;
    m->delivered = true;
    m->cb(c, &res, m->arg);
    cmd_maybe_free(m);
  }
  if (c->closing && !c->handles_closing && !c->gai_busy && c->dq_head == NULL) {
    c->handles_closing = true;
    uv_close((uv_handle_t *)&c->ctimer, handle_closed);
    uv_close((uv_handle_t *)&c->tmo, handle_closed);
    net_defer_close(&c->soon, soon_closed);
  }
}

void redis_client_close(struct redis_client *c, void (*cb)(void *arg),
                        void *arg) {
  if (c->closing)
    return;
  c->closing = true;
  c->close_cb = cb;
  c->close_arg = arg;
  uv_timer_stop(&c->ctimer);
  uv_timer_stop(&c->tmo);
  if (c->gai_busy && c->gai_last != NULL)
    uv_cancel((uv_req_t *)c->gai_last); /* the last one: may be running */
  conn_drop(c);
  c->up = false;
  net_defer_arm(&c->soon, deliver_all);
}

/* ---- Commands ----------------------------------------------------------- */

static void cmd_reply(redisAsyncContext *ac, void *r, void *priv) {
  struct redis_cmd *m = priv;
  redisReply *reply = r;
  m->in_hiredis = false;
  if (m->done) {
    cmd_maybe_free(m);
    return;
  }
  if (reply == NULL) {
    cmd_fail(m, POSTERN_ECLOSED);
    return;
  }
  struct redis_result res = {0, (const struct redis_value *)(void *)reply,
                             NULL};
  if (reply->type == REDIS_REPLY_ERROR) {
    res.status = POSTERN_EREDIS;
    res.error = reply->str;
  }
  m->done = true;
  pending_remove(m);
  tmo_rearm(m->c);
  m->delivered = true;
  m->cb(m->c, &res, m->arg);
  free(m);
}

/* Sends an already formatted command; `buf` is ours to free. */
static int send_formatted(struct redis_client *c, unsigned timeout_ms,
                          redis_cb cb, void *arg, char *buf, int len) {
  struct redis_cmd *m = calloc(1, sizeof *m);
  if (m == NULL) {
    redisFreeCommand(buf);
    return POSTERN_ENOMEM;
  }
  m->c = c;
  m->cb = cb;
  m->arg = arg;
  m->delivered = false;
  if (c->closing || !c->up || c->ac == NULL) {
    redisFreeCommand(buf);
    cmd_fail(m, POSTERN_ECLOSED);
    return 0;
  }
  if (redisAsyncFormattedCommand(c->ac, cmd_reply, m, buf, (size_t)len) !=
      REDIS_OK) {
    redisFreeCommand(buf);
    cmd_fail(m, POSTERN_ECLOSED);
    return 0;
  }
  redisFreeCommand(buf);
  m->in_hiredis = true;
  m->deadline =
      uv_now(c->loop) + (timeout_ms ? timeout_ms : c->opts.command_timeout_ms);
  pending_add(m);
  return 0;
}

int redis_command(struct redis_client *c, redis_cb cb, void *arg,
                  const char *fmt, ...) {
  char *buf = NULL;
  va_list ap;
  int len;
  if (c == NULL || cb == NULL || fmt == NULL)
    return POSTERN_EINVAL;
  va_start(ap, fmt);
  len = redisvFormatCommand(&buf, fmt, ap);
  va_end(ap);
  if (len == -1) /* hiredis: -1 out of memory, -2 a bad format */
    return POSTERN_ENOMEM;
  if (len < 0)
    return POSTERN_EINVAL;
  return send_formatted(c, 0, cb, arg, buf, len);
}

int redis_command_argv(struct redis_client *c, unsigned timeout_ms, redis_cb cb,
                       void *arg, int argc, const char **argv,
                       const size_t *lens) {
  char *buf = NULL;
  int len;
  if (c == NULL || cb == NULL || argc < 1 || argv == NULL)
    return POSTERN_EINVAL;
  len = redisFormatCommandArgv(&buf, argc, argv, lens);
  if (len < 0)
    return POSTERN_ENOMEM;
  return send_formatted(c, timeout_ms, cb, arg, buf, len);
}
