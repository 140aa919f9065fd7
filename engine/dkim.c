/*
 * engine/dkim.c - DKIM signatures (RFC 6376) on the messages the relay
 * writes itself: mailed TLS reports, which receivers MUST ignore without a
 * DKIM signature of the reporting domain (RFC 8460 §3).
 *
 * One signature per message: rsa-sha256 (RFC 6376 §3.3.1) or
 * ed25519-sha256 (RFC 8463) by the key's type, relaxed/relaxed
 * canonicalization (§3.4.2, §3.4.4), the whole body (no l= tag: RFC 8460
 * §3 forbids it), the header fields the caller names that the message has.
 * The DKIM-Signature field goes on top of the message.
 *
 * Pure apart from reading the key file: no loop, no global state. A key is
 * immutable once loaded and may be used from any thread.
 */
#include "engine/dkim.h"

#include "base/postern_buf.h"
#include "base/postern_err.h"

#include <errno.h>
#include <openssl/base64.h>
#include <openssl/bytestring.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct dkim_key {
  EVP_PKEY *pkey;
  bool ed25519;
  char domain[254];
  char selector[64];
};

static bool wsp(char c) {
  return c == ' ' || c == '\t';
}

/* ---- Canonicalization (RFC 6376 §3.4) ---- */

int dkim__canon_body(const char *body, size_t len, char **out, size_t *outlen) {
  struct postern_buf b = {0};
  postern_buf_put(&b, "", 0);
  size_t pending_empty = 0; /* empty lines held back: trailing ones go */
  size_t i = 0;
  while (i < len) {
    size_t e = i;
    while (e < len && !(body[e] == '\r' && e + 1 < len && body[e + 1] == '\n'))
      e++;
    /* One line [i, e): WSP at its end goes, runs of WSP inside become one
     * SP; an empty line is held back (trailing empty lines go). */
    size_t end = e;
    while (end > i && wsp(body[end - 1]))
      end--;
    if (end == i) {
      pending_empty++;
    } else {
      for (; pending_empty > 0; pending_empty--)
        postern_buf_put(&b, "\r\n", 2);
      for (size_t k = i; k < end; k++) {
        if (!wsp(body[k])) {
          postern_buf_put(&b, &body[k], 1);
          continue;
        }
        while (wsp(body[k + 1])) /* stops before `end`: not WSP */
          k++;
        postern_buf_put(&b, " ", 1);
      }
      postern_buf_put(&b, "\r\n", 2);
    }
    i = e < len ? e + 2 : len;
  }
  if (b.oom) {
    free(b.p);
    return POSTERN_ENOMEM;
  }
  *out = b.p;
  *outlen = b.len;
  return 0;
}

int dkim__canon_header(const char *field, size_t len, char **out,
                       size_t *outlen) {
  const char *colon = memchr(field, ':', len);
  if (colon == NULL)
    return POSTERN_EINVAL;
  struct postern_buf b = {0};
  postern_buf_put(&b, "", 0);
  /* The name in lower case, without WSP before the colon. */
  size_t nl = (size_t)(colon - field);
  while (nl > 0 && wsp(field[nl - 1]))
    nl--;
  for (size_t k = 0; k < nl; k++) {
    char c = field[k];
    if (c >= 'A' && c <= 'Z')
      c = (char)(c - 'A' + 'a');
    postern_buf_put(&b, &c, 1);
  }
  postern_buf_put(&b, ":", 1);
  /* The value unfolded, WSP runs as one SP, none at either end. */
  size_t k = (size_t)(colon - field) + 1;
  bool space = false, started = false;
  for (; k < len; k++) {
    char c = field[k];
    if (c == '\r' || c == '\n')
      continue;
    if (wsp(c)) {
      space = started;
      continue;
    }
    if (space)
      postern_buf_put(&b, " ", 1);
    space = false;
    started = true;
    postern_buf_put(&b, &c, 1);
  }
  if (b.oom) {
    free(b.p);
    return POSTERN_ENOMEM;
  }
  *out = b.p;
  *outlen = b.len;
  return 0;
}

/* ---- Keys ---- */

int dkim_key_load(const char *path, const char *domain, const char *selector,
                  struct dkim_key **out) {
  *out = NULL;
  if (path == NULL || domain == NULL || selector == NULL ||
      strlen(domain) >= sizeof((struct dkim_key *)0)->domain ||
      strlen(selector) >= sizeof((struct dkim_key *)0)->selector ||
      selector[0] == '\0' || strpbrk(selector, "; \t\r\n") != NULL)
    return POSTERN_EINVAL;
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return postern_err_from_errno(errno);
  EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  if (pkey == NULL)
    return POSTERN_EPROTO;
  int id = EVP_PKEY_id(pkey);
  if (id != EVP_PKEY_RSA && id != EVP_PKEY_ED25519) {
    EVP_PKEY_free(pkey);
    return POSTERN_EUNSUPPORTED;
  }
  /* RFC 8301 §3.2: RSA keys of at least 1024 bits; 2048 recommended. */
  if (id == EVP_PKEY_RSA && EVP_PKEY_bits(pkey) < 1024) {
    EVP_PKEY_free(pkey);
    return POSTERN_EUNSUPPORTED;
  }
  struct dkim_key *k = calloc(1, sizeof *k);
  if (k == NULL) {
    EVP_PKEY_free(pkey);
    return POSTERN_ENOMEM;
  }
  k->pkey = pkey;
  k->ed25519 = id == EVP_PKEY_ED25519;
  snprintf(k->domain, sizeof k->domain, "%s", domain);
  snprintf(k->selector, sizeof k->selector, "%s", selector);
  *out = k;
  return 0;
}

void dkim_key_free(struct dkim_key *k) {
  if (k == NULL)
    return;
  EVP_PKEY_free(k->pkey);
  free(k);
}

/* ---- Signing ---- */

static char *b64(const uint8_t *in, size_t n) {
  size_t cap;
  if (!EVP_EncodedLength(&cap, n))
    return NULL;
  char *o = malloc(cap);
  if (o != NULL)
    EVP_EncodeBlock((uint8_t *)o, in, n);
  return o;
}

/* Where each header field of msg starts and ends (its CRLF included). */
struct field {
  const char *p;
  size_t len;  /* with its folds, without the final CRLF */
  size_t nlen; /* the name's length */
  bool used;   /* signed already (§5.4.2: each instance once) */
};

int dkim_sign(const struct dkim_key *k, const char *msg, size_t len,
              const char *const *names, size_t nnames, time_t now, char **out,
              size_t *outlen) {
  *out = NULL;
  if (k == NULL || msg == NULL || names == NULL || nnames == 0)
    return POSTERN_EINVAL;
  /* The header: fields up to the empty line. */
  struct field f[128];
  size_t nf = 0, i = 0;
  while (i + 1 < len && !(msg[i] == '\r' && msg[i + 1] == '\n')) {
    size_t s = i;
    for (;;) {
      while (i + 1 < len && !(msg[i] == '\r' && msg[i + 1] == '\n'))
        i++;
      if (i + 1 >= len)
        return POSTERN_EINVAL; /* no end of header */
      i += 2;
      if (i < len && wsp(msg[i]))
        continue; /* a folded continuation */
      break;
    }
    if (nf == sizeof f / sizeof f[0])
      return POSTERN_ETOOBIG;
    const char *colon = memchr(msg + s, ':', i - s);
    if (colon == NULL)
      return POSTERN_EINVAL;
    f[nf++] = (struct field){.p = msg + s,
                             .len = i - 2 - s,
                             .nlen = (size_t)(colon - (msg + s)),
                             .used = false};
  }
  if (i + 1 >= len)
    return POSTERN_EINVAL;
  const char *body = msg + i + 2;
  size_t blen = len - i - 2;

  char *cb = NULL;
  size_t cblen = 0;
  int rc = dkim__canon_body(body, blen, &cb, &cblen);
  if (rc)
    return rc;
  uint8_t bh[SHA256_DIGEST_LENGTH];
  SHA256((const uint8_t *)cb, cblen, bh);
  free(cb);
  char *bh64 = b64(bh, sizeof bh);

  /* The data signed: each named field (bottom-most unused instance), then
   * the DKIM-Signature field itself with an empty b=, canonicalized, without
   * its final CRLF (§3.7). */
  struct postern_buf data = {0}, hlist = {0};
  postern_buf_put(&data, "", 0);
  postern_buf_put(&hlist, "", 0);
  for (size_t n = 0; rc == 0 && n < nnames; n++) {
    size_t want = strlen(names[n]);
    for (size_t x = nf; x-- > 0;) {
      if (f[x].used || f[x].nlen != want ||
          strncasecmp(f[x].p, names[n], want) != 0)
        continue;
      f[x].used = true;
      char *c;
      size_t cl;
      if ((rc = dkim__canon_header(f[x].p, f[x].len, &c, &cl)) != 0)
        break;
      postern_buf_put(&data, c, cl);
      postern_buf_put(&data, "\r\n", 2);
      free(c);
      if (hlist.len)
        postern_buf_put(&hlist, ":", 1);
      postern_buf_put(&hlist, names[n], want);
      break;
    }
  }
  struct postern_buf sig = {0};
  char t[32];
  snprintf(t, sizeof t, "%lld", (long long)now);
  postern_buf_puts(&sig, "DKIM-Signature: v=1; a=");
  postern_buf_puts(&sig, k->ed25519 ? "ed25519-sha256" : "rsa-sha256");
  postern_buf_puts(&sig, "; c=relaxed/relaxed; d=");
  postern_buf_puts(&sig, k->domain);
  postern_buf_puts(&sig, "; s=");
  postern_buf_puts(&sig, k->selector);
  postern_buf_puts(&sig, ";\r\n\tt=");
  postern_buf_puts(&sig, t);
  postern_buf_puts(&sig, "; h=");
  postern_buf_put(&sig, hlist.p ? hlist.p : "", hlist.len);
  postern_buf_puts(&sig, ";\r\n\tbh=");
  postern_buf_puts(&sig, bh64 ? bh64 : "");
  postern_buf_puts(&sig, ";\r\n\tb=");
  free(hlist.p);
  if (rc == 0 && (data.oom || sig.oom || bh64 == NULL))
    rc = POSTERN_ENOMEM;
  free(bh64);
  char *csig = NULL;
  size_t csl = 0;
  if (rc == 0)
    rc = dkim__canon_header(sig.p, sig.len, &csig, &csl);
  if (rc == 0)
    postern_buf_put(&data, csig, csl);
  free(csig);

  uint8_t *s = NULL;
  size_t slen = 0;
  if (rc == 0) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const uint8_t *signed_data = (const uint8_t *)data.p;
    size_t signed_len = data.len;
    uint8_t h[SHA256_DIGEST_LENGTH];
    if (k->ed25519) {
      /* RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data. */
      SHA256(signed_data, signed_len, h);
      signed_data = h;
      signed_len = sizeof h;
    }
    if (ctx == NULL ||
        EVP_DigestSignInit(ctx, NULL, k->ed25519 ? NULL : EVP_sha256(), NULL,
                           k->pkey) != 1 ||
        EVP_DigestSign(ctx, NULL, &slen, signed_data, signed_len) != 1 ||
        (s = malloc(slen)) == NULL ||
        EVP_DigestSign(ctx, s, &slen, signed_data, signed_len) != 1)
      rc = POSTERN_EINTERNAL;
    EVP_MD_CTX_free(ctx);
  }
  free(data.p);
  char *s64 = rc == 0 ? b64(s, slen) : NULL;
  free(s);
  if (rc == 0 && s64 == NULL)
    rc = POSTERN_ENOMEM;
  if (rc == 0) {
    postern_buf_puts(&sig, s64);
    postern_buf_puts(&sig, "\r\n");
    postern_buf_put(&sig, msg, len);
    if (sig.oom)
      rc = POSTERN_ENOMEM;
  }
  free(s64);
  if (rc != 0) {
    free(sig.p);
    return rc;
  }
  *out = sig.p;
  *outlen = sig.len;
  return 0;
}
