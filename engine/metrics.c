/*
 * metrics.c - counters and the Prometheus endpoint (see metrics.h).
 *
 * The HTTP side is deliberately tiny: one request per connection (HTTP/1.0
 * semantics, `Connection: close`), a request head bounded at 8 KiB, only
 * GET /metrics answered, everything else 404/405/400. Scrapers are trusted
 * operators on loopback, but input is still bounded and never echoed.
 */
#include "engine/metrics.h"
#include "policy/tlsrpt.h"

#include "base/postern_buf.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Atomic uint64_t counters[METRICS__COUNTER_COUNT];
static _Atomic uint64_t
    deliveries[3][POLICY_MX_LEVEL_COUNT][POLICY_TLS_LEVEL_COUNT];

#define POLICY_SLOTS 64
struct policy_slot {
  const char *module, *outcome; /* static strings; NULL when free */
  _Atomic uint64_t n;
};
static struct policy_slot policy_slots[POLICY_SLOTS];
static pthread_mutex_t policy_mu = PTHREAD_MUTEX_INITIALIZER;

/* Policy gauges: a small table that never shrinks, like policy_slots. */
#define GAUGE_SLOTS 16
struct gauge_slot {
  const char *module, *name; /* static strings; NULL when free */
  _Atomic uint64_t v;
};
static struct gauge_slot gauge_slots[GAUGE_SLOTS];

static const char *const counter_names[] = {
#define METRICS__N(name, str, help) str,
    METRICS_COUNTER_MAP(METRICS__N)
#undef METRICS__N
};
static const char *const counter_help[] = {
#define METRICS__H(name, str, help) help,
    METRICS_COUNTER_MAP(METRICS__H)
#undef METRICS__H
};
static const char *const status_names[] = {"sent", "deferred", "bounced"};

void metrics_inc(enum metrics_counter c) {
  atomic_fetch_add_explicit(&counters[c], 1, memory_order_relaxed);
}

uint64_t metrics_get(enum metrics_counter c) {
  return atomic_load(&counters[c]);
}

void metrics_delivery(enum metrics_status st, enum policy_mx_level mx,
                      enum policy_tls_level tls) {
  if ((unsigned)st > METRICS_BOUNCED || (unsigned)mx >= POLICY_MX_LEVEL_COUNT ||
      (unsigned)tls >= POLICY_TLS_LEVEL_COUNT)
    return;
  atomic_fetch_add_explicit(&deliveries[st][mx][tls], 1, memory_order_relaxed);
}

uint64_t metrics_get_delivery(enum metrics_status st, enum policy_mx_level mx,
                              enum policy_tls_level tls) {
  return atomic_load(&deliveries[st][mx][tls]);
}

static atomic_uint_fast64_t tlsrpt_sessions[POLICY_TLSRPT_RESULT_COUNT];
static const char *const tlsrpt_report_names[] = {"sent", "failed", "no_record",
                                                  "invalid_record"};
#define TLSRPT_REPORT_N                                                        \
  (sizeof tlsrpt_report_names / sizeof tlsrpt_report_names[0])
static atomic_uint_fast64_t tlsrpt_reports[TLSRPT_REPORT_N];

static atomic_uint_fast64_t requiretls_deliveries[3];
static atomic_uint_fast64_t auth_attempts[3];
static const char *const auth_names[] = {"ok", "failed", "throttled"};

void metrics_auth(enum metrics_auth result) {
  if ((unsigned)result < 3)
    atomic_fetch_add_explicit(&auth_attempts[result], 1, memory_order_relaxed);
}

static atomic_int cluster_redis_up;

void metrics_cluster_redis(bool up) {
  atomic_fetch_add_explicit(&cluster_redis_up, up ? 1 : -1,
                            memory_order_relaxed);
}

void metrics_requiretls(enum metrics_status st) {
  if ((unsigned)st < 3)
    atomic_fetch_add_explicit(&requiretls_deliveries[st], 1,
                              memory_order_relaxed);
}

void metrics_tlsrpt_session(int result) {
  if (result >= 0 && result < POLICY_TLSRPT_RESULT_COUNT)
    atomic_fetch_add_explicit(&tlsrpt_sessions[result], 1,
                              memory_order_relaxed);
}

void metrics_tlsrpt_report(const char *outcome) {
  for (size_t i = 0; i < TLSRPT_REPORT_N; i++)
    if (strcmp(outcome, tlsrpt_report_names[i]) == 0)
      atomic_fetch_add_explicit(&tlsrpt_reports[i], 1, memory_order_relaxed);
}

void metrics_policy(const char *module, const char *outcome) {
  /* Lookups compare pointers first (the strings are static), then text,
   * so a module may pass equal literals from different places. */
  for (size_t i = 0; i < POLICY_SLOTS; i++) {
    struct policy_slot *s = &policy_slots[i];
    const char *m = __atomic_load_n(&s->module, __ATOMIC_ACQUIRE);
    if (m == NULL)
      break;
    if ((m == module || strcmp(m, module) == 0) &&
        (s->outcome == outcome || strcmp(s->outcome, outcome) == 0)) {
      atomic_fetch_add_explicit(&s->n, 1, memory_order_relaxed);
      return;
    }
  }
  pthread_mutex_lock(&policy_mu);
  for (size_t i = 0; i < POLICY_SLOTS; i++) {
    struct policy_slot *s = &policy_slots[i];
    if (s->module == NULL) {
      s->outcome = outcome;
      atomic_store(&s->n, 1);
      __atomic_store_n(&s->module, module, __ATOMIC_RELEASE);
      break;
    }
    if (strcmp(s->module, module) == 0 && strcmp(s->outcome, outcome) == 0) {
      atomic_fetch_add(&s->n, 1);
      break;
    }
  }
  pthread_mutex_unlock(&policy_mu);
}

void metrics_policy_gauge(const char *module, const char *name,
                          uint64_t value) {
  pthread_mutex_lock(&policy_mu);
  for (size_t i = 0; i < GAUGE_SLOTS; i++) {
    struct gauge_slot *g = &gauge_slots[i];
    if (g->module == NULL) {
      g->name = name;
      atomic_store(&g->v, value);
      __atomic_store_n(&g->module, module, __ATOMIC_RELEASE);
      break;
    }
    if (strcmp(g->module, module) == 0 && strcmp(g->name, name) == 0) {
      atomic_store(&g->v, value);
      break;
    }
  }
  pthread_mutex_unlock(&policy_mu);
}

int metrics_render(const struct metrics_gauges *g, char **out, size_t *len) {
  struct postern_buf b = {0};
  for (int c = 0; c < METRICS__COUNTER_COUNT; c++)
    postern_buf_printf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n",
                       counter_names[c], counter_help[c], counter_names[c],
                       counter_names[c],
                       (unsigned long long)atomic_load(&counters[c]));
  postern_buf_printf(
      &b, "# HELP postern_deliveries_total Delivery attempt outcomes per "
          "recipient, by MX level and TLS level.\n"
          "# TYPE postern_deliveries_total counter\n");
  for (int st = 0; st < 3; st++)
    for (int mx = 0; mx < POLICY_MX_LEVEL_COUNT; mx++)
      for (int tls = 0; tls < POLICY_TLS_LEVEL_COUNT; tls++)
        postern_buf_printf(
            &b,
            "postern_deliveries_total{status=\"%s\",mx_level=\"%s\","
            "tls_level=\"%s\"} %llu\n",
            status_names[st], policy_mx_level_name(mx),
            policy_tls_level_name(tls),
            (unsigned long long)atomic_load(&deliveries[st][mx][tls]));
  postern_buf_printf(&b,
                     "# HELP postern_policy_results_total Policy outcomes by "
                     "module.\n# TYPE postern_policy_results_total counter\n");
  for (size_t i = 0; i < POLICY_SLOTS; i++) {
    struct policy_slot *s = &policy_slots[i];
    const char *m = __atomic_load_n(&s->module, __ATOMIC_ACQUIRE);
    if (m == NULL)
      break;
    postern_buf_printf(
        &b, "postern_policy_results_total{module=\"%s\",result=\"%s\"} %llu\n",
        m, s->outcome, (unsigned long long)atomic_load(&s->n));
  }
  postern_buf_printf(&b,
                     "# HELP postern_requiretls_deliveries_total Delivery "
                     "attempt outcomes of REQUIRETLS messages (RFC 8689) "
                     "per recipient.\n"
                     "# TYPE postern_requiretls_deliveries_total counter\n");
  for (int st = 0; st < 3; st++)
    postern_buf_printf(
        &b,
        "postern_requiretls_deliveries_total{status=\"%s\"} "
        "%llu\n",
        status_names[st],
        (unsigned long long)atomic_load(&requiretls_deliveries[st]));
  postern_buf_printf(&b, "# HELP postern_auth_total SMTP AUTH attempts: ok, "
                         "failed (bad credentials or a malformed exchange), "
                         "throttled (refused after too many failures).\n"
                         "# TYPE postern_auth_total counter\n");
  for (int i = 0; i < 3; i++)
    postern_buf_printf(&b, "postern_auth_total{result=\"%s\"} %llu\n",
                       auth_names[i],
                       (unsigned long long)atomic_load(&auth_attempts[i]));
  postern_buf_printf(
      &b, "# HELP postern_tlsrpt_sessions_total TLS session attempts "
          "counted for TLS reports (RFC 8460), by result type.\n"
          "# TYPE postern_tlsrpt_sessions_total counter\n");
  for (int i = 0; i < POLICY_TLSRPT_RESULT_COUNT; i++)
    postern_buf_printf(&b,
                       "postern_tlsrpt_sessions_total{result=\"%s\"} %llu\n",
                       policy_tlsrpt_result_name(i),
                       (unsigned long long)atomic_load(&tlsrpt_sessions[i]));
  postern_buf_printf(
      &b, "# HELP postern_tlsrpt_reports_total TLS reports by outcome: "
          "sent (an URI took it), failed (given up), no_record or "
          "invalid_record (the domain asks for none).\n"
          "# TYPE postern_tlsrpt_reports_total counter\n");
  for (size_t i = 0; i < TLSRPT_REPORT_N; i++)
    postern_buf_printf(&b, "postern_tlsrpt_reports_total{result=\"%s\"} %llu\n",
                       tlsrpt_report_names[i],
                       (unsigned long long)atomic_load(&tlsrpt_reports[i]));
  postern_buf_printf(
      &b, "# HELP postern_policy_state Policy module state (MTA-STS "
          "cache entries and bytes), as of the last maintenance pass.\n"
          "# TYPE postern_policy_state gauge\n");
  for (size_t i = 0; i < GAUGE_SLOTS; i++) {
    struct gauge_slot *gs = &gauge_slots[i];
    const char *m = __atomic_load_n(&gs->module, __ATOMIC_ACQUIRE);
    if (m == NULL)
      break;
    postern_buf_printf(&b,
                       "postern_policy_state{module=\"%s\",name=\"%s\"} %llu\n",
                       m, gs->name, (unsigned long long)atomic_load(&gs->v));
  }
  struct {
    const char *name, *help;
    uint64_t v;
  } gs[] = {
      {"postern_queue_messages", "Messages in the queue.", g->queue_messages},
      {"postern_queue_recipients", "Recipients pending or deferred.",
       g->queue_recipients},
      {"postern_queue_bytes", "Message bytes in the queue.", g->queue_bytes},
      {"postern_queue_oldest_age_seconds", "Age of the oldest message.",
       g->queue_oldest_age_s},
      {"postern_inflight_messages", "Messages being delivered now.",
       g->inflight},
      {"postern_inbound_sessions", "Open SMTP sessions from clients.",
       g->inbound_sessions},
      {"postern_outbound_connections", "Open connections to MX servers.",
       g->outbound_connections},
      {"postern_cluster_redis_up",
       "Worker loops whose Redis connection (cluster { }) is up.",
       (uint64_t)atomic_load(&cluster_redis_up)},
  };
  for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++)
    postern_buf_printf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n",
                       gs[i].name, gs[i].help, gs[i].name, gs[i].name,
                       (unsigned long long)gs[i].v);
  postern_buf_printf(
      &b,
      "# HELP postern_dns_cache_lookups_total DNS lookups answered from "
      "the relay's answer cache (hit) or sent to a resolver (miss).\n"
      "# TYPE postern_dns_cache_lookups_total counter\n"
      "postern_dns_cache_lookups_total{result=\"hit\"} %llu\n"
      "postern_dns_cache_lookups_total{result=\"miss\"} %llu\n"
      "# HELP postern_dns_cache_entries Answers held in the DNS caches.\n"
      "# TYPE postern_dns_cache_entries gauge\n"
      "postern_dns_cache_entries %llu\n"
      "# HELP postern_dns_queries_waited_total DNS queries that waited "
      "because a worker already had dns max_inflight at the resolvers.\n"
      "# TYPE postern_dns_queries_waited_total counter\n"
      "postern_dns_queries_waited_total %llu\n",
      (unsigned long long)g->dns_cache_hits,
      (unsigned long long)g->dns_cache_misses,
      (unsigned long long)g->dns_cache_entries,
      (unsigned long long)g->dns_queries_waited);
  postern_buf_printf(
      &b,
      "# HELP postern_tls_certificate_checks_total MX certificate chains "
      "run through PKIX verification, answered from the verdict cache, or "
      "not checked because DANE governs the host.\n"
      "# TYPE postern_tls_certificate_checks_total counter\n"
      "postern_tls_certificate_checks_total{result=\"verified\"} %llu\n"
      "postern_tls_certificate_checks_total{result=\"cached\"} %llu\n"
      "postern_tls_certificate_checks_total{result=\"skipped\"} %llu\n",
      (unsigned long long)g->tls_pkix_verified,
      (unsigned long long)g->tls_pkix_cached,
      (unsigned long long)g->tls_pkix_skipped);
  if (b.oom) {
    free(b.p);
    return POSTERN_ENOMEM;
  }
  *out = b.p;
  *len = b.len;
  return 0;
}

/* ---- the HTTP endpoint ---- */

#define HTTP_HEAD_MAX 8192

struct scrape;

struct metrics_server {
  uv_tcp_t tcp;
  void (*gauges)(void *, struct metrics_gauges *);
  void *ud;
  int open_clients;
  struct scrape *clients; /* open scrapes, so that close can end them */
  bool closing;
};

struct scrape {
  uv_tcp_t tcp;
  struct metrics_server *srv;
  struct scrape *prev, *next; /* in srv->clients until closed */
  uv_write_t wr;
  char head[HTTP_HEAD_MAX];
  size_t len;
  char *resp;
  bool answered;
};

static void srv_maybe_free(struct metrics_server *s) {
  if (s->closing && s->open_clients == 0)
    free(s);
}

static void scrape_closed(uv_handle_t *h) {
  struct scrape *c = h->data;
  struct metrics_server *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  free(c->resp);
  free(c);
  s->open_clients--;
  srv_maybe_free(s);
}

static void scrape_close(struct scrape *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, scrape_closed);
}

static void scrape_written(uv_write_t *w, int status) {
  struct scrape *c = w->data;
  scrape_close(c);
}

static void scrape_reply(struct scrape *c, int code, const char *reason,
                         const char *ctype, const char *body, size_t blen) {
  c->answered = true;
  uv_read_stop((uv_stream_t *)&c->tcp);
  size_t cap = blen + 256;
  c->resp = malloc(cap);
  if (c->resp == NULL) {
    scrape_close(c);
    return;
  }
  int n = snprintf(c->resp, cap,
                   "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: "
                   "%zu\r\nConnection: close\r\n\r\n",
                   code, reason, ctype, blen);
  memcpy(c->resp + n, body, blen);
  uv_buf_t buf = uv_buf_init(c->resp, (unsigned)(n + blen));
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &buf, 1, scrape_written) != 0)
    scrape_close(c);
}

static void scrape_alloc(uv_handle_t *h, size_t sug, uv_buf_t *buf) {
  struct scrape *c = h->data;
  buf->base = c->head + c->len;
  buf->len = sizeof c->head - c->len - 1;
}

static void scrape_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  struct scrape *c = st->data;
  if (n < 0) {
    scrape_close(c);
    return;
  }
  c->len += (size_t)n;
  c->head[c->len] = '\0';
  if (strstr(c->head, "\r\n\r\n") == NULL && strstr(c->head, "\n\n") == NULL) {
    if (c->len >= sizeof c->head - 1) {
      static const char m[] = "request head too large\n";
      scrape_reply(c, 431, "Request Header Fields Too Large", "text/plain", m,
                   sizeof m - 1);
    }
    return;
  }
  if (strncmp(c->head, "GET ", 4) != 0) {
    static const char m[] = "only GET is served\n";
    scrape_reply(c, 405, "Method Not Allowed", "text/plain", m, sizeof m - 1);
    return;
  }
  const char *path = c->head + 4;
  size_t plen = strcspn(path, " \r\n");
  if (!((plen == 8 && strncmp(path, "/metrics", 8) == 0) ||
        (plen == 1 && path[0] == '/'))) {
    static const char m[] = "not found: try /metrics\n";
    scrape_reply(c, 404, "Not Found", "text/plain", m, sizeof m - 1);
    return;
  }
  struct metrics_gauges g = {0};
  if (c->srv->gauges)
    c->srv->gauges(c->srv->ud, &g);
  char *text;
  size_t tlen;
  if (metrics_render(&g, &text, &tlen) != 0) {
    static const char m[] = "out of memory\n";
    scrape_reply(c, 500, "Internal Server Error", "text/plain", m,
                 sizeof m - 1);
    return;
  }
  scrape_reply(c, 200, "OK", "text/plain; version=0.0.4", text, tlen);
  free(text);
}

static void on_scrape(uv_stream_t *server, int status) {
  struct metrics_server *s = server->data;
  if (status < 0)
    return;
  struct scrape *c = calloc(1, sizeof *c);
  if (c == NULL)
    return;
  c->srv = s;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  s->open_clients++;
  c->next = s->clients;
  if (s->clients)
    s->clients->prev = c;
  s->clients = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, scrape_alloc, scrape_read) != 0)
    scrape_close(c);
}

static void srv_closed(uv_handle_t *h) {
  struct metrics_server *s = h->data;
  s->closing = true;
  srv_maybe_free(s);
}

int metrics_server_start(uv_loop_t *loop, const struct sockaddr *addr,
                         void (*gauges)(void *ud, struct metrics_gauges *g),
                         void *ud, struct metrics_server **out) {
  struct metrics_server *s = calloc(1, sizeof *s);
  if (s == NULL)
    return POSTERN_ENOMEM;
  s->gauges = gauges;
  s->ud = ud;
  uv_tcp_init(loop, &s->tcp);
  s->tcp.data = s;
  int rc = uv_tcp_bind(&s->tcp, addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->tcp, 64, on_scrape);
  if (rc != 0) {
    uv_close((uv_handle_t *)&s->tcp, srv_closed);
    return rc == UV_EADDRINUSE ? POSTERN_EADDRINUSE
                               : postern_err_from_errno(-rc);
  }
  *out = s;
  return 0;
}

unsigned metrics_server_port(const struct metrics_server *s) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void metrics_server_close(struct metrics_server *s) {
  if (s == NULL)
    return;
  /* A scraper that connected and never sent a request would otherwise keep
   * the loop (and the process) alive, and a late request would read gauges
   * from a relay that is gone. */
  for (struct scrape *c = s->clients; c; c = c->next)
    scrape_close(c);
  uv_close((uv_handle_t *)&s->tcp, srv_closed);
}
