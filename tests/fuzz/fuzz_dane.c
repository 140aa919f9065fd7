/*
 * fuzz_dane.c - libFuzzer target for policy_dane_verify() (policy/chain.h),
 * the DANE TLSA matcher, on arbitrary certificate chains and records.
 *
 * Input layout (tests/fuzz/make_seeds.py writes seeds in it):
 *   byte 0     bits 0-2: number of TLSA records (0-7); bits 3-4: chain
 *              length - 1 (1-4 certificates); bit 5: name "mx.example.com";
 *              bit 6: name "example.com"; bit 7: one more name, the input's
 *              remaining bytes after the chain
 *   bytes 1-4  signed offset in seconds from 2026-01-01 for `now`
 *   then       each record as TLSA RDATA, then each certificate as DER,
 *              every one with a 16-bit big-endian length prefix (cut at
 *              the input's end); RDATA under 4 bytes is skipped
 * DER that does not parse is fine (and common); crashing is not. Beyond
 * "no crash, no leak" it checks what chain.h promises:
 *  - the result is 0, or EINVAL exactly when the leaf is not one DER
 *    certificate (checked with an independent d2i_X509);
 *  - the BoringSSL error queue is empty afterwards;
 *  - NO_USABLE exactly when no record is usable (policy_tlsa_usable);
 *  - OK names a usable record of usage 2 or 3 with that usage; usage 3 has
 *    depth 0 and its digest really is the leaf's (recomputed here for
 *    selector 0 and 1, matching types 0, 1, 2); usage 2 needs a reference
 *    name and has depth 0..chain length; a DANE-EE match stays a match
 *    when that record is given alone;
 *  - a failure has depth -1 and usage -1; every status has a name.
 */
#include "policy/chain.h"
#include "base/postern_err.h"
#include "tests/fuzz/fuzz_util.h"

#include <limits.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#define BASE_TIME 1767225600 /* 2026-01-01T00:00:00Z */

static bool leaf_parses(const uint8_t *der, size_t len) {
  if (len == 0 || len > LONG_MAX)
    return false;
  const uint8_t *p = der;
  X509 *x = d2i_X509(NULL, &p, (long)len);
  bool ok = x != NULL && p == der + len;
  X509_free(x);
  ERR_clear_error();
  return ok;
}

/* Whether record r matches the leaf, computed independently. */
static bool ee_matches(const struct policy_tlsa *r, const uint8_t *der,
                       size_t len) {
  const uint8_t *p = der;
  X509 *x = d2i_X509(NULL, &p, (long)len);
  FUZZ_CHECK(x != NULL);
  uint8_t *spki = NULL;
  const uint8_t *buf = der;
  size_t blen = len;
  if (r->selector == POLICY_TLSA_SEL_SPKI) {
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki);
    FUZZ_CHECK(n > 0);
    buf = spki;
    blen = (size_t)n;
  }
  uint8_t md[SHA512_DIGEST_LENGTH];
  bool ok = false;
  switch (r->mtype) {
  case POLICY_TLSA_MT_FULL:
    ok = r->len == blen && memcmp(r->data, buf, blen) == 0;
    break;
  case POLICY_TLSA_MT_SHA256:
    SHA256(buf, blen, md);
    ok = r->len == 32 && memcmp(r->data, md, 32) == 0;
    break;
  case POLICY_TLSA_MT_SHA512:
    SHA512(buf, blen, md);
    ok = r->len == 64 && memcmp(r->data, md, 64) == 0;
    break;
  }
  OPENSSL_free(spki);
  X509_free(x);
  return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fuzz_in in = {data, size};
  uint8_t mode = fuzz_u8(&in);
  size_t nrec_in = mode & 7, nchain = 1 + ((mode >> 3) & 3);
  time_t now = (time_t)BASE_TIME + (int32_t)fuzz_u32(&in);

  struct policy_tlsa recs[8];
  uint8_t *owned[16] = {0};
  size_t nowned = 0, nrecs = 0;
  for (size_t i = 0; i < nrec_in; i++) {
    size_t got;
    const uint8_t *p = fuzz_chunk16(&in, &got);
    uint8_t *copy = (uint8_t *)fuzz_strndup(p, got);
    owned[nowned++] = copy;
    if (policy_tlsa_from_rdata(copy, got, &recs[nrecs]) == 0)
      nrecs++;
    else
      FUZZ_CHECK(got < 4);
  }
  struct policy_dane_cert chain[4];
  for (size_t i = 0; i < nchain; i++) {
    size_t got;
    const uint8_t *p = fuzz_chunk16(&in, &got);
    /* Exact-size copies, so that an over-read is caught. */
    uint8_t *copy = malloc(got ? got : 1);
    if (got)
      memcpy(copy, p, got);
    owned[nowned++] = copy;
    chain[i].der = copy;
    chain[i].len = got;
  }
  const char *names[3];
  size_t nnames = 0;
  char *extra = NULL;
  if (mode & 32)
    names[nnames++] = "mx.example.com";
  if (mode & 64)
    names[nnames++] = "example.com";
  if (mode & 128) {
    extra = fuzz_strndup(in.p, in.n);
    names[nnames++] = extra;
  }

  struct policy_dane_result res;
  int rc =
      policy_dane_verify(recs, nrecs, chain, nchain, names, nnames, now, &res);
  FUZZ_CHECK(ERR_peek_error() == 0);
  /* FUZZ_VERBOSE=1 prints each outcome, to see what the seeds reach. */
  static int verbose = -1;
  if (verbose < 0)
    verbose = getenv("FUZZ_VERBOSE") != NULL;
  if (verbose)
    fprintf(stderr, "dane: rc %d status %s depth %d usage %d record %zu\n", rc,
            rc == 0 ? policy_dane_status_name(res.status) : "-", res.depth,
            res.usage, res.record);
  bool leaf_ok = leaf_parses(chain[0].der, chain[0].len);
  FUZZ_CHECK(rc == 0 || rc == POSTERN_EINVAL || rc == POSTERN_ENOMEM);
  if (rc == POSTERN_EINVAL)
    FUZZ_CHECK(!leaf_ok);
  if (rc == 0) {
    FUZZ_CHECK(leaf_ok);
    FUZZ_CHECK((unsigned)res.status < POLICY_DANE_STATUS_COUNT);
    FUZZ_CHECK(strcmp(policy_dane_status_name(res.status), "unknown") != 0);
    bool any_usable = false;
    for (size_t i = 0; i < nrecs; i++)
      any_usable = any_usable || policy_tlsa_usable(&recs[i]);
    FUZZ_CHECK((res.status == POLICY_DANE_NO_USABLE) == !any_usable);
    if (res.status == POLICY_DANE_OK) {
      FUZZ_CHECK(res.record < nrecs);
      const struct policy_tlsa *r = &recs[res.record];
      FUZZ_CHECK(policy_tlsa_usable(r) && r->usage == res.usage);
      if (res.usage == POLICY_TLSA_DANE_EE) {
        FUZZ_CHECK(res.depth == 0);
        FUZZ_CHECK(ee_matches(r, chain[0].der, chain[0].len));
        struct policy_dane_result alone;
        FUZZ_CHECK(
            policy_dane_verify(r, 1, chain, nchain, NULL, 0, now, &alone) == 0);
        FUZZ_CHECK(alone.status == POLICY_DANE_OK && alone.record == 0 &&
                   alone.usage == POLICY_TLSA_DANE_EE);
      } else {
        FUZZ_CHECK(res.usage == POLICY_TLSA_DANE_TA);
        FUZZ_CHECK(nnames > 0);
        FUZZ_CHECK(res.depth >= 0 && (size_t)res.depth <= nchain);
      }
    } else {
      FUZZ_CHECK(res.depth == -1 && res.usage == -1);
    }
  }
  FUZZ_CHECK(ERR_peek_error() == 0);
  free(extra);
  for (size_t i = 0; i < nowned; i++)
    free(owned[i]);
  return 0;
}
