/*
 * engine/fleet.h - the shared-data half of fleet mode (docs/fleet.md):
 * MTA-STS policies shared through Redis (fleet_store.c, the policy layer's
 * struct policy_store) and TLS report counts summed over the fleet
 * (tlsrpt_fleet.c). Connection leases are lease.c. Engine-internal.
 */
#ifndef POSTERN_ENGINE_FLEET_H
#define POSTERN_ENGINE_FLEET_H

#include <stdbool.h>

#include <uv.h>

#include "engine/internal.h"

struct policy_store;
struct redis_client;

/* The Redis client of the worker whose loop is `loop`, when it is up;
 * NULL without a cluster block, while Redis is down, or on a loop that is
 * not a worker's (postern-probe). Call from that loop's thread. */
struct redis_client *engine__fleet_redis(struct relay *r, uv_loop_t *loop);

/* Makes the MTA-STS store: once, before the workers start (relay.c). */
void engine__fleet_init(struct relay *r);

/* The MTA-STS store (policy_env.store) backed by the loop's Redis client;
 * NULL while the configuration in force has no cluster block, and without
 * engine__fleet_init (postern-probe). Lives as long as the process. */
const struct policy_store *engine__fleet_store(struct relay *r);

/* ---- TLS reports over the fleet (tlsrpt_fleet.c) ----
 *
 * All on the report sender's loop (worker 0's), strings borrowed for the
 * call. */

struct tlsrpt_store_domain;

enum tlsrpt_fleet_verdict {
  TLSRPT_FLEET_SEND,        /* ours to send: `sum` has every node's counts */
  TLSRPT_FLEET_DONE,        /* another node has done it: `by` says how */
  TLSRPT_FLEET_BUSY,        /* another node holds the send lease */
  TLSRPT_FLEET_UNAVAILABLE, /* Redis failed on the way */
};

struct tlsrpt_fleet_answer {
  enum tlsrpt_fleet_verdict verdict;
  /* SEND: the summed counts (0 or 1 entry), the receiver's to free with
   * tlsrpt_store_free; the nodes whose counts are in, this one first. */
  struct tlsrpt_store_domain *sum;
  size_t nsum;
  char nodes[512];
  char by[320]; /* DONE: the done record */
};

typedef void (*tlsrpt_fleet_cb)(void *arg, struct tlsrpt_fleet_answer *a);

/* Asks whether this node sends the report of (day, domain). Returns 0 and
 * `cb` runs once, later, from `loop`; POSTERN_ECLOSED when Redis is not up
 * (or another error) and `cb` never runs. A SEND holds the send lease: the
 * caller renews it (engine__tlsrpt_fleet_renew) while it retries and ends
 * it with engine__tlsrpt_fleet_done. */
int engine__tlsrpt_fleet_claim(struct relay *r, uv_loop_t *loop,
                               const char *day, const char *domain,
                               tlsrpt_fleet_cb cb, void *arg);

/* Records the report's outcome for the fleet ("sent", "failed",
 * "no-record", "invalid-record"; `nodes` those summed) and gives the
 * lease back. In the background; logged when Redis is down. */
void engine__tlsrpt_fleet_done(struct relay *r, uv_loop_t *loop,
                               const char *day, const char *domain,
                               const char *outcome, const char *nodes);

/* Extends the send lease this node holds, in the background. */
void engine__tlsrpt_fleet_renew(struct relay *r, uv_loop_t *loop,
                                const char *day, const char *domain);

/* Shares this node's counts of `day` (every policy domain), in the
 * background; logs tlsrpt_fleet_published when Redis has answered. For a
 * finished day, logs tlsrpt_fleet_counts_late for each report already
 * sent without this node's counts. Returns 0 (issued, or nothing to
 * share), POSTERN_ECLOSED (Redis not up: nothing done) or another error. */
int engine__tlsrpt_fleet_publish(struct relay *r, uv_loop_t *loop,
                                 const char *day, bool finished);

#endif
