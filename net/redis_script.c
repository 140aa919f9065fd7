/*
 * net/redis_script.c - the fleet primitives (redis.h): connection leases and
 * the GCRA throttle as Lua scripts, atomic inside Redis.
 *
 * Each call is sent as EVALSHA with the script's SHA-1; a Redis that does
 * not know the script yet (restarted, SCRIPT FLUSH) answers NOSCRIPT and the
 * call is sent once more as EVAL, which also caches it. Times come from
 * Redis' TIME inside the script, so the nodes' clocks never matter; Redis 5
 * and later replicate script effects, which makes TIME allowed there.
 *
 * Numbers written back to Redis go through string.format('%.0f'): Lua's
 * own number-to-string conversion keeps 14 digits and would round a time
 * in microseconds.
 *
 * Ownership: a struct script_call lives from the primitive's call until its
 * callback has run; its argument strings are copied into it (the caller's
 * may go away, and the NOSCRIPT retry sends them again).
 */
#include "net/redis.h"

#include "base/postern_err.h"
#include "net/redis_internal.h"

#include <openssl/sha.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW_MS                                                                 \
  "local t = redis.call('TIME')\n"                                             \
  "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/*
 * KEYS[1] lease set; ARGV[1] holder, ARGV[2] limit, ARGV[3] ttl_ms.
 * Returns {granted 0|1, holders}.
 */
static const char lease_acquire_lua[] =
    NOW_MS "local ttl = tonumber(ARGV[3])\n"
           "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', "
           "string.format('%.0f', now))\n"
           "local exp = string.format('%.0f', now + ttl)\n"
           "local n = redis.call('ZCARD', KEYS[1])\n"
           "local granted = 0\n"
           "if redis.call('ZSCORE', KEYS[1], ARGV[1]) then\n"
           "  redis.call('ZADD', KEYS[1], exp, ARGV[1])\n"
           "  granted = 1\n"
           "elseif n < tonumber(ARGV[2]) then\n"
           "  redis.call('ZADD', KEYS[1], exp, ARGV[1])\n"
           "  granted = 1\n"
           "  n = n + 1\n"
           "end\n"
           "if granted == 1 and redis.call('PTTL', KEYS[1]) < ttl then\n"
           "  redis.call('PEXPIRE', KEYS[1], ttl)\n"
           "end\n"
           "return {granted, n}\n";

/* KEYS[1] lease set; ARGV[1] holder, ARGV[2] ttl_ms. {still held, holders} */
static const char lease_renew_lua[] =
    NOW_MS "local ttl = tonumber(ARGV[2])\n"
           "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', "
           "string.format('%.0f', now))\n"
           "local granted = 0\n"
           "if redis.call('ZSCORE', KEYS[1], ARGV[1]) then\n"
           "  redis.call('ZADD', KEYS[1], string.format('%.0f', now + ttl), "
           "ARGV[1])\n"
           "  granted = 1\n"
           "  if redis.call('PTTL', KEYS[1]) < ttl then\n"
           "    redis.call('PEXPIRE', KEYS[1], ttl)\n"
           "  end\n"
           "end\n"
           "return {granted, redis.call('ZCARD', KEYS[1])}\n";

/* KEYS[1] lease set; ARGV[1] holder. {was held, holders} */
static const char lease_release_lua[] =
    "local r = redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "return {r, redis.call('ZCARD', KEYS[1])}\n";

/*
 * KEYS[1] theoretical arrival time (µs); ARGV[1] emission interval T (µs),
 * ARGV[2] burst. A message is allowed when TAT + T - burst*T <= now; the
 * allowed one moves TAT to max(TAT, now) + T. {allowed 0|1, wait_ms}
 */
static const char gcra_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T = tonumber(ARGV[1])\n"
    "local burst = tonumber(ARGV[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0\n"
    "if tat < now then tat = now end\n"
    "local new_tat = tat + T\n"
    "local allow_at = new_tat - burst * T\n"
    "if now < allow_at then\n"
    "  return {0, math.ceil((allow_at - now) / 1000)}\n"
    "end\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', "
    "string.format('%.0f', math.ceil((new_tat - now) / 1000) + 1))\n"
    "return {1, 0}\n";

/*
 * KEYS[1] node set (member: node name, score: expiry in ms); its hash of
 * descriptions is KEYS[1]..':info'. ARGV[1] node, ARGV[2] ttl_ms, ARGV[3]
 * description. Drops expired nodes. {1, nodes alive}
 */
static const char node_beat_lua[] =
    NOW_MS "local info = KEYS[1] .. ':info'\n"
           "for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', "
           "string.format('%.0f', now))) do\n"
           "  redis.call('HDEL', info, n)\n"
           "end\n"
           "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', "
           "string.format('%.0f', now))\n"
           "redis.call('ZADD', KEYS[1], string.format('%.0f', now + "
           "tonumber(ARGV[2])), ARGV[1])\n"
           "redis.call('HSET', info, ARGV[1], ARGV[3])\n"
           "return {1, redis.call('ZCARD', KEYS[1])}\n";

/* KEYS[1] node set; ARGV[1] node. {was there, nodes left} */
static const char node_leave_lua[] =
    "redis.call('HDEL', KEYS[1] .. ':info', ARGV[1])\n"
    "local r = redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "return {r, redis.call('ZCARD', KEYS[1])}\n";

static const char *const scripts[REDIS__NSCRIPTS] = {
    [REDIS__LEASE_ACQUIRE] = lease_acquire_lua,
    [REDIS__LEASE_RENEW] = lease_renew_lua,
    [REDIS__LEASE_RELEASE] = lease_release_lua,
    [REDIS__GCRA] = gcra_lua,
    [REDIS__NODE_BEAT] = node_beat_lua,
    [REDIS__NODE_LEAVE] = node_leave_lua,
};

int redis__scripts_init(struct redis_client *c) {
  for (int i = 0; i < REDIS__NSCRIPTS; i++) {
    uint8_t d[SHA_DIGEST_LENGTH];
    SHA1((const uint8_t *)scripts[i], strlen(scripts[i]), d);
    for (int j = 0; j < SHA_DIGEST_LENGTH; j++)
      snprintf(c->sha[i] + 2 * j, 3, "%02x", d[j]);
  }
  return 0;
}

enum call_kind { CALL_LEASE, CALL_GCRA };

#define CALL_MAXARGS 8

struct script_call {
  enum redis__script script;
  enum call_kind kind;
  void *cb; /* redis_lease_cb or redis_gcra_cb */
  void *arg;
  bool retried;
  int argc;
  const char *argv[CALL_MAXARGS];
  size_t lens[CALL_MAXARGS];
  char data[]; /* the copied arguments */
};

static void call_finish(struct redis_client *c, struct script_call *sc,
                        int status, long long a, long long b) {
  if (sc->kind == CALL_LEASE) {
    struct redis_lease_result r = {status, status == 0 && a == 1, b};
    ((redis_lease_cb)sc->cb)(c, &r, sc->arg);
  } else {
    struct redis_gcra_result r = {status, status == 0 && a == 1,
                                  status == 0 ? b : 0};
    ((redis_gcra_cb)sc->cb)(c, &r, sc->arg);
  }
  free(sc);
}

static void call_reply(struct redis_client *c, const struct redis_result *r,
                       void *arg) {
  struct script_call *sc = arg;
  if (r->status == POSTERN_EREDIS && !sc->retried && r->error != NULL &&
      strncmp(r->error, "NOSCRIPT", 8) == 0) {
    int rc;
    sc->retried = true;
    sc->argv[0] = "EVAL";
    sc->argv[1] = scripts[sc->script];
    sc->lens[0] = 4;
    sc->lens[1] = strlen(scripts[sc->script]);
    rc = redis_command_argv(c, 0, call_reply, sc, sc->argc, sc->argv, sc->lens);
    if (rc != 0)
      call_finish(c, sc, rc, 0, 0); /* from the loop: not a call of theirs */
    return;
  }
  if (r->status != 0) {
    call_finish(c, sc, r->status, 0, 0);
    return;
  }
  const struct redis_value *v = r->value;
  if (redis_value_type(v) != REDIS_V_ARRAY || redis_value_count(v) != 2 ||
      redis_value_type(redis_value_at(v, 0)) != REDIS_V_INT ||
      redis_value_type(redis_value_at(v, 1)) != REDIS_V_INT) {
    call_finish(c, sc, POSTERN_EPROTO, 0, 0);
    return;
  }
  call_finish(c, sc, 0, redis_value_int(redis_value_at(v, 0)),
              redis_value_int(redis_value_at(v, 1)));
}

/* EVALSHA sha 1 prefix+key args... */
static int call_start(struct redis_client *c, enum redis__script script,
                      enum call_kind kind, void *cb, void *arg, const char *key,
                      int nargs, const char **args) {
  size_t klen, need, off = 0;
  size_t alen[CALL_MAXARGS];
  struct script_call *sc;
  int rc;
  if (c == NULL || cb == NULL || key == NULL || key[0] == '\0' ||
      nargs + 4 > CALL_MAXARGS)
    return POSTERN_EINVAL;
  klen = strlen(key);
  if (klen > 1024)
    return POSTERN_EINVAL;
  need = c->prefix_len + klen + 1;
  for (int i = 0; i < nargs; i++) {
    if (args[i] == NULL)
      return POSTERN_EINVAL;
    alen[i] = strlen(args[i]);
    if (alen[i] > 1024)
      return POSTERN_EINVAL;
    need += alen[i] + 1;
  }
  sc = calloc(1, sizeof *sc + need);
  if (sc == NULL)
    return POSTERN_ENOMEM;
  sc->script = script;
  sc->kind = kind;
  sc->cb = cb;
  sc->arg = arg;
  sc->argv[0] = "EVALSHA";
  sc->lens[0] = 7;
  sc->argv[1] = c->sha[script];
  sc->lens[1] = 40;
  sc->argv[2] = "1";
  sc->lens[2] = 1;
  memcpy(sc->data, c->opts.key_prefix, c->prefix_len);
  memcpy(sc->data + c->prefix_len, key, klen + 1);
  sc->argv[3] = sc->data;
  sc->lens[3] = c->prefix_len + klen;
  off = c->prefix_len + klen + 1;
  for (int i = 0; i < nargs; i++) {
    memcpy(sc->data + off, args[i], alen[i] + 1);
    sc->argv[4 + i] = sc->data + off;
    sc->lens[4 + i] = alen[i];
    off += alen[i] + 1;
  }
  sc->argc = 4 + nargs;
  rc = redis_command_argv(c, 0, call_reply, sc, sc->argc, sc->argv, sc->lens);
  if (rc != 0)
    free(sc);
  return rc;
}

int redis_lease_acquire(struct redis_client *c, const char *key,
                        const char *holder, unsigned limit, unsigned ttl_ms,
                        redis_lease_cb cb, void *arg) {
  char l[16], t[16];
  if (limit < 1 || ttl_ms < 1 || holder == NULL || holder[0] == '\0')
    return POSTERN_EINVAL;
  snprintf(l, sizeof l, "%u", limit);
  snprintf(t, sizeof t, "%u", ttl_ms);
  const char *args[3] = {holder, l, t};
  return call_start(c, REDIS__LEASE_ACQUIRE, CALL_LEASE, (void *)cb, arg, key,
                    3, args);
}

int redis_lease_renew(struct redis_client *c, const char *key,
                      const char *holder, unsigned ttl_ms, redis_lease_cb cb,
                      void *arg) {
  char t[16];
  if (ttl_ms < 1 || holder == NULL || holder[0] == '\0')
    return POSTERN_EINVAL;
  snprintf(t, sizeof t, "%u", ttl_ms);
  const char *args[2] = {holder, t};
  return call_start(c, REDIS__LEASE_RENEW, CALL_LEASE, (void *)cb, arg, key, 2,
                    args);
}

int redis_lease_release(struct redis_client *c, const char *key,
                        const char *holder, redis_lease_cb cb, void *arg) {
  if (holder == NULL || holder[0] == '\0')
    return POSTERN_EINVAL;
  const char *args[1] = {holder};
  return call_start(c, REDIS__LEASE_RELEASE, CALL_LEASE, (void *)cb, arg, key,
                    1, args);
}

int redis_gcra(struct redis_client *c, const char *key, double rate_per_sec,
               unsigned burst, redis_gcra_cb cb, void *arg) {
  char t[32], b[16];
  if (!(rate_per_sec >= 1e-3 && rate_per_sec <= 1e6) || burst < 1 ||
      burst > 1000000)
    return POSTERN_EINVAL;
  long long interval = llround(1e6 / rate_per_sec);
  if (interval < 1)
    interval = 1;
  snprintf(t, sizeof t, "%lld", interval);
  snprintf(b, sizeof b, "%u", burst);
  const char *args[2] = {t, b};
  return call_start(c, REDIS__GCRA, CALL_GCRA, (void *)cb, arg, key, 2, args);
}

int redis_node_beat(struct redis_client *c, const char *node, unsigned ttl_ms,
                    const char *info, redis_lease_cb cb, void *arg) {
  char t[16];
  if (node == NULL || node[0] == '\0' || ttl_ms < 1 || info == NULL)
    return POSTERN_EINVAL;
  snprintf(t, sizeof t, "%u", ttl_ms);
  const char *args[3] = {node, t, info};
  return call_start(c, REDIS__NODE_BEAT, CALL_LEASE, (void *)cb, arg,
                    REDIS_NODES_KEY, 3, args);
}

int redis_node_leave(struct redis_client *c, const char *node,
                     redis_lease_cb cb, void *arg) {
  if (node == NULL || node[0] == '\0')
    return POSTERN_EINVAL;
  const char *args[1] = {node};
  return call_start(c, REDIS__NODE_LEAVE, CALL_LEASE, (void *)cb, arg,
                    REDIS_NODES_KEY, 1, args);
}
