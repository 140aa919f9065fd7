/*
 * dkim_test.c - DKIM canonicalization (RFC 6376 §3.4.5's example and more,
 * as a table) and a signature checked against the public key: the data
 * signed is rebuilt here from the RFC's rules, not from dkim.c's helpers.
 * An independent verifier (dkimpy) checks real signed reports in
 * tests/tlsrpt/tlsrpt_send_test.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "engine/dkim.h"

#include <openssl/base64.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
  const char *in, *want;
} headers[] = {
    /* RFC 6376 §3.4.5 */
    {"A: X", "a:X"},
    {"B : Y\t\r\n\tZ  ", "b:Y Z"},
    {"Subject:   many    spaces \t", "subject:many spaces"},
    {"TLS-Report-Domain:example.com", "tls-report-domain:example.com"},
    {"X:", "x:"},
};

static const struct {
  const char *in, *want;
} bodies[] = {
    /* RFC 6376 §3.4.5 */
    {" C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n"},
    {"", ""},
    {"\r\n\r\n", ""},
    {"no final CRLF", "no final CRLF\r\n"},
    {"a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},
    {"a\r\n \t \r\n", "a\r\n"},
    {"x  \r\n", "x\r\n"},
};

static void test_canon(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
    char *out;
    size_t len;
    assert_int_equal(
        dkim__canon_header(headers[i].in, strlen(headers[i].in), &out, &len),
        0);
    assert_string_equal(out, headers[i].want);
    assert_int_equal(len, strlen(headers[i].want));
    free(out);
  }
  char *out;
  size_t len;
  assert_int_equal(dkim__canon_header("no colon", 8, &out, &len),
                   POSTERN_EINVAL);
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    assert_int_equal(
        dkim__canon_body(bodies[i].in, strlen(bodies[i].in), &out, &len), 0);
    assert_string_equal(out, bodies[i].want);
    free(out);
  }
}

/* Writes a fresh 2048-bit RSA key to a file; returns its public key. */
static EVP_PKEY *make_key(const char *path) {
  RSA *rsa = RSA_new();
  BIGNUM *e = BN_new();
  BN_set_word(e, 65537);
  assert_int_equal(RSA_generate_key_ex(rsa, 2048, e, NULL), 1);
  BN_free(e);
  EVP_PKEY *pk = EVP_PKEY_new();
  EVP_PKEY_assign_RSA(pk, rsa);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
  fclose(f);
  return pk;
}

/* The tag value of `tag` in a DKIM-Signature field (folds removed). */
static char *tag(const char *sig, const char *name) {
  char want[16];
  snprintf(want, sizeof want, "%s=", name);
  const char *p = sig;
  while ((p = strstr(p, want)) != NULL) {
    if (p == sig || p[-1] == ' ' || p[-1] == '\t' || p[-1] == ';')
      break;
    p++;
  }
  assert_non_null(p);
  p += strlen(want);
  char *v = calloc(1, strlen(p) + 1);
  size_t n = 0;
  for (; *p && *p != ';'; p++)
    if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
      v[n++] = *p;
  return v;
}

static void test_sign_verify(void **state) {
  (void)state;
  const char *tmp = getenv("TEST_TMPDIR");
  char path[512];
  snprintf(path, sizeof path, "%s/dkim.pem", tmp ? tmp : "/tmp");
  EVP_PKEY *pub = make_key(path);
  struct dkim_key *k;
  assert_int_equal(dkim_key_load(path, "relay.test", "s1", &k), 0);
  const char *msg = "From: r@relay.test\r\n"
                    "To: x@example.com\r\n"
                    "Subject: Report Domain: example.com\r\n"
                    " Submitter: relay.test\r\n"
                    "X-Unsigned: 1\r\n"
                    "\r\n"
                    "body  line \r\n\r\n";
  const char *names[] = {"from", "to", "subject", "date"};
  char *out;
  size_t len;
  assert_int_equal(
      dkim_sign(k, msg, strlen(msg), names, 4, 1700000000, &out, &len), 0);
  assert_true(strncmp(out, "DKIM-Signature: ", 16) == 0);
  assert_non_null(strstr(out, msg));
  char *end = strstr(out, "\r\nFrom:");
  assert_non_null(end);
  char *field = strndup(out, (size_t)(end - out));
  char *h = tag(field, "h"), *bh = tag(field, "bh"), *b = tag(field, "b");
  /* Date is absent: not listed. */
  assert_string_equal(h, "from:to:subject");
  char *a = tag(field, "a");
  assert_string_equal(a, "rsa-sha256");
  char *c = tag(field, "c");
  assert_string_equal(c, "relaxed/relaxed");
  /* bh: SHA-256 of the relaxed body "body line\r\n", by hand. */
  uint8_t md[SHA256_DIGEST_LENGTH];
  SHA256((const uint8_t *)"body line\r\n", 11, md);
  char want[64];
  EVP_EncodeBlock((uint8_t *)want, md, sizeof md);
  assert_string_equal(bh, want);
  /* The signed data, by hand: the three fields relaxed, then the
   * signature field relaxed with b= empty and no final CRLF. */
  char *sig_empty = strdup(field);
  char *bpos = strstr(sig_empty, "\tb=");
  assert_non_null(bpos);
  bpos[3] = '\0';
  char data[4096];
  int n = snprintf(data, sizeof data,
                   "from:r@relay.test\r\nto:x@example.com\r\n"
                   "subject:Report Domain: example.com Submitter: relay.test"
                   "\r\n");
  /* relaxed form of the DKIM-Signature field with b= empty */
  char *cs;
  size_t csl;
  assert_int_equal(dkim__canon_header(sig_empty, strlen(sig_empty), &cs, &csl),
                   0);
  memcpy(data + n, cs, csl);
  n += (int)csl;
  uint8_t raw[512];
  size_t rawlen;
  assert_int_equal(
      EVP_DecodeBase64(raw, &rawlen, sizeof raw, (const uint8_t *)b, strlen(b)),
      1);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub), 1);
  assert_int_equal(
      EVP_DigestVerify(ctx, raw, rawlen, (const uint8_t *)data, (size_t)n), 1);
  /* A changed signed field no longer verifies. */
  data[5] = 'X';
  EVP_MD_CTX_free(ctx);
  ctx = EVP_MD_CTX_new();
  assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub), 1);
  assert_int_equal(
      EVP_DigestVerify(ctx, raw, rawlen, (const uint8_t *)data, (size_t)n), 0);
  EVP_MD_CTX_free(ctx);
  free(cs);
  free(sig_empty);
  free(a);
  free(c);
  free(h);
  free(bh);
  free(b);
  free(field);
  free(out);
  dkim_key_free(k);
  EVP_PKEY_free(pub);
}

static void test_key_errors(void **state) {
  (void)state;
  struct dkim_key *k;
  assert_int_equal(dkim_key_load("/nonexistent/key.pem", "a.test", "s", &k),
                   POSTERN_ENOENT);
  const char *tmp = getenv("TEST_TMPDIR");
  char path[512];
  snprintf(path, sizeof path, "%s/notakey.pem", tmp ? tmp : "/tmp");
  FILE *f = fopen(path, "w");
  fputs("not a key\n", f);
  fclose(f);
  assert_int_equal(dkim_key_load(path, "a.test", "s", &k), POSTERN_EPROTO);
  assert_int_equal(dkim_key_load(path, "a.test", "bad;selector", &k),
                   POSTERN_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_canon),
      cmocka_unit_test(test_sign_verify),
      cmocka_unit_test(test_key_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
