/*
 * net/https.c - HTTPS GETs and POSTs with libcurl's multi interface on a
 * libuv loop (see https.h for the contract; the pure checks are in
 * https_util.c).
 *
 * Driving curl: curl tells us through the socket callback which descriptors
 * to watch for what; each gets a uv_poll_t (struct https_poll), found again
 * through curl_multi_assign(). curl's timer callback (re)arms one
 * uv_timer_t. Both feed curl_multi_socket_action(), after which finished
 * transfers are collected with curl_multi_info_read(). curl's callbacks
 * never call into curl (curl forbids it) and never call user code.
 *
 * Ownership of a struct https_fetch: while `in_multi` its easy handle is in
 * the multi handle and it is on the client's `active` list. When it ends
 * (done or cancelled) it leaves the multi handle and moves to the delivery
 * list, which a net_defer (net/defer.h) drains once the current call has
 * returned: the user
 * callback runs there, never inside https_fetch(), https_fetch_cancel() or
 * a curl callback. After the callback returns the fetch is freed (it owns
 * no libuv handle, so that needs no close callback).
 *
 * Isolation between fetches: each easy handle gets its own share object
 * holding its own DNS cache, filled only with the caller's addresses
 * (CURLOPT_RESOLVE), and its own connection (FRESH_CONNECT/FORBID_REUSE),
 * so one fetch's addresses can never answer for another's and a host name
 * is never handed to the system resolver.
 *
 * A POST differs from a GET only in what is sent (curl's own copy of the
 * body, with our Content-Type and an empty Expect header, both in the
 * fetch's `headers` list, which lives as long as the easy handle) and in
 * which status is success (any 2xx instead of 200): connection, TLS,
 * verification, redirects, caps and timeout are the same code.
 *
 * Ownership of the client: https_client_close() cancels what is active; the
 * deferred pass delivers the cancellations, then tears down: multi cleanup
 * (which may report sockets to remove), then uv_close() of every poll and
 * the timer, and the defer's close. The memory is freed in the last close
 * callback, which also runs the user's close callback.
 */
#include "net/https.h"

#include "net/defer.h"

#include "net/https_internal.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct https_poll {
  uv_poll_t h;
  struct https_client *c;
  curl_socket_t fd;
  struct https_poll *prev, *next;
};

struct https_fetch {
  struct https_client *c;
  CURL *easy;
  CURLSH *share;
  struct curl_slist *resolve;
  struct curl_slist *headers; /* a POST's Content-Type and Expect */
  https_cb cb;
  void *arg;
  bool in_multi;
  bool queued;
  bool require_text_plain;
  bool post;      /* a POST: any 2xx is success */
  bool checked;   /* the first body bytes have been seen */
  bool toobig;    /* the body went over the cap */
  bool reject_ct; /* 200 but not text/plain, seen while reading */
  int status;
  unsigned char *body;
  size_t len, cap, max;
  struct https_fetch *prev, *next; /* active list, then delivery list */
  char errbuf[CURL_ERROR_SIZE];
  char url[HTTPS_URL_MAX];
  char ip[64];
};

struct https_client {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  struct net_defer soon; /* delivers the finished fetches */
  struct https_poll *polls;
  struct https_fetch *active;
  struct https_fetch *dq_head, *dq_tail;
  bool closing;
  bool torn_down;
  int open_handles;
  int nfetches; /* started, callback not yet started */
  void (*close_cb)(void *arg);
  void *close_arg;
};

/* ---- Process setup ---- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_result = POSTERN_ESTATE;

static void global_init_once(void) {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    global_result = POSTERN_EINTERNAL;
    return;
  }
  /* Only the GnuTLS flavour may share a process with BoringSSL, and only
   * a libcurl that speaks HTTPS is any use here. */
  const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  bool https = false;
  for (const char *const *p = v->protocols; p && *p; p++)
    if (strcmp(*p, "https") == 0)
      https = true;
  if (!https || v->ssl_version == NULL ||
      strstr(v->ssl_version, "GnuTLS") == NULL) {
    global_result = POSTERN_EUNSUPPORTED;
    return;
  }
  global_result = 0;
}

int https_global_init(void) {
  pthread_once(&global_once, global_init_once);
  return global_result;
}

void https_global_cleanup(void) {
  if (global_result == 0)
    curl_global_cleanup();
}

/* ---- Delivery ---- */

static void deliver_all(struct net_defer *d);

static void active_unlink(struct https_client *c, struct https_fetch *f) {
  if (f->prev)
    f->prev->next = f->next;
  else
    c->active = f->next;
  if (f->next)
    f->next->prev = f->prev;
  f->prev = f->next = NULL;
}

static void fetch_free(struct https_fetch *f) {
  if (f->easy)
    curl_easy_cleanup(f->easy);
  if (f->share)
    curl_share_cleanup(f->share);
  curl_slist_free_all(f->resolve);
  curl_slist_free_all(f->headers);
  free(f->body);
  free(f);
}

/* Takes f out of the multi handle and queues its callback. */
static void fetch_end(struct https_fetch *f) {
  struct https_client *c = f->c;
  if (f->in_multi) {
    curl_multi_remove_handle(c->multi, f->easy);
    f->in_multi = false;
    active_unlink(c, f);
  }
  if (f->queued)
    return;
  f->queued = true;
  f->next = NULL;
  if (c->dq_tail)
    c->dq_tail->next = f;
  else
    c->dq_head = f;
  c->dq_tail = f;
  net_defer_arm(&c->soon, deliver_all);
}

/* Whether the answer's status makes the request a success: 200 for a GET
 * (RFC 8461 §3.3 wants the policy body), any 2xx for a POST (RFC 8460 §5.4:
 * "typically a 200 or 201"; a 202 or 204 accepts the report just as well). */
static bool code_ok(const struct https_fetch *f, long code) {
  return f->post ? code >= 200 && code <= 299 : code == 200;
}

/* Judges a transfer curl has finished. The HTTP status comes first: a 404
 * or a redirect is EHTTP whatever happened to its body afterwards. */
static void fetch_done(struct https_fetch *f, CURLcode rc) {
  long code = 0, os_errno = 0;
  char *ip = NULL, *ct = NULL;
  curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_getinfo(f->easy, CURLINFO_OS_ERRNO, &os_errno);
  curl_easy_getinfo(f->easy, CURLINFO_CONTENT_TYPE, &ct);
  if (curl_easy_getinfo(f->easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK &&
      ip != NULL)
    snprintf(f->ip, sizeof f->ip, "%s", ip);
  if (code != 0 && !code_ok(f, code)) {
    f->status = POSTERN_EHTTP;
    snprintf(f->errbuf, sizeof f->errbuf, "HTTP status %ld%s", code,
             code >= 300 && code < 400 ? " (redirects are not followed)" : "");
  } else if (f->reject_ct || (rc == CURLE_OK && f->require_text_plain &&
                              !https_content_type_is(ct, "text/plain"))) {
    f->status = POSTERN_EHTTP;
    snprintf(f->errbuf, sizeof f->errbuf, "Content-Type %s is not text/plain",
             ct ? ct : "(none)");
  } else if (f->toobig || rc == CURLE_FILESIZE_EXCEEDED) {
    f->status = POSTERN_ETOOBIG;
    snprintf(f->errbuf, sizeof f->errbuf, "body larger than %zu bytes", f->max);
  } else if (rc != CURLE_OK) {
    f->status = https__err_from_curl(rc, os_errno);
    if (f->errbuf[0] == '\0')
      snprintf(f->errbuf, sizeof f->errbuf, "%s", curl_easy_strerror(rc));
  } else {
    f->status = 0;
    f->errbuf[0] = '\0';
  }
  fetch_end(f);
}

static void deliver(struct https_fetch *f) {
  struct https_result res;
  char *ct = NULL;
  memset(&res, 0, sizeof res);
  res.status = f->status;
  if (f->status != POSTERN_ECANCELED) {
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &res.http_code);
    curl_easy_getinfo(f->easy, CURLINFO_CONTENT_TYPE, &ct);
  }
  res.content_type = ct;
  res.body = f->body ? f->body : (const unsigned char *)"";
  res.body_len = f->len;
  res.error = f->errbuf;
  res.url = f->url;
  res.ip = f->ip;
  if (postern_log_enabled(POSTERN_LOG_DEBUG)) {
    struct postern_log_rec r;
    postern_log_begin(&r, POSTERN_LOG_DEBUG, "https_fetch_done");
    postern_log_str(&r, "method", f->post ? "POST" : "GET");
    postern_log_str(&r, "url", f->url);
    postern_log_str(&r, "ip", f->ip);
    postern_log_str(&r, "status", postern_err_name(f->status));
    postern_log_int(&r, "http_code", res.http_code);
    postern_log_uint(&r, "bytes", f->len);
    if (f->errbuf[0])
      postern_log_str(&r, "error", f->errbuf);
    postern_log_end(&r);
  }
  f->cb(&res, f->arg);
}

static void teardown(struct https_client *c);

static void deliver_all(struct net_defer *d) {
  struct https_client *c = d->data;
  struct https_fetch *f;
  /* Callbacks may queue more (a close cancels what is active): drain until
   * nothing is left. */
  while ((f = c->dq_head) != NULL) {
    c->dq_head = f->next;
    if (c->dq_head == NULL)
      c->dq_tail = NULL;
    /* The slot is free once the callback starts, so that the callback can
     * start another fetch in it (a caller queueing for slots needs that). */
    c->nfetches--;
    deliver(f);
    fetch_free(f);
  }
  if (c->closing && !c->torn_down)
    teardown(c);
}

/* ---- Driving curl from libuv ---- */

static void client_handle_closed(struct https_client *c) {
  if (--c->open_handles > 0 || !c->torn_down)
    return;
  void (*cb)(void *) = c->close_cb;
  void *arg = c->close_arg;
  free(c);
  if (cb)
    cb(arg);
}

static void handle_closed(uv_handle_t *h) {
  client_handle_closed(h->data);
}

static void soon_closed(struct net_defer *d) {
  client_handle_closed(d->data);
}

static void poll_closed(uv_handle_t *h) {
  struct https_poll *p = h->data;
  struct https_client *c = p->c;
  free(p);
  client_handle_closed(c);
}

static void poll_close(struct https_client *c, struct https_poll *p) {
  if (p->prev)
    p->prev->next = p->next;
  else
    c->polls = p->next;
  if (p->next)
    p->next->prev = p->prev;
  /* Stopping now (before curl closes the descriptor) removes it from
   * epoll; a new socket may reuse the number before the close callback. */
  uv_poll_stop(&p->h);
  uv_close((uv_handle_t *)&p->h, poll_closed);
}

/* Collects every finished transfer. */
static void check_done(struct https_client *c) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE)
      continue;
    char *priv = NULL;
    CURLcode rc = m->data.result;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
    if (priv != NULL)
      fetch_done((struct https_fetch *)priv, rc);
  }
}

static void drive(struct https_client *c, curl_socket_t fd, int flags) {
  int running = 0;
  CURLMcode mc = curl_multi_socket_action(c->multi, fd, flags, &running);
  if (mc != CURLM_OK)
    postern_log(POSTERN_LOG_ERROR, "https_multi_error", "error",
                curl_multi_strerror(mc), NULL);
  check_done(c);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  struct https_poll *p = h->data;
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  drive(p->c, p->fd, flags);
}

static void timer_cb(uv_timer_t *t) {
  drive(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION: curl wants socket_action(TIMEOUT) in `ms`
 * milliseconds (-1: never). Even 0 goes through the timer: curl must not be
 * called back from inside its own callback. */
static int timer_fn(CURLM *m, long ms, void *userp) {
  struct https_client *c = userp;
  if (c->torn_down)
    return 0;
  if (ms < 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, timer_cb, (uint64_t)ms, 0);
  return 0;
}

/* CURLMOPT_SOCKETFUNCTION: watch `s` for `what`. */
static int socket_fn(CURL *e, curl_socket_t s, int what, void *userp,
                     void *socketp) {
  struct https_client *c = userp;
  struct https_poll *p = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (p != NULL) {
      poll_close(c, p);
      if (!c->torn_down)
        curl_multi_assign(c->multi, s, NULL);
    }
    return 0;
  }
  if (c->torn_down)
    return -1;
  if (p == NULL) {
    p = calloc(1, sizeof *p);
    if (p == NULL)
      return -1;
    if (uv_poll_init_socket(c->loop, &p->h, s) != 0) {
      free(p);
      return -1;
    }
    p->c = c;
    p->fd = s;
    p->h.data = p;
    p->next = c->polls;
    if (c->polls)
      c->polls->prev = p;
    c->polls = p;
    c->open_handles++;
    curl_multi_assign(c->multi, s, p);
  }
  int ev = 0;
  if (what & CURL_POLL_IN)
    ev |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    ev |= UV_WRITABLE;
  uv_poll_start(&p->h, ev, poll_cb);
  return 0;
}

/* CURLOPT_WRITEFUNCTION: keeps the body, up to the cap. The first call also
 * looks at the status and the type, so that a 404 page or an HTML body is
 * not read at all. Returning less than given makes curl stop the transfer
 * (CURLE_WRITE_ERROR), which fetch_done() then judges by our flags. */
static size_t write_fn(char *ptr, size_t size, size_t nmemb, void *ud) {
  struct https_fetch *f = ud;
  size_t n = size * nmemb;
  if (!f->checked) {
    long code = 0;
    char *ct = NULL;
    f->checked = true;
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
    if (!code_ok(f, code))
      return 0;
    curl_easy_getinfo(f->easy, CURLINFO_CONTENT_TYPE, &ct);
    if (f->require_text_plain && !https_content_type_is(ct, "text/plain")) {
      f->reject_ct = true;
      return 0;
    }
  }
  if (n > f->max - f->len) {
    f->toobig = true;
    return 0;
  }
  if (f->len + n + 1 > f->cap) {
    size_t want = f->cap ? f->cap : 4096;
    while (want < f->len + n + 1)
      want *= 2;
    if (want > f->max + 1)
      want = f->max + 1;
    unsigned char *b = realloc(f->body, want);
    if (b == NULL)
      return 0; /* CURLE_WRITE_ERROR, reported as EIO */
    f->body = b;
    f->cap = want;
  }
  memcpy(f->body + f->len, ptr, n);
  f->len += n;
  f->body[f->len] = '\0';
  return n;
}

/* ---- Client ---- */

int https_client_new(uv_loop_t *loop, struct https_client **out) {
  *out = NULL;
  if (global_result != 0)
    return POSTERN_ESTATE;
  struct https_client *c = calloc(1, sizeof *c);
  if (c == NULL)
    return POSTERN_ENOMEM;
  c->loop = loop;
  c->multi = curl_multi_init();
  if (c->multi == NULL) {
    free(c);
    return POSTERN_ENOMEM;
  }
  if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_fn) ||
      curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) ||
      curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_fn) ||
      curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) ||
      uv_timer_init(loop, &c->timer) != 0) {
    curl_multi_cleanup(c->multi);
    free(c);
    return POSTERN_EINTERNAL;
  }
  net_defer_init(loop, &c->soon, c);
  c->timer.data = c;
  c->open_handles = 2;
  *out = c;
  return 0;
}

static void teardown(struct https_client *c) {
  c->torn_down = true;
  /* May report sockets to remove through socket_fn, which closes them. */
  curl_multi_cleanup(c->multi);
  c->multi = NULL;
  while (c->polls)
    poll_close(c, c->polls);
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, handle_closed);
  net_defer_close(&c->soon, soon_closed);
}

void https_client_close(struct https_client *c, void (*cb)(void *arg),
                        void *arg) {
  c->closing = true;
  c->close_cb = cb;
  c->close_arg = arg;
  while (c->active) {
    struct https_fetch *f = c->active;
    fetch_end(f);
    f->status = POSTERN_ECANCELED;
    snprintf(f->errbuf, sizeof f->errbuf, "client closed");
  }
  /* Teardown happens in the deferred pass, after the cancellations. */
  net_defer_arm(&c->soon, deliver_all);
}

void https_fetch_cancel(struct https_fetch *f) {
  /* A fetch that finished but whose callback has not run yet is reported
   * as cancelled too: the caller has stopped caring about its result. */
  fetch_end(f);
  f->status = POSTERN_ECANCELED;
  snprintf(f->errbuf, sizeof f->errbuf, "canceled");
}

/* Sets every option of a fetch; any refusal is EINTERNAL (our bug or a
 * libcurl too old for an option we rely on). */
static int fetch_setopts(struct https_fetch *f, const struct https_request *req,
                         unsigned timeout_ms) {
  CURL *e = f->easy;
  CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                          \
  do {                                                                         \
    if (rc == CURLE_OK)                                                        \
      rc = curl_easy_setopt(e, opt, val);                                      \
  } while (0)
  SET(CURLOPT_URL, f->url);
  SET(CURLOPT_PRIVATE, (char *)f);
  SET(CURLOPT_PROTOCOLS_STR, "https");
  SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
  SET(CURLOPT_FOLLOWLOCATION, 0L); /* RFC 8461 §3.3 */
  if (f->post) {
    /* The size first: the body is bytes (gzip), not a C string. curl
     * copies them, so the caller's buffer may go once https_fetch()
     * returns. A known size means Content-Length, never chunked. */
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->post_len);
    SET(CURLOPT_COPYPOSTFIELDS, req->post_len ? req->post_body : "");
    SET(CURLOPT_HTTPHEADER, f->headers);
  } else {
    SET(CURLOPT_HTTPGET, 1L);
  }
  SET(CURLOPT_SHARE, f->share);
  SET(CURLOPT_RESOLVE, f->resolve);
  SET(CURLOPT_PROXY, ""); /* no proxy, whatever the environment says */
  SET(CURLOPT_FRESH_CONNECT, 1L);
  SET(CURLOPT_FORBID_REUSE, 1L);
  SET(CURLOPT_SSL_VERIFYPEER, 1L);
  SET(CURLOPT_SSL_VERIFYHOST, 2L);
  SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
  if (req->ca_file != NULL)
    SET(CURLOPT_CAINFO, req->ca_file);
  SET(CURLOPT_CAPATH, (char *)NULL);
  SET(CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
  SET(CURLOPT_TIMEOUT_MS, (long)timeout_ms);
  SET(CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
  SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->max);
  SET(CURLOPT_WRITEFUNCTION, write_fn);
  SET(CURLOPT_WRITEDATA, f);
  SET(CURLOPT_ERRORBUFFER, f->errbuf);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_USERAGENT, "Postern");
#undef SET
  return rc == CURLE_OK ? 0 : POSTERN_EINTERNAL;
}

/* The POST fields of a request: all or nothing, and sane (https.h). */
static int post_check(const struct https_request *req) {
  if (req->post_body == NULL)
    return req->post_len == 0 && req->post_content_type == NULL
               ? 0
               : POSTERN_EINVAL;
  if (req->post_len > HTTPS_BODY_MAX_LIMIT || req->require_text_plain ||
      !https__media_type_ok(req->post_content_type))
    return POSTERN_EINVAL;
  return 0;
}

/* A POST's own header lines: its Content-Type, and an empty Expect, which
 * stops curl from asking for a "100 Continue" and waiting up to a second
 * for it before sending a larger body (RFC 9110 §10.1.1: a client may
 * simply send). Returns 0 or POSTERN_ENOMEM. */
static int post_headers(struct https_fetch *f, const char *ct) {
  char line[sizeof "Content-Type: " + HTTPS_CONTENT_TYPE_MAX];
  snprintf(line, sizeof line, "Content-Type: %s", ct);
  struct curl_slist *h = curl_slist_append(NULL, line);
  if (h == NULL)
    return POSTERN_ENOMEM;
  f->headers = h;
  h = curl_slist_append(f->headers, "Expect:");
  if (h == NULL)
    return POSTERN_ENOMEM;
  f->headers = h;
  return 0;
}

int https_fetch(struct https_client *c, const struct https_request *req,
                https_cb cb, void *arg, struct https_fetch **fp) {
  char host[HTTPS__HOST_MAX];
  char entry[HTTPS__HOST_MAX + 8 + HTTPS_ADDRS_MAX * (INET6_ADDRSTRLEN + 3)];
  uint16_t port = 0;
  int rc;
  if (fp)
    *fp = NULL;
  if (c->closing)
    return POSTERN_ESTATE;
  if (c->nfetches >= HTTPS_FETCHES_MAX)
    return POSTERN_EBUSY;
  if (req == NULL || cb == NULL || req->body_max > HTTPS_BODY_MAX_LIMIT)
    return POSTERN_EINVAL;
  rc = post_check(req);
  if (rc != 0)
    return rc;
  struct https_fetch *f = calloc(1, sizeof *f);
  if (f == NULL)
    return POSTERN_ENOMEM;
  rc = https__url_prepare(req->url, req->port, f->url, host, &port);
  if (rc != 0)
    goto fail;
  rc = https__resolve_entry(host, port, req->addrs, req->naddrs, entry,
                            sizeof entry);
  if (rc < 0) {
    rc = POSTERN_EINVAL;
    goto fail;
  }
  f->c = c;
  f->cb = cb;
  f->arg = arg;
  f->require_text_plain = req->require_text_plain;
  f->post = req->post_body != NULL;
  f->max = req->body_max ? req->body_max : HTTPS_BODY_MAX_DEFAULT;
  rc = POSTERN_ENOMEM;
  f->resolve = curl_slist_append(NULL, entry);
  f->easy = curl_easy_init();
  f->share = curl_share_init();
  if (f->resolve == NULL || f->easy == NULL || f->share == NULL)
    goto fail;
  if (f->post && post_headers(f, req->post_content_type) != 0)
    goto fail;
  /* The share object holds this fetch's private DNS cache. */
  if (curl_share_setopt(f->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) !=
      CURLSHE_OK) {
    rc = POSTERN_EINTERNAL;
    goto fail;
  }
  rc = fetch_setopts(
      f, req, req->timeout_ms ? req->timeout_ms : HTTPS_TIMEOUT_MS_DEFAULT);
  if (rc != 0)
    goto fail;
  /* Arms the timer at 0 through timer_fn; the transfer starts on the next
   * loop iteration. */
  if (curl_multi_add_handle(c->multi, f->easy) != CURLM_OK) {
    rc = POSTERN_EINTERNAL;
    goto fail;
  }
  f->in_multi = true;
  f->next = c->active;
  if (c->active)
    c->active->prev = f;
  c->active = f;
  c->nfetches++;
  if (fp)
    *fp = f;
  return 0;
fail:
  fetch_free(f);
  return rc;
}
