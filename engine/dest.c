/*
 * dest.c - destinations on a worker: the table of destinations (keyed by
 * domain or route target), each one's queue of waiting jobs, and the
 * limits that decide when a job may start: per_domain_rate, and how many
 * connections a destination (per_domain_connections) and the relay
 * (max_connections) may have. The worker's delivery state lives here too:
 * its resolver and HTTPS client, made when the worker starts and closed
 * when it stops.
 *
 * Invariants: a destination is in its worker's table from its first job
 * until it has no job, connection or attempt left (then it is removed and
 * its rate timer closed; the memory goes in the close callback). Jobs wait
 * in arrival order; a job given back by a connection goes to the front.
 * One thread: the worker's.
 */
#include "engine/dest.h"

#include "net/dns.h"
#include "net/https.h"
#include "base/postern_err.h"
#include "base/postern_htab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A destination waiting for a free connection slot is woken when one frees
 * (slots.c); this slow timer only catches a wake-up that got lost. */
#define DEST_SLOT_FALLBACK_MS 1000

static struct dwork *dw_of(struct worker *w) {
  return w->ud2;
}

void engine__dest_timer_fire(uv_timer_t *t) {
  struct dest *d = t->data;
  d->rate_timer_on = false;
  engine__dest_kick(d);
}

void engine__dest_timer_arm(struct dest *d, uint64_t ms) {
  if (d->rate_timer_on || d->freeing)
    return;
  d->rate_timer_on = true;
  uv_timer_start(&d->rate_timer, engine__dest_timer_fire, ms ? ms : 1, 0);
}

static struct dest *dest_get(struct dwork *dw, struct job *j) {
  struct dest *d = postern_htab_get(dw->dests, j->dest_key);
  if (d != NULL)
    return d;
  d = calloc(1, sizeof *d);
  if (d == NULL)
    return NULL;
  d->dw = dw;
  snprintf(d->key, sizeof d->key, "%s", j->dest_key);
  snprintf(d->domain, sizeof d->domain, "%s", j->domain);
  snprintf(d->gcra_key, sizeof d->gcra_key, "rate:%s", d->key);
  d->routed = j->routed;
  d->route = j->route;
  d->target = (struct mx_dest){.key = d->key,
                               .domain = d->domain,
                               .routed = d->routed,
                               .route = &d->route,
                               .no_tlsrpt = j->tls_report,
                               .tls_report = j->tls_report,
                               .tls_required_no = j->tls_required_no,
                               .requiretls = j->requiretls};
  if (postern_htab_put(dw->dests, d->key, d) != 0) {
    free(d);
    return NULL;
  }
  uv_timer_init(dw->env.loop, &d->rate_timer);
  d->rate_timer.data = d;
  return d;
}

static void dest_closed(uv_handle_t *h) {
  free(h->data);
}

void engine__dest_maybe_free(struct dest *d) {
  if (d->njobs || d->nconns || d->nattempts || d->lease_acq || d->lease_ready ||
      d->rate_acq || d->freeing)
    return;
  postern_htab_del(d->dw->dests, d->key);
  d->freeing = true;
  uv_close((uv_handle_t *)&d->rate_timer, dest_closed);
}

void engine__deliver_job(struct worker *w, struct worker_task *t) {
  struct job *j = (struct job *)t;
  struct dwork *dw = dw_of(w);
  if (atomic_load(&dw->env.r->stopping)) {
    engine__job_abandon(j);
    return;
  }
  struct dest *d = dest_get(dw, j);
  if (d == NULL) {
    engine__job_fail_all(j, true, "4.3.0", "out of memory", NULL);
    return;
  }
  j->next = NULL;
  if (d->tail)
    d->tail->next = j;
  else
    d->head = j;
  d->tail = j;
  d->njobs++;
  engine__dest_kick(d);
}

void engine__dest_abandon(struct dest *d) {
  struct job *j;
  while ((j = engine__dest_pop(d)) != NULL)
    engine__job_abandon(j);
}

void engine__dest_kick(struct dest *d) {
  struct relay *r = d->dw->env.r;
  if (atomic_load(&r->stopping))
    return;
  if (!engine__conns_feed(d))
    return;
  const struct config_delivery *dc = &r->cfg->delivery;
  /* Slow start: until a connection is up, only initial_connections
   * attempts; a burst of jobs to a new destination would otherwise open
   * per_domain_connections handshakes where one reused session does. */
  engine__dest_limits(d);
  /* Fleet mode: while Redis is down, the local share of the limit. */
  size_t cap = engine__lease_cap(d);
  if (d->nconns == 0 && cap > dc->initial_connections)
    cap = dc->initial_connections;
  d->lease_wait = false;
  while (d->njobs > d->nattempts &&
         !(d->saturated && d->nconns + d->nattempts) &&
         d->nconns + d->nattempts < cap &&
         atomic_load(&r->out_conns) < dc->max_connections) {
    if (engine__conns_idle(d))
      break;
    /* Fleet mode: each connection holds a lease on the fleet-wide limit;
     * without one the job waits here, queued (lease.c kicks again). */
    struct lease *lease;
    if (!engine__lease_take(d, &lease)) {
      d->lease_wait = true;
      break;
    }
    engine__deliver_attempt_start(d, lease);
  }
  /* Waiting jobs that nothing carries (max_connections reached) would wait
   * for the next job to this destination, which may never come: the slot
   * is freed by another destination's connection, maybe on another worker.
   * Be woken when one frees (slots.c). */
  if (d->njobs == 0)
    d->temp_seen = false; /* it spoke for waiting jobs only */
  if (d->njobs && d->nconns == 0 && d->nattempts == 0 && !d->lease_wait) {
    engine__slot_wait(d);
    engine__dest_timer_arm(d, DEST_SLOT_FALLBACK_MS);
  }
  engine__dest_maybe_free(d);
}

/* ---- per-worker setup ---- */

int engine__deliver_worker_init(struct relay *r, struct worker *w) {
  struct dwork *dw = calloc(1, sizeof *dw);
  if (dw == NULL)
    return POSTERN_ENOMEM;
  int rc = postern_htab_new(0, &dw->dests);
  if (rc != 0) {
    free(dw);
    return rc;
  }
  dw->env.r = r;
  dw->env.loop = &w->loop;
  dw->env.slots = &r->slots;
  dw->env.tlsrpt = true;
  dw->w = w;
  struct dns_opts o;
  relay_dns_opts(r->cfg, &o);
  rc = dns_resolver_new(&w->loop, &o, &dw->env.dns);
  if (rc != 0) {
    postern_htab_free(dw->dests);
    free(dw);
    return rc;
  }
  /* Without HTTPS (libcurl unusable) the relay still runs; build_chain
   * refuses an mtasts module in that case. */
  if (https_client_new(&w->loop, &dw->env.https) != 0)
    dw->env.https = NULL;
  /* Fleet mode: this loop's Redis client (lease.c). */
  rc = engine__cluster_worker_init(dw);
  if (rc != 0) {
    if (dw->env.https)
      https_client_close(dw->env.https, NULL, NULL);
    dns_resolver_close(dw->env.dns, NULL, NULL);
    postern_htab_free(dw->dests);
    free(dw);
    return rc;
  }
  w->ud2 = dw;
  return 0;
}

void engine__deliver_worker_reload(struct worker *w, struct worker_task *t) {
  struct dwork *dw = dw_of(w);
  (void)t; /* owned by relay.c */
  if (dw != NULL && !atomic_load(&dw->env.r->stopping))
    engine__cluster_worker_reload(dw);
}

/* Draining for shutdown: give up every job not yet on a connection. */
void engine__deliver_worker_drain(struct worker *w, struct worker_task *t) {
  struct dwork *dw = dw_of(w);
  (void)t; /* owned by relay.c */
  if (dw == NULL)
    return;
  size_t pos = 0;
  struct dest *d;
  while ((d = postern_htab_next(dw->dests, &pos, NULL)) != NULL)
    engine__dest_abandon(d);
}

/* On shutdown: abandon every job (it stays queued and due), close every
 * connection, cancel every attempt's lookup and close the resolver. The
 * callbacks that follow unwind the attempts; the memory they could touch
 * is freed in engine__deliver_worker_exit, after the loop has ended.
 * Nothing here removes a destination from the table (they are marked
 * `freeing` and stay until exit), so the walk sees each one once. */
void engine__deliver_worker_stop(struct worker *w) {
  struct dwork *dw = dw_of(w);
  if (dw == NULL)
    return;
  size_t pos = 0;
  struct dest *d;
  while ((d = postern_htab_next(dw->dests, &pos, NULL)) != NULL) {
    engine__dest_abandon(d);
    while (d->conns)
      engine__conn_abandon(d->conns);
    engine__deliver_attempts_stop(d);
    engine__lease_release(d->lease_ready);
    d->lease_ready = NULL;
    if (!d->freeing) {
      d->freeing = true;
      uv_close((uv_handle_t *)&d->rate_timer, NULL);
    }
  }
  dns_resolver_close(dw->env.dns, NULL, NULL);
  if (dw->env.https)
    https_client_close(dw->env.https, NULL, NULL);
  /* Leases still held expire after lease_ttl: the client closes now, and
   * the connections' releases come after it. */
  engine__cluster_worker_stop(dw);
}

void engine__deliver_worker_exit(struct worker *w) {
  struct dwork *dw = dw_of(w);
  if (dw == NULL)
    return;
  size_t pos = 0;
  struct dest *d;
  while ((d = postern_htab_next(dw->dests, &pos, NULL)) != NULL) {
    engine__deliver_attempts_free(d);
    free(d);
  }
  postern_htab_free(dw->dests);
  w->ud2 = NULL;
  free(dw);
}
