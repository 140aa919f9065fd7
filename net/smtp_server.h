/*
 * smtp_server.h - the relay's SMTP ingress (RFC 5321 ESMTP server).
 *
 * The server accepts sessions on one or more libuv loops (one loop per
 * worker thread), runs the ESMTP dialogue, and hands each complete message
 * to its owner (the engine) through a handler table. It knows nothing about
 * the queue: the engine stores the message and then reports the outcome with
 * smtp_server_txn_done(), from any thread; only then does the client get
 * `250 2.0.0 Ok: queued as <id>` (or a 4xx/5xx).
 *
 * Threading:
 *  - smtp_server_start() is called before the loops run (or on the thread
 *    that runs all of them while none is running); it creates one listening
 *    socket per loop, all bound to the same address with SO_REUSEPORT, so
 *    the kernel spreads connections across the loops.
 *  - The handlers run on the thread of the loop that owns the session, so
 *    with N loops they may run concurrently on N threads.
 *  - smtp_server_txn_done(), smtp_server_stop() and smtp_server_close() may
 *    be called from any thread.
 *
 * Extensions offered: PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES,
 * SMTPUTF8, DSN, CHUNKING (BDAT), STARTTLS when a TLS context is
 * configured, and REQUIRETLS (RFC 8689) and AUTH PLAIN LOGIN (RFC 4954,
 * when auth_mode is not off) on a session protected by TLS only. Not
 * offered: BINARYMIME, ETRN, EXPN (502).
 *
 * AUTH (smtp_server_auth.c): before TLS an AUTH gets 538 5.7.11; the
 * password is checked with crypt_rn on libuv's thread pool (never on the
 * loop), an unknown user against a dummy hash of the same cost, with the
 * same reply (no user name oracle); failures per client address and user
 * name are delayed, then refused (net/smtp_auth.h, the limiter). Who may
 * relay: auth_mode off: accept_from (at connect); optional: a login OR
 * accept_from (at MAIL); required: accept_from (at connect) AND a login.
 *
 * Input rules (RFC 5321 §2.3.8, §4.5.3.1): command lines end in CRLF and
 * are at most 512 octets; message lines at most 1000 octets with CRLF. A
 * bare LF or CR, or a NUL, refuses the command (500 5.5.2) or, in message
 * content, the whole message at its end (554 5.6.0); only CRLF.CRLF ends
 * DATA, so "SMTP smuggling" with <LF>.<CR><LF> cannot split a message. The
 * engine therefore always receives CRLF-only, NUL-free lines.
 */
#ifndef POSTERN_NET_SMTP_SERVER_H
#define POSTERN_NET_SMTP_SERVER_H

#include "net/cidr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

struct smtp_server;
struct smtp_server_txn;
struct tls_ctx;
struct smtp_auth_users;

/* Longest queue id the engine may assign (without the terminating NUL). */
#define SMTP_SERVER_ID_MAX 63

struct smtp_server_opts {
  /* "127.0.0.1:2525", "[::1]:2525", "[::]:25", "0.0.0.0:25". Port 0 picks a
   * free port (all loops share it); smtp_server_port() tells which. */
  const char *listen;
  /* Clients allowed to connect. Any other client gets `554 5.7.1` at
   * connect and nothing else. NULL/0 means loopback only (127.0.0.0/8 and
   * ::1): the server is never an open relay by omission. Copied. */
  const struct cidr *accept_from;
  size_t naccept_from;
  /* Name in the greeting, the EHLO reply and the Received: header. Copied.
   * NULL means gethostname(). */
  const char *hostname;
  /* 0 in any of the limits below means "the default" (in brackets). */
  uint64_t max_message_size; /* bytes of content, without our Received: [32M] */
  uint32_t max_recipients;   /* per message, beyond → 452 4.5.3 [1000] */
  uint32_t max_sessions;     /* across all loops, beyond → 421 4.3.2 [2000] */
  uint64_t timeout_ms;       /* idle time allowed per command line [5m] */
  uint64_t session_timeout_ms; /* total session lifetime [1h] */
  uint32_t max_commands;       /* commands between accepted messages [100000] */
  uint32_t max_junk_commands;  /* NOOP/RSET/VRFY/EXPN/HELP/EHLO, same [100] */
  uint32_t max_errors;         /* 5xx replies, same, before `421 4.7.0` [20] */
  /* Delay before the greeting; a client that talks during it is an "early
   * talker" and gets `554 5.5.0` and a close. [0: greet at once; input that
   * arrives before the greeting was sent is still refused.] */
  uint64_t greet_delay_ms;
  /* Server TLS context (net/tls.h) enabling STARTTLS; NULL: none. Borrowed:
   * must outlive the server. */
  struct tls_ctx *tls;
  /* SMTP AUTH: enum smtp_auth_mode (net/smtp_auth.h); anything but off
   * needs `tls` and `users`. Borrowed: a table stays valid until the
   * server has closed, also after smtp_server_set_users replaced it. */
  int auth_mode;
  const struct smtp_auth_users *users;
  /* Failed logins per client address in 15 minutes before 421 [10]. */
  uint32_t auth_max_failures;
};

/* Outcomes of AUTH attempts, for the engine's counters. */
enum smtp_server_auth_result {
  SMTP_SERVER_AUTH_OK,
  SMTP_SERVER_AUTH_FAILED,    /* bad credentials, malformed message */
  SMTP_SERVER_AUTH_THROTTLED, /* refused by the limiter */
};

/* DSN NOTIFY= flags (RFC 3461 §4.1). 0 means the parameter was absent. */
enum {
  SMTP_SERVER_NOTIFY_NEVER = 1,
  SMTP_SERVER_NOTIFY_SUCCESS = 2,
  SMTP_SERVER_NOTIFY_FAILURE = 4,
  SMTP_SERVER_NOTIFY_DELAY = 8,
};

enum smtp_server_body {
  SMTP_SERVER_BODY_NONE,
  SMTP_SERVER_BODY_7BIT,
  SMTP_SERVER_BODY_8BITMIME
};
enum smtp_server_ret {
  SMTP_SERVER_RET_NONE,
  SMTP_SERVER_RET_FULL,
  SMTP_SERVER_RET_HDRS
};

struct smtp_server_rcpt {
  const char *addr;  /* mailbox, no angle brackets, source route dropped */
  unsigned notify;   /* SMTP_SERVER_NOTIFY_* bits, 0 when absent */
  const char *orcpt; /* raw ORCPT value ("rfc822;a+2Bb@x"), NULL when absent */
};

/* What the client said about the message. All strings are NUL-terminated
 * and valid until smtp_server_txn_done() is called for the transaction. */
struct smtp_server_envelope {
  const char *mail_from; /* reverse-path, "" for the null sender <> */
  const struct smtp_server_rcpt *rcpt;
  size_t nrcpt; /* >= 1 */
  enum smtp_server_body body_type;
  bool smtputf8;            /* MAIL ... SMTPUTF8 (RFC 6531) */
  enum smtp_server_ret ret; /* RET= (RFC 3461 §4.3) */
  const char *envid;        /* raw xtext ENVID= value, NULL when absent */
  const char *helo;         /* EHLO/HELO argument as sent */
  const char *client_ip;    /* "192.0.2.1" / "2001:db8::1" */
  const struct sockaddr *client_addr;
  bool tls;        /* the message came over STARTTLS */
  bool requiretls; /* MAIL ... REQUIRETLS (RFC 8689 §4.1); only with tls */
  const char *auth_user; /* who logged in (AUTH), NULL: nobody */
  const char *id;        /* id from assign_id() */
  unsigned loop_index;   /* which of the loops (0..nloops-1) */
};

struct smtp_server_handlers {
  /*
   * Called on a session's loop when MAIL FROM is accepted: writes a queue id
   * (1..SMTP_SERVER_ID_MAX printable ASCII, no spaces) into `id` (capacity
   * SMTP_SERVER_ID_MAX + 1) for the Received: header and the final reply.
   * Returns 0, or a negative code: the client then gets `451 4.3.0`.
   * An id may be assigned for a transaction that never reaches message()
   * (RSET, QUIT, refused content): it is simply dropped.
   */
  int (*assign_id)(void *ud, char *id);
  /*
   * Called on the session's loop after the final "." of an accepted DATA
   * (or the LAST chunk of BDAT).
   * `body` (len bytes) is the content as it will be delivered: our Received:
   * header first, then the client's lines, dot-unstuffed (DATA) or as sent
   * (BDAT), each ending in CRLF. `body` and `env` stay valid and unchanged
   * until the engine calls smtp_server_txn_done(txn, ...), which it must do
   * exactly once for every call, from any thread, even after the client has
   * disconnected or the server is being closed.
   */
  void (*message)(void *ud, struct smtp_server_txn *txn,
                  const struct smtp_server_envelope *env, const char *body,
                  size_t len);
  /* Optional: an AUTH attempt ended (enum smtp_server_auth_result). On the
   * session's loop. */
  void (*auth_event)(void *ud, int result);
};

/*
 * Parses "ADDR:PORT" ("127.0.0.1:25", "[::1]:25") into *out. Returns 0 or
 * POSTERN_ESYNTAX.
 */
int smtp_server_addr_parse(const char *s, struct sockaddr_storage *out);

/*
 * Creates the server and starts listening on every loop of `loops` (nloops
 * >= 1). `opts` is copied; `handlers` and `ud` are borrowed until the server
 * has closed. The loops must not be running yet (their handles are created
 * from this thread). On success *out is the server.
 * IPv6 sockets are IPV6_V6ONLY: "[::]:25" does not take IPv4 clients; use
 * a second server for "0.0.0.0:25". All sockets of one server share the
 * port through SO_REUSEPORT (port 0: the first socket's port).
 * Errors: POSTERN_EINVAL (bad options), POSTERN_ESYNTAX (bad listen address),
 * POSTERN_EADDRINUSE, POSTERN_EPERM, POSTERN_ENOMEM, POSTERN_EIO (other
 * socket errors). On error nothing is left behind.
 */
int smtp_server_start(uv_loop_t **loops, unsigned nloops,
                      const struct smtp_server_opts *opts,
                      const struct smtp_server_handlers *handlers, void *ud,
                      struct smtp_server **out);

/* The bound TCP port (useful after listening on port 0). */
unsigned smtp_server_port(const struct smtp_server *srv);

/*
 * Reports the outcome of a message handed to handlers->message. Any thread.
 * status 0: the message is stored; the client gets `250 2.0.0 Ok: queued as
 * <id>` (id NULL: the one from assign_id). POSTERN_EQFULL, POSTERN_ENOSPC,
 * POSTERN_EIO: `452 4.3.1`; POSTERN_ETOOBIG: `552 5.3.4`; anything else:
 * `451 4.3.0`. The session remains usable after a failure. `id` is copied.
 * After this call `txn`, the envelope and the body are gone.
 */
void smtp_server_txn_done(struct smtp_server_txn *txn, int status,
                          const char *id);

/*
 * Stops accepting new sessions (listening sockets close on their loops);
 * existing sessions continue. Any thread; idempotent.
 */
void smtp_server_stop(struct smtp_server *srv);

/*
 * Stops accepting and ends every session: idle ones get `421 4.3.2 Service
 * shutting down` and are closed; a session whose message awaits
 * smtp_server_txn_done() gets its reply first and is closed then. When every
 * handle of the server is closed on every loop, the server frees itself and
 * calls closed_cb(ud) on the thread of the loop that finished last (or,
 * when every loop finished before this call returned, on the caller's). The
 * loops must keep running until then. Any thread; call it once; `srv`
 * must not be used after it.
 */
void smtp_server_close(struct smtp_server *srv, void (*closed_cb)(void *ud),
                       void *ud);

/*
 * Replaces the AUTH users table (a reload). Any thread; sessions take the
 * new table for their next login. The old table must stay valid until the
 * server has closed (a verification may be reading it).
 */
void smtp_server_set_users(struct smtp_server *srv,
                           const struct smtp_auth_users *users);

/* Sessions currently open across all loops (for metrics and tests). */
unsigned smtp_server_sessions(const struct smtp_server *srv);

#endif
