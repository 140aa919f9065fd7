/*
 * net/tls.c - BoringSSL over libuv streams through memory BIOs.
 *
 * Each tls_conn has an SSL object whose read BIO receives the ciphertext the
 * owner read from the socket (tls_conn_feed) and whose write BIO collects
 * the records BoringSSL produced; after every SSL call we drain the write
 * BIO into one uv_write() request that owns its bytes. Memory BIOs never
 * block, so SSL_* calls return WANT_READ instead of waiting.
 *
 * Invariants:
 *  - a tls_conn is used by one loop thread only; a tls_ctx is shared by all
 *    threads (SSL_CTX and X509_STORE are thread-safe; the session cache has
 *    its own mutex);
 *  - client certificate checks never fail the handshake (verify mode NONE);
 *    they run once when the handshake completes - resumed or not, on the
 *    chain the session carries - and their result is stored for the
 *    caller, who decides (PKIX here, DANE in the policy layer);
 *  - client sessions are cached under a key naming everything that verdict
 *    depends on (tls_session_key); a connection whose session the caller
 *    rejected drops it and stores no later ticket (tls_conn_forget_session);
 *  - the handshake callback runs only from tls_conn_feed(), i.e. from the
 *    owner's read callback, never from the call that started the handshake;
 *  - each write request owns its ciphertext and frees it in its callback;
 *    the owner frees the tls_conn only after the stream's close_cb, when
 *    libuv has completed (or cancelled) every write.
 */
#include "net/tls_internal.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/pool.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "base/postern_err.h"
#include "base/postern_htab.h"
#include "base/postern_log.h"

static void set_err(char *errbuf, size_t errlen, const char *fmt,
                    const char *a) {
  if (errbuf && errlen) {
    snprintf(errbuf, errlen, fmt, a ? a : "");
  }
}

/* Appends the reasons in BoringSSL's (per-thread) error queue to `what`,
 * then empties the queue. */
static void conn_set_error(struct tls_conn *t, const char *what) {
  size_t off = (size_t)snprintf(t->error, sizeof t->error, "%s", what);
  uint32_t e;
  int n = 0;
  while ((e = ERR_get_error()) != 0) {
    if (off >= sizeof t->error - 1 || n++ >= 3) {
      continue;
    }
    const char *reason = ERR_reason_error_string(e);
    const char *lib = ERR_lib_error_string(e);
    int w = snprintf(t->error + off, sizeof t->error - off, "%s%s%s%s",
                     n == 1 ? ": " : "; ", lib ? lib : "", lib ? " " : "",
                     reason ? reason : "unknown");
    if (w > 0) {
      off += (size_t)w;
    }
  }
  if (off >= sizeof t->error) {
    t->error[sizeof t->error - 1] = '\0';
  }
}

/* ---- contexts ------------------------------------------------------------ */

static int ctx_alloc(struct tls_ctx **out, bool server,
                     const struct tls_ctx_opts *opts, char *errbuf,
                     size_t errlen) {
  uint16_t minv =
      opts && opts->min_version ? opts->min_version : TLS1_2_VERSION;
  if (minv != TLS1_2_VERSION && minv != TLS1_3_VERSION) {
    set_err(errbuf, errlen, "%sunsupported minimum TLS version", NULL);
    return POSTERN_EINVAL;
  }
  struct tls_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    return POSTERN_ENOMEM;
  }
  ctx->server = server;
  ctx->ssl_ctx = SSL_CTX_new(TLS_method());
  if (!ctx->ssl_ctx) {
    free(ctx);
    return POSTERN_ENOMEM;
  }
  pthread_mutex_init(&ctx->lock, NULL);
  pthread_mutex_init(&ctx->pkix_lock, NULL);
  SSL_CTX_set_min_proto_version(ctx->ssl_ctx, minv);
  SSL_CTX_set_max_proto_version(ctx->ssl_ctx, TLS1_3_VERSION);
  if (!server) {
    ctx->cache_cap =
        opts && opts->session_cache_size ? opts->session_cache_size : 1024;
    ctx->cache = calloc(ctx->cache_cap, sizeof *ctx->cache);
    if (!ctx->cache) {
      tls_ctx_free(ctx);
      return POSTERN_ENOMEM;
    }
    /* We keep the sessions ourselves, keyed by tls_session_key(), as the
     * internal cache is keyed by session id and useless to a client. */
    SSL_CTX_set_session_cache_mode(
        ctx->ssl_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx->ssl_ctx, tls__new_session_cb);
    SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_NONE, NULL);
  }
  *out = ctx;
  return 0;
}

/* Loads a certificate chain and its key into the context: the server's
 * own, or a client certificate. 0 or POSTERN_ECONFIG with the reason. */
static int ctx_use_cert(struct tls_ctx *ctx, const char *cert_file,
                        const char *key_file, char *errbuf, size_t errlen) {
  int rc = POSTERN_ECONFIG;
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx->ssl_ctx, cert_file) != 1)
    set_err(errbuf, errlen, "cannot load certificate chain from %s", cert_file);
  else if (SSL_CTX_use_PrivateKey_file(ctx->ssl_ctx, key_file,
                                       SSL_FILETYPE_PEM) != 1)
    set_err(errbuf, errlen,
            "cannot load private key from %s, or it does not match the "
            "certificate",
            key_file);
  else if (SSL_CTX_check_private_key(ctx->ssl_ctx) != 1)
    set_err(errbuf, errlen, "private key %s does not match the certificate",
            key_file);
  else
    rc = 0;
  ERR_clear_error();
  return rc;
}

int tls_ctx_new_server(struct tls_ctx **out, const char *cert_file,
                       const char *key_file, const struct tls_ctx_opts *opts,
                       char *errbuf, size_t errlen) {
  if (!out || !cert_file || !key_file) {
    return POSTERN_EINVAL;
  }
  struct tls_ctx *ctx;
  int rc = ctx_alloc(&ctx, true, opts, errbuf, errlen);
  if (rc < 0) {
    return rc;
  }
  rc = ctx_use_cert(ctx, cert_file, key_file, errbuf, errlen);
  if (rc != 0) {
    tls_ctx_free(ctx);
    return rc;
  }
  *out = ctx;
  return 0;
}

int tls_ctx_use_client_cert(struct tls_ctx *ctx, const char *cert_file,
                            const char *key_file, char *errbuf, size_t errlen) {
  if (!ctx || ctx->server || !cert_file || !key_file)
    return POSTERN_EINVAL;
  return ctx_use_cert(ctx, cert_file, key_file, errbuf, errlen);
}

int tls_ctx_new_client(struct tls_ctx **out, const char *ca_file,
                       const struct tls_ctx_opts *opts, char *errbuf,
                       size_t errlen) {
  if (!out) {
    return POSTERN_EINVAL;
  }
  if (!ca_file) {
    ca_file = TLS_DEFAULT_CA_FILE;
  }
  struct tls_ctx *ctx;
  int rc = ctx_alloc(&ctx, false, opts, errbuf, errlen);
  if (rc < 0) {
    return rc;
  }
  ERR_clear_error();
  if (SSL_CTX_load_verify_locations(ctx->ssl_ctx, ca_file, NULL) != 1) {
    ERR_clear_error();
    set_err(errbuf, errlen, "cannot load CA certificates from %s", ca_file);
    tls_ctx_free(ctx);
    return POSTERN_ECONFIG;
  }
  *out = ctx;
  return 0;
}

void tls_ctx_free(struct tls_ctx *ctx) {
  if (!ctx) {
    return;
  }
  for (size_t i = 0; i < ctx->cache_len; i++) {
    free(ctx->cache[i].key);
    SSL_SESSION_free(ctx->cache[i].sess);
  }
  free(ctx->cache);
  SSL_CTX_free(ctx->ssl_ctx);
  pthread_mutex_destroy(&ctx->lock);
  postern_htab_free(ctx->pkix);
  free(ctx->pkix_ring);
  pthread_mutex_destroy(&ctx->pkix_lock);
  free(ctx);
}

/* ---- connections ------------------------------------------------------- */

int tls_conn_new(struct tls_conn **out, struct tls_ctx *ctx,
                 uv_stream_t *stream, const char *server_name,
                 const char *session_key) {
  if (!out || !ctx || !stream) {
    return POSTERN_EINVAL;
  }
  if (ctx->server ? (server_name || session_key) : !server_name) {
    return POSTERN_EINVAL;
  }
  struct tls_conn *t = calloc(1, sizeof *t);
  if (!t) {
    return POSTERN_ENOMEM;
  }
  t->ctx = ctx;
  t->stream = stream;
  if (server_name) {
    size_t n = strlen(server_name);
    if (n > 0 && server_name[n - 1] == '.') {
      n--;
    }
    if (n == 0 || n > 253) {
      free(t);
      return POSTERN_EINVAL;
    }
    t->server_name = strndup(server_name, n);
    if (!t->server_name) {
      goto nomem;
    }
  }
  if (session_key && !(t->session_key = strdup(session_key))) {
    goto nomem;
  }
  t->ssl = SSL_new(ctx->ssl_ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    t->rbio = t->wbio = NULL;
    goto nomem;
  }
  /* An empty read BIO means "no data yet", not end of file. */
  BIO_set_mem_eof_return(t->rbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  SSL_set_app_data(t->ssl, t);
  if (ctx->server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (SSL_set_tlsext_host_name(t->ssl, t->server_name) != 1) {
      goto nomem;
    }
    if (t->session_key) {
      SSL_SESSION *s = tls__session_lookup(ctx, t->session_key);
      if (s) {
        SSL_set_session(t->ssl, s);
        SSL_SESSION_free(s);
      }
    }
  }
  *out = t;
  return 0;
nomem:
  ERR_clear_error();
  tls_conn_free(t);
  return POSTERN_ENOMEM;
}

int tls_conn_skip_pkix(struct tls_conn *t) {
  if (!t || t->ctx->server) {
    return POSTERN_EINVAL;
  }
  if (t->state != TLS_CONN_NEW) {
    return POSTERN_ESTATE;
  }
  t->skip_pkix = true;
  return 0;
}

int tls_conn_set_sni(struct tls_conn *t, const char *sni) {
  if (!t || !sni || t->ctx->server) {
    return POSTERN_EINVAL;
  }
  if (t->state != TLS_CONN_NEW) {
    return POSTERN_ESTATE;
  }
  size_t n = strlen(sni);
  if (n > 0 && sni[n - 1] == '.') {
    n--;
  }
  if (n == 0 || n > 253) {
    return POSTERN_EINVAL;
  }
  char *name = strndup(sni, n);
  if (!name) {
    return POSTERN_ENOMEM;
  }
  int ok = SSL_set_tlsext_host_name(t->ssl, name);
  free(name);
  ERR_clear_error();
  return ok == 1 ? 0 : POSTERN_ENOMEM;
}

void tls_conn_free(struct tls_conn *t) {
  if (!t) {
    return;
  }
  SSL_free(t->ssl);
  free(t->server_name);
  free(t->session_key);
  free(t);
}

static void write_done(uv_write_t *req, int status) {
  struct tls_write_req *w = (struct tls_write_req *)req;
  int rc = status < 0 ? postern_err_from_errno(-status) : 0;
  if (status == UV_ECANCELED) {
    rc = POSTERN_ECANCELED;
  }
  if (w->cb) {
    w->cb(w->t, rc, w->arg);
  }
  free(w);
}

/* Moves whatever BoringSSL wrote into the write BIO onto the stream. When
 * there is nothing to write and `cb` is set, POSTERN_EINTERNAL is returned
 * (callers always have data in that case). */
static int flush_wbio(struct tls_conn *t, tls_write_cb cb, void *arg) {
  size_t pending = BIO_pending(t->wbio);
  if (pending == 0) {
    return cb ? POSTERN_EINTERNAL : 0;
  }
  struct tls_write_req *w = malloc(sizeof *w + pending);
  if (!w) {
    return POSTERN_ENOMEM;
  }
  int n = BIO_read(t->wbio, w->data, (int)pending);
  if (n <= 0 || (size_t)n != pending) {
    free(w);
    return POSTERN_EINTERNAL;
  }
  w->t = t;
  w->cb = cb;
  w->arg = arg;
  w->len = pending;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)pending);
  int rc = uv_write(&w->req, t->stream, &b, 1, write_done);
  if (rc < 0) {
    free(w);
    return postern_err_from_errno(-rc);
  }
  return 0;
}

static int drive_handshake(struct tls_conn *t) {
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
  if (r != 1 && err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
    conn_set_error(t, "handshake failed");
    if (t->error[strlen("handshake failed")] == '\0') {
      snprintf(t->error, sizeof t->error, "handshake failed (error %d)", err);
    }
  }
  /* Flush our flight, or the alert that ends a failed handshake. */
  int frc = flush_wbio(t, NULL, NULL);
  if (r == 1) {
    if (frc < 0) {
      snprintf(t->error, sizeof t->error, "handshake write: %s",
               postern_strerror(frc));
      goto fail;
    }
    t->state = TLS_CONN_OPEN;
    if (!t->ctx->server) {
      tls__verify_peer(t);
    }
    if (t->hs_cb) {
      t->hs_cb(t, 0, t->hs_arg);
    }
    return 0;
  }
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    if (frc < 0) {
      snprintf(t->error, sizeof t->error, "handshake write: %s",
               postern_strerror(frc));
      goto fail;
    }
    return 0;
  }
fail:
  t->state = TLS_CONN_FAILED;
  if (t->hs_cb) {
    t->hs_cb(t, POSTERN_ETLS, t->hs_arg);
  }
  return POSTERN_ETLS;
}

int tls_conn_handshake(struct tls_conn *t, tls_handshake_cb cb, void *arg) {
  if (!t) {
    return POSTERN_EINVAL;
  }
  if (t->state != TLS_CONN_NEW) {
    return POSTERN_ESTATE;
  }
  t->state = TLS_CONN_HANDSHAKE;
  if (t->ctx->server) {
    t->hs_cb = cb;
    t->hs_arg = arg;
    return 0;
  }
  /* Write the ClientHello. The callback is installed only afterwards so it
   * can never run from inside this call. */
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  int err = SSL_get_error(t->ssl, r);
  if (r == 1 || err != SSL_ERROR_WANT_READ) {
    conn_set_error(t, "cannot start handshake");
    t->state = TLS_CONN_FAILED;
    return POSTERN_ETLS;
  }
  int rc = flush_wbio(t, NULL, NULL);
  if (rc < 0) {
    snprintf(t->error, sizeof t->error, "handshake write: %s",
             postern_strerror(rc));
    t->state = TLS_CONN_FAILED;
    return rc;
  }
  t->hs_cb = cb;
  t->hs_arg = arg;
  return 0;
}

int tls_conn_feed(struct tls_conn *t, const char *buf, size_t len) {
  if (t->state == TLS_CONN_FAILED) {
    return POSTERN_ETLS;
  }
  while (len > 0) {
    int chunk = len > INT_MAX ? INT_MAX : (int)len;
    int n = BIO_write(t->rbio, buf, chunk);
    if (n <= 0) {
      snprintf(t->error, sizeof t->error, "out of memory");
      return POSTERN_ENOMEM;
    }
    buf += n;
    len -= (size_t)n;
  }
  if (t->state == TLS_CONN_HANDSHAKE) {
    return drive_handshake(t);
  }
  return 0;
}

ssize_t tls_conn_read(struct tls_conn *t, char *buf, size_t cap) {
  if (t->state == TLS_CONN_FAILED) {
    return POSTERN_ETLS;
  }
  if (t->state != TLS_CONN_OPEN) {
    return 0;
  }
  ERR_clear_error();
  int n = SSL_read(t->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
  int err = n > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, n);
  /* Post-handshake messages may need an answer (KeyUpdate). */
  int frc = flush_wbio(t, NULL, NULL);
  if (n > 0) {
    return n;
  }
  if (err == SSL_ERROR_WANT_READ) {
    return frc < 0 ? frc : 0;
  }
  if (err == SSL_ERROR_ZERO_RETURN) {
    snprintf(t->error, sizeof t->error, "peer sent close_notify");
    return POSTERN_ECLOSED;
  }
  conn_set_error(t, "read failed");
  t->state = TLS_CONN_FAILED;
  return POSTERN_ETLS;
}

int tls_conn_write(struct tls_conn *t, const uv_buf_t *bufs, unsigned nbufs,
                   tls_write_cb cb, void *arg) {
  if (t->state != TLS_CONN_OPEN) {
    return POSTERN_ESTATE;
  }
  size_t total = 0;
  ERR_clear_error();
  for (unsigned i = 0; i < nbufs; i++) {
    const char *p = bufs[i].base;
    size_t left = bufs[i].len;
    total += left;
    while (left > 0) {
      int chunk = left > (1u << 30) ? (1 << 30) : (int)left;
      int n = SSL_write(t->ssl, p, chunk);
      if (n <= 0) {
        conn_set_error(t, "write failed");
        t->state = TLS_CONN_FAILED;
        return POSTERN_ETLS;
      }
      p += n;
      left -= (size_t)n;
    }
  }
  if (total == 0) {
    return POSTERN_EINVAL;
  }
  return flush_wbio(t, cb, arg);
}

int tls_conn_shutdown(struct tls_conn *t) {
  if (t->state != TLS_CONN_OPEN) {
    return POSTERN_ESTATE;
  }
  ERR_clear_error();
  SSL_shutdown(t->ssl);
  ERR_clear_error();
  return flush_wbio(t, NULL, NULL);
}

const char *tls_conn_error(const struct tls_conn *t) {
  return t->error;
}

const char *tls_conn_version(const struct tls_conn *t) {
  return t->state == TLS_CONN_OPEN ? SSL_get_version(t->ssl) : "";
}

const char *tls_conn_cipher(const struct tls_conn *t) {
  if (t->state != TLS_CONN_OPEN) {
    return "";
  }
  const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
  return c ? SSL_CIPHER_get_name(c) : "";
}

bool tls_conn_session_reused(const struct tls_conn *t) {
  return t->state == TLS_CONN_OPEN && SSL_session_reused(t->ssl);
}

int tls_conn_peer_verify(const struct tls_conn *t, struct tls_verify *out) {
  if (!t->verified) {
    return POSTERN_ESTATE;
  }
  *out = t->verify;
  return 0;
}

size_t tls_conn_peer_chain_len(const struct tls_conn *t) {
  if (t->state != TLS_CONN_OPEN) {
    return 0;
  }
  const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(t->ssl);
  return certs ? sk_CRYPTO_BUFFER_num(certs) : 0;
}

int tls_conn_peer_cert_der(const struct tls_conn *t, size_t i,
                           const uint8_t **der, size_t *len) {
  if (t->state != TLS_CONN_OPEN) {
    return POSTERN_ESTATE;
  }
  const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(t->ssl);
  if (!certs || i >= sk_CRYPTO_BUFFER_num(certs)) {
    return POSTERN_ERANGE;
  }
  const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(certs, i);
  *der = CRYPTO_BUFFER_data(b);
  *len = CRYPTO_BUFFER_len(b);
  return 0;
}
