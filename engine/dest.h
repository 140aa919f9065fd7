/*
 * dest.h - delivery on a worker loop, as its files share it: destinations
 * and their limits (dest.c), their connections (conn.c), and the attempts
 * that open connections through the MX loop (deliver.c, mx_loop.c).
 *
 * Ownership: a `struct dest` lives on its worker while it has jobs,
 * connections or attempts; an attempt owns its DNS queries, policy runs
 * and the client it is connecting; a `conn` owns an accepted client and
 * the job it is sending. Jobs are handed to engine__job_finish when their
 * results are known, and never touched afterwards. One thread: the
 * worker's.
 */
#ifndef POSTERN_ENGINE_DEST_H
#define POSTERN_ENGINE_DEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "engine/internal.h"
#include "engine/mx_loop.h"

struct conn;
struct lease;
struct postern_htab;
struct redis_client;

/* A worker's delivery state (worker->ud2). */
struct dwork {
  struct mx_env env; /* relay, loop, resolver, HTTPS client */
  struct worker *w;
  struct postern_htab *dests; /* dest->key -> struct dest */
  /* Fleet mode (lease.c): this loop's Redis client, NULL without a
   * cluster block or once the worker stops. */
  struct redis_client *redis;
  bool redis_up, redis_ever_up;
  uint64_t cluster_start_ms;
  uint64_t boot_id, lease_seq; /* lease holder names */
  uint64_t boot_ms;            /* wall clock at start (node description) */
  char node[65];
  struct lease *live; /* leases held, for renewal and shutdown */
  /* Worker 0 keeps the node in the fleet's node set (qtool cluster). */
  bool beats;
  uv_timer_t beat;
  bool cluster_closed;   /* the worker stopped: no client any more */
  char cluster_id[1600]; /* what the client was made from (reloads) */
};

/* A destination: a recipient domain, or a static route's target. */
struct dest {
  struct dwork *dw;
  char key[300];
  char domain[256];
  bool routed;
  struct route_target route;
  struct mx_dest target; /* the above, as the MX loop reads it */
  struct job *head, *tail;
  size_t njobs;
  struct conn *conns; /* established (busy or idle) */
  size_t nconns;
  struct mx_attempt *attempts;
  size_t nattempts;
  /* per_domain_rate (throttle.c): the local clock (µs); fleet mode: a
   * GCRA request in flight, a granted cell not yet used, the local clock
   * ruling until then after a failed request; the Redis key. */
  uint64_t rate_next_us;
  bool rate_acq, rate_permit;
  uint64_t rate_fallback_until;
  char gcra_key[sizeof "rate:" + 300];
  uv_timer_t rate_timer;
  bool rate_timer_on;
  /* Registered with engine__slot_wait (max_connections reached). */
  bool slot_waiting;
  bool freeing;
  /* An attempt found no usable host while other attempts or connections
   * went on with the jobs: open no further connection until one succeeds,
   * so that a server refusing concurrent sessions (421 at the greeting)
   * does not see a reconnect per exhausted attempt. */
  bool saturated;
  /* Step 5 across attempts: a temporary failure seen by an attempt that
   * exhausted while others went on with the same jobs. When the last one
   * exhausts too, the jobs are deferred, not bounced. Cleared when the
   * jobs are settled or gone, or a connection succeeds. */
  bool temp_seen;
  /* The limits in force for this destination (delivery { } or its
   * destination block), recomputed when the configuration changes. */
  uint64_t lim_gen; /* the configuration's generation they come from */
  uint32_t lim_conns, lim_rate, lim_reuse;
  bool lim_conns_local, lim_rate_local; /* "local:": per node in a fleet */
  char temp_status[16];
  char temp_reason[512];
  /* Fleet mode (lease.c): an acquire in flight; a granted lease waiting
   * for the next attempt; no attempt started for want of a lease. */
  bool lease_acq, lease_wait;
  struct lease *lease_ready;
};

/* ---- connection slots (slots.c) ---- */

/* Registers `d` to be kicked when an outbound connection slot frees. */
void engine__slot_wait(struct dest *d);
/* Closes the worker's idle connections (destinations wait for slots). */
void engine__conns_trim_idle(struct dwork *dw);
/* struct mx_slots.freed for the relay's slots: wakes the oldest waiter. */
void engine__slots_freed(void *relay);
void engine__slots_init(struct relay *r);
void engine__slots_free(struct relay *r);

/* ---- fleet-wide connection leases (lease.c) ---- */

/* At start, attempts wait this long for Redis before local limits apply. */
#define CLUSTER_WAIT_MS 2000

/* Makes the worker's Redis client when the configuration has a cluster
 * block (0 without one); closes it. */
int engine__cluster_worker_init(struct dwork *dw);
void engine__cluster_worker_stop(struct dwork *dw);
/* After a reload: a changed cluster block (fleet mode on or off, another
 * Redis, node, prefix or TLS files) replaces the client, giving the old
 * Redis its leases back; the connections go on. */
void engine__cluster_worker_reload(struct dwork *dw);
/* The connection cap in force: d->lim_conns, or its local share while
 * Redis is down (at least 1). */
size_t engine__lease_cap(const struct dest *d);
/* May d start one more attempt? true with *out the lease it must hold
 * (NULL: none needed); false when one is being acquired or was denied (d
 * is kicked again). The fleet-wide limit is d->lim_conns. */
bool engine__lease_take(struct dest *d, struct lease **out);
/* Gives a lease back (NULL is fine); the pointer is dead afterwards. */
void engine__lease_release(struct lease *l);
/* Whether Redis said the lease had expired: stop using the slot. */
bool engine__lease_lost(const struct lease *l);
/* Redis is back: a lease for a connection of d opened while it was down
 * (NULL when none is needed or it cannot be asked for). If the fleet has
 * no room, the lease turns lost and d is kicked, so that the connection
 * ends: idle at once, busy after its message. */
struct lease *engine__lease_adopt(struct dest *d);
/* The lease's connection is closing: its dest may go before the release
 * (NULL is fine). */
void engine__lease_detach(struct lease *l);

/* ---- destinations (dest.c) ---- */

/* The destination's timer callback: kicks it (rate, slot fallback, lease
 * retry). */
void engine__dest_timer_fire(uv_timer_t *t);
/* Arms that timer for `ms` (at least 1) unless it is armed already or d is
 * being freed. */
void engine__dest_timer_arm(struct dest *d, uint64_t ms);

/* Puts waiting jobs on connections and starts attempts while the
 * destination has more work than connections, within the limits. */
void engine__dest_kick(struct dest *d);

/* Shutting down: gives up every waiting job (they stay queued and due,
 * with no attempt counted against them). */
void engine__dest_abandon(struct dest *d);

/* Frees a destination with nothing left: no job, connection or attempt. */
void engine__dest_maybe_free(struct dest *d);

/* per_domain_rate with a limit (throttle.c): takes a slot now, or arms the
 * timer (or asks Redis) so that the destination is kicked when the next
 * one may be due. */
bool engine__dest_rate_take(struct dest *d, uint32_t rate);

/* May one more message start now (per_domain_rate)? If not, the
 * destination is kicked again when it may. */
/* Refreshes d->lim_* from the configuration in force (a reload swaps it):
 * a destination block's connections, rate and reuse_limit, else the
 * delivery block's. */
static inline void engine__dest_limits(struct dest *d) {
  const struct postern_config *cfg = d->dw->env.r->cfg;
  if (d->lim_gen == cfg->generation)
    return;
  const struct config_destination *b =
      engine__destination_block(cfg, d->domain);
  d->lim_gen = cfg->generation;
  const struct config_limit *c = b && b->connections.n
                                     ? &b->connections
                                     : &cfg->delivery.per_domain_connections;
  const struct config_limit *rt =
      b && b->rate.n ? &b->rate : &cfg->delivery.per_domain_rate;
  d->lim_conns = c->n;
  d->lim_conns_local = c->local;
  d->lim_rate = rt->n;
  d->lim_rate_local = rt->local;
  d->lim_reuse =
      b && b->reuse_limit ? b->reuse_limit : cfg->delivery.reuse_limit;
}

static inline bool engine__dest_rate_allows(struct dest *d) {
  engine__dest_limits(d);
  return d->lim_rate == 0 || engine__dest_rate_take(d, d->lim_rate);
}

static inline struct job *engine__dest_pop(struct dest *d) {
  struct job *j = d->head;
  if (j) {
    d->head = j->next;
    if (d->head == NULL)
      d->tail = NULL;
    j->next = NULL;
    d->njobs--;
  }
  return j;
}

static inline void engine__dest_push_front(struct dest *d, struct job *j) {
  j->next = d->head;
  d->head = j;
  if (d->tail == NULL)
    d->tail = j;
  d->njobs++;
}

/* ---- connections (conn.c) ---- */

/* A connection of d over the accepted session (the client is the conn's
 * from now on; so is `lease`, may be NULL, released when it closes), or
 * NULL without memory (the session and lease are untouched). */
struct conn *engine__conn_open(struct dest *d, const struct mx_session *s,
                               struct lease *lease);

/* Starts carrying messages, from the loop. */
void engine__conn_start(struct conn *cn);

/* Fleet mode, Redis back: each connection of d without a lease asks for
 * one (engine__lease_adopt). */
void engine__conns_lease_adopt(struct dest *d);

/* Offers waiting jobs to the connections: chained behind fast ones first,
 * then to idle ones; idle ones that lost their fleet lease close. Returns
 * false when per_domain_rate stopped it. */
bool engine__conns_feed(struct dest *d);

/* Connections with no message: idle, or about to take the next one. */
size_t engine__conns_idle(const struct dest *d);

/* Shutdown: gives up the messages on cn (they stay queued) and closes it. */
void engine__conn_abandon(struct conn *cn);

/* ---- attempts (deliver.c) ---- */

/* Starts an MX loop for d holding `lease` (may be NULL; taken over); its
 * session becomes a connection of d. */
void engine__deliver_attempt_start(struct dest *d, struct lease *lease);

/* Shutdown: closes the attempts' clients and cancels their lookups. */
void engine__deliver_attempts_stop(struct dest *d);

/* After the loop has ended: frees what attempts are left. */
void engine__deliver_attempts_free(struct dest *d);

#endif
