/*
 * metrics.h - the relay's counters and gauges, served as Prometheus text
 * (exposition format 0.0.4) at `metrics { listen ADDR:PORT }`.
 *
 * Counters are process-wide atomics, updated from any thread without
 * locks; labelled families (deliveries by status and levels, policy
 * outcomes by module) are fixed arrays or a small table that never
 * shrinks. Gauges are read when a scrape arrives, on the main loop.
 */
#ifndef POSTERN_ENGINE_METRICS_H
#define POSTERN_ENGINE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "policy/chain.h"

/* X(NAME, "metric_name", "help text") */
#define METRICS_COUNTER_MAP(X)                                                 \
  X(ACCEPTED, "postern_messages_accepted_total",                               \
    "Messages accepted over SMTP and committed to the queue.")                 \
  X(ENQUEUE_FAILED, "postern_messages_enqueue_failed_total",                   \
    "Messages refused with a 4xx because the queue could not store them.")     \
  X(DSN_QUEUED, "postern_dsn_queued_total",                                    \
    "Delivery status notifications generated and queued.")                     \
  X(DOUBLE_BOUNCES, "postern_double_bounces_total",                            \
    "Failed null-sender messages, for which no report is sent.")               \
  X(CONNECTIONS_OPENED, "postern_outbound_connections_opened_total",           \
    "Outbound SMTP connections that reached an acceptable TLS level.")         \
  X(CHAINED, "postern_messages_chained_total",                                 \
    "Messages sent pipelined behind the previous one on a fast connection.")

enum metrics_counter {
#define METRICS__C(name, str, help) METRICS_##name,
  METRICS_COUNTER_MAP(METRICS__C)
#undef METRICS__C
      METRICS__COUNTER_COUNT
};

/* Delivery outcomes, one per recipient per attempt. */
enum metrics_status { METRICS_SENT, METRICS_DEFERRED, METRICS_BOUNCED };

/* SMTP AUTH attempts, served as postern_auth_total{result="..."}. */
enum metrics_auth {
  METRICS_AUTH_OK,
  METRICS_AUTH_FAILED,
  METRICS_AUTH_THROTTLED
};
/* Any thread. */
void metrics_auth(enum metrics_auth result);

void metrics_inc(enum metrics_counter c);
void metrics_delivery(enum metrics_status st, enum policy_mx_level mx,
                      enum policy_tls_level tls);
/* A policy outcome ("dane", "mismatch"); both strings static. Any thread.
 * Matches policy_env.count. */
void metrics_policy(const char *module, const char *outcome);
/* Sets a policy module's gauge ("mtasts", "cache_entries"); both strings
 * static. Any thread. Matches policy_env.gauge. Served as
 * postern_policy_state{module="...",name="..."}. */
void metrics_policy_gauge(const char *module, const char *name, uint64_t value);
/* TLS reporting: a session counted (enum policy_tlsrpt_result), served as
 * postern_tlsrpt_sessions_total{result="..."}; a report's end ("sent",
 * "failed", "no_record", "invalid_record"), served as
 * postern_tlsrpt_reports_total{result="..."}. Any thread. */
void metrics_tlsrpt_session(int result);
/* A delivery outcome of a REQUIRETLS message (RFC 8689), served as
 * postern_requiretls_deliveries_total{status="..."}. Any thread. */
void metrics_requiretls(enum metrics_status st);
void metrics_tlsrpt_report(const char *outcome);
/* A worker's Redis connection (cluster { }) came up (true) or went down;
 * served as the gauge postern_cluster_redis_up: worker loops whose Redis
 * connection is up (0 without a cluster block). Any thread. */
void metrics_cluster_redis(bool up);

/* Values only the caller can read, filled in at scrape time. */
struct metrics_gauges {
  uint64_t queue_messages;
  uint64_t queue_recipients;
  uint64_t queue_bytes;
  uint64_t queue_oldest_age_s;
  uint64_t inflight;
  uint64_t inbound_sessions;
  uint64_t outbound_connections;
  /* Summed over the workers' resolvers (net/dns.h dns_cache_stats). */
  uint64_t dns_cache_hits, dns_cache_misses, dns_cache_entries;
  uint64_t dns_queries_waited; /* held back by dns { max_inflight } */
  /* The client TLS context's certificate checks (net/tls.h). */
  uint64_t tls_pkix_verified, tls_pkix_cached, tls_pkix_skipped;
};

/*
 * Renders every metric into a malloc'd text (*out, *len), owned by the
 * caller. Returns 0 or POSTERN_ENOMEM.
 */
int metrics_render(const struct metrics_gauges *g, char **out, size_t *len);

/* Reads one counter (tests, qtool). */
uint64_t metrics_get(enum metrics_counter c);
uint64_t metrics_get_delivery(enum metrics_status st, enum policy_mx_level mx,
                              enum policy_tls_level tls);

struct metrics_server;

/*
 * Serves GET /metrics on `addr` ("127.0.0.1:9025") on `loop`. `gauges` is
 * called on the loop for each scrape. Errors: POSTERN_EADDRINUSE,
 * POSTERN_EINVAL (bad address), POSTERN_ENOMEM, POSTERN_EIO.
 */
int metrics_server_start(uv_loop_t *loop, const struct sockaddr *addr,
                         void (*gauges)(void *ud, struct metrics_gauges *g),
                         void *ud, struct metrics_server **out);
/* The bound port (useful with port 0). */
unsigned metrics_server_port(const struct metrics_server *s);

/* Closes the listener and open scrapes; memory goes in close callbacks. */
void metrics_server_close(struct metrics_server *s);

#endif
