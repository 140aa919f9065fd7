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
 * A command-line tool may block: one blocking connection with 2 s
 * timeouts (TLS for rediss://, with BoringSSL), hiredis' reply parser, and
 * SCAN (never KEYS) so that a large Redis is not stalled.
 * Everything is read, nothing written. Times are Redis' own (TIME), as the
 * nodes use them.
 */
#include "tools/qtool/qtool.h"

#include "base/postern_err.h"
#include "engine/config.h"
#include "net/redis.h"

#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* A lease holder is "node:bootid:worker:seq" (engine/lease.c): the node is
 * everything before the last three fields (node names may hold ':'). */
static size_t holder_node_len(const char *h) {
  size_t n = strlen(h);
  for (int fields = 0; n > 0 && fields < 3; n--)
    if (h[n - 1] == ':' && ++fields == 3)
      return n - 1;
  return strlen(h);
}

/* One blocking connection to Redis: plain TCP, a Unix socket, or TLS for
 * rediss:// (BoringSSL, verifying the certificate against the cluster
 * block's roots and the URL's host, as the relay's tunnel does). Replies
 * are parsed by hiredis' reader. */
struct rconn {
  int fd;
  SSL_CTX *ctx;
  SSL *ssl;
  redisReader *rd;
};

static void rconn_close(struct rconn *c) {
  if (c->ssl) {
    SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
  }
  SSL_CTX_free(c->ctx);
  if (c->fd >= 0)
    close(c->fd);
  if (c->rd)
    redisReaderFree(c->rd);
  memset(c, 0, sizeof *c);
  c->fd = -1;
}

static int connect_fd(const struct redis_url *u) {
  struct timeval tv = {2, 0};
  int fd = -1;
  if (u->transport == REDIS_UNIX) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", u->path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      close(fd);
      fd = -1;
    }
  } else {
    char port[8];
    snprintf(port, sizeof port, "%u", u->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    if (getaddrinfo(u->host, port, &hints, &res) != 0)
      return -1;
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
      fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
      if (fd < 0)
        continue;
      /* Bounds connect(2) too on Linux. */
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
      }
    }
    freeaddrinfo(res);
  }
  if (fd >= 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  return fd;
}

static int tls_start(struct rconn *c, const struct redis_url *u, const char *ca,
                     const char *cert, const char *key) {
  c->ctx = SSL_CTX_new(TLS_client_method());
  if (c->ctx == NULL || SSL_CTX_load_verify_locations(c->ctx, ca, NULL) != 1 ||
      (cert &&
       (SSL_CTX_use_certificate_chain_file(c->ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) != 1))) {
    fprintf(stderr, "qtool: cluster: cannot load the TLS files for Redis\n");
    return -1;
  }
  SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
  c->ssl = SSL_new(c->ctx);
  if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
      SSL_set_tlsext_host_name(c->ssl, u->host) != 1 ||
      X509_VERIFY_PARAM_set1_host(SSL_get0_param(c->ssl), u->host,
                                  strlen(u->host)) != 1) {
    fprintf(stderr, "qtool: cluster: cannot set up TLS for Redis\n");
    return -1;
  }
  if (SSL_connect(c->ssl) != 1) {
    long v = SSL_get_verify_result(c->ssl);
    fprintf(stderr, "qtool: cluster: TLS with Redis failed: %s\n",
            v != X509_V_OK ? X509_verify_cert_error_string(v)
                           : "handshake refused");
    return -1;
  }
  return 0;
}

static bool send_all(struct rconn *c, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = c->ssl ? SSL_write(c->ssl, p, (int)n) : write(c->fd, p, n);
    if (w <= 0)
      return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

static redisReply *cmd(struct rconn *c, const char *fmt, ...) {
  va_list ap;
  char *out;
  va_start(ap, fmt);
  int len = redisvFormatCommand(&out, fmt, ap);
  va_end(ap);
  if (len < 0)
    return NULL;
  bool sent = send_all(c, out, (size_t)len);
  redisFreeCommand(out);
  void *reply = NULL;
  while (sent && reply == NULL) {
    if (redisReaderGetReply(c->rd, &reply) != REDIS_OK)
      break;
    if (reply != NULL)
      break;
    char buf[16384];
    ssize_t n = c->ssl ? SSL_read(c->ssl, buf, sizeof buf)
                       : read(c->fd, buf, sizeof buf);
    if (n <= 0 || redisReaderFeed(c->rd, buf, (size_t)n) != REDIS_OK)
      break;
  }
  redisReply *r = reply;
  if (r == NULL)
    fprintf(stderr, "qtool: cluster: Redis did not answer\n");
  else if (r->type == REDIS_REPLY_ERROR) {
    fprintf(stderr, "qtool: cluster: Redis: %s\n", r->str);
    freeReplyObject(r);
    r = NULL;
  }
  return r;
}

static int connect_redis(struct rconn *c, const struct redis_url *u,
                         const struct postern_config *cfg) {
  const struct config_cluster *cc = &cfg->cluster;
  memset(c, 0, sizeof *c);
  c->fd = connect_fd(u);
  if (c->fd < 0) {
    fprintf(stderr, "qtool: cluster: cannot connect to Redis: %s\n",
            strerror(errno));
    return -1;
  }
  c->rd = redisReaderCreate();
  if (c->rd == NULL) {
    fprintf(stderr, "qtool: cluster: out of memory\n");
    return -1;
  }
  if (u->tls &&
      tls_start(c, u, cc->redis_ca_file ? cc->redis_ca_file : cfg->tls.ca_file,
                cc->redis_cert_file, cc->redis_key_file) != 0)
    return -1;
  redisReply *r;
  if (u->password[0]) {
    r = u->user[0] ? cmd(c, "AUTH %s %s", u->user, u->password)
                   : cmd(c, "AUTH %s", u->password);
    if (r == NULL)
      return -1;
    freeReplyObject(r);
  }
  if (u->db) {
    if ((r = cmd(c, "SELECT %u", u->db)) == NULL)
      return -1;
    freeReplyObject(r);
  }
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every key prefix+`kind`+"*" through SCAN, sorted; *skip is the length of
 * prefix+kind (what is left of a key is its destination). */
static int scan_keys(struct rconn *c, const char *prefix, const char *kind,
                     char ***out, size_t *n, size_t *skip) {
  char match[REDIS_PREFIX_MAX + 16];
  *skip = (size_t)snprintf(match, sizeof match, "%s%s", prefix, kind);
  snprintf(match + *skip, sizeof match - *skip, "*");
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
  if (*n > 1)
    qsort(*out, *n, sizeof **out, cmp_str);
  return 0;
}

static void free_keys(char **k, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(k[i]);
  free(k);
}

static long long redis_now_us(struct rconn *c) {
  redisReply *r = cmd(c, "TIME");
  long long t = -1;
  if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
    t = atoll(r->element[0]->str) * 1000000LL + atoll(r->element[1]->str);
  if (r)
    freeReplyObject(r);
  return t;
}

/* The nodes alive: {"node", "expires_in_ms", "info"}. */
static json_t *nodes_json(struct rconn *c, const char *prefix, long long now) {
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
static json_t *leases_json(struct rconn *c, const char *prefix, long long now) {
  char **keys;
  size_t n, skip;
  if (scan_keys(c, prefix, "conn:", &keys, &n, &skip) != 0)
    return NULL;
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
                                         keys[k] + skip, "holders", holders));
  }
  free_keys(keys, n);
  return arr;
}

/* Throttles: {"destination", "next_free_in_ms"} (0: may send now). */
static json_t *throttles_json(struct rconn *c, const char *prefix,
                              long long now) {
  char **keys;
  size_t n, skip;
  if (scan_keys(c, prefix, "rate:", &keys, &n, &skip) != 0)
    return NULL;
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
    json_array_append_new(arr,
                          json_pack("{s:s, s:I}", "destination", keys[k] + skip,
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
  struct rconn conn, *c = &conn;
  int crc = connect_redis(c, &u, cfg);
  explicit_bzero(&u.password, sizeof u.password);
  if (crc != 0) {
    rconn_close(c);
    return QTOOL_EXIT_FAIL;
  }
  int status = QTOOL_EXIT_FAIL;
  long long now = redis_now_us(c);
  json_t *nodes = now >= 0 ? nodes_json(c, prefix, now) : NULL;
  json_t *leases = nodes ? leases_json(c, prefix, now) : NULL;
  json_t *thr = leases ? throttles_json(c, prefix, now) : NULL;
  rconn_close(c);
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
    config_redis_url_shown(cfg->cluster.redis, shown, sizeof shown);
    print_text(shown, prefix, all);
    json_decref(all);
    status = QTOOL_EXIT_OK;
  }
  return status;
}
