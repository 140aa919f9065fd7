/*
 * internal.h - what the engine's files share: the relay's runtime state,
 * messages in flight, delivery jobs and the functions that pass them
 * between threads. Never included outside engine/: the programs that use
 * the engine get relay.h and probe.h.
 *
 * Threads and ownership:
 *  - the main thread runs the main loop: signals, the scheduler, metrics;
 *  - N worker threads run one loop each: SMTP sessions in and out, DNS,
 *    policy lookups; every destination (domain or route) belongs to one
 *    worker, chosen by hashing its key;
 *  - the queue's writer thread commits and runs commit callbacks, which
 *    only copy what they need and post to a loop.
 * A message in flight is a `struct msgref` owned by the scheduler (its
 * in-flight set holds it); each of its jobs (one per destination) is owned
 * by the worker delivering it until its results are committed.
 */
#ifndef POSTERN_ENGINE_INTERNAL_H
#define POSTERN_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <uv.h>

#include "engine/config.h"
#include "engine/relay.h"
#include "engine/worker.h"
#include "policy/chain.h"
#include "queue/queue.h"

struct smtp_server;
struct tls_ctx;
struct policy_chain;
struct job;

/* The outbound connection count an environment's clients hold, and who
 * hears when one is released (a destination waiting for a free slot under
 * max_connections); the object must outlive every client (close callbacks
 * use it). engine__slot_take/_release in mx_loop.c. */
struct mx_slots {
  atomic_uint *count;
  void (*freed)(void *arg); /* NULL: nobody waits */
  void *arg;
};

struct slot_waiter;

/* The running relay. The configuration and the chain are immutable while
 * in force; a reload swaps in new ones on the main loop. */
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
  struct dkim_key *tlsrpt_dkim; /* signs mailed TLS reports; NULL: none */
  struct policy_chain *_Atomic chain;
  uv_loop_t *main_loop;
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t shutdown_timer;
  atomic_uint out_conns; /* outbound connections, all workers */
  /* out_conns as the workers' MX loops take and release it; a release
   * wakes the oldest destination waiting for a slot (engine/slots.c). */
  struct mx_slots slots;
  pthread_mutex_t slot_mu;
  struct slot_waiter *slot_head, *slot_tail; /* guarded by slot_mu */
  /* Destinations waiting for a slot: while there are any, a connection
   * that runs out of work closes instead of idling (conn.c), and idle
   * ones are closed (slots.c), so an idle session never holds a slot that
   * a destination with mail waits for. */
  atomic_uint slot_waiters;
  atomic_bool stopping;
  int exit_code;
  size_t servers_open;
};

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

/* One recipient outcome collected for the message's DSN. */
struct msg_note {
  unsigned index;
  enum queue_dsn_event event;
  char status[QUEUE_STATUS_MAX + 1];
  char reply[QUEUE_REPLY_MAX + 1];
  char mx[256];
  uint64_t when_ms;
};

/* A message in flight: loaded once, shared by its jobs. */
struct msgref {
  char id[QUEUE_ID_LEN + 1];
  struct queue_env *env;
  void *body;
  size_t body_len;
  atomic_int jobs_left;
  /* DSN material, appended on the writer thread by result callbacks (one
   * thread, so no lock), read by the scheduler after the last job. */
  struct msg_note *notes;
  size_t n_notes, cap_notes;
  /* A result commit failed or a job was abandoned: the message stays due.
   * Set from worker threads and the writer thread at once: atomic. */
  atomic_bool result_failed;
  struct msgref *next; /* scheduler inbox link */
};

/* Where a destination's mail goes. */
struct route_target {
  char host[256]; /* host name or address literal */
  uint16_t port;
  bool no_mx; /* [host] or an address: connect to it, no MX lookup */
};

/* One message's recipients for one destination. */
struct job {
  struct worker_task task;
  struct relay *relay;
  struct msgref *m;
  struct job *next; /* in the destination's pending list */
  char dest_key[300];
  bool routed;
  struct route_target route;
  char domain[256];
  bool tls_report;      /* the message is a TLS report (queue_env.tls_report) */
  bool tls_required_no; /* TLS-Required: No, honoured (RFC 8689 §5) */
  bool requiretls;      /* sent with REQUIRETLS (RFC 8689 §4.2) */
  /* The domain is not valid IDNA2008: why (static), and the job bounces
   * without being posted to a worker. NULL otherwise. */
  const char *idna_why;
  uint64_t start_ms;
  size_t n;                          /* recipients in this job */
  unsigned *idx;                     /* their indexes in m->env->rcpts */
  struct queue_rcpt_result *results; /* one per recipient, filled by delivery */
  char (*status)[QUEUE_STATUS_MAX + 1];
  char (*reply)[QUEUE_REPLY_MAX + 1];
  char mx[256];               /* the MX that answered, for DSNs and logs */
  struct queue_result_in rin; /* borrowed by the queue until on_result */
};

/* ---- routes (route.c) ---- */

/* The destination block for `domain` (first match in file order: the
 * domain itself, ".parent" for a name below it, or "*"), or NULL. */
const struct config_destination *
engine__destination_block(const struct postern_config *cfg, const char *domain);
/* The same as the policy chain reads it; false (and *out zeroed) when no
 * block matches. */
struct policy_dest;
bool engine__destination_policy(const struct postern_config *cfg,
                                const char *domain, struct policy_dest *out);

/* For postern-probe: the pattern of the block that applies to `domain`
 * ("" when none) and what it sets, as one line. */
void engine__destination_describe(const struct postern_config *cfg,
                                  const char *domain, char *pattern,
                                  size_t pcap, char *set, size_t scap);

/* The static route for `domain`, if any: the route naming the domain
 * itself, else the "*" route. */
bool engine__route_lookup(const struct relay *r, const char *domain,
                          struct route_target *out);

/* The destination key of a recipient domain ("example.org", or the route
 * target "[host]:port" that domains share); fills *rt when routed. */
bool engine__dest_key(const struct relay *r, const char *domain,
                      struct route_target *rt, char *key, size_t cap);

/* The worker that owns destination `key`. */
struct worker *engine__dest_worker(struct relay *r, const char *key);

/* ---- scheduler (sched.c, main loop) ---- */

struct sched;

int engine__sched_new(struct relay *r, uv_loop_t *loop, struct sched **out);
/* Thread-safe: a message was committed; attempt it now. */
void engine__sched_notify_new(struct sched *s, const char *id);
/* The same, handing the committed message on (taken over), so that the
 * scheduler need not read it back from the queue. */
void engine__sched_notify_msg(struct sched *s, struct msgref *m);
/* A message as its submission describes it (queue_env_of_submission; the
 * body copied), ready for engine__sched_notify_msg; NULL when out of
 * memory (then notify by id). in->arrival_ms must be set. */
struct msgref *engine__msgref_of_submission(const struct queue_msg_in *in,
                                            const void *body, size_t len);
/* Frees a message record (envelope, body, notes). NULL is fine. */
void engine__msgref_free(struct msgref *m);
/* Thread-safe: every job of m has its results committed (or failed). */
void engine__sched_job_done(struct sched *s, struct msgref *m);
/* Stops dispatching; `cb` runs when nothing is in flight any more. */
void engine__sched_drain(struct sched *s, void (*cb)(void *), void *arg);
size_t engine__sched_inflight(struct sched *s);
void engine__sched_close(struct sched *s);

/* ---- jobs (job.c) ---- */

/* A job with room for `nrcpts` recipients, in one allocation (zeroed);
 * NULL without memory. Freed with engine__job_free. */
struct job *engine__job_new(size_t nrcpts);
void engine__job_free(struct job *j);
/* Records recipient k's outcome (status and reply are copied). */
void engine__job_set(struct job *j, unsigned k, enum queue_outcome o,
                     const char *status, const char *reply);
/* The delivery log line and counters of recipient k's attempt. `mx` and
 * `addr` may be NULL (no connection was made). */
void engine__job_log(struct job *j, unsigned k, const char *mx,
                     const char *addr, enum policy_mx_level mxl,
                     enum policy_tls_level tlsl, const char *status,
                     const char *dsn, const char *reply, uint64_t now);
/* Fails every recipient with one status (no connection made), logs them
 * and finishes the job. */
void engine__job_fail_all(struct job *j, bool temp, const char *status,
                          const char *reason, const char *mx);
/* Hands a finished job's results to the queue (any thread). */
void engine__job_finish(struct job *j);
/* Gives a job up without a result (shutdown): its recipients stay queued
 * and due, and no attempt is counted. Any thread. */
void engine__job_abandon(struct job *j);

/* ---- ingress (ingress.c) ---- */

/* SMTP server handlers. */
struct smtp_server_txn;
struct smtp_server_envelope;
int engine__ingress_assign_id(void *ud, char *id);
void engine__ingress_message(void *ud, struct smtp_server_txn *txn,
                             const struct smtp_server_envelope *env,
                             const char *body, size_t len);
/* Queues a message Postern made itself (a DSN) for delivery to `rcpt`;
 * sender and rcpt are copied; msg (malloc'd, len bytes) is the queue's
 * from a 0 return, the caller's otherwise. 0 or queue_msg_submit's error. */
int engine__ingress_local(struct relay *r, const char *id, const char *sender,
                          const char *rcpt, char *msg, size_t len);
/* Queues a TLS report the relay made (RFC 8460 §5.3) for nrcpts
 * recipients, flagged so that it is delivered despite TLS failures and not
 * counted. sender and rcpts are copied; msg (malloc'd, len bytes) is the
 * queue's from a 0 return, the caller's otherwise. Returns 0 or
 * queue_msg_submit's error. */
int engine__ingress_local_report(struct relay *r, const char *id,
                                 const char *sender, const char *const *rcpts,
                                 size_t nrcpts, char *msg, size_t len);

/* ---- delivery on the worker loops (dest.c) ---- */

/* Runs on the job's worker: queue it on its destination. */
void engine__deliver_job(struct worker *w, struct worker_task *t);
/* Per-worker delivery state; created in the worker's on_start. */
int engine__deliver_worker_init(struct relay *r, struct worker *w);
void engine__deliver_worker_stop(struct worker *w);
void engine__deliver_worker_exit(struct worker *w);
/* A task (owned by relay.c, never freed by it) that abandons every waiting
 * job. */
void engine__deliver_worker_drain(struct worker *w, struct worker_task *t);
/* A reload happened: the worker's fleet-mode client follows the new
 * cluster block (lease.c). */
void engine__deliver_worker_reload(struct worker *w, struct worker_task *t);

/* ---- policy maintenance (maint.c, worker 0's loop) ---- */

void engine__maint_start(struct relay *r, struct worker *w);
void engine__maint_stop(void);

#endif
