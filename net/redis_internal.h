/*
 * net/redis_internal.h - what net/redis.c and net/redis_script.c share: the
 * client's fields and the script table. Not for other modules.
 */
#ifndef NET_REDIS_INTERNAL_H
#define NET_REDIS_INTERNAL_H

#include "net/defer.h"
#include "net/redis.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct redisAsyncContext;
struct redis_cmd;
struct tls_ctx;
struct sockaddr;

/*
 * The TLS tunnel for rediss:// (redis_tls.c). `cb` runs later: once with
 * status 0 and the Unix socket path hiredis must connect to (valid during
 * the call), and at most once with a negative code and the reason when it
 * fails (before or after it was ready; after, it has closed the socket). `gone` runs just before the
 * tunnel's memory is freed (after a failure, an end of either side, or
 * redis__tunnel_close), also later. Returns 0, or an error (POSTERN_EINVAL,
 * POSTERN_ENOMEM, POSTERN_ECLOSED) and then neither callback runs.
 */
struct redis__tunnel;
typedef void (*redis__tunnel_cb)(struct redis__tunnel *t, int status,
                                 const char *what, void *arg);
int redis__tunnel_open(uv_loop_t *loop, struct tls_ctx *ctx,
                       const struct sockaddr *addr, const char *server_name,
                       redis__tunnel_cb cb,
                       void (*gone)(struct redis__tunnel *t, void *arg),
                       void *arg, struct redis__tunnel **out);
/* Stops the tunnel: no `cb` after this; `gone` still runs. NULL is fine. */
void redis__tunnel_close(struct redis__tunnel *t);

/* The Lua scripts of the fleet primitives (redis_script.c). */
enum redis__script {
  REDIS__LEASE_ACQUIRE,
  REDIS__LEASE_RENEW,
  REDIS__LEASE_RELEASE,
  REDIS__GCRA,
  REDIS__NODE_BEAT,
  REDIS__NODE_LEAVE,
  REDIS__NSCRIPTS
};

struct redis_client {
  uv_loop_t *loop;
  struct redis_opts opts;
  size_t prefix_len;
  struct redisAsyncContext *ac; /* the live context, or NULL */
  struct tls_ctx *tls;          /* rediss://: made once, freed last */
  struct redis__tunnel *tunnel; /* rediss://: the current one, or NULL */
  char tls_error[160];          /* the last TLS failure logged */
  bool up;
  bool closing;
  bool handles_closing;
  int hs_left;         /* handshake replies still expected */
  unsigned backoff_ms; /* the next reconnect delay */
  unsigned attempt;    /* connect attempt number (stale lookups) */
  int gai_busy;        /* address lookups not called back yet */
  uv_getaddrinfo_t *gai_last;
  uv_timer_t ctimer; /* handshake deadline, or the backoff */
  uv_timer_t tmo;    /* the earliest command deadline */
  struct net_defer soon;
  int open_handles;
  struct redis_cmd *pending_head, *pending_tail;
  struct redis_cmd *dq_head, *dq_tail;
  char sha[REDIS__NSCRIPTS][41]; /* SHA-1 of each script, hex */
  void (*close_cb)(void *arg);
  void *close_arg;
};

/* Computes the scripts' SHA-1 names into c->sha. 0 or POSTERN_EINTERNAL. */
int redis__scripts_init(struct redis_client *c);

#endif
