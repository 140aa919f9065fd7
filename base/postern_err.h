/*
 * postern_err.h - the one table of Postern's error codes.
 *
 * Every function in Postern returns 0 on success or a negative code from this
 * table. Codes, their names and their messages are generated from the single
 * X-macro POSTERN_ERRNO_MAP, as libuv does with UV_ERRNO_MAP, so that a name
 * table can never drift from the enum.
 *
 * Mail outcomes (a remote 4xx, a policy deferral) are not errors: they are
 * delivery results carrying an enhanced status code. These codes describe
 * what went wrong inside Postern or with its inputs.
 */
#ifndef POSTERN_ERR_H
#define POSTERN_ERR_H

/* X(NAME, "message") */
#define POSTERN_ERRNO_MAP(X)                                                   \
  X(NOMEM, "out of memory")                                                    \
  X(INVAL, "invalid argument")                                                 \
  X(IO, "input/output error")                                                  \
  X(NOENT, "no such entry")                                                    \
  X(EXIST, "entry already exists")                                             \
  X(NOSPC, "no space left on device")                                          \
  X(QFULL, "queue full")                                                       \
  X(QCORRUPT, "queue database is corrupt")                                     \
  X(QLOCKED, "queue is locked by an incompatible process")                     \
  X(CONFIG, "configuration error")                                             \
  X(SYNTAX, "syntax error")                                                    \
  X(RANGE, "value out of range")                                               \
  X(TOOBIG, "too large")                                                       \
  X(PROTO, "protocol error")                                                   \
  X(TIMEOUT, "timed out")                                                      \
  X(CANCELED, "operation canceled")                                            \
  X(CLOSED, "connection closed")                                               \
  X(CONNREFUSED, "connection refused")                                         \
  X(NETUNREACH, "network unreachable")                                         \
  X(ADDRINUSE, "address already in use")                                       \
  X(DNS_NXDOMAIN, "DNS name does not exist")                                   \
  X(DNS_NODATA, "DNS name has no records of that type")                        \
  X(DNS_TEMPFAIL, "DNS temporary failure")                                     \
  X(DNS_MALFORMED, "malformed DNS answer")                                     \
  X(TLS, "TLS failure")                                                        \
  X(TLS_VERIFY, "TLS certificate verification failed")                         \
  X(HTTP, "HTTP failure")                                                      \
  X(PERM, "permission denied")                                                 \
  X(BUSY, "resource busy")                                                     \
  X(AGAIN, "try again")                                                        \
  X(STATE, "operation not allowed in this state")                              \
  X(UNSUPPORTED, "not supported")                                              \
  X(INTERNAL, "internal error")                                                \
  X(REDIS, "Redis answered an error")

/* Positions in the table; used only to number the codes below. */
enum postern__err_index {
#define POSTERN__ERR_IDX(name, msg) POSTERN__EIDX_##name,
  POSTERN_ERRNO_MAP(POSTERN__ERR_IDX)
#undef POSTERN__ERR_IDX
      POSTERN__ERR_COUNT
};

/* The codes: POSTERN_ENOMEM == -1, POSTERN_EINVAL == -2, ... */
enum postern_err {
  POSTERN_OK = 0,
#define POSTERN__ERR_DEF(name, msg)                                            \
  POSTERN_E##name = -(1 + POSTERN__EIDX_##name),
  POSTERN_ERRNO_MAP(POSTERN__ERR_DEF)
#undef POSTERN__ERR_DEF
};

/*
 * Returns the human-readable message for code `err` ("queue full").
 * Unknown codes yield "unknown error". The string is static; never free it.
 */
const char *postern_strerror(int err);

/*
 * Returns the code's name without prefix ("QFULL"), for logs and tests;
 * "OK" for 0 and "UNKNOWN" for codes outside the table. Static string.
 */
const char *postern_err_name(int err);

/*
 * Maps a positive errno value (ENOSPC, ECONNREFUSED, ...) to the closest
 * Postern code. Never returns 0: unmapped errno values become POSTERN_EIO.
 */
int postern_err_from_errno(int errnum);

#endif
