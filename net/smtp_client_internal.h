/*
 * net/smtp_client_internal.h - the SMTP client's object and the calls its
 * files make on each other; not part of the public API.
 *
 *   smtp_client.c      the session: connect, timers, reading replies, the
 *                      setup (greeting, EHLO/HELO, STARTTLS), failures,
 *                      close; the state transitions
 *   smtp_client_txn.c  the mail transaction: [RSET] MAIL RCPT DATA, the
 *                      body, chained messages, per-recipient results
 *   smtp_client_cmd.c  what is said and heard: command formatting and the
 *                      checks of the caller's values, EHLO keywords,
 *                      result mapping, names
 * Writes go through net/stream.h.
 */
#ifndef POSTERN_NET_SMTP_CLIENT_INTERNAL_H
#define POSTERN_NET_SMTP_CLIENT_INTERNAL_H

#include "net/defer.h"
#include "net/smtp_client.h"
#include "net/smtp_reply.h"
#include "net/stream.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

/* Defaults for `delivery { connect_timeout; command_timeout; data_timeout }`
 * (RFC 5321 §4.5.3.2 suggests 5 min per command and 10 min after the
 * final "."). */
#define DEFAULT_CONNECT_TIMEOUT_MS (30u * 1000)
#define DEFAULT_COMMAND_TIMEOUT_MS (5u * 60 * 1000)
#define DEFAULT_DATA_TIMEOUT_MS (10u * 60 * 1000)

/* Pipelined replies to many RCPTs can arrive together; the buffer holds
 * one maximal reply plus room for the next read. */
#define RBUF_CAP (SMTP_REPLY_BYTES_MAX + 16384)
#define RAW_CAP 65536

/* Body writes: at most this many bytes / buffers per write request, so a
 * large message is streamed with back-pressure and a bounded iovec. */
#define BODY_CHUNK (256u * 1024)
#define BODY_BUFS 64

/* RFC 5321 §4.5.3.1.3: a path is at most 256 octets; we allow slack but
 * refuse anything that could not fit a single command line. */
#define ADDR_MAX 512
#define PARAM_MAX 600

enum rcpt_state { RCPT_PENDING, RCPT_ACCEPTED, RCPT_FINAL };

/* The tag of a write (net/stream.h): only a body write's completion moves
 * the body on. */
enum write_kind { WRITE_CMD, WRITE_BODY };

struct smtp_client {
  struct stream io;      /* the TCP connection, plaintext or TLS */
  uv_timer_t timer;      /* command timeouts */
  struct net_defer soon; /* failures and results due once a call returns */
  uv_connect_t connect_req;
  uv_loop_t *loop;
  enum smtp_client_state state;
  int open_handles;
  bool tcp_closed;
  bool close_requested;
  bool dead; /* the session can no longer be used */
  int deferred_status;
  char deferred_reason[128]; /* why, when known (connect/bind errors) */

  uint64_t connect_to, command_to, data_to;
  char *helo_name, *mx_name, *session_key;
  char *sni;      /* NULL: mx_name */
  bool skip_pkix; /* opts->skip_pkix */
  struct sockaddr_storage local_addr;
  bool has_local;
  struct sockaddr_storage peer;
  char peer_str[64];
  struct tls_ctx *tls_ctx;
  bool want_starttls;

  smtp_client_ready_cb ready_cb;
  void *ready_arg;
  smtp_client_sent_cb sent_cb;
  void *sent_arg;
  smtp_client_close_cb close_cb;
  void *close_arg;

  struct smtp_client_facts facts;
  bool facts_valid;
  struct smtp_reply last_reply;
  char tls_error[SMTP_REPLY_TEXT_MAX + 96];

  char *rbuf;
  size_t rlen;
  char *raw;

  char *cmd;
  size_t cmdlen, cmdcap;

  /* The transaction in progress. */
  const struct smtp_message *msg;
  struct smtp_result *results;
  uint8_t *rstate;
  /* The previous message's results: a sent_cb may call smtp_client_send()
   * and still read what it was given. */
  struct smtp_result *prev_results;
  size_t rcpt_reply; /* index of the RCPT whose reply comes next */
  size_t rcpt_sent;  /* RCPTs written so far (no pipelining) */
  size_t accepted;   /* RCPTs answered 2xx */
  bool pipelined;
  bool mail_ok;
  bool ignore_dot; /* the "." answers a 354 we did not want */
  bool need_rset;
  bool local_finish; /* results decided locally; sent_cb from the timer */
  size_t body_off;
  bool body_line_start;
  bool body_queued; /* the terminating "." is written or queued */
  unsigned messages;

  /* A message queued behind the one in progress (smtp_client_send_next).
   * Its MAIL, RCPT and DATA go out right behind the current "." (RFC 2920
   * §3.1: message content may open a pipelined group), so one write and
   * one read carry the end of one message and the start of the next. */
  const struct smtp_message *next_msg;
  smtp_client_sent_cb next_cb;
  void *next_arg;
  char *next_env; /* its commands, borrowed by a write in progress */
  size_t next_env_len;
  /* The commands of the chained message now in progress: a write may
   * still hold them until the server has answered them. */
  char *cur_env;
  bool next_env_sent;
};

/* ---- smtp_client.c ---------------------------------------------------- */

/* Changes state; an illegal transition is logged at error level, every one
 * traced at debug. */
void smtp_client__set_state(struct smtp_client *c, enum smtp_client_state to);

/* (Re)starts the timeout: `ms` until on_timer fails the session. */
void smtp_client__arm(struct smtp_client *c, uint64_t ms);
/* Stops the command timer and a pending "soon" (fail_soon, finish_soon). */
void smtp_client__timers_stop(struct smtp_client *c);

/* Reports `status` from the timer, i.e. after the current call returned. */
void smtp_client__fail_soon(struct smtp_client *c, int status);

/* Finishes the transaction (results decided locally) from the timer. */
void smtp_client__finish_soon(struct smtp_client *c);

/* The session is over: every pending result gets `remote` or a reply made
 * of enh and reason; the caller hears it through ready_cb or sent_cb. */
void smtp_client__session_failed(struct smtp_client *c, int status,
                                 const char *enh, const char *reason,
                                 const struct smtp_reply *remote);

/* Writes the accumulated commands as one write (one pipelining group); a
 * failure is reported through smtp_client__fail_soon(). */
void smtp_client__cmd_flush(struct smtp_client *c);

/* One command now (fmt with one %s), then a timeout of `timeout`. */
void smtp_client__send_cmd(struct smtp_client *c, const char *fmt,
                           const char *arg, uint64_t timeout);

static inline bool smtp_client__in_setup(enum smtp_client_state s) {
  return s <= SMTP_CLIENT_EHLO_TLS;
}

static inline bool smtp_client__in_txn(enum smtp_client_state s) {
  return s >= SMTP_CLIENT_RSET && s <= SMTP_CLIENT_DOT;
}

/* ---- smtp_client_txn.c ------------------------------------------------ */

/* The transaction ends: sent_cb with the results; status 0 leaves the
 * session READY for the next message. */
void smtp_client__finish_txn(struct smtp_client *c, int status);

/* Every recipient the server has not finally answered gets `r`. */
void smtp_client__fail_pending(struct smtp_client *c,
                               const struct smtp_reply *r, bool remote,
                               const char *stage);

/* Reports the chained message as failed with r (the session is over). */
void smtp_client__fail_next(struct smtp_client *c, int status,
                            const struct smtp_reply *r, bool remote);

/* A reply in one of the transaction's states (RSET .. DOT). */
void smtp_client__txn_reply(struct smtp_client *c, const struct smtp_reply *r);

/* Writes the body from body_off while the kernel takes it at once. */
void smtp_client__write_body(struct smtp_client *c);

/* ---- smtp_client_cmd.c ------------------------------------------------ */

/* Appends printf-formatted text to the command buffer. Returns 0,
 * POSTERN_ENOMEM or POSTERN_EINTERNAL. */
int smtp_client__cmd_append(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* MAIL FROM with the parameters the server offers; RCPT TO for recipient
 * i; both, every RCPT and DATA (one pipelined group). 0 or a negative
 * code from smtp_client__cmd_append. */
int smtp_client__append_mail(struct smtp_client *c,
                             const struct smtp_message *m);
int smtp_client__append_rcpt(struct smtp_client *c,
                             const struct smtp_message *m, size_t i);
int smtp_client__append_envelope(struct smtp_client *c,
                                 const struct smtp_message *m);

/* Whether the server, as its EHLO described it (c->facts), cannot take
 * msg as it is: REQUIRETLS not offered (RFC 8689 §4.2.1), SMTPUTF8 not
 * offered (RFC 6531 §3.2), larger than its SIZE (RFC 1870 §6). Then *why
 * is the reply every recipient gets, made up locally. */
bool smtp_client__refused_locally(const struct smtp_client *c,
                                  const struct smtp_message *msg,
                                  struct smtp_reply *why);

/* The checks both send calls make on the caller's message: 0 or
 * POSTERN_EINVAL. */
int smtp_client__msg_valid(const struct smtp_message *msg);

/* NULL, or at most `max` bytes without controls, '<' or '>'. */
bool smtp_client__param_ok(const char *s, size_t max);

/* Reads the EHLO keywords we use into f->caps and f->size_limit. */
void smtp_client__parse_ehlo(struct smtp_client_facts *f, const char *raw,
                             size_t len);

/* A one-line reply made up locally (code, enh or NULL, text). */
void smtp_client__make_reply(struct smtp_reply *r, int code, const char *enh,
                             const char *text);

/* OK for 2xx, PERM for 5xx, TEMP otherwise. */
enum smtp_outcome smtp_client__outcome_of(const struct smtp_reply *r);

/* The command a reply in state s answers, for results ("RCPT"). */
const char *smtp_client__stage_of(enum smtp_client_state s);

#endif
