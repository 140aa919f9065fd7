/*
 * net/dns.c - the resolver: one c-ares channel driven by one libuv loop (see
 * dns.h for the contract).
 *
 * c-ares owns the sockets; it tells us through the socket-state callback
 * which descriptors to watch, and we give each one a uv_poll_t. One
 * uv_timer_t, re-armed after every c-ares call from ares_timeout(), drives
 * its retries. Queries are built by c-ares (ares_create_query, EDNS0) and
 * patched to carry the AD and DO bits; the raw answer is parsed by
 * dns_answer_parse() in dns_parse.c.
 *
 * Ownership of a struct dns_query: it is alive while c-ares still holds it
 * (`in_ares`, until c-ares calls query_done, always exactly once) or while
 * its callback has not run yet (`delivered` false). Answers are never
 * passed to the caller from inside c-ares or from inside dns_query(): they
 * go on the resolver's delivery list, which a net_defer (net/defer.h)
 * drains once the current call has returned. That also keeps user code (which
 * may close the resolver) out of c-ares' stack.
 *
 * Ownership of the resolver: memory is freed only once every handle's
 * close callback has run (the timer, the defer and every poll handle),
 * after the delivery list is empty.
 */
#include "net/dns.h"

#include "net/defer.h"
#include "net/dns_internal.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <ares.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* EDNS0 payload size we advertise: the DNS Flag Day 2020 value, which
 * avoids IP fragmentation; larger answers come over TCP. */
#define DNS_EDNS_PAYLOAD 1232

struct dns_poll {
  uv_poll_t h;
  struct dns_resolver *r;
  ares_socket_t fd;
  struct dns_poll *next;
};

enum query_kind { QUERY_PLAIN, QUERY_HOST };

struct dns_query {
  struct dns_resolver *r;
  enum query_kind kind;
  dns_cb cb;
  void *arg;
  char *name; /* normalized */
  uint16_t type;
  bool in_ares;   /* c-ares will still call query_done */
  bool queued;    /* on the delivery list */
  bool delivered; /* the callback has run (or is running) */
  bool canceled;
  struct dns_answer ans;
  struct dns_query *next; /* delivery list */
  /* QUERY_PLAIN child of a QUERY_HOST lookup. */
  struct dns_query *parent;
  int slot;
  /* QUERY_HOST: the A and AAAA lookups and their answers. */
  struct dns_query *child[2];
  struct dns_answer sub[2];
  int nchildren;
  int ndone;
  bool abandoned; /* dns_resolve_host failed after starting a child */
  /* QUERY_PLAIN waiting for an in-flight slot (see dns_opts.max_inflight):
   * on the resolver's wait list, not yet handed to c-ares. */
  bool waiting;
  struct dns_query *wprev, *wnext;
};

struct dns_resolver {
  uv_loop_t *loop;
  struct dns__cache *cache; /* NULL: no cache */
  ares_channel ch;
  bool ch_live;
  bool trust;
  bool closing;
  uv_timer_t timer;
  struct net_defer soon; /* delivers the queued answers */
  bool handles_closing;
  struct dns_poll *polls;
  struct dns_query *dq_head, *dq_tail;
  /* Queries handed to c-ares and not answered yet, the most allowed, and
   * the ones waiting for a slot, oldest first. */
  unsigned inflight, max_inflight;
  struct dns_query *wait_head, *wait_tail;
  _Atomic uint64_t waited; /* queries that had to wait, since creation */
  int open_handles;
  void (*close_cb)(void *arg);
  void *close_arg;
};

/* ---- Options ---- */

void dns_opts_init(struct dns_opts *o) {
  memset(o, 0, sizeof *o);
  o->timeout_ms = 5000;
  o->attempts = 2;
  o->cache_size = DNS_CACHE_SIZE_DEFAULT;
  o->cache_max_ttl = DNS_CACHE_MAX_TTL_DEFAULT;
  o->max_inflight = DNS_MAX_INFLIGHT_DEFAULT;
}

static int parse_port(const char *s, uint16_t *out) {
  unsigned v = 0;
  if (*s == '\0')
    return POSTERN_EINVAL;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return POSTERN_EINVAL;
    v = v * 10 + (unsigned)(*s - '0');
    if (v > 65535)
      return POSTERN_EINVAL;
  }
  if (v == 0)
    return POSTERN_EINVAL;
  *out = (uint16_t)v;
  return 0;
}

int dns_server_parse(const char *s, struct sockaddr_storage *out) {
  char host[64];
  const char *port = NULL;
  size_t n;
  uint16_t p = 53;
  memset(out, 0, sizeof *out);
  if (s == NULL)
    return POSTERN_EINVAL;
  if (s[0] == '[') {
    const char *e = strchr(s, ']');
    if (e == NULL || (e[1] != '\0' && e[1] != ':'))
      return POSTERN_EINVAL;
    n = (size_t)(e - s - 1);
    if (n >= sizeof host)
      return POSTERN_EINVAL;
    memcpy(host, s + 1, n);
    host[n] = '\0';
    if (e[1] == ':')
      port = e + 2;
  } else {
    const char *c = strchr(s, ':');
    /* One colon: IPv4 with a port; more: a bare IPv6 address. */
    if (c != NULL && strchr(c + 1, ':') == NULL) {
      n = (size_t)(c - s);
      port = c + 1;
    } else {
      n = strlen(s);
    }
    if (n >= sizeof host)
      return POSTERN_EINVAL;
    memcpy(host, s, n);
    host[n] = '\0';
  }
  if (port != NULL && parse_port(port, &p) != 0)
    return POSTERN_EINVAL;
  struct sockaddr_in *sin = (struct sockaddr_in *)out;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
    if (s[0] == '[')
      return POSTERN_EINVAL;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(p);
    return 0;
  }
  if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(p);
    return 0;
  }
  memset(out, 0, sizeof *out);
  return POSTERN_EINVAL;
}

static bool addr_is_loopback(int family, const void *addr) {
  if (family == AF_INET) {
    const unsigned char *b = addr;
    return b[0] == 127;
  }
  if (family == AF_INET6) {
    const struct in6_addr *a6 = addr;
    if (IN6_IS_ADDR_LOOPBACK(a6))
      return true;
    return IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127;
  }
  return false;
}

bool dns_resolver_trusts_ad(const struct dns_resolver *r) {
  return r->trust;
}

void dns_resolver_cache_stats(const struct dns_resolver *r,
                              struct dns_cache_stats *st) {
  dns__cache_stats(r->cache, st);
  st->waited = atomic_load_explicit(&r->waited, memory_order_relaxed);
}

/* ---- Driving c-ares from libuv ---- */

static void handle_closed(uv_handle_t *h);
static void timer_cb(uv_timer_t *t);
static void deliver_all(struct net_defer *d);

/* Arms the timer for c-ares' next deadline; called after every call into
 * c-ares that may have changed it. */
static void timer_rearm(struct dns_resolver *r) {
  struct timeval tv, *t;
  if (!r->ch_live)
    return;
  t = ares_timeout(r->ch, NULL, &tv);
  if (t == NULL) {
    uv_timer_stop(&r->timer);
    return;
  }
  uint64_t ms =
      (uint64_t)t->tv_sec * 1000 + ((uint64_t)t->tv_usec + 999) / 1000;
  uv_timer_start(&r->timer, timer_cb, ms, 0);
}

static void timer_cb(uv_timer_t *t) {
  struct dns_resolver *r = t->data;
  if (!r->ch_live)
    return;
  ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  timer_rearm(r);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  struct dns_poll *p = h->data;
  struct dns_resolver *r = p->r;
  if (!r->ch_live)
    return;
  ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
  if (status < 0) {
    /* Let c-ares find the error on the socket itself. */
    rfd = wfd = p->fd;
  } else {
    if (events & UV_READABLE)
      rfd = p->fd;
    if (events & UV_WRITABLE)
      wfd = p->fd;
  }
  ares_process_fd(r->ch, rfd, wfd);
  timer_rearm(r);
}

/* c-ares' ARES_OPT_SOCK_STATE_CB: watch `fd` for what c-ares wants, or stop
 * watching it (both false) - c-ares calls this before closing the socket,
 * so the poll handle is stopped while the descriptor is still valid. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable,
                          int writable) {
  struct dns_resolver *r = data;
  struct dns_poll **pp = &r->polls, *p;
  while (*pp != NULL && (*pp)->fd != fd)
    pp = &(*pp)->next;
  p = *pp;
  if (!readable && !writable) {
    if (p != NULL) {
      *pp = p->next;
      uv_poll_stop(&p->h);
      uv_close((uv_handle_t *)&p->h, handle_closed);
    }
    return;
  }
  if (p == NULL) {
    p = calloc(1, sizeof *p);
    if (p == NULL)
      goto fail;
    if (uv_poll_init_socket(r->loop, &p->h, fd) != 0) {
      free(p);
      goto fail;
    }
    p->r = r;
    p->fd = fd;
    p->h.data = p;
    p->next = r->polls;
    r->polls = p;
    r->open_handles++;
  }
  uv_poll_start(&p->h,
                (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
                poll_cb);
  return;
fail:
  /* Without a watcher c-ares never sees this socket's answer: its queries
   * time out (TEMPFAIL), which fails closed. */
  postern_log(POSTERN_LOG_ERROR, "dns_poll_failed", "error",
              postern_strerror(POSTERN_ENOMEM), NULL);
}

/* ---- Delivery ---- */

static void enqueue(struct dns_query *q) {
  struct dns_resolver *r = q->r;
  q->queued = true;
  q->next = NULL;
  if (r->dq_tail != NULL)
    r->dq_tail->next = q;
  else
    r->dq_head = q;
  r->dq_tail = q;
  net_defer_arm(&r->soon, deliver_all);
}

static void query_free(struct dns_query *q) {
  dns_answer_free(&q->ans);
  dns_answer_free(&q->sub[0]);
  dns_answer_free(&q->sub[1]);
  free(q->name);
  free(q);
}

/* Fills q->ans for a lookup that produced no parsable answer. */
static void answer_fail(struct dns_query *q, enum dns_status st, int err,
                        int rcode) {
  dns_answer_free(&q->ans);
  q->ans.status = st;
  q->ans.err = err;
  q->ans.qtype = q->type;
  q->ans.rcode = rcode;
  q->ans.qname = strdup(q->name);
  q->ans.cname = strdup(q->name);
}

static void log_answer(const struct dns_query *q, bool cached) {
  if (!postern_log_enabled(POSTERN_LOG_DEBUG))
    return;
  struct postern_log_rec rec;
  postern_log_begin(&rec, POSTERN_LOG_DEBUG, "dns_answer");
  postern_log_str(&rec, "name", q->name);
  if (cached)
    postern_log_str(&rec, "cached", "yes");
  postern_log_uint(&rec, "type", q->type);
  postern_log_str(&rec, "status", dns_status_name(q->ans.status));
  postern_log_int(&rec, "rcode", q->ans.rcode);
  postern_log_str(&rec, "ad", q->ans.authenticated ? "yes" : "no");
  postern_log_uint(&rec, "ttl", q->ans.ttl);
  postern_log_uint(&rec, "records", q->ans.nrr);
  if (q->ans.cname_hops > 0 && q->ans.cname != NULL)
    postern_log_str(&rec, "cname", q->ans.cname);
  postern_log_end(&rec);
}

/* c-ares' completion callback: runs exactly once per ares_send(), possibly
 * inside ares_send() itself, ares_process_fd(), ares_cancel() or
 * ares_destroy(). It only records the outcome and queues delivery. */
static void query_done(void *arg, int status, int timeouts, unsigned char *abuf,
                       int alen) {
  struct dns_query *q = arg;
  struct dns_resolver *r = q->r;
  q->in_ares = false;
  /* A slot is free: the deferred pass sends the next waiting query. */
  r->inflight--;
  if (r->wait_head != NULL && !r->closing)
    net_defer_arm(&r->soon, deliver_all);
  if (q->delivered) {
    query_free(q);
    return;
  }
  if (q->canceled) /* already queued with CANCELED */
    return;
  switch (status) {
  case ARES_SUCCESS:
    dns_answer_parse(abuf, alen > 0 ? (size_t)alen : 0, -1, q->name, q->type,
                     r->trust, &q->ans);
    dns__cache_put(r->cache, q->name, q->type, &q->ans, uv_now(r->loop));
    break;
  case ARES_ESERVFAIL:
    answer_fail(q, DNS_TEMPFAIL, POSTERN_EDNS_TEMPFAIL, 2);
    break;
  case ARES_ENOTIMP:
    answer_fail(q, DNS_TEMPFAIL, POSTERN_EDNS_TEMPFAIL, 4);
    break;
  case ARES_EREFUSED:
    answer_fail(q, DNS_TEMPFAIL, POSTERN_EDNS_TEMPFAIL, 5);
    break;
  case ARES_EFORMERR:
    answer_fail(q, DNS_TEMPFAIL, POSTERN_EDNS_TEMPFAIL, 1);
    break;
  case ARES_ETIMEOUT:
    answer_fail(q, DNS_TEMPFAIL, POSTERN_ETIMEOUT, -1);
    break;
  case ARES_ECONNREFUSED:
    /* c-ares 1.18 also reports this when every server answered SERVFAIL,
     * REFUSED or NOTIMP (it tries the next server on those), so the cause
     * is not known. */
    answer_fail(q, DNS_TEMPFAIL, POSTERN_EDNS_TEMPFAIL, -1);
    break;
  case ARES_ENOMEM:
    answer_fail(q, DNS_TEMPFAIL, POSTERN_ENOMEM, -1);
    break;
  case ARES_EBADRESP:
    answer_fail(q, DNS_MALFORMED, POSTERN_EDNS_MALFORMED, -1);
    break;
  case ARES_ECANCELLED:
  case ARES_EDESTRUCTION:
    answer_fail(q, DNS_CANCELED, POSTERN_ECANCELED, -1);
    break;
  default:
    answer_fail(q, DNS_TEMPFAIL, POSTERN_EDNS_TEMPFAIL, -1);
    break;
  }
  log_answer(q, false);
  enqueue(q);
}

static void host_child_done(struct dns_query *hq, struct dns_query *child);

static void deliver(struct dns_query *q) {
  q->queued = false;
  q->delivered = true;
  if (q->parent != NULL) {
    host_child_done(q->parent, q);
  } else {
    q->cb(&q->ans, q->arg);
  }
  if (!q->in_ares)
    query_free(q);
  else
    dns_answer_free(&q->ans);
}

static void soon_closed(struct net_defer *d);
static void wait_pump(struct dns_resolver *r);

static void close_handles(struct dns_resolver *r) {
  r->handles_closing = true;
  uv_close((uv_handle_t *)&r->timer, handle_closed);
  net_defer_close(&r->soon, soon_closed);
}

static void deliver_all(struct net_defer *d) {
  struct dns_resolver *r = d->data;
  struct dns_query *q;
  wait_pump(r);
  /* Callbacks may queue more (dns_query, dns_query_cancel,
   * dns_resolver_close); they are delivered in this same pass. */
  while ((q = r->dq_head) != NULL) {
    r->dq_head = q->next;
    if (r->dq_head == NULL)
      r->dq_tail = NULL;
    deliver(q);
  }
  if (r->closing && !r->handles_closing)
    close_handles(r);
}

/* One of the resolver's handles is gone; the last one frees it. */
static void handle_gone(struct dns_resolver *r) {
  if (--r->open_handles > 0 || !r->closing)
    return;
  void (*cb)(void *) = r->close_cb;
  void *arg = r->close_arg;
  dns__cache_free(r->cache);
  free(r);
  if (cb != NULL)
    cb(arg);
}

static void handle_closed(uv_handle_t *h) {
  struct dns_resolver *r;
  if (h->type == UV_POLL) {
    struct dns_poll *p = h->data;
    r = p->r;
    free(p);
  } else {
    r = h->data;
  }
  handle_gone(r);
}

static void soon_closed(struct net_defer *d) {
  handle_gone(d->data);
}

/* ---- In-flight limit ---- */

static void wait_push(struct dns_resolver *r, struct dns_query *q) {
  q->waiting = true;
  q->wnext = NULL;
  q->wprev = r->wait_tail;
  if (r->wait_tail != NULL)
    r->wait_tail->wnext = q;
  else
    r->wait_head = q;
  r->wait_tail = q;
  atomic_fetch_add_explicit(&r->waited, 1, memory_order_relaxed);
}

static void wait_unlink(struct dns_resolver *r, struct dns_query *q) {
  if (q->wprev != NULL)
    q->wprev->wnext = q->wnext;
  else
    r->wait_head = q->wnext;
  if (q->wnext != NULL)
    q->wnext->wprev = q->wprev;
  else
    r->wait_tail = q->wprev;
  q->wprev = q->wnext = NULL;
  q->waiting = false;
}

/* Builds the question (RD, EDNS0, AD and DO bits) and hands it to c-ares.
 * Returns 0 (q is in c-ares, which will call query_done exactly once),
 * POSTERN_ENOMEM or POSTERN_EINVAL (nothing sent). */
static int query_send(struct dns_query *q) {
  struct dns_resolver *r = q->r;
  unsigned char *buf = NULL;
  int buflen = 0;
  int rc = ares_create_query(q->name, 1 /* IN */, q->type, 0, 1, &buf, &buflen,
                             DNS_EDNS_PAYLOAD);
  if (rc != ARES_SUCCESS)
    return rc == ARES_ENOMEM ? POSTERN_ENOMEM : POSTERN_EINVAL;
  /* AD in the query asks for the AD bit in the answer (RFC 6840 §5.7); DO
   * in the OPT record (the last 11 bytes: root, type 41, class, ext-rcode,
   * version, flags, rdlength) asks for DNSSEC records (RFC 3225 §3). */
  if (buflen < 12 + 11 || buf[buflen - 11] != 0 || buf[buflen - 10] != 0 ||
      buf[buflen - 9] != DNS_T_OPT) {
    ares_free_string(buf);
    return POSTERN_EINTERNAL;
  }
  buf[3] |= 0x20;
  buf[buflen - 4] |= 0x80;
  q->in_ares = true;
  r->inflight++;
  /* May call query_done at once (e.g. no usable server): it only queues. */
  ares_send(r->ch, buf, buflen, query_done, q);
  ares_free_string(buf);
  return 0;
}

/* Sends waiting queries while there is room; runs from the deferred pass,
 * never inside c-ares. A query that cannot be built fails like a lookup. */
static void wait_pump(struct dns_resolver *r) {
  bool sent = false;
  while (r->wait_head != NULL && r->inflight < r->max_inflight && !r->closing) {
    struct dns_query *q = r->wait_head;
    wait_unlink(r, q);
    int rc = query_send(q);
    if (rc != 0) {
      answer_fail(q, DNS_TEMPFAIL, rc, -1);
      enqueue(q);
    }
    sent = true;
  }
  if (sent)
    timer_rearm(r);
}

/* ---- Resolver lifetime ---- */

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_rc;

static void ares_global_init(void) {
  ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

static int set_servers(struct dns_resolver *r, const struct dns_opts *o) {
  struct ares_addr_port_node nodes[DNS_MAX_SERVERS];
  memset(nodes, 0, sizeof nodes);
  for (size_t i = 0; i < o->nservers; i++) {
    const struct sockaddr_storage *ss = &o->servers[i];
    uint16_t port;
    if (ss->ss_family == AF_INET) {
      const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
      nodes[i].family = AF_INET;
      memcpy(&nodes[i].addr.addr4, &sin->sin_addr, 4);
      port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
      const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
      nodes[i].family = AF_INET6;
      memcpy(&nodes[i].addr.addr6, &sin6->sin6_addr, 16);
      port = ntohs(sin6->sin6_port);
    } else {
      return POSTERN_EINVAL;
    }
    nodes[i].udp_port = nodes[i].tcp_port = port ? port : 53;
    nodes[i].next = i + 1 < o->nservers ? &nodes[i + 1] : NULL;
  }
  int rc = ares_set_servers_ports(r->ch, &nodes[0]);
  if (rc != ARES_SUCCESS)
    return rc == ARES_ENOMEM ? POSTERN_ENOMEM : POSTERN_EINVAL;
  return 0;
}

/* AD is believed only from loopback servers unless the operator trusts the
 * path (RFC 6698 §A.2.3): checks the servers c-ares really uses. */
static int compute_trust(struct dns_resolver *r, bool trust_ad) {
  struct ares_addr_port_node *list = NULL;
  if (ares_get_servers_ports(r->ch, &list) != ARES_SUCCESS)
    return POSTERN_ENOMEM;
  bool all_loop = list != NULL;
  for (struct ares_addr_port_node *n = list; n != NULL; n = n->next)
    if (!addr_is_loopback(n->family, &n->addr))
      all_loop = false;
  ares_free_data(list);
  r->trust = trust_ad || all_loop;
  return 0;
}

int dns_resolver_new(uv_loop_t *loop, const struct dns_opts *o,
                     struct dns_resolver **out) {
  struct dns_opts def;
  struct ares_options ao;
  int rc;
  *out = NULL;
  if (o == NULL) {
    dns_opts_init(&def);
    o = &def;
  }
  if (o->nservers > DNS_MAX_SERVERS)
    return POSTERN_EINVAL;
  pthread_once(&ares_once, ares_global_init);
  if (ares_init_rc != ARES_SUCCESS)
    return POSTERN_ENOMEM;
  struct dns_resolver *r = calloc(1, sizeof *r);
  if (r == NULL)
    return POSTERN_ENOMEM;
  r->loop = loop;
  r->max_inflight =
      o->max_inflight ? o->max_inflight : DNS_MAX_INFLIGHT_DEFAULT;
  memset(&ao, 0, sizeof ao);
  /* No search list, no HOSTALIASES: we only ever ask the exact name. */
  ao.flags = ARES_FLAG_EDNS | ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  ao.timeout = (int)(o->timeout_ms ? o->timeout_ms : 5000);
  ao.tries = (int)(o->attempts ? o->attempts : 2);
  ao.ednspsz = DNS_EDNS_PAYLOAD;
  ao.sock_state_cb = sock_state_cb;
  ao.sock_state_cb_data = r;
  int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
             ARES_OPT_EDNSPSZ | ARES_OPT_SOCK_STATE_CB | ARES_OPT_NOROTATE;
  rc = ares_init_options(&r->ch, &ao, mask);
  if (rc != ARES_SUCCESS) {
    free(r);
    return rc == ARES_ENOMEM ? POSTERN_ENOMEM : POSTERN_EDNS_TEMPFAIL;
  }
  r->ch_live = true;
  rc = 0;
  if (o->nservers > 0)
    rc = set_servers(r, o);
  if (rc == 0)
    rc = compute_trust(r, o->trust_ad);
  if (rc == 0)
    rc = dns__cache_new(o->cache_size, o->cache_max_ttl, &r->cache);
  if (rc != 0) {
    ares_destroy(r->ch);
    free(r);
    return rc;
  }
  uv_timer_init(loop, &r->timer);
  net_defer_init(loop, &r->soon, r);
  r->timer.data = r;
  r->open_handles = 2;
  *out = r;
  return 0;
}

void dns_resolver_close(struct dns_resolver *r, void (*cb)(void *arg),
                        void *arg) {
  if (r->closing)
    return;
  r->closing = true;
  r->close_cb = cb;
  r->close_arg = arg;
  /* Both call query_done for every pending query (CANCELED, queued), and
   * ares_destroy closes the sockets through sock_state_cb. */
  ares_cancel(r->ch);
  ares_destroy(r->ch);
  r->ch_live = false;
  /* Queries still waiting for a slot never reached c-ares. */
  while (r->wait_head != NULL) {
    struct dns_query *q = r->wait_head;
    wait_unlink(r, q);
    answer_fail(q, DNS_CANCELED, POSTERN_ECANCELED, -1);
    enqueue(q);
  }
  uv_timer_stop(&r->timer);
  /* The deferred pass delivers what is queued, then closes the handles. */
  net_defer_arm(&r->soon, deliver_all);
}

/* ---- Lookups ---- */

/* Builds the question (RD, EDNS0), asks for DNSSEC status and sends it. */
static int query_start(struct dns_resolver *r, const char *name, uint16_t type,
                       dns_cb cb, void *arg, struct dns_query *parent, int slot,
                       struct dns_query **qp) {
  char norm[DNS_NAME_MAX];
  if (r->closing)
    return POSTERN_ESTATE;
  if (name == NULL || dns__name_normalize(name, norm) != 0)
    return POSTERN_EINVAL;
  /* ares_create_query understands "\." but not "\DDD"; such names are not
   * host names (RFC 5321 §2.3.5) and are refused rather than mangled. */
  for (const char *p = norm; *p; p++) {
    if (*p == '\\') {
      if (p[1] >= '0' && p[1] <= '9')
        return POSTERN_EINVAL;
      if (p[1] != '\0')
        p++;
    }
  }
  /* A fresh cached answer is delivered like any other: queued, later. */
  struct dns_answer cached;
  if (dns__cache_get(r->cache, norm, type, uv_now(r->loop), &cached) == 0) {
    struct dns_query *q = calloc(1, sizeof *q);
    if (q == NULL || (q->name = strdup(norm)) == NULL) {
      free(q);
      dns_answer_free(&cached);
      return POSTERN_ENOMEM;
    }
    q->r = r;
    q->kind = QUERY_PLAIN;
    q->cb = cb;
    q->arg = arg;
    q->type = type;
    q->parent = parent;
    q->slot = slot;
    q->ans = cached;
    log_answer(q, true);
    if (qp != NULL)
      *qp = q;
    enqueue(q);
    return 0;
  }
  struct dns_query *q = calloc(1, sizeof *q);
  if (q == NULL || (q->name = strdup(norm)) == NULL) {
    free(q);
    return POSTERN_ENOMEM;
  }
  q->r = r;
  q->kind = QUERY_PLAIN;
  q->cb = cb;
  q->arg = arg;
  q->type = type;
  q->parent = parent;
  q->slot = slot;
  if (r->inflight >= r->max_inflight || r->wait_head != NULL) {
    /* The resolver has enough of ours already: a burst of thousands of
     * new destinations must not overflow its socket buffer or its query
     * table, where a dropped query costs a whole retry timeout. */
    wait_push(r, q);
    if (qp != NULL)
      *qp = q;
    return 0;
  }
  int rc = query_send(q);
  if (rc != 0) {
    query_free(q);
    return rc;
  }
  if (qp != NULL)
    *qp = q;
  timer_rearm(r);
  return 0;
}

int dns_query(struct dns_resolver *r, const char *name, uint16_t type,
              dns_cb cb, void *arg, struct dns_query **qp) {
  if (cb == NULL)
    return POSTERN_EINVAL;
  return query_start(r, name, type, cb, arg, NULL, 0, qp);
}

static void cancel_plain(struct dns_query *q) {
  if (q->canceled || q->delivered)
    return;
  q->canceled = true;
  if (q->waiting)
    wait_unlink(q->r, q);
  answer_fail(q, DNS_CANCELED, POSTERN_ECANCELED, -1);
  if (!q->queued)
    enqueue(q);
}

void dns_query_cancel(struct dns_query *q) {
  if (q == NULL)
    return;
  if (q->kind == QUERY_PLAIN) {
    cancel_plain(q);
    return;
  }
  if (q->canceled)
    return;
  q->canceled = true;
  for (int i = 0; i < 2; i++)
    if (q->child[i] != NULL)
      cancel_plain(q->child[i]);
}

int dns_resolve_host(struct dns_resolver *r, const char *name, dns_cb cb,
                     void *arg, struct dns_query **qp) {
  if (cb == NULL)
    return POSTERN_EINVAL;
  if (r->closing)
    return POSTERN_ESTATE;
  struct dns_query *hq = calloc(1, sizeof *hq);
  if (hq == NULL)
    return POSTERN_ENOMEM;
  hq->r = r;
  hq->kind = QUERY_HOST;
  hq->cb = cb;
  hq->arg = arg;
  static const uint16_t types[2] = {DNS_T_A, DNS_T_AAAA};
  for (int i = 0; i < 2; i++) {
    int rc = query_start(r, name, types[i], NULL, NULL, hq, i, &hq->child[i]);
    if (rc != 0) {
      hq->child[i] = NULL;
      if (i == 0) {
        free(hq);
        return rc;
      }
      /* The A lookup is under way: let it finish into an abandoned
       * parent, which it then frees. */
      hq->abandoned = true;
      cancel_plain(hq->child[0]);
      return rc;
    }
    hq->nchildren++;
  }
  if (qp != NULL)
    *qp = hq;
  return 0;
}

static int status_rank(enum dns_status st) {
  /* Which failure to report when neither lookup gave addresses. */
  switch (st) {
  case DNS_CANCELED:
    return 5;
  case DNS_NXDOMAIN:
    return 4;
  case DNS_MALFORMED:
    return 3;
  case DNS_TEMPFAIL:
    return 2;
  case DNS_NODATA:
    return 1;
  default:
    return 0;
  }
}

/* Merges the A and AAAA answers into one (see dns_resolve_host in dns.h). */
static void host_merge(struct dns_query *hq, struct dns_answer *m) {
  struct dns_answer *a = &hq->sub[0], *b = &hq->sub[1];
  memset(m, 0, sizeof *m);
  m->qtype = 0;
  m->rcode = a->rcode;
  m->qname = a->qname ? strdup(a->qname) : NULL;
  m->cname = a->cname ? strdup(a->cname) : NULL;
  m->cname_hops = a->cname_hops;
  m->family[DNS_FAMILY_A] = (struct dns_family){
      .status = a->status, .authenticated = a->authenticated};
  m->family[DNS_FAMILY_AAAA] = (struct dns_family){
      .status = b->status, .authenticated = b->authenticated};
  if (hq->canceled || a->status == DNS_CANCELED || b->status == DNS_CANCELED) {
    m->status = DNS_CANCELED;
    m->err = POSTERN_ECANCELED;
    return;
  }
  if (a->status == DNS_ANSWER || b->status == DNS_ANSWER) {
    size_t n = a->nrr + b->nrr;
    m->rr = calloc(n, sizeof *m->rr);
    if (m->rr == NULL) {
      m->status = DNS_TEMPFAIL;
      m->err = POSTERN_ENOMEM;
      return;
    }
    /* A and AAAA records hold no pointers: plain copies are safe. */
    if (a->nrr > 0)
      memcpy(m->rr, a->rr, a->nrr * sizeof *m->rr);
    if (b->nrr > 0)
      memcpy(m->rr + a->nrr, b->rr, b->nrr * sizeof *m->rr);
    m->nrr = n;
    m->status = DNS_ANSWER;
    m->err = 0;
    m->partial = (a->status != DNS_ANSWER && a->status != DNS_NODATA) ||
                 (b->status != DNS_ANSWER && b->status != DNS_NODATA);
    if (a->status != DNS_ANSWER) {
      free(m->cname);
      m->cname = b->cname ? strdup(b->cname) : NULL;
      m->cname_hops = b->cname_hops;
      m->rcode = b->rcode;
    }
  } else {
    const struct dns_answer *w =
        status_rank(a->status) >= status_rank(b->status) ? a : b;
    m->status = w->status;
    m->err = w->err;
    m->rcode = w->rcode;
  }
  bool ok_a =
      a->authenticated && (a->status == DNS_ANSWER || a->status == DNS_NODATA);
  bool ok_b =
      b->authenticated && (b->status == DNS_ANSWER || b->status == DNS_NODATA);
  if (m->status == DNS_NXDOMAIN)
    m->authenticated = (a->status == DNS_NXDOMAIN ? a : b)->authenticated;
  else if (m->status == DNS_ANSWER || m->status == DNS_NODATA)
    m->authenticated = ok_a && ok_b;
  uint32_t ttl = UINT32_MAX;
  if (a->status == DNS_ANSWER || a->status == DNS_NODATA ||
      a->status == DNS_NXDOMAIN)
    ttl = a->ttl;
  if ((b->status == DNS_ANSWER || b->status == DNS_NODATA ||
       b->status == DNS_NXDOMAIN) &&
      b->ttl < ttl)
    ttl = b->ttl;
  m->ttl = ttl == UINT32_MAX ? 0 : ttl;
}

static void host_child_done(struct dns_query *hq, struct dns_query *child) {
  int slot = child->slot;
  hq->sub[slot] = child->ans;
  memset(&child->ans, 0, sizeof child->ans);
  hq->child[slot] = NULL;
  hq->ndone++;
  if (hq->ndone < hq->nchildren)
    return;
  if (!hq->abandoned) {
    struct dns_answer m;
    host_merge(hq, &m);
    hq->delivered = true;
    hq->cb(&m, hq->arg);
    dns_answer_free(&m);
  }
  query_free(hq);
}
