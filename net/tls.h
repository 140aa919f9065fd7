/*
 * net/tls.h - TLS for Postern's SMTP sessions: BoringSSL on libuv streams.
 *
 * Two objects:
 *
 *  - struct tls_ctx: one per role (server or client) and configuration, made
 *    once at startup and shared by every worker loop (it is thread-safe: the
 *    BoringSSL SSL_CTX is, and the client's session cache has its own lock).
 *    Freed with tls_ctx_free() after every tls_conn made from it is freed.
 *
 *  - struct tls_conn: one per TCP connection, owned by one loop thread. It
 *    does NOT own the stream and does not read from it: the owner keeps its
 *    own uv_read_start() and, once TLS is on, passes every ciphertext chunk it
 *    reads to tls_conn_feed() and pulls plaintext with tls_conn_read().
 *    Writes go through tls_conn_write(), which encrypts and uv_write()s the
 *    records on the stream. BoringSSL talks to two memory BIOs only, so it
 *    never blocks and never touches the socket.
 *
 * Typical client use (STARTTLS, RFC 3207):
 *     tls_session_key(&(struct tls_session_id){"mx.example.org", 25}, key,
 * cap); tls_conn_new(&t, ctx, stream, "mx.example.org", key);
 *     tls_conn_handshake(t, on_hs, arg);     // ClientHello is written now
 *     read_cb: tls_conn_feed(t, buf, n);     // may call on_hs(t, status, arg)
 *              while ((n = tls_conn_read(t, out, cap)) > 0) consume(out, n);
 *     on_hs(status == 0): tls_conn_peer_verify(t, &v) says what the
 *              certificate proved; the caller (policy) decides what is enough.
 *     close: tls_conn_shutdown(t) (optional close_notify), uv_close(stream),
 *            tls_conn_free(t) in the stream's close_cb.
 *
 * Verification (client): the handshake never fails because of the peer's
 * certificate. After it completes, tls_conn_peer_verify() reports separately
 * whether the chain leads to a root in ca_file (PKIX) and whether the leaf
 * matches the verification name (an RFC 6125 DNS-ID in subjectAltName,
 * never the subject CN, RFC 8461 §4.2; a wildcard only as the whole
 * left-most label; BoringSSL does no IP-address matching here), with a text
 * for logs. The presented chain is available as DER so that a DANE matcher
 * (RFC 7672) can decide "authenticated" by itself instead of PKIX.
 *
 * Writes use uv_write(): the process must ignore SIGPIPE.
 *
 * Errors: functions return 0 or a negative POSTERN_E* code (postern_err.h).
 * POSTERN_ETLS means the TLS layer failed; tls_conn_error() then holds the
 * reason ("handshake: peer alert handshake failure", ...).
 */
#ifndef POSTERN_NET_TLS_H
#define POSTERN_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

/* Where roots come from when `tls { ca_file }` is not set. */
#define TLS_DEFAULT_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

/* Longest text kept for an error or verification failure. */
#define TLS_ERROR_MAX 256

struct tls_ctx;
struct tls_conn;

struct tls_ctx_opts {
  /* Lowest protocol version: 0 means TLS 1.2 (0x0303). TLS1_3_VERSION
   * (0x0304) is also accepted; anything below 1.2 is refused (EINVAL). */
  uint16_t min_version;
  /* Client: how many sessions (one per tls_session_key) the cache keeps
   * (0 = 1024). Oldest entries are evicted first. Ignored for servers. */
  size_t session_cache_size;
};

/*
 * Server context from a PEM certificate chain (leaf first) and its PEM
 * private key. `opts` may be NULL. Errors: POSTERN_EINVAL (bad arguments),
 * POSTERN_ECONFIG (file unreadable, key does not match the certificate),
 * POSTERN_ENOMEM. `errbuf` (may be NULL, `errlen` bytes) receives a
 * human-readable reason on failure.
 */
int tls_ctx_new_server(struct tls_ctx **out, const char *cert_file,
                       const char *key_file, const struct tls_ctx_opts *opts,
                       char *errbuf, size_t errlen);

/*
 * Client context trusting the PEM roots in `ca_file` (NULL means
 * TLS_DEFAULT_CA_FILE). Errors as for tls_ctx_new_server.
 */
int tls_ctx_new_client(struct tls_ctx **out, const char *ca_file,
                       const struct tls_ctx_opts *opts, char *errbuf,
                       size_t errlen);

/*
 * Client contexts: presents this certificate chain (PEM, leaf first) and
 * key when the server asks for one (a Redis with tls-auth-clients). Call
 * before any connection is made. Errors: POSTERN_EINVAL (a server context,
 * NULL files), POSTERN_ECONFIG (unreadable, or the key does not match;
 * `errbuf` says which).
 */
int tls_ctx_use_client_cert(struct tls_ctx *ctx, const char *cert_file,
                            const char *key_file, char *errbuf, size_t errlen);

/* Frees the context (NULL is fine). Every tls_conn made from it must be
 * freed first. */
void tls_ctx_free(struct tls_ctx *ctx);

/* Number of sessions currently in a client context's resumption cache. */
size_t tls_ctx_session_count(struct tls_ctx *ctx);

/*
 * PKIX verdicts: a client context remembers, for TLS_PKIX_CACHE_TTL
 * seconds (never past the leaf's notAfter), the verdict for a chain and
 * verification name, so the same MX certificate is not verified again on
 * every connection. Keyed by a SHA-256 of the name and every certificate
 * of the chain: a different chain is always verified. At most
 * TLS_PKIX_CACHE_MAX verdicts, the oldest replaced first. Counters since
 * the context was made; thread-safe.
 */
#define TLS_PKIX_CACHE_TTL 600
#define TLS_PKIX_CACHE_MAX 4096
struct tls_pkix_stats {
  uint64_t verified; /* chains run through the X509 verifier */
  uint64_t cached;   /* verdicts taken from the cache */
  uint64_t skipped;  /* tls_conn_skip_pkix: not checked at all */
};
void tls_ctx_pkix_stats(struct tls_ctx *ctx, struct tls_pkix_stats *out);

/*
 * What the verdict on a server's certificate depends on besides the chain
 * itself. A resumed session carries the chain of the handshake that made
 * it, so a session may only be offered where the same checks would judge
 * that chain the same way: the cache key is made of all of this.
 */
struct tls_session_id {
  const char *name; /* the name the certificate is checked against (MX) */
  uint16_t port;
  const char *sni; /* the server name sent; NULL or "": name */
  /* What governs authentication, e.g. "dane:<hex digest of the TLSA
   * RRset and its base domain>"; NULL or "": PKIX. */
  const char *policy;
};

/* Longest key tls_session_key() writes, with its NUL. */
#define TLS_SESSION_KEY_MAX 640

/*
 * Writes the session cache key for `id` into `out` (`cap` bytes): names
 * lower-cased and without a trailing dot ("MX.Example.org." and
 * "mx.example.org" are one host), the SNI spelled out even when it is the
 * name, PKIX written "pkix". Pure. Errors: POSTERN_EINVAL (NULL or empty
 * name; a '|', space or control character in a field, which could make
 * two ids one key), POSTERN_ERANGE (does not fit `cap`).
 */
int tls_session_key(const struct tls_session_id *id, char *out, size_t cap);

/* Removes the session cached under `key`, if any. Thread-safe. */
void tls_ctx_session_drop(struct tls_ctx *ctx, const char *key);

/*
 * A connection on `stream` (borrowed: it must outlive the tls_conn).
 *  - client contexts: `server_name` is the name verified and, unless
 *    tls_conn_set_sni() says otherwise, the SNI (a trailing dot is
 *    ignored); `session_key` (from tls_session_key(),
 *    NULL = no resumption) selects the cached session to offer and where a
 *    new one is stored.
 *  - server contexts: both must be NULL.
 * The strings are copied. Errors: POSTERN_EINVAL, POSTERN_ENOMEM.
 */
int tls_conn_new(struct tls_conn **out, struct tls_ctx *ctx,
                 uv_stream_t *stream, const char *server_name,
                 const char *session_key);

/*
 * Client connections, before tls_conn_handshake(): the peer's chain is not
 * checked against the roots at all (tls_verify then says pkix_ok and
 * name_ok false, "not checked: DANE governs this host"). For hosts whose
 * usable TLSA records alone authenticate them (RFC 7672 §3, RFC 8461 §2),
 * where a PKIX verdict counts for nothing. Errors: POSTERN_EINVAL (server
 * connection), POSTERN_ESTATE (handshake started).
 */
int tls_conn_skip_pkix(struct tls_conn *t);

/*
 * Client connections, before tls_conn_handshake(): sends `sni` as the
 * server name (SNI) instead of the verification name given to
 * tls_conn_new(), which stays the name the certificate is checked against.
 * Under DANE the SNI is the TLSA base domain (RFC 7672 §8.1) while PKIX
 * checks the MX host name. A trailing dot is ignored; the string is
 * copied. Errors: POSTERN_EINVAL (server connection, empty or over-long
 * name), POSTERN_ESTATE (handshake started), POSTERN_ENOMEM.
 */
int tls_conn_set_sni(struct tls_conn *t, const char *sni);

/*
 * Frees the connection. Call it from the stream's close_cb (libuv has then
 * run every pending write callback) or before any tls_conn_write() was
 * made. NULL is fine.
 */
void tls_conn_free(struct tls_conn *t);

/* status: 0 on success, or POSTERN_ETLS / POSTERN_ECLOSED (peer closed
 * during the handshake); see tls_conn_error() for the reason. */
typedef void (*tls_handshake_cb)(struct tls_conn *t, int status, void *arg);

/*
 * Starts the handshake. A client writes its ClientHello now; a server waits
 * for the first tls_conn_feed(). `cb` is called exactly once, always from
 * inside a later tls_conn_feed() (never from this call), unless the
 * connection is freed first. Errors: POSTERN_ESTATE (already started),
 * POSTERN_ETLS, or a libuv write failure mapped to a POSTERN_E* code.
 */
int tls_conn_handshake(struct tls_conn *t, tls_handshake_cb cb, void *arg);

/*
 * Hands `len` bytes of ciphertext read from the stream to TLS. During the
 * handshake this advances it (writing our flights) and may call the
 * handshake callback; afterwards it only buffers. Returns 0, or
 * POSTERN_ETLS after a fatal handshake error that has been reported to the
 * handshake callback too.
 */
int tls_conn_feed(struct tls_conn *t, const char *buf, size_t len);

/*
 * Decrypts buffered input into `buf` (capacity `cap` > 0). Returns the
 * number of plaintext bytes (> 0), 0 when more ciphertext is needed,
 * POSTERN_ECLOSED once the peer sent close_notify, or POSTERN_ETLS on a
 * fatal error (tls_conn_error() says why). Post-handshake messages (TLS
 * 1.3 session tickets) are consumed here, so keep calling it until 0.
 */
ssize_t tls_conn_read(struct tls_conn *t, char *buf, size_t cap);

typedef void (*tls_write_cb)(struct tls_conn *t, int status, void *arg);

/*
 * Encrypts the buffers and writes the records to the stream. The plaintext
 * is copied (encrypted) before this returns, so `bufs` may be reused at
 * once. `cb` (may be NULL) runs when the records were written, with 0 or
 * a negative POSTERN_E* code; never from inside this call. Errors:
 * POSTERN_ESTATE (handshake not done or connection failed), POSTERN_ETLS,
 * POSTERN_ENOMEM, or a mapped libuv error (the callback then never runs).
 */
int tls_conn_write(struct tls_conn *t, const uv_buf_t *bufs, unsigned nbufs,
                   tls_write_cb cb, void *arg);

/*
 * Queues our close_notify alert (best effort; we do not wait for the
 * peer's, as is usual for SMTP). Returns 0 or a negative code.
 */
int tls_conn_shutdown(struct tls_conn *t);

/* The last failure reason, "" if none. Valid until the next call on t. */
const char *tls_conn_error(const struct tls_conn *t);

/*
 * Client connections: the policy rejected this session. Drops the session
 * cached under this connection's key (the one offered, or one this
 * handshake stored) and stores none this connection still receives (TLS
 * 1.3 tickets arrive after the handshake), so that a session whose policy
 * check failed is never offered again. Harmless on any connection.
 */
void tls_conn_forget_session(struct tls_conn *t);

/* After a successful handshake: "TLSv1.3", cipher name, whether the session
 * was resumed. Static strings. */
const char *tls_conn_version(const struct tls_conn *t);
const char *tls_conn_cipher(const struct tls_conn *t);
bool tls_conn_session_reused(const struct tls_conn *t);

/* What the server's certificate proved, computed once after every
 * handshake (client connections only), resumed or not: a resumed session
 * is judged on the chain it carries, which is also what
 * tls_conn_peer_cert_der() returns, so the caller's policy check runs on
 * every session. */
struct tls_verify {
  bool pkix_ok;  /* chain leads to a ca_file root, dates and usage valid */
  bool name_ok;  /* a DNS-ID of the leaf matches server_name (RFC 6125) */
  bool has_cert; /* the peer presented a certificate at all */
  bool expired;  /* PKIX failed because a certificate has expired */
  /* Empty when both are true; otherwise why, e.g. "self-signed
   * certificate" or "certificate name does not match mx.example.org". */
  char error[TLS_ERROR_MAX];
};

/*
 * Copies the verification result into *out. Errors: POSTERN_ESTATE before
 * the handshake completed or on a server connection.
 */
int tls_conn_peer_verify(const struct tls_conn *t, struct tls_verify *out);

/* Number of certificates the peer presented (leaf first), 0 if none. */
size_t tls_conn_peer_chain_len(const struct tls_conn *t);

/*
 * Certificate `i` of the presented chain (0 = leaf) in DER. *der points
 * into the connection; it stays valid until tls_conn_free(). Errors:
 * POSTERN_ERANGE (no such index), POSTERN_ESTATE (no handshake yet).
 */
int tls_conn_peer_cert_der(const struct tls_conn *t, size_t i,
                           const uint8_t **der, size_t *len);

#endif
