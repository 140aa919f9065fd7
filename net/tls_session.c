/*
 * net/tls_session.c - the client's TLS session cache (see tls.h): sessions
 * are kept by us, not by BoringSSL's id-keyed cache, under a key that
 * names everything the certificate verdict depends on (tls_session_key),
 * so that a session is only ever offered where its chain would be judged
 * the same way. Oldest entries are evicted first; a session the caller
 * rejected is dropped and no later ticket of that connection is stored.
 * Guarded by the context's `lock`: every worker thread uses the cache.
 */
#include "net/tls_internal.h"

#include "base/postern_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Called by BoringSSL (on the connection's loop thread) when a server
 * issued a session or a TLS 1.3 ticket. Returning 1 takes the reference. */
int tls__new_session_cb(SSL *ssl, SSL_SESSION *sess) {
  struct tls_conn *t = SSL_get_app_data(ssl);
  if (!t || !t->session_key || !SSL_SESSION_is_resumable(sess)) {
    return 0;
  }
  struct tls_ctx *ctx = t->ctx;
  pthread_mutex_lock(&ctx->lock);
  struct tls_session_entry *slot = NULL;
  for (size_t i = 0; i < ctx->cache_len; i++) {
    if (strcmp(ctx->cache[i].key, t->session_key) == 0) {
      slot = &ctx->cache[i];
      SSL_SESSION_free(slot->sess);
      slot->sess = NULL;
      break;
    }
  }
  if (!slot && ctx->cache_len < ctx->cache_cap) {
    char *key = strdup(t->session_key);
    if (key) {
      slot = &ctx->cache[ctx->cache_len++];
      slot->key = key;
    }
  } else if (!slot && ctx->cache_len > 0) {
    /* Full: replace the oldest entry. */
    size_t oldest = 0;
    for (size_t i = 1; i < ctx->cache_len; i++) {
      if (ctx->cache[i].stamp < ctx->cache[oldest].stamp) {
        oldest = i;
      }
    }
    char *key = strdup(t->session_key);
    if (key) {
      slot = &ctx->cache[oldest];
      free(slot->key);
      SSL_SESSION_free(slot->sess);
      slot->key = key;
      slot->sess = NULL;
    }
  }
  if (slot) {
    slot->sess = sess;
    slot->stamp = ++ctx->stamp;
  }
  pthread_mutex_unlock(&ctx->lock);
  return slot ? 1 : 0;
}

SSL_SESSION *tls__session_lookup(struct tls_ctx *ctx, const char *key) {
  SSL_SESSION *s = NULL;
  pthread_mutex_lock(&ctx->lock);
  for (size_t i = 0; i < ctx->cache_len; i++) {
    if (ctx->cache[i].sess && strcmp(ctx->cache[i].key, key) == 0) {
      s = ctx->cache[i].sess;
      SSL_SESSION_up_ref(s);
      break;
    }
  }
  pthread_mutex_unlock(&ctx->lock);
  return s;
}

/* Removes cache entry i; the caller holds the lock. Order does not matter
 * (eviction goes by stamp). */
static void cache_remove(struct tls_ctx *ctx, size_t i) {
  free(ctx->cache[i].key);
  SSL_SESSION_free(ctx->cache[i].sess);
  ctx->cache[i] = ctx->cache[--ctx->cache_len];
  memset(&ctx->cache[ctx->cache_len], 0, sizeof ctx->cache[0]);
}

void tls_ctx_session_drop(struct tls_ctx *ctx, const char *key) {
  if (!ctx || !key) {
    return;
  }
  pthread_mutex_lock(&ctx->lock);
  for (size_t i = 0; i < ctx->cache_len; i++) {
    if (strcmp(ctx->cache[i].key, key) == 0) {
      cache_remove(ctx, i);
      break;
    }
  }
  pthread_mutex_unlock(&ctx->lock);
}

void tls_conn_forget_session(struct tls_conn *t) {
  if (!t || t->ctx->server || !t->session_key) {
    return;
  }
  tls_ctx_session_drop(t->ctx, t->session_key);
  /* tls__new_session_cb stores nothing for a connection without a key. */
  free(t->session_key);
  t->session_key = NULL;
}

/* Appends `s` (or `def` when s is NULL or empty) to out at *n, lower-cased
 * and without a trailing dot when `name`. Returns 0 or a POSTERN_E* code. */
static int key_part(char *out, size_t cap, size_t *n, const char *s,
                    const char *def, bool name) {
  if (!s || !s[0]) {
    s = def;
  }
  size_t len = strlen(s);
  if (name && len > 1 && s[len - 1] == '.') {
    len--;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c == '|' || c == 0x7f) {
      return POSTERN_EINVAL;
    }
    if (*n + 1 >= cap) {
      return POSTERN_ERANGE;
    }
    out[(*n)++] = (char)(name && c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  out[*n] = '\0';
  return 0;
}

int tls_session_key(const struct tls_session_id *id, char *out, size_t cap) {
  if (!id || !out || cap == 0 || !id->name || !id->name[0]) {
    return POSTERN_EINVAL;
  }
  size_t n = 0;
  char port[16];
  snprintf(port, sizeof port, "|%u|", (unsigned)id->port);
  int rc = key_part(out, cap, &n, id->name, NULL, true);
  if (rc == 0) {
    if (n + strlen(port) >= cap) {
      return POSTERN_ERANGE;
    }
    memcpy(out + n, port, strlen(port) + 1);
    n += strlen(port);
    rc = key_part(out, cap, &n, id->sni, id->name, true);
  }
  if (rc == 0) {
    if (n + 2 >= cap) {
      return POSTERN_ERANGE;
    }
    out[n++] = '|';
    out[n] = '\0';
    rc = key_part(out, cap, &n, id->policy, "pkix", false);
  }
  return rc;
}

size_t tls_ctx_session_count(struct tls_ctx *ctx) {
  pthread_mutex_lock(&ctx->lock);
  size_t n = 0;
  for (size_t i = 0; i < ctx->cache_len; i++) {
    n += ctx->cache[i].sess != NULL;
  }
  pthread_mutex_unlock(&ctx->lock);
  return n;
}
