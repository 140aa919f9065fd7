/*
 * dane.c - the DANE TLSA matcher for SMTP (RFC 7672 §3, RFC 7671 §5).
 *
 * BoringSSL has no DANE API, so matching is ours: digests with BoringSSL's
 * SHA-256/512, and for DANE-TA(2) the chain from the leaf to the matched
 * trust anchor is checked by BoringSSL's own X509 verifier, given a store
 * that holds only that anchor and the partial-chain flag (the anchor need not
 * be self-signed). We never hand-write signature or constraint checks.
 *
 * Invariants: all inputs are borrowed for the duration of one call; every
 * BoringSSL object made here is freed before returning; the BoringSSL error
 * queue is left empty. No global state: callable from any thread.
 *
 * Certificate validity: the verifier checks dates at `now`; a verify
 * callback records date errors instead of stopping, so that we can ignore
 * the trust anchor's own dates (the DNSSEC-signed TLSA record, not the
 * certificate, is the statement of trust; RFC 5280 §6.1 likewise treats a
 * trust anchor as a name and key) while still requiring every certificate
 * below it - the leaf always - to be valid.
 */
#include "policy/chain.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "policy/internal.h"
#include "base/postern_err.h"

static const char *const status_names[] = {
#define POLICY__NAME(name, s, msg) s,
    POLICY_DANE_STATUS_MAP(POLICY__NAME)
#undef POLICY__NAME
};

static const char *const status_messages[] = {
#define POLICY__MSG(name, s, msg) msg,
    POLICY_DANE_STATUS_MAP(POLICY__MSG)
#undef POLICY__MSG
};

const char *policy_dane_status_name(enum policy_dane_status status) {
  if ((unsigned)status >= POLICY_DANE_STATUS_COUNT)
    return "unknown";
  return status_names[status];
}

const char *policy_dane_status_message(enum policy_dane_status status) {
  if ((unsigned)status >= POLICY_DANE_STATUS_COUNT)
    return "unknown DANE status";
  return status_messages[status];
}

int policy_tlsa_from_rdata(const uint8_t *rdata, size_t len,
                           struct policy_tlsa *out) {
  if (rdata == NULL || out == NULL)
    return POSTERN_EINVAL;
  /* RFC 6698 §2.1: three one-octet fields, then at least one octet. */
  if (len < 4)
    return POSTERN_EPROTO;
  out->usage = rdata[0];
  out->selector = rdata[1];
  out->mtype = rdata[2];
  out->data = rdata + 3;
  out->len = len - 3;
  return 0;
}

/* Whether two host names are the same name (case, one trailing dot). */
static bool same_name(const char *a, const char *b) {
  char na[256], nb[256];
  int la = policy__name_norm(a, strlen(a), na, sizeof na);
  int lb = policy__name_norm(b, strlen(b), nb, sizeof nb);
  if (la < 0 || lb < 0)
    return strcmp(a, b) == 0;
  return strcmp(na, nb) == 0;
}

size_t policy_dane_tlsa_bases(const struct policy_dane_host *h,
                              const char *out[2]) {
  if (h == NULL || out == NULL || h->host == NULL || h->host[0] == '\0' ||
      !h->name_authenticated)
    return 0;
  const char *canonical =
      h->canonical && h->canonical[0] ? h->canonical : h->host;
  bool aliased = !same_name(canonical, h->host);
  if (h->addrs_authenticated) {
    size_t n = 0;
    if (aliased)
      out[n++] = canonical;
    out[n++] = h->host;
    return n;
  }
  /* A secure alias into an unsigned zone: the original name is in a
   * signed zone, the expanded one is not, so only the original name's
   * TLSA records can be trusted. */
  if (aliased && h->cname_authenticated) {
    out[0] = h->host;
    return 1;
  }
  return 0;
}

/* Orders records by their wire form (usage, selector, mtype, data). */
static int tlsa_cmp(const void *pa, const void *pb) {
  const struct policy_tlsa *a = *(const struct policy_tlsa *const *)pa;
  const struct policy_tlsa *b = *(const struct policy_tlsa *const *)pb;
  if (a->usage != b->usage)
    return a->usage < b->usage ? -1 : 1;
  if (a->selector != b->selector)
    return a->selector < b->selector ? -1 : 1;
  if (a->mtype != b->mtype)
    return a->mtype < b->mtype ? -1 : 1;
  size_t n = a->len < b->len ? a->len : b->len;
  int c = n ? memcmp(a->data, b->data, n) : 0;
  if (c != 0)
    return c;
  return a->len < b->len ? -1 : (a->len > b->len ? 1 : 0);
}

int policy_tlsa_rrset_digest(const struct policy_tlsa *recs, size_t nrecs,
                             const char *base, uint8_t out[32]) {
  char name[256];
  if ((recs == NULL && nrecs > 0) || base == NULL || out == NULL)
    return POSTERN_EINVAL;
  int nl = policy__name_norm(base, strlen(base), name, sizeof name);
  if (nl < 0)
    return POSTERN_EINVAL;
  const struct policy_tlsa **sorted = calloc(nrecs ? nrecs : 1, sizeof *sorted);
  if (sorted == NULL)
    return POSTERN_ENOMEM;
  for (size_t i = 0; i < nrecs; i++)
    sorted[i] = &recs[i];
  qsort(sorted, nrecs, sizeof *sorted, tlsa_cmp);
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  /* Every field is length-prefixed or fixed-size: no two inputs share an
   * encoding. */
  uint8_t hdr[8];
  hdr[0] = (uint8_t)nl;
  SHA256_Update(&ctx, hdr, 1);
  SHA256_Update(&ctx, name, (size_t)nl);
  for (size_t i = 0; i < nrecs; i++) {
    const struct policy_tlsa *r = sorted[i];
    uint64_t len = r->len;
    hdr[0] = r->usage;
    hdr[1] = r->selector;
    hdr[2] = r->mtype;
    SHA256_Update(&ctx, hdr, 3);
    for (int k = 0; k < 8; k++)
      hdr[k] = (uint8_t)(len >> (56 - 8 * k));
    SHA256_Update(&ctx, hdr, 8);
    if (r->len)
      SHA256_Update(&ctx, r->data, r->len);
  }
  SHA256_Final(out, &ctx);
  free(sorted);
  return 0;
}

/* Parses the whole of `der` as one certificate; NULL if it is anything else. */
static X509 *cert_parse(const uint8_t *der, size_t len) {
  if (der == NULL || len == 0 || len > LONG_MAX)
    return NULL;
  const uint8_t *p = der;
  X509 *x = d2i_X509(NULL, &p, (long)len);
  if (x != NULL && p != der + len) {
    X509_free(x);
    x = NULL;
  }
  return x;
}

/* Parses the whole of `der` as a SubjectPublicKeyInfo; NULL otherwise. */
static EVP_PKEY *spki_parse(const uint8_t *der, size_t len) {
  CBS cbs;
  CBS_init(&cbs, der, len);
  EVP_PKEY *pkey = EVP_parse_public_key(&cbs);
  if (pkey != NULL && CBS_len(&cbs) != 0) {
    EVP_PKEY_free(pkey);
    pkey = NULL;
  }
  return pkey;
}

bool policy_tlsa_usable(const struct policy_tlsa *rec) {
  if (rec == NULL || rec->data == NULL || rec->len == 0)
    return false;
  /* RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are not for SMTP. */
  if (rec->usage != POLICY_TLSA_DANE_TA && rec->usage != POLICY_TLSA_DANE_EE)
    return false;
  if (rec->selector != POLICY_TLSA_SEL_CERT &&
      rec->selector != POLICY_TLSA_SEL_SPKI)
    return false;
  switch (rec->mtype) {
  case POLICY_TLSA_MT_SHA256:
    return rec->len == SHA256_DIGEST_LENGTH;
  case POLICY_TLSA_MT_SHA512:
    return rec->len == SHA512_DIGEST_LENGTH;
  case POLICY_TLSA_MT_FULL:
    break;
  default:
    return false;
  }
  /*
   * A full DANE-TA record may be a trust anchor absent from the presented
   * chain (RFC 7671 §5.2.2, §5.2.3), so it must be something we can use as
   * one. Full DANE-EE data is only ever compared byte for byte.
   */
  if (rec->usage == POLICY_TLSA_DANE_TA) {
    bool ok;
    if (rec->selector == POLICY_TLSA_SEL_CERT) {
      X509 *x = cert_parse(rec->data, rec->len);
      ok = x != NULL;
      X509_free(x);
    } else {
      EVP_PKEY *k = spki_parse(rec->data, rec->len);
      ok = k != NULL;
      EVP_PKEY_free(k);
    }
    ERR_clear_error();
    return ok;
  }
  return true;
}

/* One presented certificate with what records are matched against. */
struct peer_cert {
  X509 *x; /* NULL when the DER does not parse (never for the leaf) */
  const uint8_t *der;
  size_t der_len;
  uint8_t *spki; /* OPENSSL_malloc'ed by i2d */
  size_t spki_len;
};

/* Whether record `rec` matches the given certificate or SPKI bytes. */
static bool data_match(const struct policy_tlsa *rec, const uint8_t *buf,
                       size_t len) {
  uint8_t md[SHA512_DIGEST_LENGTH];
  switch (rec->mtype) {
  case POLICY_TLSA_MT_FULL:
    return rec->len == len && memcmp(rec->data, buf, len) == 0;
  case POLICY_TLSA_MT_SHA256:
    SHA256(buf, len, md);
    return rec->len == SHA256_DIGEST_LENGTH &&
           memcmp(rec->data, md, SHA256_DIGEST_LENGTH) == 0;
  case POLICY_TLSA_MT_SHA512:
    SHA512(buf, len, md);
    return rec->len == SHA512_DIGEST_LENGTH &&
           memcmp(rec->data, md, SHA512_DIGEST_LENGTH) == 0;
  default:
    return false;
  }
}

static bool cert_match(const struct policy_tlsa *rec,
                       const struct peer_cert *pc) {
  if (pc->x == NULL)
    return false;
  if (rec->selector == POLICY_TLSA_SEL_CERT)
    return data_match(rec, pc->der, pc->der_len);
  return pc->spki != NULL && data_match(rec, pc->spki, pc->spki_len);
}

/*
 * Date errors seen by the verifier, by chain depth. Depths beyond 63 are
 * folded into `deep` (and count as below the anchor).
 */
struct date_errors {
  uint64_t depths;
  bool deep;
};

static int verify_cb(int ok, X509_STORE_CTX *ctx) {
  if (ok)
    return ok;
  switch (X509_STORE_CTX_get_error(ctx)) {
  case X509_V_ERR_CERT_NOT_YET_VALID:
  case X509_V_ERR_CERT_HAS_EXPIRED:
  case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
  case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD: {
    struct date_errors *de = X509_STORE_CTX_get_app_data(ctx);
    int depth = X509_STORE_CTX_get_error_depth(ctx);
    if (depth >= 0 && depth < 64)
      de->depths |= (uint64_t)1 << depth;
    else
      de->deep = true;
    return 1; /* judged after the chain is built, see try_anchor */
  }
  default:
    return 0;
  }
}

struct verify_in {
  X509 *leaf;
  STACK_OF(X509) * untrusted;
  const char *const *names;
  size_t nnames;
  time_t now;
};

/* RFC 7672 §3.2.3 via BoringSSL: DNS-IDs, CN-ID only without DNS-IDs, `*`
 * only as a whole leftmost label (BoringSSL's only wildcard mode). */
static bool leaf_name_ok(const struct verify_in *in) {
  for (size_t i = 0; i < in->nnames; i++) {
    char buf[256];
    const char *n = in->names[i];
    if (n == NULL)
      continue;
    int len = policy__name_norm(n, strlen(n), buf, sizeof buf);
    if (len < 0)
      continue;
    if (X509_check_host(in->leaf, buf, (size_t)len, 0, NULL) == 1)
      return true;
  }
  return false;
}

/*
 * Checks the leaf against one trust anchor. `bare` says the anchor is a
 * certificate signed by a TA public key from DNS, not the TA itself: its
 * dates are then checked like any other. On OK, *depth is the anchor's
 * depth in the verified chain. Returns a status, or a negative error.
 */
static int try_anchor(const struct verify_in *in, X509 *anchor, bool bare,
                      int *depth) {
  int st = POLICY_DANE_CHAIN;
  struct date_errors de = {0, false};
  X509_STORE *store = X509_STORE_new();
  X509_STORE_CTX *ctx = X509_STORE_CTX_new();
  if (store == NULL || ctx == NULL || !X509_STORE_add_cert(store, anchor) ||
      !X509_STORE_CTX_init(ctx, store, in->leaf, in->untrusted)) {
    st = POSTERN_ENOMEM;
    goto out;
  }
  /* Verify as a TLS client would verify a server (purpose, CA checks). */
  X509_STORE_CTX_set_default(ctx, "ssl_server");
  X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_PARTIAL_CHAIN);
  X509_STORE_CTX_set_time(ctx, 0, in->now);
  X509_STORE_CTX_set_app_data(ctx, &de);
  X509_STORE_CTX_set_verify_cb(ctx, verify_cb);
  if (X509_verify_cert(ctx) != 1)
    goto out; /* CHAIN */
  STACK_OF(X509) *built = X509_STORE_CTX_get0_chain(ctx);
  int top = (int)sk_X509_num(built) - 1;
  if (top < 0)
    goto out;
  /* Dates count below the anchor, always for the leaf, and for the anchor
   * itself when it merely carries a DNS key's signature. */
  uint64_t mask = top >= 64 ? UINT64_MAX : (((uint64_t)1 << top) - 1);
  if (bare || top == 0)
    mask = top >= 63 ? UINT64_MAX : (((uint64_t)1 << (top + 1)) - 1);
  mask |= 1;
  if ((de.depths & mask) != 0 || de.deep) {
    st = POLICY_DANE_EXPIRED;
    goto out;
  }
  if (!leaf_name_ok(in)) {
    st = POLICY_DANE_NAME;
    goto out;
  }
  *depth = top;
  st = POLICY_DANE_OK;
out:
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  ERR_clear_error();
  return st;
}

/* Tracks the best DANE-TA outcome across candidates. */
struct ta_best {
  int depth; /* INT_MAX: no success yet */
  size_t record;
  enum policy_dane_status fail; /* furthest failure so far */
};

static int ta_consider(const struct verify_in *in, X509 *anchor, bool bare,
                       size_t record, struct ta_best *best) {
  int depth = -1;
  int st = try_anchor(in, anchor, bare, &depth);
  if (st < 0)
    return st;
  if (st == POLICY_DANE_OK) {
    if (depth < best->depth) {
      best->depth = depth;
      best->record = record;
    }
  } else if ((int)st > (int)best->fail) {
    /* The status enum is ordered MISMATCH < CHAIN < EXPIRED < NAME. */
    best->fail = (enum policy_dane_status)st;
  }
  return 0;
}

/* Tries one usable DANE-TA(2) record against every way it can anchor. */
static int ta_record(const struct verify_in *in, const struct policy_tlsa *rec,
                     size_t record, const struct peer_cert *pcs, size_t n,
                     struct ta_best *best) {
  int rc = 0;
  bool presented = false;
  /* A presented certificate matching the record is a trust anchor. */
  for (size_t k = 0; k < n && rc == 0; k++) {
    if (cert_match(rec, &pcs[k])) {
      presented = true;
      rc = ta_consider(in, pcs[k].x, false, record, best);
    }
  }
  /* Full records may also name an anchor the server did not send
   * (RFC 7671 §5.2.2, §5.2.3); when it did send it, the match above is the
   * same anchor at its presented depth. */
  if (rc != 0 || presented || rec->mtype != POLICY_TLSA_MT_FULL)
    return rc;
  if (rec->selector == POLICY_TLSA_SEL_CERT) {
    /* 2 0 0: the anchor certificate itself, possibly not presented. */
    X509 *ta = cert_parse(rec->data, rec->len);
    if (ta == NULL)
      return 0;
    rc = ta_consider(in, ta, false, record, best);
    X509_free(ta);
    return rc;
  }
  /* 2 1 0: a bare key; whatever certificate it signed anchors the chain. */
  EVP_PKEY *key = spki_parse(rec->data, rec->len);
  if (key == NULL)
    return 0;
  for (size_t k = 0; k < n && rc == 0; k++)
    if (pcs[k].x != NULL && X509_verify(pcs[k].x, key) == 1)
      rc = ta_consider(in, pcs[k].x, true, record, best);
  EVP_PKEY_free(key);
  return rc;
}

int policy_dane_verify(const struct policy_tlsa *recs, size_t nrecs,
                       const struct policy_dane_cert *chain, size_t nchain,
                       const char *const *names, size_t nnames, time_t now,
                       struct policy_dane_result *out) {
  if (out == NULL || (recs == NULL && nrecs > 0) || chain == NULL ||
      nchain == 0 || (names == NULL && nnames > 0))
    return POSTERN_EINVAL;
  out->status = POLICY_DANE_NO_USABLE;
  out->depth = -1;
  out->usage = -1;
  out->record = 0;

  int rc = 0;
  struct peer_cert *pcs = calloc(nchain, sizeof *pcs);
  STACK_OF(X509) *untrusted = sk_X509_new_null();
  if (pcs == NULL || untrusted == NULL) {
    rc = POSTERN_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < nchain; i++) {
    pcs[i].der = chain[i].der;
    pcs[i].der_len = chain[i].len;
    pcs[i].x = cert_parse(chain[i].der, chain[i].len);
    if (pcs[i].x == NULL) {
      /* Garbage in the chain cannot match anything; a garbage leaf means
       * there is nothing to authenticate. */
      if (i == 0) {
        rc = POSTERN_EINVAL;
        goto out;
      }
      continue;
    }
    uint8_t *spki = NULL;
    int slen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(pcs[i].x), &spki);
    if (slen > 0) {
      pcs[i].spki = spki;
      pcs[i].spki_len = (size_t)slen;
    }
    if (i > 0 && !sk_X509_push(untrusted, pcs[i].x)) {
      rc = POSTERN_ENOMEM;
      goto out;
    }
  }

  bool any_usable = false;
  /* RFC 7672 §3.1.1: DANE-EE(3) matches the leaf, nothing else is checked;
   * any EE match suffices, whatever the TA records say. */
  for (size_t r = 0; r < nrecs; r++) {
    if (recs[r].usage != POLICY_TLSA_DANE_EE || !policy_tlsa_usable(&recs[r]))
      continue;
    any_usable = true;
    if (cert_match(&recs[r], &pcs[0])) {
      out->status = POLICY_DANE_OK;
      out->depth = 0;
      out->usage = POLICY_TLSA_DANE_EE;
      out->record = r;
      goto out;
    }
  }

  /* RFC 7672 §3.1.2: DANE-TA(2). */
  struct verify_in in = {pcs[0].x, untrusted, names, nnames, now};
  struct ta_best best = {INT_MAX, 0, POLICY_DANE_MISMATCH};
  for (size_t r = 0; r < nrecs; r++) {
    if (recs[r].usage != POLICY_TLSA_DANE_TA || !policy_tlsa_usable(&recs[r]))
      continue;
    any_usable = true;
    rc = ta_record(&in, &recs[r], r, pcs, nchain, &best);
    if (rc != 0)
      goto out;
  }
  if (!any_usable) {
    out->status = POLICY_DANE_NO_USABLE;
  } else if (best.depth != INT_MAX) {
    out->status = POLICY_DANE_OK;
    out->depth = best.depth;
    out->usage = POLICY_TLSA_DANE_TA;
    out->record = best.record;
  } else {
    out->status = best.fail;
  }

out:
  sk_X509_free(untrusted); /* the certificates are owned by pcs */
  if (pcs != NULL) {
    for (size_t i = 0; i < nchain; i++) {
      X509_free(pcs[i].x);
      OPENSSL_free(pcs[i].spki);
    }
    free(pcs);
  }
  ERR_clear_error();
  return rc;
}
