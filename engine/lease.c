/*
 * lease.c - fleet-wide connection limits (cluster { }, docs/fleet.md): each
 * outbound connection of a destination holds a lease in Redis on
 * `conn:<dest key>` (net/redis.h, redis_lease_*), so that every node of the
 * fleet together opens at most the destination's connection limit.
 *
 * Flow: engine__dest_kick asks engine__lease_take before each attempt. With
 * no cluster, or Redis down, no lease is needed (down: the cap is the
 * local share, engine__lease_cap). Up: one acquire is in flight per
 * destination; its grant is parked on the destination (d->lease_ready)
 * and the destination kicked, which takes it for the next attempt; a
 * denial (or an error) arms the destination's timer, and a local
 * connection closing kicks it too. The attempt, then its connection, owns
 * the lease; it is renewed every lease_ttl/3 and released when the
 * connection closes (conn.c conn_closed) or the attempt ends without one.
 * A job waiting for a lease stays queued on its destination: nothing here
 * fails or blocks mail. A renewal Redis refuses (the lease expired) is
 * followed by an acquire under the same holder name, so the slot is kept
 * where the fleet has room. Held leases are on dw->live: renewed at once
 * when Redis comes back, and given back at shutdown (with the node's
 * entry in the node set, which worker 0 renews) before the client closes.
 *
 * Ownership: a struct lease belongs to the destination while acquiring or
 * parked, then to the attempt, then to the connection. Its memory is
 * freed when its renew timer is closed and no Redis command on it is in
 * flight (refs). A lease may outlive its destination (the release of a
 * closed connection): it keeps only the worker's state (dw), which lives
 * until the worker's loop has ended. One thread: the worker's.
 */
#include "engine/dest.h"

#include "base/postern_err.h"
#include "base/postern_htab.h"
#include "base/postern_log.h"
#include "engine/metrics.h"
#include "net/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A denied or failed acquire is tried again after this, or sooner when a
 * local connection of the destination closes. */
#define LEASE_RETRY_MS 250

struct lease {
  struct dwork *dw;
  struct lease *prev, *next; /* dw->live while held */
  unsigned limit;            /* the cap it was granted under */
  struct dest *d;            /* while acquiring; NULL after */
  uv_timer_t renew;
  int refs; /* the timer handle + Redis commands in flight */
  bool held, lost, released;
  unsigned ttl_ms;
  char key[sizeof((struct dest *)0)->key + 8];
  char holder[160];
};

static void lease_unref(struct lease *l) {
  if (--l->refs == 0)
    free(l);
}

static void lease_timer_closed(uv_handle_t *h) {
  lease_unref(h->data);
}

static void live_add(struct lease *l) {
  struct dwork *dw = l->dw;
  l->prev = NULL;
  l->next = dw->live;
  if (dw->live)
    dw->live->prev = l;
  dw->live = l;
}

static void live_del(struct lease *l) {
  struct dwork *dw = l->dw;
  if (l->prev)
    l->prev->next = l->next;
  else if (dw->live == l)
    dw->live = l->next;
  if (l->next)
    l->next->prev = l->prev;
  l->prev = l->next = NULL;
}

static void lease_done_cb(struct redis_client *c,
                          const struct redis_lease_result *r, void *arg) {
  (void)c;
  (void)r;
  lease_unref(arg);
}

static void lease_reacquired(struct redis_client *c,
                             const struct redis_lease_result *r, void *arg) {
  (void)c;
  struct lease *l = arg;
  if (r->status == 0 && !l->released && !l->lost) {
    if (r->granted)
      postern_log(POSTERN_LOG_INFO, "cluster_lease_regained", "key", l->key,
                  "holder", l->holder, NULL);
    else {
      l->lost = true;
      postern_log(POSTERN_LOG_WARN, "cluster_lease_lost", "key", l->key,
                  "holder", l->holder, NULL);
    }
  }
  lease_unref(l);
}

static void lease_renewed(struct redis_client *c,
                          const struct redis_lease_result *r, void *arg) {
  struct lease *l = arg;
  /* A renewal that failed for want of Redis changes nothing: the
   * connection goes on (Redis down means local limits). One that Redis
   * refused means the lease expired (a pause longer than lease_ttl, or
   * Redis lost its data): take the slot again if the fleet has room;
   * only if it has none, another node holds it and this connection must
   * end after its message. */
  if (r->status == 0 && !r->granted && !l->released && !l->lost &&
      l->dw->redis != NULL) {
    l->refs++;
    if (redis_lease_acquire(c, l->key, l->holder, l->limit, l->ttl_ms,
                            lease_reacquired, l) != 0)
      l->refs--;
  }
  lease_unref(l);
}

static void lease_renew_fire(uv_timer_t *t) {
  struct lease *l = t->data;
  struct redis_client *rc = l->dw->redis;
  if (rc == NULL || !redis_client_up(rc) || l->released)
    return;
  l->refs++;
  if (redis_lease_renew(rc, l->key, l->holder, l->ttl_ms, lease_renewed, l) !=
      0)
    l->refs--;
}

static struct lease *lease_new(struct dest *d) {
  struct dwork *dw = d->dw;
  struct lease *l = calloc(1, sizeof *l);
  if (l == NULL)
    return NULL;
  l->dw = dw;
  l->ttl_ms = (unsigned)dw->env.r->cfg->cluster.lease_ttl_ms;
  if (l->ttl_ms == 0)
    l->ttl_ms = 30000;
  snprintf(l->key, sizeof l->key, "conn:%s", d->key);
  /* Unique in the fleet and across restarts: a restarted node must not
   * take over a lease its previous life left behind. */
  snprintf(l->holder, sizeof l->holder, "%s:%llx:%d:%llu", dw->node,
           (unsigned long long)dw->boot_id, dw->w ? dw->w->index : 0,
           (unsigned long long)++dw->lease_seq);
  uv_timer_init(dw->env.loop, &l->renew);
  l->renew.data = l;
  l->refs = 1;
  return l;
}

void engine__lease_release(struct lease *l) {
  if (l == NULL || l->released)
    return;
  l->released = true;
  live_del(l);
  struct redis_client *rc = l->dw->redis;
  if (l->held && rc != NULL && redis_client_up(rc)) {
    l->refs++;
    if (redis_lease_release(rc, l->key, l->holder, lease_done_cb, l) != 0)
      l->refs--;
  }
  uv_close((uv_handle_t *)&l->renew, lease_timer_closed);
}

bool engine__lease_lost(const struct lease *l) {
  return l != NULL && l->lost;
}

static void lease_retry_later(struct dest *d) {
  if (!d->rate_timer_on && !d->freeing) {
    d->rate_timer_on = true;
    uv_timer_start(&d->rate_timer, engine__dest_timer_fire, LEASE_RETRY_MS, 0);
  }
}

static void lease_acquired(struct redis_client *c,
                           const struct redis_lease_result *r, void *arg) {
  (void)c;
  struct lease *l = arg;
  struct dest *d = l->d;
  l->d = NULL;
  d->lease_acq = false;
  if (r->status == 0 && r->granted && !atomic_load(&d->dw->env.r->stopping)) {
    l->held = true;
    live_add(l);
    uv_timer_start(&l->renew, lease_renew_fire, l->ttl_ms / 3, l->ttl_ms / 3);
    d->lease_ready = l;
    engine__dest_kick(d);
    if (d->lease_ready != NULL) {
      /* Nothing wanted it any more (the jobs went on other connections). */
      struct lease *spare = d->lease_ready;
      d->lease_ready = NULL;
      engine__lease_release(spare);
    }
    engine__dest_maybe_free(d);
  } else {
    if (r->status != 0 && r->status != POSTERN_ECLOSED)
      postern_log(POSTERN_LOG_DEBUG, "cluster_lease_error", "key", l->key,
                  "error", postern_strerror(r->status), NULL);
    /* Granted while stopping: give it back rather than let it expire. */
    l->held = r->status == 0 && r->granted;
    engine__lease_release(l);
    if (!atomic_load(&d->dw->env.r->stopping))
      lease_retry_later(d);
    engine__dest_maybe_free(d);
  }
  lease_unref(l); /* the acquire's reference */
}

size_t engine__lease_cap(const struct dest *d, size_t cap) {
  const struct dwork *dw = d->dw;
  if (dw->redis == NULL || dw->redis_up || d->lim_conns_local)
    return cap;
  double share = dw->env.r->cfg->cluster.local_share;
  size_t local = (size_t)((double)cap * share);
  return local < 1 ? 1 : local;
}

bool engine__lease_take(struct dest *d, size_t cap, struct lease **out) {
  struct dwork *dw = d->dw;
  *out = NULL;
  if (dw->redis == NULL || d->lim_conns_local)
    return true;
  if (d->lease_ready != NULL) {
    *out = d->lease_ready;
    d->lease_ready = NULL;
    return true;
  }
  if (!dw->redis_up) {
    /* Connecting at start: wait for Redis a little (connect_timeout)
     * rather than start the fleet with local limits; after that, and
     * whenever Redis is down, the local share. */
    if (!dw->redis_ever_up &&
        relay_now_ms(dw->env.r) < dw->cluster_start_ms + CLUSTER_WAIT_MS) {
      lease_retry_later(d);
      return false;
    }
    return true;
  }
  if (d->lease_acq)
    return false;
  struct lease *l = lease_new(d);
  if (l == NULL) {
    lease_retry_later(d);
    return false;
  }
  l->d = d;
  l->limit = (unsigned)cap;
  l->refs++; /* the acquire's */
  if (redis_lease_acquire(dw->redis, l->key, l->holder, (unsigned)cap,
                          l->ttl_ms, lease_acquired, l) != 0) {
    l->refs--;
    engine__lease_release(l);
    lease_retry_later(d);
    return false;
  }
  d->lease_acq = true;
  return false;
}

/* ---- the worker's Redis client ---- */

/* Waits this long at shutdown for the releases to be answered. */
#define CLUSTER_STOP_MS 1000

static void beat_done(struct redis_client *c,
                      const struct redis_lease_result *r, void *arg) {
  (void)c;
  (void)arg;
  if (r->status != 0 && r->status != POSTERN_ECLOSED)
    postern_log(POSTERN_LOG_DEBUG, "cluster_beat_error", "error",
                postern_strerror(r->status), NULL);
}

static void beat_fire(uv_timer_t *t) {
  struct dwork *dw = t->data;
  if (dw->redis == NULL || !dw->redis_up)
    return;
  const struct relay *r = dw->env.r;
  char info[512];
  snprintf(info, sizeof info, "pid=%d started=%llu hostname=%s workers=%u",
           (int)getpid(), (unsigned long long)(dw->boot_ms / 1000),
           r->cfg->hostname, (unsigned)r->cfg->delivery.workers);
  unsigned ttl = (unsigned)r->cfg->cluster.lease_ttl_ms;
  redis_node_beat(dw->redis, dw->node, ttl ? ttl : 30000, info, beat_done, dw);
}

static void cluster_state(struct redis_client *c, bool up, void *arg) {
  (void)c;
  struct dwork *dw = arg;
  dw->redis_up = up;
  metrics_cluster_redis(up);
  if (up) {
    dw->redis_ever_up = true;
    postern_log(POSTERN_LOG_INFO, "cluster_redis_up", "node", dw->node, NULL);
    if (dw->beats)
      beat_fire(&dw->beat);
    /* Renew every lease now: an outage longer than lease_ttl (or a Redis
     * that restarted empty) lost them, and each is taken again where the
     * fleet has room (lease_renewed). */
    for (struct lease *l = dw->live; l != NULL; l = l->next)
      lease_renew_fire(&l->renew);
  } else {
    char share[32];
    snprintf(share, sizeof share, "%g", dw->env.r->cfg->cluster.local_share);
    postern_log(POSTERN_LOG_WARN, "cluster_redis_down", "node", dw->node,
                "limits", "local share", "local_share", share, NULL);
  }
  /* Destinations waiting for a lease, or for Redis, go on under the new
   * rules. Collected first: a kick may free its destination. */
  size_t pos = 0, n = 0, cap = postern_htab_count(dw->dests);
  struct dest **ds = cap ? calloc(cap, sizeof *ds) : NULL;
  struct dest *d;
  while (ds && (d = postern_htab_next(dw->dests, &pos, NULL)) != NULL)
    if (!d->freeing && d->njobs)
      ds[n++] = d;
  for (size_t i = 0; i < n; i++)
    engine__dest_kick(ds[i]);
  free(ds);
}

int engine__cluster_worker_init(struct dwork *dw) {
  const struct config_cluster *cc = &dw->env.r->cfg->cluster;
  if (!cc->enabled)
    return 0;
  struct redis_opts o;
  redis_opts_init(&o);
  int rc = redis_url_parse(cc->redis, &o.url);
  if (rc != 0)
    return rc;
  snprintf(o.key_prefix, sizeof o.key_prefix, "%s",
           cc->key_prefix ? cc->key_prefix : "");
  o.state_cb = cluster_state;
  o.state_arg = dw;
  const char *ca = cc->redis_ca_file ? cc->redis_ca_file
                                     : dw->env.r->cfg->tls.ca_file;
  snprintf(o.tls_ca_file, sizeof o.tls_ca_file, "%s", ca ? ca : "");
  snprintf(o.tls_cert_file, sizeof o.tls_cert_file, "%s",
           cc->redis_cert_file ? cc->redis_cert_file : "");
  snprintf(o.tls_key_file, sizeof o.tls_key_file, "%s",
           cc->redis_key_file ? cc->redis_key_file : "");
  snprintf(dw->node, sizeof dw->node, "%s", cc->node);
  dw->boot_id = ((uint64_t)getpid() << 32) ^ uv_hrtime();
  dw->cluster_start_ms = relay_now_ms(dw->env.r);
  dw->boot_ms = (uint64_t)time(NULL) * 1000;
  rc = redis_client_new(dw->env.loop, &o, &dw->redis);
  explicit_bzero(&o, sizeof o);
  if (rc != 0)
    return rc;
  uv_timer_init(dw->env.loop, &dw->stop_timer);
  dw->stop_timer.data = dw;
  uv_timer_init(dw->env.loop, &dw->beat);
  dw->beat.data = dw;
  dw->beats = dw->w == NULL || dw->w->index == 0;
  if (dw->beats) {
    uint64_t every = (cc->lease_ttl_ms ? cc->lease_ttl_ms : 30000) / 3;
    uv_timer_start(&dw->beat, beat_fire, every, every);
  }
  return 0;
}

static void cluster_close(struct dwork *dw) {
  if (dw->cluster_closed)
    return;
  dw->cluster_closed = true;
  if (dw->redis_up)
    metrics_cluster_redis(false);
  redis_client_close(dw->redis, NULL, NULL);
  dw->redis = NULL;
  dw->redis_up = false;
  uv_close((uv_handle_t *)&dw->stop_timer, NULL);
  uv_close((uv_handle_t *)&dw->beat, NULL);
}

static void stop_timer_fire(uv_timer_t *t) {
  struct dwork *dw = t->data;
  postern_log(POSTERN_LOG_WARN, "cluster_stop_timeout", "node", dw->node,
              "releases_unanswered", NULL);
  cluster_close(dw);
}

static void stop_done(struct redis_client *c,
                      const struct redis_lease_result *r, void *arg) {
  (void)c;
  (void)r;
  struct dwork *dw = arg;
  if (--dw->stop_pending == 0)
    cluster_close(dw);
}

static void stop_lease_done(struct redis_client *c,
                            const struct redis_lease_result *r, void *arg) {
  struct lease *l = arg;
  struct dwork *dw = l->dw;
  lease_unref(l);
  stop_done(c, r, dw);
}

/* Shutdown: the connections are being closed, but their own releases
 * would come after the client has gone. Give every lease back now, and
 * leave the node set, so that the rest of the fleet may use the slots at
 * once instead of after lease_ttl; then close the client (at most
 * CLUSTER_STOP_MS later: a slow Redis does not hold the shutdown). */
void engine__cluster_worker_stop(struct dwork *dw) {
  if (dw->redis == NULL || dw->cluster_closed)
    return;
  uv_timer_stop(&dw->beat);
  if (dw->redis_up) {
    for (struct lease *l = dw->live; l != NULL; l = l->next) {
      if (!l->held)
        continue;
      l->held = false; /* its owner's release sends nothing */
      l->refs++;
      dw->stop_pending++;
      if (redis_lease_release(dw->redis, l->key, l->holder, stop_lease_done,
                              l) != 0) {
        l->refs--;
        dw->stop_pending--;
      }
    }
    if (dw->beats) {
      dw->stop_pending++;
      if (redis_node_leave(dw->redis, dw->node, stop_done, dw) != 0)
        dw->stop_pending--;
    }
  }
  if (dw->stop_pending == 0)
    cluster_close(dw);
  else
    uv_timer_start(&dw->stop_timer, stop_timer_fire, CLUSTER_STOP_MS, 0);
}
