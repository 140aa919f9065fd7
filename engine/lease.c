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
  struct dest *owner_d;      /* adopt: the connection's dest, until released */
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

/* Gives the slot back to Redis (the lease stays alive until answered). */
static void lease_send_release(struct redis_client *rc, struct lease *l) {
  l->refs++;
  if (redis_lease_release(rc, l->key, l->holder, lease_done_cb, l) != 0)
    l->refs--;
}

static void lease_renew_fire(uv_timer_t *t);

/* Redis granted the slot: held, on the worker's list, renewed every third
 * of its life. */
static void lease_hold(struct lease *l) {
  l->held = true;
  live_add(l);
  uv_timer_start(&l->renew, lease_renew_fire, l->ttl_ms / 3, l->ttl_ms / 3);
}

static void lease_reacquired(struct redis_client *c,
                             const struct redis_lease_result *r, void *arg) {
  (void)c;
  struct lease *l = arg;
  if (r->status == 0 && !l->released && !l->lost) {
    if (r->granted) {
      l->held = true; /* after a reload to another Redis it was not */
      postern_log(POSTERN_LOG_INFO, "cluster_lease_regained", "key", l->key,
                  "holder", l->holder, NULL);
    } else {
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
  /* At least 3 s: the schema's range. */
  l->ttl_ms = (unsigned)dw->env.r->cfg->cluster.lease_ttl_ms;
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
  l->owner_d = NULL;
  live_del(l);
  struct redis_client *rc = l->dw->redis;
  if (l->held && rc != NULL && redis_client_up(rc))
    lease_send_release(rc, l);
  uv_close((uv_handle_t *)&l->renew, lease_timer_closed);
}

bool engine__lease_lost(const struct lease *l) {
  return l != NULL && l->lost;
}

static void lease_retry_later(struct dest *d) {
  engine__dest_timer_arm(d, LEASE_RETRY_MS);
}

static void lease_acquired(struct redis_client *c,
                           const struct redis_lease_result *r, void *arg) {
  (void)c;
  struct lease *l = arg;
  struct dest *d = l->d;
  l->d = NULL;
  d->lease_acq = false;
  if (r->status == 0 && r->granted && !atomic_load(&d->dw->env.r->stopping)) {
    lease_hold(l);
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

static void lease_adopted(struct redis_client *c,
                          const struct redis_lease_result *r, void *arg) {
  struct lease *l = arg;
  if (r->status == 0 && r->granted) {
    if (l->released) /* its connection closed meanwhile */
      lease_send_release(c, l);
    else
      lease_hold(l);
  } else if (r->status == 0 && !l->released) {
    /* The fleet is at its limit without this connection: it ends. */
    l->lost = true;
    postern_log(POSTERN_LOG_INFO, "cluster_lease_denied", "key", l->key, "note",
                "a connection opened while Redis was down ends", NULL);
    engine__dest_kick(l->owner_d);
  }
  lease_unref(l);
}

void engine__lease_detach(struct lease *l) {
  if (l != NULL)
    l->owner_d = NULL;
}

struct lease *engine__lease_adopt(struct dest *d) {
  struct dwork *dw = d->dw;
  engine__dest_limits(d);
  if (dw->redis == NULL || !dw->redis_up || d->lim_conns_local)
    return NULL;
  struct lease *l = lease_new(d);
  if (l == NULL)
    return NULL;
  l->limit = d->lim_conns;
  l->owner_d = d;
  l->refs++; /* the acquire's */
  if (redis_lease_acquire(dw->redis, l->key, l->holder, l->limit, l->ttl_ms,
                          lease_adopted, l) != 0) {
    l->refs--;
    engine__lease_release(l);
    return NULL;
  }
  return l;
}

size_t engine__lease_cap(const struct dest *d) {
  const struct dwork *dw = d->dw;
  size_t cap = d->lim_conns;
  if (dw->redis == NULL || dw->redis_up || d->lim_conns_local)
    return cap;
  double share = dw->env.r->cfg->cluster.local_share;
  size_t local = (size_t)((double)cap * share);
  return local < 1 ? 1 : local;
}

bool engine__lease_take(struct dest *d, struct lease **out) {
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
  l->limit = d->lim_conns;
  l->refs++; /* the acquire's */
  if (redis_lease_acquire(dw->redis, l->key, l->holder, l->limit, l->ttl_ms,
                          lease_acquired, l) != 0) {
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
  redis_node_beat(dw->redis, dw->node, (unsigned)r->cfg->cluster.lease_ttl_ms,
                  info, beat_done, dw);
}

/* Destinations waiting for a lease, or for Redis, go on under the new
 * rules. Collected first: a kick may free its destination. */
static void kick_waiting(struct dwork *dw) {
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

static void cluster_state(struct redis_client *c, bool up, void *arg) {
  struct dwork *dw = arg;
  if (c != dw->redis)
    return; /* a retired client's last word */
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
    /* Connections opened while Redis was down take leases now, so that
     * the fleet is back within its limits without waiting for them to
     * close. */
    size_t pos = 0;
    struct dest *d;
    while ((d = postern_htab_next(dw->dests, &pos, NULL)) != NULL)
      if (!d->freeing && d->nconns)
        engine__conns_lease_adopt(d);
  } else {
    char share[32];
    snprintf(share, sizeof share, "%g", dw->env.r->cfg->cluster.local_share);
    postern_log(POSTERN_LOG_WARN, "cluster_redis_down", "node", dw->node,
                "limits", "local share", "local_share", share, NULL);
  }
  kick_waiting(dw);
}

/* What makes a worker's Redis client: a reload that changes any of it
 * replaces the client (engine__cluster_worker_reload). */
static void cluster_identity(const struct postern_config *cfg, char *out,
                             size_t cap) {
  const struct config_cluster *cc = &cfg->cluster;
  if (!cc->enabled) {
    snprintf(out, cap, "off");
    return;
  }
#define S(x) ((x) ? (x) : "")
  snprintf(out, cap, "%s\n%s\n%s\n%s\n%s\n%s\n%s", S(cc->redis), S(cc->node),
           S(cc->key_prefix), S(cc->redis_ca_file), S(cfg->tls.ca_file),
           S(cc->redis_cert_file), S(cc->redis_key_file));
#undef S
}

static int client_open(struct dwork *dw) {
  const struct postern_config *cfg = dw->env.r->cfg;
  const struct config_cluster *cc = &cfg->cluster;
  cluster_identity(cfg, dw->cluster_id, sizeof dw->cluster_id);
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
  const char *ca = cc->redis_ca_file ? cc->redis_ca_file : cfg->tls.ca_file;
  snprintf(o.tls_ca_file, sizeof o.tls_ca_file, "%s", ca ? ca : "");
  snprintf(o.tls_cert_file, sizeof o.tls_cert_file, "%s",
           cc->redis_cert_file ? cc->redis_cert_file : "");
  snprintf(o.tls_key_file, sizeof o.tls_key_file, "%s",
           cc->redis_key_file ? cc->redis_key_file : "");
  snprintf(dw->node, sizeof dw->node, "%s", cc->node);
  dw->cluster_start_ms = relay_now_ms(dw->env.r);
  dw->redis_ever_up = false;
  rc = redis_client_new(dw->env.loop, &o, &dw->redis);
  explicit_bzero(&o, sizeof o);
  if (rc != 0)
    return rc;
  if (dw->beats) {
    uint64_t every = cc->lease_ttl_ms / 3;
    uv_timer_start(&dw->beat, beat_fire, every, every);
  }
  return 0;
}

int engine__cluster_worker_init(struct dwork *dw) {
  dw->boot_id = ((uint64_t)getpid() << 32) ^ uv_hrtime();
  dw->boot_ms = (uint64_t)time(NULL) * 1000;
  uv_timer_init(dw->env.loop, &dw->beat);
  dw->beat.data = dw;
  dw->beats = dw->w == NULL || dw->w->index == 0;
  int rc = client_open(dw);
  if (rc != 0)
    uv_close((uv_handle_t *)&dw->beat, NULL);
  return rc;
}

/* A client being given up (shutdown, or a reload that changed the
 * cluster block): its leases are given back and the node leaves the node
 * set before it closes, at most CLUSTER_STOP_MS later. */
struct retiring {
  struct redis_client *rc;
  int pending;
  bool closed;
  uv_timer_t timer;
  char node[65];
};

static void retiring_freed(uv_handle_t *h) {
  free(h->data);
}

static void retiring_close(struct retiring *rt) {
  if (rt->closed)
    return;
  rt->closed = true;
  redis_client_close(rt->rc, NULL, NULL);
  uv_close((uv_handle_t *)&rt->timer, retiring_freed);
}

static void retiring_timeout(uv_timer_t *t) {
  struct retiring *rt = t->data;
  postern_log(POSTERN_LOG_WARN, "cluster_stop_timeout", "node", rt->node,
              "note", "Redis did not answer the releases in time", NULL);
  retiring_close(rt);
}

static void retiring_done(struct redis_client *c,
                          const struct redis_lease_result *r, void *arg) {
  (void)c;
  (void)r;
  struct retiring *rt = arg;
  if (--rt->pending == 0)
    retiring_close(rt);
}

struct retire_lease {
  struct retiring *rt;
  struct lease *l;
};

static void retiring_lease_done(struct redis_client *c,
                                const struct redis_lease_result *r, void *arg) {
  struct retire_lease *rl = arg;
  struct retiring *rt = rl->rt;
  lease_unref(rl->l);
  free(rl);
  retiring_done(c, r, rt);
}

/* Gives the worker's client up: every held lease goes back to that Redis
 * (the connections carry on without one; a later renewal takes one from
 * the new Redis, if any), the node leaves the node set, then it closes. */
static void client_retire(struct dwork *dw) {
  struct redis_client *rc = dw->redis;
  bool was_up = dw->redis_up;
  dw->redis = NULL;
  dw->redis_up = false;
  uv_timer_stop(&dw->beat);
  if (rc == NULL)
    return;
  if (was_up)
    metrics_cluster_redis(false);
  struct retiring *rt = calloc(1, sizeof *rt);
  if (rt == NULL) {
    redis_client_close(rc, NULL, NULL);
    return;
  }
  rt->rc = rc;
  snprintf(rt->node, sizeof rt->node, "%s", dw->node);
  uv_timer_init(dw->env.loop, &rt->timer);
  rt->timer.data = rt;
  for (struct lease *l = dw->live; l != NULL; l = l->next) {
    if (!l->held)
      continue;
    l->held = false; /* its owner's release sends nothing to that Redis */
    struct retire_lease *rl = was_up ? malloc(sizeof *rl) : NULL;
    if (rl == NULL)
      continue;
    rl->rt = rt;
    rl->l = l;
    l->refs++;
    rt->pending++;
    if (redis_lease_release(rc, l->key, l->holder, retiring_lease_done, rl) !=
        0) {
      l->refs--;
      rt->pending--;
      free(rl);
    }
  }
  if (was_up && dw->beats) {
    rt->pending++;
    if (redis_node_leave(rc, rt->node, retiring_done, rt) != 0)
      rt->pending--;
  }
  if (rt->pending == 0)
    retiring_close(rt);
  else
    uv_timer_start(&rt->timer, retiring_timeout, CLUSTER_STOP_MS, 0);
}

/* Shutdown: the connections are being closed, but their own releases
 * would come after the client has gone. Give every lease back now, and
 * leave the node set, so that the rest of the fleet may use the slots at
 * once instead of after lease_ttl (a slow Redis does not hold the
 * shutdown: CLUSTER_STOP_MS at most). */
void engine__cluster_worker_stop(struct dwork *dw) {
  if (dw->cluster_closed)
    return;
  dw->cluster_closed = true;
  client_retire(dw);
  uv_close((uv_handle_t *)&dw->beat, NULL);
}

void engine__cluster_worker_reload(struct dwork *dw) {
  if (dw->cluster_closed)
    return;
  char id[sizeof dw->cluster_id];
  const struct postern_config *cfg = dw->env.r->cfg;
  cluster_identity(cfg, id, sizeof id);
  if (strcmp(id, dw->cluster_id) == 0) {
    /* Same Redis: lease_ttl and local_share are read where used; the
     * node's beat follows a new lease_ttl. */
    if (dw->redis != NULL && dw->beats) {
      uint64_t every = cfg->cluster.lease_ttl_ms / 3;
      if (every && uv_timer_get_repeat(&dw->beat) != every)
        uv_timer_start(&dw->beat, beat_fire, every, every);
    }
    return;
  }
  bool had = dw->redis != NULL;
  client_retire(dw);
  int rc = client_open(dw);
  if (dw->beats) /* once per node, not per worker */
    postern_log(rc == 0 ? POSTERN_LOG_INFO : POSTERN_LOG_ERROR,
                "cluster_reloaded", "from", had ? "fleet" : "alone", "to",
                cfg->cluster.enabled ? "fleet" : "alone", "node",
                cfg->cluster.enabled ? cfg->cluster.node : "",
                rc == 0 ? NULL : "error", rc == 0 ? NULL : postern_strerror(rc),
                NULL);
  kick_waiting(dw);
}
