/*
 * smtp_server_state.c - the server session's states (smtp_server_internal.h)
 * and the transitions between them that the protocol allows. Pure: tables
 * only; smtp_server__set_state() (smtp_server_session.c) consults
 * smtp_server__transition_ok() on every change and logs an illegal one at
 * error level.
 */
#include "net/smtp_server_internal.h"

static const char *const state_names[] = {
#define STATE_NAME(name, str) str,
    SMTP_SERVER__STATE_MAP(STATE_NAME)
#undef STATE_NAME
};

const char *smtp_server__state_name(enum smtp_server__state s) {
  if ((unsigned)s < sizeof state_names / sizeof state_names[0])
    return state_names[s];
  return "?";
}

#define S(name) (1u << SMTP_SERVER__S_##name)
/* Every state but CLOSED may end: QUIT, timeout, limits, errors, shutdown,
 * the client gone. */
#define END S(CLOSING)

/* clang-format off */
/* legal[from]: the states `from` may go to, and why. */
static const unsigned legal[] = {
  /* greeting sent (after greet_delay); refused (accept_from, max_sessions)
   * or an early talker: CLOSING */
  [SMTP_SERVER__S_GREETING] = S(CONNECTED) | END,
  /* EHLO/HELO accepted */
  [SMTP_SERVER__S_CONNECTED] = S(READY) | END,
  /* MAIL accepted; STARTTLS answered 220 (only after EHLO, outside a
   * transaction); AUTH answered 334 (RFC 4954 §4), or its initial
   * response complete: being checked */
  [SMTP_SERVER__S_READY] = S(MAIL) | S(TLS_HANDSHAKE) | S(AUTH) |
                           S(AUTH_CHECK) | END,
  /* first RCPT accepted; RSET, EHLO/HELO */
  [SMTP_SERVER__S_MAIL] = S(RCPT) | S(READY) | END,
  /* DATA answered 354; BDAT accepted: reading its chunk (RFC 3030); RSET,
   * EHLO/HELO, an oversize BDAT */
  [SMTP_SERVER__S_RCPT] = S(DATA) | S(BDAT) | S(READY) | END,
  /* final "." of an acceptable message: handed over; of a refused one
   * (size, line length, content) */
  [SMTP_SERVER__S_DATA] = S(QUEUEING) | S(READY) | END,
  /* chunk read, not LAST: 250, more BDAT may come; LAST chunk read: handed
   * over, or refused (content) */
  [SMTP_SERVER__S_BDAT] = S(CHUNKING) | S(QUEUEING) | S(READY) | END,
  /* the next BDAT; RSET, EHLO/HELO, an oversize BDAT */
  [SMTP_SERVER__S_CHUNKING] = S(BDAT) | S(READY) | END,
  /* txn_done's reply sent */
  [SMTP_SERVER__S_QUEUEING] = S(READY) | END,
  /* AUTH: the last response came: being checked; "*", bad base64, a
   * malformed message: READY with a 501 */
  [SMTP_SERVER__S_AUTH] = S(AUTH_CHECK) | S(READY) | END,
  /* the limiter's delay and crypt_rn are over: 235 or 535 */
  [SMTP_SERVER__S_AUTH_CHECK] = S(READY) | END,
  /* handshake done: RFC 3207 §4.2, all is forgotten, EHLO again */
  [SMTP_SERVER__S_TLS_HANDSHAKE] = S(CONNECTED) | END,
  /* both handles closed */
  [SMTP_SERVER__S_CLOSING] = S(CLOSED),
  [SMTP_SERVER__S_CLOSED] = 0,
};
/* clang-format on */

bool smtp_server__transition_ok(enum smtp_server__state from,
                                enum smtp_server__state to) {
  if ((unsigned)from >= sizeof legal / sizeof legal[0] ||
      (unsigned)to >= sizeof legal / sizeof legal[0])
    return false;
  return (legal[from] & (1u << to)) != 0;
}
