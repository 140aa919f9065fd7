/*
 * net/redis.h - the Redis client layer for fleet mode (DESIGN.md "One node,
 * or a fleet"): one asynchronous connection per libuv loop, built on
 * hiredis' libuv adapter, plus the atomic fleet primitives (connection
 * leases, a GCRA rate throttle) as Lua scripts.
 *
 * Transport: TCP, a Unix socket, or TLS for a rediss:// URL. hiredis 0.14.1
 * (Debian 12) has no TLS of its own: for rediss:// each connection goes
 * through an in-process tunnel (redis_tls.c) that does the TLS with
 * BoringSSL (net/tls.h) and hands hiredis a private Unix socket. Redis'
 * certificate must chain to tls_ca_file and name the URL's host.
 *
 * Threading: a struct redis_client belongs to one libuv loop and is used
 * from that loop's thread only. Each worker loop makes its own client.
 *
 * Never blocking: host names are resolved with uv_getaddrinfo (the libuv
 * thread pool); connecting, AUTH, SELECT and every command are asynchronous.
 * hiredis writes with write(2): the process must ignore SIGPIPE (postern
 * does, engine/relay.c).
 *
 * Connection life: redis_client_new() starts connecting at once. The client
 * is "up" once connected and AUTH/SELECT (from the URL) and a PING have
 * answered; it is "down" before that and after a loss (EOF, error, a
 * command or handshake timeout). While down it reconnects by itself with
 * exponential backoff bounded by redis_opts.reconnect_max_ms. The state
 * callback runs on changes only (down->up, up->down), never inside a call.
 *
 * Commands: every callback runs exactly once, never inside the call that
 * started it. Commands issued while down fail at once (deferred) with
 * POSTERN_ECLOSED; nothing is queued for later. A command that gets no
 * answer within its timeout fails with POSTERN_ETIMEOUT and the connection
 * is dropped (its state is unknown) and re-established: Redis down means
 * local limits for the caller, never stuck work.
 *
 * Errors in results: 0 (a reply), POSTERN_EREDIS (Redis answered an
 * error; result.error has its text), POSTERN_ECLOSED (down, lost, or the
 * client closed), POSTERN_ETIMEOUT, POSTERN_ENOMEM.
 */
#ifndef NET_REDIS_H
#define NET_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* ---- URL ---------------------------------------------------------------- */

#define REDIS_HOST_MAX 255   /* a DNS name or an IP literal */
#define REDIS_PATH_MAX 107   /* sun_path minus NUL */
#define REDIS_SECRET_MAX 255 /* user name or password, decoded */
#define REDIS_DB_MAX 65535   /* SELECT's index, bounded */
#define REDIS_PREFIX_MAX 64  /* key prefix */
#define REDIS_URL_MAX 1024
#define REDIS_FILE_MAX 511 /* a TLS file's path */

enum redis_transport { REDIS_TCP, REDIS_UNIX };

struct redis_url {
  enum redis_transport transport;
  char host[REDIS_HOST_MAX + 1];       /* TCP: name or literal (no brackets) */
  uint16_t port;                       /* TCP: default 6379 */
  char path[REDIS_PATH_MAX + 1];       /* UNIX */
  char user[REDIS_SECRET_MAX + 1];     /* "" : AUTH with the password only */
  char password[REDIS_SECRET_MAX + 1]; /* "" : no AUTH */
  unsigned db;                         /* 0: no SELECT */
  bool tls;                            /* rediss://: TCP over TLS */
};

/*
 * Parses `redis://[[user]:password@]host[:port][/db]` (`rediss://`: the
 * same over TLS) (host a name, an IPv4
 * literal or a bracketed IPv6 literal; user and password %XX-decoded) or
 * `unix:///absolute/path[?db=N]`. Returns 0, or POSTERN_EINVAL for anything
 * else: unknown scheme, empty or overlong parts (see the *_MAX bounds), a
 * port outside 1..65535, a db outside 0..REDIS_DB_MAX, control characters,
 * a bad %-escape, trailing garbage. `out` is zeroed first.
 */
int redis_url_parse(const char *s, struct redis_url *out);

/* ---- Client ------------------------------------------------------------- */

struct redis_client;

/* `up` is the new state. Runs from the loop, on changes only. */
typedef void (*redis_state_cb)(struct redis_client *c, bool up, void *arg);

struct redis_opts {
  struct redis_url url;
  /* Prepended to every key the primitives below touch ("postern:eu1:"),
   * so several fleets can share one Redis. At most REDIS_PREFIX_MAX. */
  char key_prefix[REDIS_PREFIX_MAX + 1];
  unsigned connect_timeout_ms; /* connect + AUTH/SELECT/PING, default 2000 */
  unsigned command_timeout_ms; /* default per command, default 1000 */
  unsigned reconnect_min_ms;   /* first backoff, default 100 */
  unsigned reconnect_max_ms;   /* backoff cap, default 5000 */
  redis_state_cb state_cb;     /* may be NULL */
  void *state_arg;
  /* rediss:// only: the roots that verify Redis' certificate ("": the
   * system's), and a client certificate and key ("": none). */
  char tls_ca_file[REDIS_FILE_MAX + 1];
  char tls_cert_file[REDIS_FILE_MAX + 1];
  char tls_key_file[REDIS_FILE_MAX + 1];
};

/* Fills the defaults above; the URL is empty (the caller must parse one). */
void redis_opts_init(struct redis_opts *o);

/*
 * Makes a client on `loop` and starts connecting. Returns 0 and `*out`, or
 * POSTERN_EINVAL (bad options), POSTERN_ECONFIG (rediss://: a TLS file that
 * cannot be loaded; logged with the reason as redis_tls_config) or
 * POSTERN_ENOMEM. The options are copied.
 */
int redis_client_new(uv_loop_t *loop, const struct redis_opts *o,
                     struct redis_client **out);

/* Whether the client is up (connected and ready for commands). */
bool redis_client_up(const struct redis_client *c);

/*
 * Closes the client: pending commands complete with POSTERN_ECLOSED (from
 * the loop, before `cb`), no state callback runs any more, then `cb` (may be
 * NULL) runs once every handle is closed; the memory is freed then. No call
 * on `c` after this one. Safe from inside any of the client's callbacks.
 */
void redis_client_close(struct redis_client *c, void (*cb)(void *arg),
                        void *arg);

/*
 * Writes `key_prefix` + `name` into `buf` (size `cap`), for callers that
 * build raw commands on prefixed keys. Returns the length, or
 * POSTERN_ETOOBIG when it does not fit.
 */
int redis_client_key(const struct redis_client *c, const char *name, char *buf,
                     size_t cap);

/* ---- Replies: borrowed views, valid only during the callback ---------- */

enum redis_vtype {
  REDIS_V_NIL,
  REDIS_V_INT,
  REDIS_V_STR,    /* bulk string */
  REDIS_V_STATUS, /* +OK */
  REDIS_V_ARRAY,
  REDIS_V_ERROR,
};

struct redis_value; /* opaque */

enum redis_vtype redis_value_type(const struct redis_value *v);
long long redis_value_int(const struct redis_value *v); /* 0 if not INT */
/* STR, STATUS, ERROR: the bytes and length; else NULL. NUL-terminated. */
const char *redis_value_str(const struct redis_value *v, size_t *len);
size_t redis_value_count(const struct redis_value *v); /* ARRAY: elements */
const struct redis_value *redis_value_at(const struct redis_value *v,
                                         size_t i); /* NULL out of range */

struct redis_result {
  int status;                      /* see the file comment */
  const struct redis_value *value; /* status 0 or EREDIS; else NULL */
  const char *error;               /* EREDIS: Redis' message; else NULL */
};

typedef void (*redis_cb)(struct redis_client *c, const struct redis_result *r,
                         void *arg);

/*
 * Sends a command (hiredis format: "SET %s %b", ...), with the default
 * timeout. Returns 0: `cb` runs exactly once, later, from the loop. Returns
 * POSTERN_EINVAL (bad format) or POSTERN_ENOMEM and `cb` never runs.
 * Down, closing or unable to send: returns 0 and `cb` gets POSTERN_ECLOSED.
 */
int redis_command(struct redis_client *c, redis_cb cb, void *arg,
                  const char *fmt, ...);

/* The same with an argument vector (`lens` NULL: NUL-terminated strings)
 * and a timeout (0: the default). */
int redis_command_argv(struct redis_client *c, unsigned timeout_ms, redis_cb cb,
                       void *arg, int argc, const char **argv,
                       const size_t *lens);

/* ---- Fleet primitives (atomic Lua scripts, EVALSHA, EVAL on NOSCRIPT) ---
 *
 * Keys are prefixed with key_prefix. Time is Redis' own (TIME inside the
 * script), so node clocks never matter. Callbacks follow the rules above;
 * `status` is 0 or an error from the file comment.
 */

struct redis_lease_result {
  int status;
  bool granted;    /* acquire: slot held; renew: still held */
  long long count; /* holders after the call (acquire, release) */
};

typedef void (*redis_lease_cb)(struct redis_client *c,
                               const struct redis_lease_result *r, void *arg);

/*
 * Connection leases, KEYS[1] = prefix+`key`: a sorted set of holder names
 * scored by expiry time (ms, Redis clock). Acquire drops expired holders,
 * then grants when `holder` is already in (its expiry is extended) or the
 * set has fewer than `limit` members; the key itself expires with its
 * latest lease, so abandoned sets vanish. `limit` >= 1, `ttl_ms` >= 1.
 */
int redis_lease_acquire(struct redis_client *c, const char *key,
                        const char *holder, unsigned limit, unsigned ttl_ms,
                        redis_lease_cb cb, void *arg);

/* Extends an unexpired lease to now + ttl_ms; granted false if it was lost
 * (expired or never held): the holder must stop using the slot. */
int redis_lease_renew(struct redis_client *c, const char *key,
                      const char *holder, unsigned ttl_ms, redis_lease_cb cb,
                      void *arg);

/* Gives the slot back (granted: it was held). */
int redis_lease_release(struct redis_client *c, const char *key,
                        const char *holder, redis_lease_cb cb, void *arg);

struct redis_gcra_result {
  int status;
  bool allowed;
  long long wait_ms; /* not allowed: wait this long before the next try */
};

typedef void (*redis_gcra_cb)(struct redis_client *c,
                              const struct redis_gcra_result *r, void *arg);

/*
 * GCRA throttle (the generic cell rate algorithm), KEYS[1] = prefix+`key`
 * holding the theoretical arrival time (µs, Redis clock). Allows `burst`
 * messages at once and `rate_per_sec` on average (0.001 <= rate <= 1e6,
 * 1 <= burst <= 1e6); a denied call changes nothing. The key expires when
 * the bucket would be full again.
 */
int redis_gcra(struct redis_client *c, const char *key, double rate_per_sec,
               unsigned burst, redis_gcra_cb cb, void *arg);

/*
 * The fleet's nodes alive: the sorted set prefix+REDIS_NODES_KEY (member: a
 * node name, score: when it expires, ms on the Redis clock) and the hash
 * prefix+REDIS_NODES_KEY+":info" (node -> a one-line description). A beat
 * drops expired nodes and adds or extends `node` for `ttl_ms` with `info`
 * (at most 1024 bytes); granted is true and count the nodes alive. Leave
 * removes the node (granted: it was there).
 */
#define REDIS_NODES_KEY "nodes"
int redis_node_beat(struct redis_client *c, const char *node, unsigned ttl_ms,
                    const char *info, redis_lease_cb cb, void *arg);
int redis_node_leave(struct redis_client *c, const char *node,
                     redis_lease_cb cb, void *arg);

#endif
