/*
 * net/tls_internal.h - what the net/tls*.c files share: the context and
 * connection objects and the calls between the files. Not for other
 * modules (net/tls.h is the interface).
 *
 *   tls.c          contexts, connections, handshake, reading and writing
 *   tls_session.c  the client's session cache (resumption) and its keys
 *   tls_verify.c   the client's certificate verdicts: PKIX and its cache
 */
#ifndef NET_TLS_INTERNAL_H
#define NET_TLS_INTERNAL_H

#include "net/tls.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <openssl/sha.h>
#include <openssl/ssl.h>

struct postern_htab;

struct tls_session_entry {
  char *key;
  SSL_SESSION *sess;
  uint64_t stamp; /* insertion order, for eviction of the oldest */
};

/* One remembered PKIX verdict (see tls_ctx_pkix_stats in tls.h). */
struct pkix_entry {
  unsigned char key[SHA256_DIGEST_LENGTH];
  time_t until;
  bool used, pkix_ok, name_ok, expired;
  char error[TLS_ERROR_MAX];
};

struct tls_ctx {
  SSL_CTX *ssl_ctx;
  bool server;
  pthread_mutex_t lock; /* guards the session cache below */
  struct tls_session_entry *cache;
  size_t cache_len, cache_cap;
  uint64_t stamp;
  /* PKIX verdicts: a ring of entries, looked up through the table. */
  pthread_mutex_t pkix_lock;
  struct postern_htab *pkix;
  struct pkix_entry *pkix_ring; /* TLS_PKIX_CACHE_MAX, allocated on use */
  size_t pkix_next;
  struct tls_pkix_stats pkix_stats;
};

enum tls_conn_state {
  TLS_CONN_NEW,
  TLS_CONN_HANDSHAKE,
  TLS_CONN_OPEN,
  TLS_CONN_FAILED,
};

struct tls_conn {
  struct tls_ctx *ctx;
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by ssl */
  uv_stream_t *stream;
  enum tls_conn_state state;
  tls_handshake_cb hs_cb;
  void *hs_arg;
  char *server_name; /* client: SNI and verification name, no final dot */
  char *session_key;
  bool verified;  /* verify below is filled */
  bool skip_pkix; /* tls_conn_skip_pkix */
  struct tls_verify verify;
  char error[TLS_ERROR_MAX];
};

struct tls_write_req {
  uv_write_t req;
  struct tls_conn *t;
  tls_write_cb cb;
  void *arg;
  size_t len;
  char data[];
};

/* tls_session.c: BoringSSL's new-session callback for client contexts
 * (stores the session under the connection's key), and the session to
 * offer for `key` (a new reference, or NULL). */
int tls__new_session_cb(SSL *ssl, SSL_SESSION *sess);
SSL_SESSION *tls__session_lookup(struct tls_ctx *ctx, const char *key);

/* tls_verify.c: fills t->verify once a client handshake completed. */
void tls__verify_peer(struct tls_conn *t);

#endif
