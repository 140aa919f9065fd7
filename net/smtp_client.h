/*
 * net/smtp_client.h - the SMTP client that delivers mail to MX servers.
 *
 * One struct smtp_client is one TCP connection to one address, driven by an
 * explicit state machine on one libuv loop (RFC 5321, RFC 3207 STARTTLS,
 * RFC 2920 PIPELINING, RFC 3461 DSN parameters). Life cycle:
 *
 *   smtp_client_connect()          connect, greeting, EHLO (HELO on 5xx),
 *        |                         STARTTLS when offered and wanted, EHLO
 *        v
 *   ready_cb(c, status, facts)     the connection's facts: TLS level, the
 *        |                         certificate verdict and chain, extensions
 *        |  the caller (policy) decides: close, or
 *        v
 *   smtp_client_send(msg)          [RSET] MAIL RCPT... DATA, body, "."
 *        v
 *   sent_cb(c, status, result)     per-recipient results; then send again
 *        |                         (connection reuse) or
 *        v
 *   smtp_client_close(close_cb)    QUIT when the session is idle, then
 *                                  close; close_cb once memory is freed.
 *
 * Threading: a client belongs to the loop it was made on; every call must
 * come from that loop's thread. The tls_ctx in the options may be shared.
 * The process must ignore SIGPIPE (libuv writes with write(2), and servers
 * do hang up while we write).
 *
 * Callbacks are never called from inside the call that started the
 * operation. After smtp_client_close() no callback runs except close_cb.
 * The caller must always call smtp_client_close() exactly once, also after
 * a failed ready_cb or sent_cb; memory is freed only in the handle's
 * close callback.
 *
 * Mail outcomes are not C errors: a recipient refused with 550 has
 * status 0 in sent_cb and its result says 5.x.x. `status` < 0 means the
 * session itself failed (timeout, drop, protocol error, 421); results then
 * still say what happened to every recipient: what the server had not yet
 * accepted is a temporary failure (4.4.1 no answer / 4.4.2 bad connection,
 * or the server's 421 reply).
 *
 * RFC 8689 REQUIRETLS: see struct smtp_message.requiretls.
 */
#ifndef POSTERN_NET_SMTP_CLIENT_H
#define POSTERN_NET_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "net/smtp_reply.h"
#include "net/tls.h"

struct smtp_client;

/* X(NAME, "name") - the client's states, see smtp_client.c for the legal
 * transitions. */
#define SMTP_CLIENT_STATE_MAP(X)                                               \
  X(CONNECTING, "connecting")                                                  \
  X(GREETING, "greeting")                                                      \
  X(EHLO, "ehlo")                                                              \
  X(HELO, "helo")                                                              \
  X(STARTTLS, "starttls")                                                      \
  X(TLS_HANDSHAKE, "tls_handshake")                                            \
  X(EHLO_TLS, "ehlo_tls")                                                      \
  X(READY, "ready")                                                            \
  X(RSET, "rset")                                                              \
  X(MAIL, "mail")                                                              \
  X(RCPT, "rcpt")                                                              \
  X(DATA, "data")                                                              \
  X(BODY, "body")                                                              \
  X(DOT, "dot")                                                                \
  X(QUIT, "quit")                                                              \
  X(CLOSING, "closing")                                                        \
  X(FAILED, "failed")

enum smtp_client_state {
#define SMTP__CLIENT_STATE(name, str) SMTP_CLIENT_##name,
  SMTP_CLIENT_STATE_MAP(SMTP__CLIENT_STATE)
#undef SMTP__CLIENT_STATE
};

/* "connecting", ...; static strings. */
const char *smtp_client_state_name(enum smtp_client_state s);

/* TLS level reached by the session (DESIGN.md "Security levels"). */
#define SMTP_TLS_LEVEL_MAP(X)                                                  \
  X(NONE, "none")                                                              \
  X(ENCRYPTED, "encrypted")                                                    \
  X(AUTHENTICATED, "authenticated")

enum smtp_tls_level {
#define SMTP__TLS_LEVEL(name, str) SMTP_TLS_##name,
  SMTP_TLS_LEVEL_MAP(SMTP__TLS_LEVEL)
#undef SMTP__TLS_LEVEL
};

const char *smtp_tls_level_name(enum smtp_tls_level l);

/* EHLO extensions we use (bit flags in smtp_client_facts.caps). */
#define SMTP_CAP_PIPELINING (1u << 0)
#define SMTP_CAP_STARTTLS (1u << 1)
#define SMTP_CAP_8BITMIME (1u << 2)
#define SMTP_CAP_SIZE (1u << 3)
#define SMTP_CAP_DSN (1u << 4)
#define SMTP_CAP_SMTPUTF8 (1u << 5)
#define SMTP_CAP_ENHANCEDSTATUSCODES (1u << 6)
#define SMTP_CAP_CHUNKING (1u << 7)
/* RFC 8689: counted only from the EHLO reply after STARTTLS (§4.2.1); a
 * plaintext session never has it. */
#define SMTP_CAP_REQUIRETLS (1u << 8)

struct smtp_client_opts {
  /* Timeouts in milliseconds; 0 means the default. connect: the TCP
   * connect (30 s); command: the greeting, each command reply and the TLS
   * handshake (5 min); data: each body write and the reply to the final
   * "." (10 min) - RFC 5321 §4.5.3.2. */
  uint64_t connect_timeout_ms;
  uint64_t command_timeout_ms;
  uint64_t data_timeout_ms;
  /* Our name in EHLO/HELO (required). Copied. */
  const char *helo_name;
  /* Address to bind before connecting (NULL = any). Its family must match
   * the destination's. Copied. */
  const struct sockaddr *local_addr;
  /* Client TLS context; NULL disables STARTTLS. Borrowed: must outlive
   * the client. */
  struct tls_ctx *tls_ctx;
  /* Use STARTTLS when the server offers it and tls_ctx is set. */
  bool starttls;
  /* The TLS server name to send (SNI); NULL: mx_name. Under DANE it is
   * the TLSA base domain (RFC 7672 §8.1); the certificate name checked
   * stays mx_name. Copied. */
  const char *sni;
  /* What governs the certificate verdict (tls_session_id.policy): NULL
   * for PKIX, "dane:<digest>" under DANE. Part of the session cache key
   * with mx_name, the port and the SNI. Copied. */
  const char *session_policy;
  /* DANE governs this host (usable TLSA records): do not verify the chain
   * with PKIX at all (tls_conn_skip_pkix); its verdict would count for
   * nothing (RFC 7672 §3, RFC 8461 §2). */
  bool skip_pkix;
};

/* The outcome of a STARTTLS attempt, for the policy layer and logs. */
#define SMTP_STARTTLS_MAP(X)                                                   \
  X(NOT_OFFERED, "not_offered")                                                \
  X(NOT_WANTED, "not_wanted")                                                  \
  X(REFUSED, "refused")                                                        \
  X(FAILED, "failed")                                                          \
  X(DONE, "done")

enum smtp_starttls {
#define SMTP__STARTTLS(name, str) SMTP_STARTTLS_##name,
  SMTP_STARTTLS_MAP(SMTP__STARTTLS)
#undef SMTP__STARTTLS
};

const char *smtp_starttls_name(enum smtp_starttls s);

/*
 * What the session established; passed to ready_cb and valid until the
 * next call on the client (or close). Strings are owned by the client.
 */
struct smtp_client_facts {
  enum smtp_tls_level tls_level;
  enum smtp_starttls starttls;
  /* TLS details when starttls == DONE: version, cipher, resumption, and
   * the certificate verdict (see tls_conn_peer_verify()). `tls` gives the
   * peer chain for DANE (tls_conn_peer_chain_len/peer_cert_der); NULL
   * without TLS. */
  const char *tls_version;
  const char *tls_cipher;
  bool tls_resumed;
  struct tls_verify verify;
  const struct tls_conn *tls;
  /* Why TLS did not reach `authenticated`, or why the handshake failed;
   * "" when there is nothing to say. */
  const char *tls_error;
  /* EHLO (or HELO) outcome. */
  bool esmtp;          /* EHLO was accepted */
  unsigned caps;       /* SMTP_CAP_* */
  uint64_t size_limit; /* SIZE argument, 0 when none or unlimited */
  /* The last reply seen (greeting, EHLO, STARTTLS refusal or the reply
   * that ended the session); code 0 when there was none. */
  const struct smtp_reply *last_reply;
  /* The state where the session failed, for logs ("in reply to EHLO"). */
  enum smtp_client_state failed_state;
};

/*
 * status: 0 when the session is ready for smtp_client_send(); otherwise a
 * negative code and the session is over: POSTERN_ECONNREFUSED /
 * ENETUNREACH / ETIMEDOUT (connect), ETIMEOUT (no reply in time), ECLOSED
 * (peer closed), EPROTO (malformed reply, or a 4xx/5xx greeting or EHLO
 * reply - see facts->last_reply), ETLS (handshake failed: facts->tls_error;
 * retrying in plaintext is the caller's decision). Whenever the session
 * failed after STARTTLS was accepted and before TLS was up (including a
 * timeout or a drop during the handshake), facts->starttls is
 * SMTP_STARTTLS_FAILED.
 */
typedef void (*smtp_client_ready_cb)(struct smtp_client *c, int status,
                                     const struct smtp_client_facts *facts,
                                     void *arg);

/* A recipient and its optional DSN parameters (RFC 3461), sent only when
 * the server offers DSN. Strings are borrowed until sent_cb. */
struct smtp_rcpt {
  const char *addr;   /* without angle brackets */
  const char *notify; /* "NEVER" or "SUCCESS,FAILURE,DELAY" subset, or NULL */
  const char *orcpt;  /* "rfc822;user@example.org" (xtext-encoded), or NULL */
};

struct smtp_message {
  const char *sender; /* "" for the null reverse-path (bounces) */
  const char *ret;    /* "FULL" / "HDRS" or NULL (DSN only) */
  const char *envid;  /* xtext or NULL (DSN only) */
  /* Add BODY=8BITMIME when offered. Without 8BITMIME the body is sent as
   * is: converting or bouncing is the caller's choice (RFC 6152 §3). */
  bool body_8bit;
  /* The message needs SMTPUTF8: sent with the SMTPUTF8 parameter; when the
   * server does not offer it, every recipient fails with 553 5.6.7 without
   * a command being sent (RFC 6531 §3.2). Likewise a body larger than the
   * server's SIZE gets 552 5.3.4 (RFC 1870 §6). Such local results have
   * remote == false. */
  bool smtputf8;
  /* The message was tagged REQUIRETLS (RFC 8689): MAIL carries the
   * REQUIRETLS parameter. When the server did not offer REQUIRETLS after
   * STARTTLS (SMTP_CAP_REQUIRETLS), no command is sent and every recipient
   * fails locally with 550 5.7.30 (§4.2.1, §5; code registered in §7).
   * Whether that bounces or defers is the caller's decision. */
  bool requiretls;
  const struct smtp_rcpt *rcpts;
  size_t nrcpts;
  /* The stored body: CRLF lines, not dot-stuffed. Borrowed until sent_cb;
   * it is stuffed on the fly, never copied. */
  const char *body;
  size_t body_len;
};

/* A result for one recipient (or for the message as a whole). */
enum smtp_outcome { SMTP_OUTCOME_OK, SMTP_OUTCOME_TEMP, SMTP_OUTCOME_PERM };

struct smtp_result {
  enum smtp_outcome outcome;
  /* The server's reply when `remote`; else a reply Postern made up for a
   * local failure (code 421 with 4.4.1 / 4.4.2 and a reason). */
  bool remote;
  struct smtp_reply reply;
  /* The command the reply answered: "MAIL", "RCPT", "DATA", "RSET",
   * "connect" ... (static). */
  const char *stage;
};

/* Passed to sent_cb; valid during the callback, even if the callback
 * calls smtp_client_send() or smtp_client_close(). */
struct smtp_send_result {
  size_t nrcpts;
  const struct smtp_result *rcpt; /* one per message recipient, same order */
  size_t accepted;                /* recipients with outcome OK */
};

/*
 * status: 0 when the session is still usable for another message (even if
 * every recipient failed); negative when the session ended (timeout, drop,
 * 421, protocol error); the results are complete in both cases.
 */
typedef void (*smtp_client_sent_cb)(struct smtp_client *c, int status,
                                    const struct smtp_send_result *res,
                                    void *arg);

/* `c` has been freed when this runs: compare it, never dereference it. */
typedef void (*smtp_client_close_cb)(struct smtp_client *c, void *arg);

/*
 * Starts a session with `addr` (IPv4 or IPv6, port included). `mx_name` is
 * the MX host name: the certificate name, the TLS SNI unless opts->sni
 * says otherwise, and part of the session cache key (tls_session_key()
 * of mx_name, the port, the SNI and opts->session_policy). `opts` and the
 * strings are copied (tls_ctx is borrowed). Returns 0 and sets *out (ready_cb
 * will run, later), or POSTERN_EINVAL / POSTERN_ENOMEM with nothing to close.
 */
int smtp_client_connect(struct smtp_client **out, uv_loop_t *loop,
                        const struct smtp_client_opts *opts,
                        const struct sockaddr *addr, const char *mx_name,
                        smtp_client_ready_cb ready_cb, void *arg);

/*
 * Sends one message on a ready session (after ready_cb or sent_cb with
 * status 0). A message after a transaction that did not end with the reply
 * to its "." is preceded by RSET (after that reply the server has reset,
 * RFC 5321 §4.1.1.4). With PIPELINING, [RSET,] MAIL, every RCPT and DATA go out
 * in one write (RFC 2920 §3.1). `msg` and everything it points to are borrowed
 * until sent_cb. Errors: POSTERN_EINVAL (no recipient, NULL fields, a
 * line break in an address), POSTERN_ESTATE (session not ready),
 * POSTERN_ECLOSED (the server closed the idle session), POSTERN_ENOMEM.
 */
int smtp_client_send(struct smtp_client *c, const struct smtp_message *msg,
                     smtp_client_sent_cb cb, void *arg);

/*
 * Chains msg behind the transaction in progress (after smtp_client_send and
 * before its sent_cb): its MAIL, RCPT and DATA go out right behind the
 * current message's "." in the same write, as RFC 2920 §3.1 allows, so one
 * write and one read carry the end of one message and the start of the
 * next. Its sent_cb runs after the current message's; when the current
 * one's sent_cb runs, msg is already the transaction in progress, so that
 * callback may chain another. At most one message waits at a time.
 * If the session fails, the chained message's sent_cb follows the current
 * one's with the same negative status and every recipient failed
 * temporarily - unless the caller closes the client from the first
 * callback: then, as any unfinished transaction, it is abandoned and its
 * sent_cb never runs (it never reached DATA; send it elsewhere).
 * `msg` is borrowed until its sent_cb. Errors: POSTERN_EINVAL (as
 * smtp_client_send), POSTERN_ECLOSED, POSTERN_ENOMEM, POSTERN_ESTATE (no
 * transaction in progress, one already chained, no PIPELINING, or a
 * message the server cannot take as it is: send it with smtp_client_send
 * later, which reports why).
 */
int smtp_client_send_next(struct smtp_client *c, const struct smtp_message *msg,
                          smtp_client_sent_cb cb, void *arg);

/*
 * Ends the session: QUIT and wait for its reply (command timeout) when the
 * session is idle and usable, else close at once (an unfinished
 * transaction is abandoned; its sent_cb never runs). close_cb (may be
 * NULL) runs when the memory is freed. Call exactly once.
 */
void smtp_client_close(struct smtp_client *c, smtp_client_close_cb cb,
                       void *arg);

/*
 * The policy rejected this session: its TLS session is dropped from the
 * cache and none it still receives is stored (tls_conn_forget_session), so
 * it is never offered again. Call before smtp_client_close(). Harmless
 * without TLS.
 */
void smtp_client_forget_tls_session(struct smtp_client *c);

/*
 * The local IP address of the connection, as text ("192.0.2.1", "2001:db8::1")
 * into buf: what TLS reports call the sending MTA's IP (RFC 8460 §4.4).
 * Valid once connected, until the client is closed. Returns 0,
 * POSTERN_ESTATE (not connected) or POSTERN_EINVAL (cap too small).
 */
int smtp_client_local_ip(const struct smtp_client *c, char *buf, size_t cap);

/* Current state, for logs and tests. */
enum smtp_client_state smtp_client_state(const struct smtp_client *c);

/* The connection's facts (as given to ready_cb), or NULL before. */
const struct smtp_client_facts *smtp_client_facts(const struct smtp_client *c);

/* Messages completed on this session (for the engine's reuse limit). */
unsigned smtp_client_messages(const struct smtp_client *c);

#endif
