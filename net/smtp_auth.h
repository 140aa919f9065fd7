/*
 * smtp_auth.h - SMTP AUTH (RFC 4954) for the relay's listeners: the SASL
 * exchanges PLAIN (RFC 4616) and LOGIN (the de-facto form), the users file,
 * password verification through libxcrypt's crypt_rn, and the limiter of
 * failed attempts.
 *
 * Parts and their rules:
 *  - the exchange (smtp_auth_sasl.c) is pure: it turns the client's base64
 *    lines into a user name and a password, bounded in size; it never
 *    verifies anything. It is the fuzz target's entry point;
 *  - the users file (smtp_auth_users.c) is `name:hash` lines, `#` comments
 *    and blank lines; hashes are crypt(3) strings of the methods accepted
 *    (yescrypt, bcrypt $2b$/$2y$, sha512-crypt), checked with
 *    crypt_checksalt; errors give line and column. A loaded table is
 *    immutable and may be read from any thread;
 *  - verification (smtp_auth_crypt.c) is slow on purpose (that is what a
 *    password hash is): callers run it off their event loop;
 *  - the limiter (smtp_auth_limit.c) counts failures per client address and
 *    per user name in a window, with an injected clock; it is locked
 *    inside, so the loops of one listener share it.
 * Secrets: passwords live in caller buffers that the caller wipes
 * (smtp_auth_wipe) once verified; nothing here logs.
 */
#ifndef POSTERN_NET_SMTP_AUTH_H
#define POSTERN_NET_SMTP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 4616 §2 puts no limit on authcid and passwd; we do (hostile input):
 * 255 bytes each, as Cyrus SASL and Dovecot's defaults do. */
#define SMTP_AUTH_NAME_MAX 255
#define SMTP_AUTH_PASS_MAX 255
/* Longest client line of an exchange, CRLF included. RFC 4954 §4 allows
 * 12288 octets; the longest PLAIN message we accept (authzid, authcid and
 * passwd of 255 each, two NULs) is 1024 octets in base64. */
#define SMTP_AUTH_LINE_MAX 1100
/* The longest crypt(3) string accepted in a users file. */
#define SMTP_AUTH_HASH_MAX 255

/* The modes of `listen { auth ... }`. X(NAME, "name") */
#define SMTP_AUTH_MODE_MAP(X)                                                  \
  X(OFF, "off")                                                                \
  X(OPTIONAL, "optional")                                                      \
  X(REQUIRED, "required")

enum smtp_auth_mode {
#define SMTP_AUTH__MODE(name, str) SMTP_AUTH_##name,
  SMTP_AUTH_MODE_MAP(SMTP_AUTH__MODE)
#undef SMTP_AUTH__MODE
};

/* Mechanisms offered. X(NAME, "name") */
#define SMTP_AUTH_MECH_MAP(X)                                                  \
  X(NONE, "")                                                                  \
  X(PLAIN, "PLAIN")                                                            \
  X(LOGIN, "LOGIN")

enum smtp_auth_mech {
#define SMTP_AUTH__MECH(name, str) SMTP_AUTH_MECH_##name,
  SMTP_AUTH_MECH_MAP(SMTP_AUTH__MECH)
#undef SMTP_AUTH__MECH
};

/* The mechanism named by p[0..n) (case-insensitive), or NONE. */
enum smtp_auth_mech smtp_auth_mech_parse(const char *p, size_t n);
const char *smtp_auth_mech_name(enum smtp_auth_mech m);

/* ---- the exchange (pure) --------------------------------------------- */

/* What a step of the exchange asks the server to do. Each result names the
 * RFC 4954 §4/§6 reply it calls for. */
#define SMTP_AUTH_STEP_MAP(X)                                                  \
  X(CONTINUE, "continue")   /* send "334 <challenge>" */                       \
  X(DONE, "done")           /* user and pass are complete: verify */           \
  X(CANCEL, "cancel")       /* "*": 501 5.7.0 */                               \
  X(BAD_B64, "bad_base64")  /* 501 5.5.2 */                                    \
  X(MALFORMED, "malformed") /* decodes but is no valid message: 501 5.5.2 */   \
  X(AUTHZID, "authzid")     /* authzid other than the authcid: 535 5.7.8 */    \
  X(TOO_LONG, "too_long")   /* line over SMTP_AUTH_LINE_MAX: 500 5.5.6 */

enum smtp_auth_step {
#define SMTP_AUTH__STEP(name, str) SMTP_AUTH_STEP_##name,
  SMTP_AUTH_STEP_MAP(SMTP_AUTH__STEP)
#undef SMTP_AUTH__STEP
};

const char *smtp_auth_step_name(enum smtp_auth_step s);

/* One exchange in progress. Zeroed (smtp_auth_wipe) when done. */
struct smtp_auth_exchange {
  enum smtp_auth_mech mech;
  unsigned step; /* LOGIN: 0 wants the user name, 1 the password */
  char user[SMTP_AUTH_NAME_MAX + 1];
  char pass[SMTP_AUTH_PASS_MAX + 1];
};

/*
 * Starts an exchange for `mech` (PLAIN or LOGIN) with the initial response
 * ir[0..irn) of the AUTH command (ir NULL: none; "=" is the empty one, RFC
 * 4954 §4). On CONTINUE *challenge is the base64 text for the 334 reply
 * (static). Any other result but DONE ends the exchange.
 */
enum smtp_auth_step smtp_auth_exchange_begin(struct smtp_auth_exchange *x,
                                             enum smtp_auth_mech mech,
                                             const char *ir, size_t irn,
                                             const char **challenge);

/*
 * The client's answer to a 334: one line without its CRLF, n bytes
 * (n > SMTP_AUTH_LINE_MAX - 2 gives TOO_LONG). "*" cancels (RFC 4954 §4).
 */
enum smtp_auth_step smtp_auth_exchange_line(struct smtp_auth_exchange *x,
                                            const char *line, size_t n,
                                            const char **challenge);

/*
 * Decodes strict base64 (RFC 4648 §4, padded, no whitespace) p[0..n) into
 * out (capacity cap); "=" alone decodes to nothing. Returns 0 with *outlen
 * set, POSTERN_ESYNTAX or POSTERN_ETOOBIG (more than cap bytes).
 */
int smtp_auth_b64_decode(const char *p, size_t n, char *out, size_t cap,
                         size_t *outlen);

/* Overwrites n bytes at p with zeros in a way the compiler keeps. */
void smtp_auth_wipe(void *p, size_t n);

/* ---- the users file --------------------------------------------------- */

struct smtp_auth_users;

/* Where a users file is wrong: 1-based line and column, and why. */
struct smtp_auth_error {
  unsigned line, col;
  char msg[200];
};

/*
 * Parses the users file text buf[0..len): `name:hash` lines, `#` comments,
 * blank lines. Names are 1..SMTP_AUTH_NAME_MAX bytes of printable ASCII
 * or UTF-8, without ':'; each name at most once. Returns 0 and *out, or
 * POSTERN_ECONFIG with *err filled (the first error), or POSTERN_ENOMEM.
 */
int smtp_auth_users_parse(const char *buf, size_t len,
                          struct smtp_auth_users **out,
                          struct smtp_auth_error *err);

/* Reads and parses the file at path (at most 16 MiB). An unreadable file
 * is POSTERN_EIO (or POSTERN_ENOENT, POSTERN_EPERM) with err->line 0 and
 * the reason in err->msg. */
int smtp_auth_users_load(const char *path, struct smtp_auth_users **out,
                         struct smtp_auth_error *err);

void smtp_auth_users_free(struct smtp_auth_users *u);
size_t smtp_auth_users_count(const struct smtp_auth_users *u);

/* The hash stored for `name`, or NULL when there is no such user. */
const char *smtp_auth_users_hash(const struct smtp_auth_users *u,
                                 const char *name);

/* A hash of the same method and cost as the table's entries, that no
 * password matches in practice: an unknown user is verified against it so
 * that the reply takes as long as for a known one (no user name oracle). */
const char *smtp_auth_users_dummy(const struct smtp_auth_users *u);

/*
 * Whether `hash` is a crypt(3) string this module accepts (see above).
 * NULL or a static reason ("unknown or weak hash method ...").
 */
const char *smtp_auth_hash_refusal(const char *hash, size_t n);

/* The crypt(3) prefix of the method named `name` ("yescrypt", "bcrypt",
 * "sha512-crypt") that smtp_auth_hash_password makes, or NULL. */
const char *smtp_auth_method_prefix(const char *name);
/* Whether smtp_auth_hash_password makes hashes with this prefix. */
bool smtp_auth_method_makes(const char *prefix);

/* ---- verification and hashing (libxcrypt) ----------------------------- */

/* Whether `pass` matches `hash` (crypt_rn, compared in constant time).
 * Slow on purpose: never on an event loop. Thread-safe. */
bool smtp_auth_verify(const char *pass, const char *hash);

/*
 * Hashes `pass` with a fresh salt from crypt_gensalt_rn (prefix "$y$",
 * "$2b$" or "$6$"; NULL: yescrypt) at libxcrypt's default cost into out
 * (capacity cap, 384 is always enough). Returns 0, POSTERN_EINVAL (unknown
 * prefix) or POSTERN_EIO.
 */
int smtp_auth_hash_password(const char *pass, const char *prefix, char *out,
                            size_t cap);

/* ---- the limiter of failures ------------------------------------------ */

struct smtp_auth_limit_opts {
  /* Failures of one client address within `window_ms` before its attempts
   * are delayed, and before they are refused (421, the session closes). */
  unsigned addr_free, addr_refuse;
  /* Failures for one user name before its attempts are delayed. A name is
   * never refused: that would let anyone lock a user out. */
  unsigned user_free;
  uint64_t window_ms;
  /* The first delay; each further failure doubles it, up to max. */
  uint64_t delay_ms, max_delay_ms;
  /* Addresses and names tracked (each); the oldest goes when full. */
  unsigned max_entries;
};

/* The defaults: 3 and 10 failures per address, 5 per name, in 15 minutes;
 * 500 ms doubling up to 8 s; 8192 entries. */
void smtp_auth_limit_defaults(struct smtp_auth_limit_opts *o);

enum smtp_auth_verdict {
  SMTP_AUTH_ALLOW,  /* go ahead */
  SMTP_AUTH_DELAY,  /* wait *delay_ms, then go ahead */
  SMTP_AUTH_REFUSE, /* too many failures from this address */
};

struct smtp_auth_limit;

/* Errors: POSTERN_ENOMEM. `o` is copied. */
int smtp_auth_limit_new(const struct smtp_auth_limit_opts *o,
                        struct smtp_auth_limit **out);
void smtp_auth_limit_free(struct smtp_auth_limit *l);

/*
 * What to do with an attempt from `addr` for `user` (NULL: not known yet)
 * at now_ms. Any thread.
 */
enum smtp_auth_verdict smtp_auth_limit_check(struct smtp_auth_limit *l,
                                             const char *addr, const char *user,
                                             uint64_t now_ms,
                                             uint64_t *delay_ms);

/* Counts a failure from `addr` for `user` (NULL: no name, e.g. a malformed
 * message). Any thread. */
void smtp_auth_limit_fail(struct smtp_auth_limit *l, const char *addr,
                          const char *user, uint64_t now_ms);

#endif
