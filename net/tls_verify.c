/*
 * net/tls_verify.c - the client's certificate verdict after a handshake
 * (see tls.h): PKIX to the context's roots and the RFC 6125 name check,
 * remembered per context for a while (the same MX certificate is not
 * verified on every connection), or skipped where DANE governs the host.
 * The verdict never fails a handshake: the caller (policy) decides.
 * The verdict cache is guarded by the context's `pkix_lock`.
 */
#include "net/tls_internal.h"

#include "base/postern_htab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pool.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

void tls_ctx_pkix_stats(struct tls_ctx *ctx, struct tls_pkix_stats *out) {
  pthread_mutex_lock(&ctx->pkix_lock);
  *out = ctx->pkix_stats;
  pthread_mutex_unlock(&ctx->pkix_lock);
}

/* The cache key of the peer's chain as verified against `name`. */
static void pkix_key(const struct tls_conn *t, const char *name,
                     unsigned char key[SHA256_DIGEST_LENGTH]) {
  SHA256_CTX h;
  SHA256_Init(&h);
  SHA256_Update(&h, name, strlen(name) + 1);
  const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(t->ssl);
  for (size_t i = 0; certs && i < sk_CRYPTO_BUFFER_num(certs); i++) {
    const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(certs, i);
    uint64_t len = CRYPTO_BUFFER_len(b);
    SHA256_Update(&h, &len, sizeof len); /* no two chains hash alike */
    SHA256_Update(&h, CRYPTO_BUFFER_data(b), CRYPTO_BUFFER_len(b));
  }
  SHA256_Final(key, &h);
}

/* A remembered verdict for `key`, still valid at `now`, into *v. */
static bool pkix_cached(struct tls_ctx *ctx, const unsigned char *key,
                        time_t now, struct tls_verify *v) {
  bool hit = false;
  pthread_mutex_lock(&ctx->pkix_lock);
  struct pkix_entry *e = ctx->pkix ? postern_htab_get(ctx->pkix, key) : NULL;
  if (e && e->until > now) {
    v->pkix_ok = e->pkix_ok;
    v->name_ok = e->name_ok;
    v->expired = e->expired;
    snprintf(v->error, sizeof v->error, "%s", e->error);
    ctx->pkix_stats.cached++;
    hit = true;
  }
  pthread_mutex_unlock(&ctx->pkix_lock);
  return hit;
}

/* Remembers a verdict until `until` (the oldest entry makes room). Out of
 * memory only means it is not remembered. */
static void pkix_remember(struct tls_ctx *ctx, const unsigned char *key,
                          time_t until, const struct tls_verify *v) {
  pthread_mutex_lock(&ctx->pkix_lock);
  ctx->pkix_stats.verified++;
  if (ctx->pkix == NULL &&
      (postern_htab_new(SHA256_DIGEST_LENGTH, &ctx->pkix) != 0 ||
       (ctx->pkix_ring = calloc(TLS_PKIX_CACHE_MAX, sizeof *ctx->pkix_ring)) ==
           NULL)) {
    postern_htab_free(ctx->pkix);
    ctx->pkix = NULL;
    pthread_mutex_unlock(&ctx->pkix_lock);
    return;
  }
  struct pkix_entry *e = postern_htab_get(ctx->pkix, key);
  if (e == NULL) {
    e = &ctx->pkix_ring[ctx->pkix_next];
    ctx->pkix_next = (ctx->pkix_next + 1) % TLS_PKIX_CACHE_MAX;
    if (e->used)
      postern_htab_del(ctx->pkix, e->key);
    memcpy(e->key, key, sizeof e->key);
    e->used = postern_htab_put(ctx->pkix, e->key, e) == 0;
  }
  e->until = until;
  e->pkix_ok = v->pkix_ok;
  e->name_ok = v->name_ok;
  e->expired = v->expired;
  snprintf(e->error, sizeof e->error, "%s", v->error);
  pthread_mutex_unlock(&ctx->pkix_lock);
}

/* Checks the peer's certificate once the handshake is complete: PKIX to the
 * context's roots, then the name (RFC 6125 §6.4: DNS-IDs in
 * subjectAltName; a wildcard only as the complete left-most label). The
 * subject CN is never a reference for SMTP: RFC 8461 §4.2 requires a
 * DNS-ID, and BoringSSL would fall back to the CN of a certificate without
 * one unless told not to (X509_CHECK_FLAG_NEVER_CHECK_SUBJECT). DANE-TA
 * name checks (RFC 7672 §3.2.3) are the policy layer's, not this one's.
 * A verdict for the same chain and name is remembered for a while
 * (tls_ctx_pkix_stats); under tls_conn_skip_pkix nothing is checked. */
void tls__verify_peer(struct tls_conn *t) {
  struct tls_verify *v = &t->verify;
  memset(v, 0, sizeof *v);
  t->verified = true;
  STACK_OF(X509) *chain = SSL_get_peer_full_cert_chain(t->ssl);
  if (!chain || sk_X509_num(chain) == 0) {
    snprintf(v->error, sizeof v->error, "no peer certificate");
    return;
  }
  v->has_cert = true;
  if (t->skip_pkix) {
    snprintf(v->error, sizeof v->error, "not checked: DANE governs this host");
    pthread_mutex_lock(&t->ctx->pkix_lock);
    t->ctx->pkix_stats.skipped++;
    pthread_mutex_unlock(&t->ctx->pkix_lock);
    return;
  }
  unsigned char key[SHA256_DIGEST_LENGTH];
  pkix_key(t, t->server_name, key);
  time_t now = time(NULL);
  if (pkix_cached(t->ctx, key, now, v))
    return;
  X509 *leaf = sk_X509_value(chain, 0);
  X509_STORE_CTX *sctx = X509_STORE_CTX_new();
  if (!sctx) {
    snprintf(v->error, sizeof v->error, "out of memory");
    return;
  }
  X509_STORE *store = SSL_CTX_get_cert_store(t->ctx->ssl_ctx);
  if (X509_STORE_CTX_init(sctx, store, leaf, chain) == 1) {
    X509_STORE_CTX_set_default(sctx, "ssl_server");
    if (X509_verify_cert(sctx) == 1) {
      v->pkix_ok = true;
    } else {
      int e = X509_STORE_CTX_get_error(sctx);
      v->expired = e == X509_V_ERR_CERT_HAS_EXPIRED;
      snprintf(v->error, sizeof v->error, "%s",
               X509_verify_cert_error_string(e));
    }
  } else {
    snprintf(v->error, sizeof v->error, "cannot set up verification");
  }
  X509_STORE_CTX_free(sctx);
  if (X509_check_host(leaf, t->server_name, strlen(t->server_name),
                      X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                          X509_CHECK_FLAG_NEVER_CHECK_SUBJECT,
                      NULL) == 1) {
    v->name_ok = true;
  } else if (v->pkix_ok) {
    snprintf(v->error, sizeof v->error, "certificate name does not match %s",
             t->server_name);
  } else {
    size_t off = strlen(v->error);
    snprintf(v->error + off, sizeof v->error - off,
             "; certificate name does not match %s", t->server_name);
  }
  /* Remembered for a while, but never past the leaf's expiry: a verdict
   * must not outlive the certificate it speaks of. */
  time_t until = now + TLS_PKIX_CACHE_TTL;
  if (X509_cmp_time(X509_get0_notAfter(leaf), &until) > 0)
    pkix_remember(t->ctx, key, until, v);
  ERR_clear_error();
}
