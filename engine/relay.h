/*
 * relay.h - the running relay: what main() starts and stops, and the state
 * every engine file reads. Engine-internal; the configuration it holds is
 * immutable while loaded (a reload swaps in a new one on the main loop).
 */
#ifndef POSTERN_ENGINE_RELAY_H
#define POSTERN_ENGINE_RELAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <uv.h>

#include "engine/config.h"
#include "engine/internal.h"
#include "engine/worker.h"
#include "queue/queue.h"

struct smtp_server;
struct tls_ctx;
struct policy_chain;
struct metrics;

struct relay {
  /* Swapped by a reload on the main loop while workers read it. */
  struct postern_config *_Atomic cfg;
  const char *config_path;
  struct queue *q;
  struct worker_pool pool;
  struct sched *sched;
  struct smtp_server **servers;
  struct tls_ctx **server_tls;
  size_t nservers;
  struct tls_ctx *client_tls;
  struct policy_chain *_Atomic chain;
  uv_loop_t *main_loop;
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t shutdown_timer;
  atomic_uint out_conns; /* outbound connections, all workers */
  atomic_bool stopping;
  int exit_code;
  size_t servers_open;
};

/*
 * Runs the relay with `cfg` (owned by the relay from now on) until SIGTERM
 * or SIGINT. Returns the process exit status: 0 after a clean shutdown, 1
 * when startup failed (the reason was logged).
 */
int relay_run(struct postern_config *cfg, const char *config_path);

/* Queues a message Postern made itself (a DSN) for delivery to `rcpt`;
 * takes ownership of `msg` (malloc'd). 0 or a POSTERN_E* code. */
int relay_submit_local(struct relay *r, const char *id, const char *sender,
                       const char *rcpt, char *msg, size_t len);

/* The static route for `domain`, if any: the route naming the domain
 * itself, else the "*" route. */
bool engine__route_lookup(const struct relay *r, const char *domain,
                          struct route_target *out);

/* The destination key of a recipient domain ("example.org", or the route
 * target "[host]:port" that domains share); fills *rt when routed. */
bool engine__dest_key(const struct relay *r, const char *domain,
                      struct route_target *rt, char *key, size_t cap);

/* Builds the policy chain the configuration describes. Errors:
 * POSTERN_EUNSUPPORTED (a module this build lacks, logged), ENOMEM. */
struct policy_chain;
int relay_chain_build(const struct postern_config *cfg,
                      struct policy_chain **out);

/* The resolver options `dns { }` describes. */
struct dns_opts;
void relay_dns_opts(const struct postern_config *cfg, struct dns_opts *o);

/* The worker that owns destination `key`. */
struct worker *relay_worker_for(struct relay *r, const char *key);

static inline struct queue *relay_queue(struct relay *r) {
  return r->q;
}
static inline const char *relay_hostname(struct relay *r) {
  return r->cfg->hostname;
}
static inline uint64_t relay_now_ms(struct relay *r) {
  if (r->q == NULL) { /* postern-probe runs without a queue */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  }
  return queue_now_ms(r->q);
}
#endif
