/*
 * smtp_server_internal.h - pieces of the SMTP server shared between its .c
 * files and its unit tests: the pure command parser (also the fuzz target's
 * entry point), the DATA line scanner, and the session states with their
 * legal transitions.
 *
 * Nothing here allocates; parsers only read the caller's buffer and return
 * pointers into it.
 */
#ifndef POSTERN_NET_SMTP_SERVER_INTERNAL_H
#define POSTERN_NET_SMTP_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF;
 * §4.5.3.1.6: a text line is at most 1000 octets including CRLF. */
#define SMTP_SERVER__CMD_LINE_MAX 512
/* RFC 4954 §4: the AUTH command carries an initial response, and its line
 * may be longer (12288 octets there); we take as long a line as for the
 * exchange's responses (SMTP_AUTH_LINE_MAX of net/smtp_auth.h). */
#define SMTP_SERVER__AUTH_LINE_MAX 1100
#define SMTP_SERVER__TEXT_LINE_MAX 1000
/* RFC 5321 §4.5.3.1.1-3. */
#define SMTP_SERVER__LOCAL_MAX 64
#define SMTP_SERVER__DOMAIN_MAX 255
#define SMTP_SERVER__PATH_MAX 256
/* RFC 3461 §4.4 (ENVID) and §4.2 (ORCPT, 500 characters). */
#define SMTP_SERVER__ENVID_MAX 100
#define SMTP_SERVER__ORCPT_MAX 500

/* The three answers every parser gives. */
enum smtp_server__parse {
  SMTP_SERVER__NEED_MORE,
  SMTP_SERVER__OK,
  SMTP_SERVER__PROTO_ERROR,
};

#define SMTP_SERVER__VERB_MAP(X)                                               \
  X(NONE, "")                                                                  \
  X(EHLO, "EHLO")                                                              \
  X(HELO, "HELO")                                                              \
  X(MAIL, "MAIL")                                                              \
  X(RCPT, "RCPT")                                                              \
  X(DATA, "DATA")                                                              \
  X(RSET, "RSET")                                                              \
  X(NOOP, "NOOP")                                                              \
  X(QUIT, "QUIT")                                                              \
  X(VRFY, "VRFY")                                                              \
  X(EXPN, "EXPN")                                                              \
  X(HELP, "HELP")                                                              \
  X(STARTTLS, "STARTTLS")                                                      \
  X(BDAT, "BDAT")                                                              \
  X(AUTH, "AUTH")

enum smtp_server__verb {
#define SMTP_SERVER__VERB_ENUM(name, str) SMTP_SERVER__V_##name,
  SMTP_SERVER__VERB_MAP(SMTP_SERVER__VERB_ENUM)
#undef SMTP_SERVER__VERB_ENUM
};

const char *smtp_server__verb_name(enum smtp_server__verb v);

struct smtp_server__str {
  const char *p;
  size_t n;
};

/* One parsed command line. String fields point into the parsed buffer. */
struct smtp_server__cmd {
  enum smtp_server__verb verb;
  /* EHLO/HELO domain, VRFY/EXPN/HELP/NOOP argument (may be empty). */
  struct smtp_server__str arg;
  /* MAIL/RCPT mailbox without "<>" and without source route; n == 0 for the
   * null reverse-path "<>". */
  struct smtp_server__str addr;
  bool addr_utf8;  /* the mailbox holds non-ASCII (UTF-8) bytes */
  bool postmaster; /* RCPT TO:<Postmaster> without a domain (§4.1.1.3) */
  /* MAIL parameters. */
  bool has_size;
  uint64_t size; /* saturates at UINT64_MAX on overflow */
  int body;      /* enum smtp_server_body */
  bool smtputf8;
  int ret; /* enum smtp_server_ret */
  struct smtp_server__str envid;
  /* REQUIRETLS (RFC 8689 §2: no value). Only syntax here: whether the
   * session may use it (TLS) is the session's to decide. */
  bool requiretls;
  /* MAIL ... AUTH=xtext or AUTH=<> (RFC 4954 §5): syntax checked, the
   * value is the client's claim about the submitter; n == 0: absent. */
  struct smtp_server__str auth_param;
  /* AUTH mechanism [initial-response] (RFC 4954 §4): the mechanism in
   * `arg`, the initial response here (p == NULL: none; "=" is the empty
   * one). Whether the mechanism is known is the session's to decide. */
  struct smtp_server__str auth_ir;
  /* BDAT (RFC 3030): chunk size in `size` (saturating), LAST flag. */
  bool last;
  /* RCPT parameters. */
  unsigned notify; /* SMTP_SERVER_NOTIFY_* */
  struct smtp_server__str orcpt;
  /* Bytes of input the line used, terminator included. On PROTO_ERROR with
   * consumed == 0 the line is longer than the limit and has no end yet: the
   * caller discards input up to and including the next LF. */
  size_t consumed;
  /* On PROTO_ERROR: the complete reply line without CRLF. */
  const char *reply;
};

/*
 * Parses the first command line of buf[0..len).
 *  NEED_MORE   no LF yet and fewer bytes than smtp_server__cmd_line_max().
 *  OK          *cmd filled; cmd->consumed bytes used.
 *  PROTO_ERROR cmd->reply says why (500 5.5.2 line too long, bare LF, NUL;
 *              500 5.5.1 unknown command; 501 syntax; 555 unknown
 *              parameter; ...); cmd->consumed as documented above; the verb
 *              is set when it was recognised.
 * Pure: depends only on its input.
 */
enum smtp_server__parse smtp_server__cmd_parse(const char *buf, size_t len,
                                               struct smtp_server__cmd *cmd);

/*
 * The framing every client line shares (commands, AUTH responses): the
 * first line of buf[0..len), which may be at most `max` bytes with its
 * CRLF. MORE: no LF yet and fewer than max bytes. LONG: no LF within max.
 * BARE_LF: a line not ending in CRLF (*consumed covers it). OK: *n bytes
 * of line without its CRLF, *consumed with it. Pure.
 */
enum smtp_server__frame {
  SMTP_SERVER__FRAME_MORE,
  SMTP_SERVER__FRAME_LONG,
  SMTP_SERVER__FRAME_BARE_LF,
  SMTP_SERVER__FRAME_OK,
};
enum smtp_server__frame smtp_server__line_frame(const char *buf, size_t len,
                                                size_t max, size_t *n,
                                                size_t *consumed);

/* The longest line (CRLF included) the command at buf[0..len) may have:
 * SMTP_SERVER__AUTH_LINE_MAX when it starts with "AUTH " (any case),
 * SMTP_SERVER__CMD_LINE_MAX otherwise. Pure. */
size_t smtp_server__cmd_line_max(const char *buf, size_t len);

/* Validates a mailbox (RFC 5321 §4.1.2 Mailbox, RFC 6531 UTF-8 forms).
 * *utf8 tells whether non-ASCII occurred. */
bool smtp_server__mailbox_ok(const char *p, size_t n, bool *utf8);

/* Validates an EHLO/HELO argument: one printable ASCII token (real clients
 * send bare host names, underscores included) or a valid address literal.
 * It ends up in our Received: header, so no spaces or controls. */
bool smtp_server__helo_ok(const char *p, size_t n);

/*
 * DATA content scanner. Feed it input; it reports complete lines one by one,
 * with the dot-unstuffed payload and flags for what RFC 5321 forbids.
 */
struct smtp_server__data_line {
  const char *p; /* payload after unstuffing, CRLF excluded */
  size_t n;
  bool end;      /* the line was "." : end of data */
  bool bad;      /* holds NUL, bare CR or bare LF (RFC 5321 §2.3.8) */
  bool too_long; /* longer than SMTP_SERVER__TEXT_LINE_MAX with CRLF */
  bool partial;  /* a fragment of a too long line: the line goes on */
  size_t consumed;
};

/*
 * Scans buf[0..len) for the first line ending in CRLF (only CRLF ends a line;
 * a bare LF or CR is content and makes the line `bad`). NEED_MORE when there
 * is no CRLF yet; the caller keeps the bytes, or, once they exceed the text
 * line limit, calls again with `partial_ok` to get the bytes so far as a
 * too_long fragment (all but the last byte, which may be the CR of a CRLF).
 * `midline` says the previous fragment ended inside a line, so this cannot
 * be a dot line. Never PROTO_ERROR: bad content is flagged, not fatal.
 */
enum smtp_server__parse
smtp_server__data_scan(const char *buf, size_t len, bool midline,
                       bool partial_ok, struct smtp_server__data_line *l);

/* Session states; smtp_server_state.c lists the legal transitions. */
#define SMTP_SERVER__STATE_MAP(X)                                              \
  X(GREETING, "greeting")                                                      \
  X(CONNECTED, "connected")                                                    \
  X(READY, "ready")                                                            \
  X(MAIL, "mail")                                                              \
  X(RCPT, "rcpt")                                                              \
  X(DATA, "data")                                                              \
  X(BDAT, "bdat")                                                              \
  X(CHUNKING, "chunking")                                                      \
  X(QUEUEING, "queueing")                                                      \
  X(TLS_HANDSHAKE, "tls_handshake")                                            \
  X(AUTH, "auth")                                                              \
  X(AUTH_CHECK, "auth_check")                                                  \
  X(CLOSING, "closing")                                                        \
  X(CLOSED, "closed")

enum smtp_server__state {
#define SMTP_SERVER__STATE_ENUM(name, str) SMTP_SERVER__S_##name,
  SMTP_SERVER__STATE_MAP(SMTP_SERVER__STATE_ENUM)
#undef SMTP_SERVER__STATE_ENUM
};

const char *smtp_server__state_name(enum smtp_server__state s);

/* Whether a session may go from `from` to `to` (from != to). Pure; the
 * session consults it on every state change (smtp_server__set_state). */
bool smtp_server__transition_ok(enum smtp_server__state from,
                                enum smtp_server__state to);

#endif
