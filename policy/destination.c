/*
 * policy/destination.c - what a `destination` block adds to the chain's
 * certificate verdict: pinned digests (a legacy partner's self-signed
 * certificate, Postfix's "fingerprint" level) and extra names accepted in
 * a PKIX-valid certificate (Postfix's smtp_tls_secure_cert_match). The
 * rest of a block - minimum levels, dane and mtasts switches - is applied
 * where those rules live (chain.c, local.c, dane_module.c, mtasts.c).
 *
 * Pure: reads the borrowed chain, keeps nothing.
 */
#include "policy/internal.h"

#include "base/postern_log.h"

#include <openssl/mem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>

/* The SPKI's digest of a DER certificate, into md; false when it does not
 * parse. */
static bool spki_digest(const uint8_t *der, size_t len,
                        uint8_t md[SHA256_DIGEST_LENGTH]) {
  const uint8_t *p = der;
  X509 *x = d2i_X509(NULL, &p, (long)len);
  if (x == NULL)
    return false;
  uint8_t *spki = NULL;
  int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki);
  bool ok = n > 0;
  if (ok)
    SHA256(spki, (size_t)n, md);
  OPENSSL_free(spki);
  X509_free(x);
  return ok;
}

static bool names_match(const struct policy_dest *d, const uint8_t *der,
                        size_t len, const char **which) {
  const uint8_t *p = der;
  X509 *x = d2i_X509(NULL, &p, (long)len);
  if (x == NULL)
    return false;
  bool ok = false;
  for (size_t i = 0; i < d->nnames && !ok; i++) {
    /* Same rules as the MX name (net/tls_verify.c): DNS-IDs only, a
     * wildcard only as the whole left-most label. */
    ok = X509_check_host(x, d->names[i], strlen(d->names[i]),
                         X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                             X509_CHECK_FLAG_NEVER_CHECK_SUBJECT,
                         NULL) == 1;
    if (ok)
      *which = d->names[i];
  }
  X509_free(x);
  return ok;
}

bool policy__dest_vouches(const struct policy_dest *d,
                          const struct policy_conn *c) {
  if (d == NULL || c->chain_len == 0 || c->reached == POLICY_TLS_LEVEL_NONE)
    return false;
  const uint8_t *der = c->chain_der[0];
  size_t len = c->chain_der_len[0];
  if (d->npins > 0) {
    uint8_t cert_md[SHA256_DIGEST_LENGTH], spki_md[SHA256_DIGEST_LENGTH];
    SHA256(der, len, cert_md);
    bool have_spki = spki_digest(der, len, spki_md);
    for (size_t i = 0; i < d->npins; i++) {
      bool cert = memcmp(d->pins[i], cert_md, 32) == 0;
      bool spki = have_spki && memcmp(d->pins[i], spki_md, 32) == 0;
      if (cert || spki) {
        postern_log(POSTERN_LOG_INFO, "tls_pin_matched", "host", c->host,
                    "destination", d->pattern, "digest",
                    cert ? "certificate" : "public key", NULL);
        return true;
      }
    }
  }
  const char *which = NULL;
  if (d->nnames > 0 && c->pkix_ok && !c->name_ok &&
      names_match(d, der, len, &which)) {
    postern_log(POSTERN_LOG_INFO, "tls_name_accepted", "host", c->host,
                "destination", d->pattern, "name", which, NULL);
    return true;
  }
  return false;
}
