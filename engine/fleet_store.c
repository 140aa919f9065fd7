/*
 * fleet_store.c - the policy layer's shared store (policy/mtasts_shared.h)
 * on Redis, for fleet mode (docs/fleet.md "MTA-STS policies"): GET, SET NX
 * PX (a fetch lease) and SET PX on `<key_prefix><key>`, through the
 * calling loop's own client (each worker has one, lease.c).
 *
 * Invariants: nothing blocks and nothing waits longer than a Redis command
 * timeout; a loop without an up client (Redis down, postern-probe's loop)
 * makes every op fail at once, so the policy layer fetches as a lone node
 * would. Callbacks run from the loop, never inside the call (net/redis).
 *
 * Ownership: each op's small context is freed in its Redis callback. The
 * store struct is static: the relay's one, valid for the process.
 */
#include "engine/fleet.h"

#include "base/postern_err.h"
#include "base/postern_log.h"
#include "engine/dest.h"
#include "net/redis.h"
#include "policy/mtasts_shared.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct redis_client *engine__fleet_redis(struct relay *r, uv_loop_t *loop) {
  if (r == NULL || !r->cfg->cluster.enabled)
    return NULL;
  /* Worker loops never move, and w->ud2 is set before their loop runs. */
  for (int i = 0; i < r->pool.n; i++) {
    struct worker *w = &r->pool.w[i];
    if (&w->loop != loop)
      continue;
    struct dwork *dw = w->ud2;
    return dw != NULL && dw->redis != NULL && dw->redis_up ? dw->redis : NULL;
  }
  return NULL;
}

struct op {
  policy_store_get_cb get;
  policy_store_claim_cb claim;
  void *arg;
};

/* What every op needs: the loop's client, the prefixed key and the op's
 * context. Returns 0, or the error the op returns (nothing to free). */
static int op_begin(void *impl, uv_loop_t *loop, const char *key,
                    struct redis_client **c, char k[400], struct op **o) {
  *c = engine__fleet_redis(impl, loop);
  if (*c == NULL)
    return POSTERN_ECLOSED;
  if (redis_client_key(*c, key, k, 400) < 0)
    return POSTERN_ETOOBIG;
  *o = calloc(1, sizeof **o);
  return *o ? 0 : POSTERN_ENOMEM;
}

static void on_get(struct redis_client *c, const struct redis_result *r,
                   void *arg) {
  (void)c;
  struct op *o = arg;
  if (r->status != 0) {
    o->get(o->arg, r->status, NULL, 0);
  } else if (redis_value_type(r->value) == REDIS_V_NIL) {
    o->get(o->arg, POSTERN_ENOENT, NULL, 0);
  } else {
    size_t len = 0;
    const char *s = redis_value_str(r->value, &len);
    o->get(o->arg, s ? 0 : POSTERN_EPROTO, s, s ? len : 0);
  }
  free(o);
}

static int store_get(void *impl, uv_loop_t *loop, const char *key,
                     policy_store_get_cb cb, void *arg) {
  struct redis_client *c;
  struct op *o;
  char k[400];
  int rc = op_begin(impl, loop, key, &c, k, &o);
  if (rc != 0)
    return rc;
  *o = (struct op){.get = cb, .arg = arg};
  rc = redis_command(c, on_get, o, "GET %s", k);
  if (rc != 0)
    free(o);
  return rc;
}

static void on_claim(struct redis_client *c, const struct redis_result *r,
                     void *arg) {
  (void)c;
  struct op *o = arg;
  /* SET NX answers +OK when it set the key, nil when it existed. */
  o->claim(o->arg, r->status,
           r->status == 0 && redis_value_type(r->value) == REDIS_V_STATUS);
  free(o);
}

static int store_claim(void *impl, uv_loop_t *loop, const char *key,
                       unsigned ttl_ms, policy_store_claim_cb cb, void *arg) {
  struct relay *rl = impl;
  struct redis_client *c;
  struct op *o;
  char k[400];
  int rc = op_begin(impl, loop, key, &c, k, &o);
  if (rc != 0)
    return rc;
  *o = (struct op){.claim = cb, .arg = arg};
  /* The holder's name, for an operator reading the key. */
  rc = redis_command(c, on_claim, o, "SET %s %s NX PX %u", k,
                     rl->cfg->cluster.node, ttl_ms ? ttl_ms : 1);
  if (rc != 0)
    free(o);
  return rc;
}

static void on_put(struct redis_client *c, const struct redis_result *r,
                   void *arg) {
  (void)c, (void)arg;
  if (r->status != 0)
    postern_log(POSTERN_LOG_DEBUG, "cluster_share_failed", "error",
                r->error ? r->error : postern_strerror(r->status), NULL);
}

static void store_put(void *impl, uv_loop_t *loop, const char *key,
                      const char *data, size_t len, uint64_t ttl_ms) {
  struct redis_client *c = engine__fleet_redis(impl, loop);
  char k[400];
  if (c == NULL || ttl_ms == 0 || redis_client_key(c, key, k, sizeof k) < 0)
    return;
  redis_command(c, on_put, NULL, "SET %s %b PX %llu", k, data, len,
                (unsigned long long)ttl_ms);
}

/* Set by engine__fleet_init before any worker runs, read-only after. */
static struct policy_store store;

void engine__fleet_init(struct relay *r) {
  store = (struct policy_store){
      .impl = r, .get = store_get, .claim = store_claim, .put = store_put};
}

const struct policy_store *engine__fleet_store(struct relay *r) {
  /* The configuration in force decides: a reload may turn fleet mode on
   * or off (lease.c replaces the workers' clients then). */
  return r != NULL && store.impl == r && r->cfg->cluster.enabled ? &store
                                                                 : NULL;
}
