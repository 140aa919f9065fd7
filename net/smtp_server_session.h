/*
 * smtp_server_session.h - the SMTP server's objects and the calls its files
 * make on each other. Internal to net/smtp_server*.c (tests use
 * smtp_server.h and smtp_server_internal.h).
 *
 * The files and their jobs:
 *   smtp_server.c         options, smtp_server_start(), the public queries
 *   smtp_server_listen.c  listening sockets (SO_REUSEPORT groups), accept
 *   smtp_server_loop.c    loop contexts, the cross-thread calls (txn_done,
 *                         stop, close) and freeing the server
 *   smtp_server_conn.c    a session's connection: replies out, input in,
 *                         flow control, the close sequence, its memory
 *   smtp_server_session.c the session protocol: the ESMTP state machine
 *   smtp_server_auth.c    AUTH (RFC 4954): the exchange, off-loop
 *                         verification, the limiter, who may relay
 *   smtp_server_state.c   state names and the legal transitions (pure)
 *   smtp_server_parse.c   command and DATA line parsers (pure)
 *
 * Ownership and invariants:
 *  - struct smtp_server owns one struct loop_ctx per loop. A loop_ctx owns a
 *    listening descriptor (see smtp_server_listen.c: up to
 *    LOOPS_PER_LISTENER loops share one socket, the sockets share the
 *    port), a uv_async_t through which other threads reach the loop
 *    (txn_done, stop, close) and the list of its sessions. Only the loop's
 *    own thread touches a loop_ctx, except `done` and the request flags,
 *    which are guarded by `mu` / atomics.
 *  - A session owns its tcp and timer handles, its buffers and the one
 *    transaction that may be in flight. It is freed only when both its
 *    handles are closed (close_cb) and no transaction is pending: the engine
 *    may call smtp_server_txn_done() after the client left, and the session
 *    memory must still be there to receive it.
 *  - The server frees itself after the last loop closed its async handle,
 *    which happens only when that loop has no session and no listener left;
 *    so no txn_done can ever reach freed memory.
 */
#ifndef POSTERN_NET_SMTP_SERVER_SESSION_H
#define POSTERN_NET_SMTP_SERVER_SESSION_H

#include "base/postern_log.h"
#include "net/cidr.h"
#include "net/smtp_auth.h"
#include "net/smtp_server.h"
#include "net/smtp_server_internal.h"
#include "net/stream.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#define IN_CAP 8192    /* input buffer per session */
#define OUT_SOFT 16384 /* stop processing input while replies back up */
#define CLOSE_LINGER_MS 5000
#define LOOPS_PER_LISTENER 4 /* see smtp_server_listen.c */
#define TLS_RBUF 16384       /* ciphertext read buffer */

struct session;

struct smtp_server_txn {
  struct session *s;
  int status;
  bool has_id;
  char id[SMTP_SERVER_ID_MAX + 1];
  struct smtp_server_txn *next; /* in loop_ctx.done */
};

struct loop_ctx {
  struct smtp_server *srv;
  uv_loop_t *loop;
  unsigned index;
  uv_tcp_t listener;
  uv_async_t async;
  bool listener_open;
  bool listener_closing;
  bool async_closing;
  bool stopping; /* this loop has handled the stop request */
  bool closing;  /* this loop has handled the close request */
  pthread_mutex_t mu;
  struct smtp_server_txn *done; /* guarded by mu */
  struct session *sessions;     /* doubly linked; loop thread only */
  unsigned nsess;
};

struct smtp_server {
  struct loop_ctx *lcs;
  unsigned nloops;
  struct sockaddr_storage addr;
  unsigned port;
  char hostname[256];
  struct cidr *accept;
  size_t naccept;
  uint64_t max_size, timeout_ms, session_timeout_ms, greet_delay_ms;
  uint32_t max_rcpt, max_sessions, max_commands, max_junk, max_errors;
  struct tls_ctx *tls;
  int auth_mode; /* enum smtp_auth_mode */
  _Atomic(const struct smtp_auth_users *) users;
  struct smtp_auth_limit *limit; /* shared by the loops, locked inside */
  atomic_uint auth_inflight;     /* verifications on the thread pool */
  struct smtp_server_handlers h;
  void *ud;
  atomic_uint nsessions;
  atomic_ulong next_sess_id;
  atomic_bool stop_req, close_req;
  atomic_uint handles_live; /* listeners + asyncs not yet closed */
  void (*closed_cb)(void *);
  void *closed_ud;
};

struct rcpt_rec {
  size_t addr_off;
  size_t orcpt_off; /* SIZE_MAX: absent */
  unsigned notify;
};

struct session {
  struct stream io; /* the client's connection, plaintext or TLS */
  uv_timer_t timer;
  uv_shutdown_t sreq;
  struct loop_ctx *lc;
  struct session *prev, *next;
  unsigned long id;
  enum smtp_server__state st;
  int open_handles;
  bool handles_closing;
  bool counted;      /* counted in srv->nsessions */
  bool txn_pending;  /* handed to the engine, txn_done not yet processed */
  bool close_after;  /* close once the pending reply is sent */
  bool shut;         /* FIN sent */
  bool discard_line; /* skipping the rest of an overlong command */
  bool esmtp;
  bool reading;
  bool eof;  /* the client half-closed: finish what it sent, then close */
  bool quit; /* QUIT answered and nothing followed it */
  uint64_t start_ms;
  struct sockaddr_storage peer;
  char ip[INET6_ADDRSTRLEN];
  char helo[SMTP_SERVER__DOMAIN_MAX + 1];
  uint32_t ncmd, nmsg; /* totals, for the log */
  /* Since the last accepted message: a session that keeps sending mail may
   * live long; one that only talks is cut off. */
  uint32_t ncmd_idle, njunk, nerr;

  char in[IN_CAP];
  size_t in_off, in_len;

  char *out; /* replies not yet written */
  size_t out_len, out_cap;

  /* The transaction being built: strings live in `arena`. */
  char *arena;
  size_t arena_len, arena_cap;
  size_t from_off;
  struct rcpt_rec *rcpt;
  size_t nrcpt, rcpt_cap;
  size_t envid_off; /* SIZE_MAX: absent */
  int body_type, ret;
  bool smtputf8;
  bool requiretls; /* MAIL ... REQUIRETLS (RFC 8689), TLS sessions only */
  uint64_t size_hint;
  char qid[SMTP_SERVER_ID_MAX + 1];

  /* DATA. */
  char *body;
  size_t body_len, body_cap, hdr_len;
  bool data_midline, data_bad, data_too_long, data_oversize;

  /* BDAT (RFC 3030). */
  uint64_t bdat_left; /* chunk bytes still to read */
  uint64_t skip_left; /* bytes of a refused chunk still to drop */
  uint64_t bdat_size; /* size of the current chunk, for the reply */
  size_t bdat_line;   /* payload bytes in the current line */
  size_t bdat_progress;
  bool bdat_last, bdat_cr;

  /* Handed to the engine. */
  struct smtp_server_rcpt *env_rcpt;
  struct smtp_server_envelope env;
  struct smtp_server_txn txn;

  /* AUTH (smtp_server_auth.c). */
  struct smtp_auth_exchange *auth_x; /* in progress; wiped and freed */
  enum smtp_auth_mech auth_mech;     /* of the last AUTH, for the log */
  bool auth_pending; /* a verification is on the thread pool: the session's
                        memory stays until its after-work callback */
  char auth_try[SMTP_AUTH_NAME_MAX + 1];  /* the name being checked */
  char auth_user[SMTP_AUTH_NAME_MAX + 1]; /* "" until a login succeeded */

  struct tls_conn *tls_pending; /* made by STARTTLS, not yet in use */
  char *tls_rbuf;               /* ciphertext read buffer (TLS only) */
  bool tls_done;                /* handshake completed */
};

/* ---- smtp_server_listen.c -------------------------------------------- */

/*
 * Gives each of the n loops a listening descriptor in fds, all bound to
 * *a (whose port 0 becomes the port chosen, also in *port). On failure
 * nothing is left open. Returns 0 or a POSTERN code.
 */
int smtp_server__open_listeners(struct sockaddr_storage *a, int *fds,
                                unsigned n, unsigned *port);

/* Starts accepting on lc's loop with the descriptor fd (from
 * smtp_server__open_listeners). Before the loops run. */
void smtp_server__listen(struct loop_ctx *lc, int fd);

/* Closes lc's listening handle (once); then smtp_server__loop_maybe_finish. */
void smtp_server__stop_listening(struct loop_ctx *lc);

/* ---- smtp_server_loop.c ---------------------------------------------- */

/* Sets up loop context `index` of srv on `loop` (its mutex and async
 * handle). Before the loops run. */
void smtp_server__loop_init(struct smtp_server *srv, unsigned index,
                            uv_loop_t *loop);

/* Once the loop is closing and has neither listener nor session left,
 * closes its async handle; the last one frees the server. */
void smtp_server__loop_maybe_finish(struct loop_ctx *lc);

/* ---- smtp_server_conn.c ---------------------------------------------- */

/* Accepts a connection from `server` into a new session of lc: access and
 * session limits, then smtp_server__session_begin(). */
void smtp_server__session_accept(struct loop_ctx *lc, uv_stream_t *server);

/* One log line about the session (sess, client, reason when not NULL). */
void smtp_server__log(struct session *s, enum postern_log_level lvl,
                      const char *event, const char *reason);

/* Grows *buf (capacity *cap) to hold `need` bytes, doubling. */
bool smtp_server__grow(char **buf, size_t *cap, size_t need);

/* Queues one reply line (without CRLF); 5xx replies count as errors. Sent
 * by smtp_server__flush(). */
void smtp_server__reply(struct session *s, const char *line);
__attribute__((format(printf, 2, 3))) void
smtp_server__replyf(struct session *s, const char *fmt, ...);

/* Writes the queued replies (see smtp_server_conn.c). */
void smtp_server__flush(struct session *s);

/* A write is queued and has not completed. */
bool smtp_server__busy_writing(const struct session *s);

/* Ends the session gracefully: flush, FIN, close when the client closes or
 * after CLOSE_LINGER_MS. */
void smtp_server__session_close(struct session *s);

/* Closes both handles at once (errors, the client gone). */
void smtp_server__close_handles(struct session *s);

/* CLOSING with nothing left to write: FIN (and close_notify), or close. */
void smtp_server__maybe_finish_close(struct session *s);

/* Starts or stops reading as room in s->in and the state allow. */
void smtp_server__update_reading(struct session *s);

/* Moves decrypted input into s->in while there is room. Returns the bytes
 * moved or a negative code (the session is then closing). */
ssize_t smtp_server__tls_pull(struct session *s);

/* Frees a session whose handles are closed and that has no transaction
 * pending. */
void smtp_server__session_free(struct session *s);

/* ---- smtp_server_session.c ------------------------------------------- */

/* Changes the session's state: a transition smtp_server__transition_ok()
 * does not allow is logged at error level, every one traced at debug. */
void smtp_server__set_state(struct session *s, enum smtp_server__state to);

/* An accepted session that may stay: greets (or waits greet_delay). */
void smtp_server__session_begin(struct session *s);

/* Runs the session on whatever input is buffered. */
void smtp_server__pump(struct session *s);

/* Forgets the transaction being built. */
void smtp_server__txn_reset(struct session *s);

/* The engine's smtp_server_txn_done() reached the session's loop. */
void smtp_server__txn_finished(struct session *s, struct smtp_server_txn *t);

/* Restarts the idle timer (after a command, a line, a login). */
void smtp_server__arm_timer(struct session *s);

/* The session's timer: the greeting delay, the idle and session limits,
 * and in AUTH_CHECK the limiter's delay. */
void smtp_server__on_timer(uv_timer_t *t);

/* ---- smtp_server_auth.c ---------------------------------------------- */

/* The AUTH command (READY, after EHLO). */
void smtp_server__cmd_auth(struct session *s, const struct smtp_server__cmd *c);

/* In AUTH: takes the client's next response line from the input. Returns
 * false when more input is needed. */
bool smtp_server__auth_step(struct session *s);

/* The limiter's delay of an attempt ran out (the session's timer in
 * AUTH_CHECK): the verification starts. */
void smtp_server__auth_timer(struct session *s);

/* The EHLO line for AUTH, or NULL when not offered on this session. */
const char *smtp_server__auth_ehlo(const struct session *s);

/* Whether the session may start a transaction (MAIL); NULL, or the reply
 * that refuses it. */
const char *smtp_server__auth_mail_refusal(const struct session *s);

/* Whether the server accepts the client at connect (accept_from applies
 * there unless auth is optional: then at MAIL). */
bool smtp_server__auth_connect_ok(const struct smtp_server *srv,
                                  const struct sockaddr *peer);

/* Forgets the exchange in progress (wiped). */
void smtp_server__auth_reset(struct session *s);

/* Whether the session's memory may go (no transaction, no verification
 * pending). */
bool smtp_server__session_idle(const struct session *s);

#endif
