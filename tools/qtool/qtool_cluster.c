/*
 * qtool_cluster.c - `qtool -c CONFIG cluster [--json]`: what the fleet
 * shares in Redis (docs/fleet.md), read from the Redis and key prefix of
 * the configuration's cluster block:
 *
 *   - the nodes alive (the node set each node renews every lease_ttl/3,
 *     with the description it publishes);
 *   - the connection leases per destination, by node (unexpired only);
 *   - the rate throttles (GCRA): when each destination may send next.
 *
 * A command-line tool may block: this uses hiredis' synchronous API with a
 * 2 s timeout, and SCAN (never KEYS) so that a large Redis is not stalled.
 * Everything is read, nothing written. Times are Redis' own (TIME), as the
 * nodes use them.
 */
#include "tools/qtool/qtool.h"

#include "base/postern_err.h"
#include "engine/config.h"
#include "net/redis.h"

#include <getopt.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* A lease holder is "node:bootid:worker:seq" (engine/lease.c): the node is
 * everything before the last three fields (node names may hold ':'). */
static size_t holder_node_len(const char *h) {
  size_t n = strlen(h);
  for (int fields = 0; n > 0 && fields < 3; n--)
    if (h[n - 1] == ':' && ++fields == 3)
      return n - 1;
  return strlen(h);
}

static redisReply *cmd(redisContext *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  if (r != NULL && r->type == REDIS_REPLY_ERROR) {
    fprintf(stderr, "qtool: cluster: Redis: %s\n", r->str);
    freeReplyObject(r);
    return NULL;
  }
  if (r == NULL)
    fprintf(stderr, "qtool: cluster: Redis: %s\n",
            c->errstr[0] ? c->errstr : "no answer");
  return r;
}

static redisContext *connect_redis(const struct redis_url *u) {
  struct timeval tv = {2, 0};
  redisContext *c = u->transport == REDIS_UNIX
                        ? redisConnectUnixWithTimeout(u->path, tv)
                        : redisConnectWithTimeout(u->host, u->port, tv);
  if (c == NULL || c->err) {
    fprintf(stderr, "qtool: cluster: cannot connect to Redis: %s\n",
            c ? c->errstr : "out of memory");
    if (c)
      redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, tv);
  redisReply *r = NULL;
  if (u->password[0]) {
    r = u->user[0] ? cmd(c, "AUTH %s %s", u->user, u->password)
                   : cmd(c, "AUTH %s", u->password);
    if (r == NULL)
      goto fail;
    freeReplyObject(r);
  }
  if (u->db) {
    if ((r = cmd(c, "SELECT %u", u->db)) == NULL)
      goto fail;
    freeReplyObject(r);
  }
  return c;
fail:
  redisFree(c);
  return NULL;
}

/* Every key matching prefix+pattern, through SCAN. */
static int scan_keys(redisContext *c, const char *match, char ***out,
                     size_t *n) {
  char cursor[32] = "0";
  *out = NULL;
  *n = 0;
  do {
    redisReply *r = cmd(c, "SCAN %s MATCH %s COUNT 1000", cursor, match);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      if (r)
        freeReplyObject(r);
      return POSTERN_EPROTO;
    }
    snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
    redisReply *keys = r->element[1];
    for (size_t i = 0; i < keys->elements; i++) {
      char **grown = realloc(*out, (*n + 1) * sizeof *grown);
      if (grown == NULL ||
          (grown[*n] = strdup(keys->element[i]->str)) == NULL) {
        *out = grown ? grown : *out;
        freeReplyObject(r);
        return POSTERN_ENOMEM;
      }
      *out = grown;
      (*n)++;
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  return 0;
}

static void free_keys(char **k, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(k[i]);
  free(k);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static long long redis_now_us(redisContext *c) {
  redisReply *r = cmd(c, "TIME");
  long long t = -1;
  if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
    t = atoll(r->element[0]->str) * 1000000LL + atoll(r->element[1]->str);
  if (r)
    freeReplyObject(r);
  return t;
}

/* The nodes alive: {"node", "expires_in_ms", "info"}. */
static json_t *nodes_json(redisContext *c, const char *prefix, long long now) {
  json_t *arr = json_array();
  redisReply *r = cmd(c, "ZRANGEBYSCORE %s%s %lld +inf WITHSCORES", prefix,
                      REDIS_NODES_KEY, now / 1000);
  if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
    if (r)
      freeReplyObject(r);
    json_decref(arr);
    return NULL;
  }
  for (size_t i = 0; i + 1 < r->elements; i += 2) {
    const char *node = r->element[i]->str;
    redisReply *info =
        cmd(c, "HGET %s%s:info %s", prefix, REDIS_NODES_KEY, node);
    json_array_append_new(
        arr,
        json_pack("{s:s, s:I, s:s}", "node", node, "expires_in_ms",
                  (json_int_t)(atoll(r->element[i + 1]->str) - now / 1000),
                  "info",
                  info && info->type == REDIS_REPLY_STRING ? info->str : ""));
    if (info)
      freeReplyObject(info);
  }
  freeReplyObject(r);
  return arr;
}

/* Leases: {"destination", "holders": [{"node", "holder", "expires_in_ms"}]}. */
static json_t *leases_json(redisContext *c, const char *prefix, long long now) {
  char match[REDIS_PREFIX_MAX + 16];
  snprintf(match, sizeof match, "%sconn:*", prefix);
  char **keys;
  size_t n;
  if (scan_keys(c, match, &keys, &n) != 0)
    return NULL;
  if (n > 1)
    qsort(keys, n, sizeof *keys, cmp_str);
  json_t *arr = json_array();
  for (size_t k = 0; k < n; k++) {
    redisReply *r =
        cmd(c, "ZRANGEBYSCORE %s %lld +inf WITHSCORES", keys[k], now / 1000);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
      if (r)
        freeReplyObject(r);
      continue;
    }
    json_t *holders = json_array();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
      const char *h = r->element[i]->str;
      json_array_append_new(
          holders,
          json_pack("{s:s#, s:s, s:I}", "node", h, (int)holder_node_len(h),
                    "holder", h, "expires_in_ms",
                    (json_int_t)(atoll(r->element[i + 1]->str) - now / 1000)));
    }
    freeReplyObject(r);
    if (json_array_size(holders) == 0) {
      json_decref(holders);
      continue;
    }
    json_array_append_new(arr, json_pack("{s:s, s:o}", "destination",
                                         keys[k] + strlen(match) - 1, "holders",
                                         holders));
  }
  free_keys(keys, n);
  return arr;
}

/* Throttles: {"destination", "next_free_in_ms"} (0: may send now). */
static json_t *throttles_json(redisContext *c, const char *prefix,
                              long long now) {
  char match[REDIS_PREFIX_MAX + 16];
  snprintf(match, sizeof match, "%srate:*", prefix);
  char **keys;
  size_t n;
  if (scan_keys(c, match, &keys, &n) != 0)
    return NULL;
  if (n > 1)
    qsort(keys, n, sizeof *keys, cmp_str);
  json_t *arr = json_array();
  for (size_t k = 0; k < n; k++) {
    redisReply *r = cmd(c, "GET %s", keys[k]);
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
      if (r)
        freeReplyObject(r);
      continue;
    }
    long long tat = atoll(r->str);
    freeReplyObject(r);
    long long wait_ms = tat > now ? (tat - now + 999) / 1000 : 0;
    json_array_append_new(
        arr, json_pack("{s:s, s:I}", "destination", keys[k] + strlen(match) - 1,
                       "next_free_in_ms", (json_int_t)wait_ms));
  }
  free_keys(keys, n);
  return arr;
}

static void print_text(const char *url, const char *prefix, json_t *all) {
  json_t *nodes = json_object_get(all, "nodes");
  json_t *leases = json_object_get(all, "leases");
  json_t *thr = json_object_get(all, "throttles");
  size_t i, j;
  json_t *v, *h;
  printf("redis %s, key prefix '%s'\n", url, prefix);
  printf("\nnodes alive: %zu\n", json_array_size(nodes));
  json_array_foreach(nodes, i, v) {
    printf("  %-20s ", json_string_value(json_object_get(v, "node")));
    printf("renewed, expires in %lld ms  ",
           (long long)json_integer_value(json_object_get(v, "expires_in_ms")));
    qtool_put_text(stdout, json_string_value(json_object_get(v, "info")));
    putchar('\n');
  }
  printf("\nconnection leases: %zu destination%s\n", json_array_size(leases),
         json_array_size(leases) == 1 ? "" : "s");
  json_array_foreach(leases, i, v) {
    json_t *hs = json_object_get(v, "holders");
    printf("  ");
    qtool_put_text(stdout,
                   json_string_value(json_object_get(v, "destination")));
    printf("  %zu held:", json_array_size(hs));
    /* per node: count */
    json_t *per = json_object();
    json_array_foreach(hs, j, h) {
      const char *node = json_string_value(json_object_get(h, "node"));
      json_t *cnt = json_object_get(per, node);
      json_object_set_new(per, node,
                          json_integer(cnt ? json_integer_value(cnt) + 1 : 1));
    }
    const char *node;
    json_object_foreach(per, node, h) {
      printf(" %s=%lld", node, (long long)json_integer_value(h));
    }
    json_decref(per);
    putchar('\n');
  }
  printf("\nrate throttles: %zu destination%s\n", json_array_size(thr),
         json_array_size(thr) == 1 ? "" : "s");
  json_array_foreach(thr, i, v) {
    long long w =
        (long long)json_integer_value(json_object_get(v, "next_free_in_ms"));
    printf("  ");
    qtool_put_text(stdout,
                   json_string_value(json_object_get(v, "destination")));
    if (w > 0)
      printf("  next message in %lld ms\n", w);
    else
      printf("  may send now\n");
  }
}

int qtool_cluster(int argc, char **argv) {
  bool json = false;
  static const struct option lo[] = {{"json", no_argument, NULL, 'j'},
                                     {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (ch == 'j')
      json = true;
    else
      return qtool_usage("cluster: unknown option", NULL);
  }
  if (optind != argc)
    return qtool_usage("unexpected argument '%s'", argv[optind]);
  const struct postern_config *cfg = qtool_config();
  if (cfg == NULL || !cfg->cluster.enabled) {
    fprintf(stderr, "qtool: cluster: needs -c CONFIG with a cluster block\n");
    return QTOOL_EXIT_FAIL;
  }
  struct redis_url u;
  if (redis_url_parse(cfg->cluster.redis, &u) != 0) {
    fprintf(stderr,
            "qtool: cluster: the cluster block's redis URL is invalid\n");
    return QTOOL_EXIT_FAIL;
  }
  const char *prefix = cfg->cluster.key_prefix ? cfg->cluster.key_prefix : "";
  redisContext *c = connect_redis(&u);
  explicit_bzero(&u.password, sizeof u.password);
  if (c == NULL)
    return QTOOL_EXIT_FAIL;
  int status = QTOOL_EXIT_FAIL;
  long long now = redis_now_us(c);
  json_t *nodes = now >= 0 ? nodes_json(c, prefix, now) : NULL;
  json_t *leases = nodes ? leases_json(c, prefix, now) : NULL;
  json_t *thr = leases ? throttles_json(c, prefix, now) : NULL;
  redisFree(c);
  if (thr == NULL) {
    json_decref(nodes);
    json_decref(leases);
    return QTOOL_EXIT_FAIL;
  }
  json_t *all = json_pack("{s:o, s:o, s:o}", "nodes", nodes, "leases", leases,
                          "throttles", thr);
  if (all == NULL)
    return QTOOL_EXIT_FAIL;
  if (json) {
    status = qtool_put_json(all, true) == 0 ? QTOOL_EXIT_OK : QTOOL_EXIT_FAIL;
  } else {
    /* The URL as --check prints it: never the password. */
    char shown[REDIS_URL_MAX + 8];
    const char *url = cfg->cluster.redis;
    const char *at = strrchr(url, '@');
    const char *scheme = strstr(url, "://");
    if (at && scheme && at > scheme)
      snprintf(shown, sizeof shown, "%.*s***%s", (int)(scheme + 3 - url), url,
               at);
    else
      snprintf(shown, sizeof shown, "%s", url);
    print_text(shown, prefix, all);
    json_decref(all);
    status = QTOOL_EXIT_OK;
  }
  return status;
}
