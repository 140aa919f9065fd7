/*
 * dsn.h - delivery status notifications (RFC 3464, RFC 3461, RFC 6522), and
 * their internationalized form (RFC 6533): a report on a message with
 * UTF-8 in an address it reports or in its header section is a global one
 * (multipart/report; report-type=global-delivery-status, the utf-8
 * address type for UTF-8 addresses, message/global or
 * message/global-headers for what is returned), with its UTF-8 intact.
 *
 * dsn_build() turns a message's failed (or delayed) recipients into one
 * multipart/report message for the envelope sender. It is a pure function:
 * it reads only its input and the clock value it is given, so tests and the
 * fuzz target can drive it with arbitrary data, and both the relay and
 * `qtool bounce` use it.
 *
 * Every string that came from a remote server or a client (diagnostics,
 * addresses, ENVID) is hostile: the builder folds CR, LF and other control
 * bytes to spaces, writes bytes that are not well-formed UTF-8 (any 8-bit
 * byte outside a global report) as '?', and bounds its lines, so input can
 * never add a header or a MIME part.
 */
#ifndef POSTERN_ENGINE_DSN_H
#define POSTERN_ENGINE_DSN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum dsn_kind {
  DSN_FAILURE, /* "failed": the recipients bounced */
  DSN_DELAY,   /* "delayed": a delay warning, delivery is still tried */
};

enum dsn_ret {
  DSN_RET_DEFAULT, /* no RET= given: return the headers only */
  DSN_RET_HDRS,
  DSN_RET_FULL,
};

struct dsn_rcpt {
  const char *addr;       /* final recipient, without <> */
  const char *orcpt;      /* ORCPT= as given ("rfc822;a@b"), or NULL */
  const char *status;     /* enhanced status, "5.1.1" */
  const char *remote_mta; /* MX host name that answered, or NULL */
  const char *diagnostic; /* remote reply "550 5.1.1 no such user", or NULL */
  time_t last_attempt;    /* 0 when never attempted */
};

struct dsn_input {
  enum dsn_kind kind;
  const char *reporting_mta; /* our hostname */
  const char *sender;        /* envelope sender the DSN goes to (non-empty) */
  const char *queue_id;      /* the original message's queue id */
  const char *envid;         /* ENVID= as given, or NULL */
  enum dsn_ret ret;
  time_t arrival; /* when the original message was accepted */
  time_t now;     /* Date: of the report */
  const char
      *boundary_seed; /* unique text for the MIME boundary, e.g. new queue id */
  const uint8_t *original; /* the original message (CRLF lines) */
  size_t original_len;
  size_t full_limit; /* RET=FULL returns at most this many bytes;
                        larger messages return headers only */
  const struct dsn_rcpt *rcpts;
  size_t nrcpts; /* at least 1 */
};

/*
 * Builds the report. On success *out is a malloc'd message (headers and
 * body, CRLF lines, not dot-stuffed) of *outlen bytes, owned by the caller.
 * Errors: POSTERN_EINVAL when a required field is missing (no sender, no
 * recipients), POSTERN_ENOMEM.
 */
int dsn_build(const struct dsn_input *in, char **out, size_t *outlen);

/* Parses RET= ("FULL"/"HDRS", case-insensitive). Returns 0 or POSTERN_EINVAL.
 */
int dsn_ret_parse(const char *s, enum dsn_ret *out);

/* ---- Reports for queued messages (the relay and `qtool bounce`) ---- */

#include <stdbool.h>

#include "queue/queue.h"

/* One recipient outcome of a queued message. Strings are borrowed. */
struct dsn_note {
  unsigned index;             /* into env->rcpts */
  enum queue_dsn_event event; /* BOUNCED or DELAYED */
  const char *status, *reply; /* reply may be "" */
  const char *mx;             /* remote MTA, "" when none answered */
  uint64_t when_ms;
};

/* RFC 3461 §4.1: whether a recipient's NOTIFY asks for a report of `ev`.
 * NEVER asks for none; a list asks for what it names; no NOTIFY means
 * failures and delays. */
bool dsn_notify_wants(unsigned notify, enum queue_dsn_event ev);

/*
 * Builds the one report for the notes of kind `ev` (BOUNCED or DELAYED)
 * that the recipients' NOTIFY asks for. *nwanted gets their number.
 * Returns 0 with a malloc'd *out; POSTERN_ENOENT when no note is wanted;
 * POSTERN_ESTATE when the sender is null (RFC 3464 §2: never report on a
 * report; the caller logs a double bounce); or dsn_build's errors.
 */
int dsn_build_for(const struct queue_env *env, const void *body,
                  size_t body_len, const struct dsn_note *notes, size_t n,
                  enum queue_dsn_event ev, const char *hostname,
                  uint64_t now_ms, const char *dsn_id, char **out,
                  size_t *outlen, size_t *nwanted);

#endif
