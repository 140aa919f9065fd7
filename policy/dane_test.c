/*
 * dane_test.c - table-driven tests of the DANE TLSA matcher, covering the
 * scenarios of OpenSSL's DANE test set (test/danetest.in: EE on an expired,
 * name-less leaf; EE and TA at each depth and with each selector and
 * matching type; TA given only in DNS as a certificate or a bare key; EE
 * beating TA; wrong digests; name mismatch under TA; PKIX-only sets) plus
 * SMTP rules of RFC 7672: unusable parameters, reference names, wildcards,
 * validity of everything below the trust anchor.
 *
 * The PKI is generated at start-up with BoringSSL (fresh P-256 keys, chosen
 * names and dates around a fixed `now`), and TLSA data is computed here with
 * other BoringSSL calls than the matcher uses (i2d_X509 / i2d_PUBKEY).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "policy/chain.h"
#include "base/postern_err.h"

static const time_t NOW = 1700000000; /* 2023-11-14 */
#define DAY 86400L

/* The certificates of the test PKI. */
enum which {
  C_NONE,
  C_ROOT,         /* CN=Root CA, self-signed CA */
  C_INT,          /* CN=Issuer CA, signed by root */
  C_LEAF,         /* mx.example.com, signed by int */
  C_LEAF_EXPIRED, /* ended 10 days ago */
  C_LEAF_FUTURE,  /* starts in 10 days */
  C_LEAF_NONAME,  /* no subject, no SAN, notBefore after notAfter */
  C_LEAF_OTHER,   /* example.org */
  C_LEAF_WILD,    /* *.example.com */
  C_LEAF_BASE,    /* base.example.net (a TLSA base domain) */
  C_LEAF_CN,      /* CN=mx.example.com, no SAN */
  C_LEAF_SANX,    /* CN=mx.example.com but SAN other.example.com */
  C_LEAF_CLIENT,  /* mx.example.com, EKU clientAuth only */
  C_LEAF_SELF,    /* mx.example.com, self-signed */
  C_INT_EXPIRED,  /* same name and key as int, expired */
  C_ROOT_EXPIRED, /* same name and key as root, expired */
  C_OTHER_CA,     /* CN=Issuer CA with another key, self-signed CA */
  C_GARBAGE,      /* not DER at all */
  C_COUNT
};

static X509 *certs[C_COUNT];
static uint8_t *ders[C_COUNT];
static size_t der_lens[C_COUNT];

static EVP_PKEY *new_key(void) {
  EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  assert_non_null(ec);
  assert_int_equal(EC_KEY_generate_key(ec), 1);
  EVP_PKEY *k = EVP_PKEY_new();
  assert_non_null(k);
  assert_int_equal(EVP_PKEY_assign_EC_KEY(k, ec), 1);
  return k;
}

static void add_ext(X509 *x, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
  assert_non_null(ext);
  assert_int_equal(X509_add_ext(x, ext, -1), 1);
  X509_EXTENSION_free(ext);
}

struct cert_spec {
  const char *cn;  /* NULL: empty subject */
  const char *san; /* "DNS:a,DNS:b" or NULL */
  const char *eku; /* "clientAuth" or NULL */
  int ca;
  long not_before, not_after; /* seconds from NOW */
};

static X509 *make_cert(const struct cert_spec *s, EVP_PKEY *key, X509 *issuer,
                       EVP_PKEY *issuer_key, long serial) {
  X509 *x = X509_new();
  assert_non_null(x);
  assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
  assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
  X509_NAME *name = X509_NAME_new();
  assert_non_null(name);
  if (s->cn != NULL)
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const uint8_t *)s->cn, -1, -1,
                                                0),
                     1);
  assert_int_equal(X509_set_subject_name(x, name), 1);
  assert_int_equal(
      X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name),
      1);
  X509_NAME_free(name);
  assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), NOW + s->not_before));
  assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), NOW + s->not_after));
  assert_int_equal(X509_set_pubkey(x, key), 1);
  if (s->ca) {
    add_ext(x, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, NID_basic_constraints, "critical,CA:FALSE");
  }
  if (s->san != NULL)
    add_ext(x, NID_subject_alt_name, s->san);
  if (s->eku != NULL)
    add_ext(x, NID_ext_key_usage, s->eku);
  assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
  return x;
}

static int setup_pki(void **state) {
  (void)state;
  EVP_PKEY *root_key = new_key(), *int_key = new_key(), *leaf_key = new_key(),
           *other_key = new_key();
  const long Y = 3650 * DAY;
  struct cert_spec root = {"Root CA", NULL, NULL, 1, -10 * DAY, Y};
  struct cert_spec inter = {"Issuer CA", NULL, NULL, 1, -10 * DAY, Y};
  struct cert_spec leaf = {
      "mx.example.com", "DNS:mx.example.com", NULL, 0, -DAY, 90 * DAY};

  certs[C_ROOT] = make_cert(&root, root_key, NULL, NULL, 1);
  certs[C_INT] = make_cert(&inter, int_key, certs[C_ROOT], root_key, 2);
  certs[C_LEAF] = make_cert(&leaf, leaf_key, certs[C_INT], int_key, 3);
  struct cert_spec s = leaf;
  s.not_before = -20 * DAY;
  s.not_after = -10 * DAY;
  certs[C_LEAF_EXPIRED] = make_cert(&s, leaf_key, certs[C_INT], int_key, 4);
  s.not_before = 10 * DAY;
  s.not_after = 20 * DAY;
  certs[C_LEAF_FUTURE] = make_cert(&s, leaf_key, certs[C_INT], int_key, 5);
  struct cert_spec noname = {NULL, NULL, NULL, 0, DAY, -DAY};
  certs[C_LEAF_NONAME] = make_cert(&noname, leaf_key, certs[C_INT], int_key, 6);
  s = leaf;
  s.cn = "example.org";
  s.san = "DNS:example.org";
  certs[C_LEAF_OTHER] = make_cert(&s, leaf_key, certs[C_INT], int_key, 7);
  s.cn = "wildcard";
  s.san = "DNS:*.example.com";
  certs[C_LEAF_WILD] = make_cert(&s, leaf_key, certs[C_INT], int_key, 8);
  s.cn = "base";
  s.san = "DNS:base.example.net";
  certs[C_LEAF_BASE] = make_cert(&s, leaf_key, certs[C_INT], int_key, 9);
  s.cn = "mx.example.com";
  s.san = NULL;
  certs[C_LEAF_CN] = make_cert(&s, leaf_key, certs[C_INT], int_key, 10);
  s.san = "DNS:other.example.com";
  certs[C_LEAF_SANX] = make_cert(&s, leaf_key, certs[C_INT], int_key, 11);
  s = leaf;
  s.eku = "clientAuth";
  certs[C_LEAF_CLIENT] = make_cert(&s, leaf_key, certs[C_INT], int_key, 12);
  certs[C_LEAF_SELF] = make_cert(&leaf, leaf_key, NULL, NULL, 13);
  s = inter;
  s.not_before = -30 * DAY;
  s.not_after = -DAY;
  certs[C_INT_EXPIRED] = make_cert(&s, int_key, certs[C_ROOT], root_key, 14);
  s = root;
  s.not_before = -30 * DAY;
  s.not_after = -DAY;
  certs[C_ROOT_EXPIRED] = make_cert(&s, root_key, NULL, NULL, 15);
  certs[C_OTHER_CA] = make_cert(&inter, other_key, NULL, NULL, 16);

  for (int i = 1; i < C_COUNT; i++) {
    if (i == C_GARBAGE) {
      static const char junk[] = "\x30\x03junk, not a certificate";
      ders[i] = OPENSSL_malloc(sizeof junk);
      memcpy(ders[i], junk, sizeof junk);
      der_lens[i] = sizeof junk;
      continue;
    }
    int n = i2d_X509(certs[i], &ders[i]);
    assert_true(n > 0);
    der_lens[i] = (size_t)n;
  }
  EVP_PKEY_free(root_key);
  EVP_PKEY_free(int_key);
  EVP_PKEY_free(leaf_key);
  EVP_PKEY_free(other_key);
  return 0;
}

static int teardown_pki(void **state) {
  (void)state;
  for (int i = 0; i < C_COUNT; i++) {
    X509_free(certs[i]);
    OPENSSL_free(ders[i]);
    certs[i] = NULL;
    ders[i] = NULL;
  }
  return 0;
}

/* How a record's data is derived from its target certificate. */
enum mangle {
  M_NONE,
  M_FLIP,    /* last byte changed: a wrong digest or key */
  M_SHORT,   /* one byte missing */
  M_GARBAGE, /* not the target's data at all */
};

struct rec_spec {
  int usage, selector, mtype;
  enum which target;
  enum mangle mangle;
};

#define MAXREC 5
#define MAXCHAIN 4
struct dane_case {
  const char *what;
  struct rec_spec recs[MAXREC]; /* ends at target C_NONE */
  enum which chain[MAXCHAIN];   /* leaf first, ends at C_NONE */
  const char *names[2];         /* NULL: {"mx.example.com"} */
  enum policy_dane_status want;
  int depth; /* with OK */
  int usage; /* with OK */
};

#define R(u, s, m, t)                                                          \
  { u, s, m, t, M_NONE }
#define RM(u, s, m, t, mg)                                                     \
  { u, s, m, t, mg }
#define CHAIN3                                                                 \
  { C_LEAF, C_INT, C_ROOT }
#define OK(d, u) POLICY_DANE_OK, d, u
#define FAIL(st) POLICY_DANE_##st, -1, -1

static const struct dane_case cases[] = {
    /* -- DANE-EE(3) on a never-valid, name-less leaf (danetest 1-8) */
    {"EE 3 0 1 nameless",
     {R(3, 0, 1, C_LEAF_NONAME)},
     {C_LEAF_NONAME},
     {0},
     OK(0, 3)},
    {"EE 3 1 1 nameless",
     {R(3, 1, 1, C_LEAF_NONAME)},
     {C_LEAF_NONAME},
     {0},
     OK(0, 3)},
    {"EE 3 0 2 nameless",
     {R(3, 0, 2, C_LEAF_NONAME)},
     {C_LEAF_NONAME},
     {0},
     OK(0, 3)},
    {"EE 3 1 2 nameless",
     {R(3, 1, 2, C_LEAF_NONAME)},
     {C_LEAF_NONAME},
     {0},
     OK(0, 3)},
    {"EE 3 0 0 nameless",
     {R(3, 0, 0, C_LEAF_NONAME)},
     {C_LEAF_NONAME},
     {0},
     OK(0, 3)},
    {"EE 3 1 0 nameless",
     {R(3, 1, 0, C_LEAF_NONAME)},
     {C_LEAF_NONAME},
     {0},
     OK(0, 3)},
    {"EE 3 0 1 wrong",
     {RM(3, 0, 1, C_LEAF_NONAME, M_FLIP)},
     {C_LEAF_NONAME},
     {0},
     FAIL(MISMATCH)},
    {"EE 3 1 1 wrong",
     {RM(3, 1, 1, C_LEAF_NONAME, M_FLIP)},
     {C_LEAF_NONAME},
     {0},
     FAIL(MISMATCH)},
    {"EE 3 0 2 wrong",
     {RM(3, 0, 2, C_LEAF_NONAME, M_FLIP)},
     {C_LEAF_NONAME},
     {0},
     FAIL(MISMATCH)},
    {"EE 3 1 2 wrong",
     {RM(3, 1, 2, C_LEAF_NONAME, M_FLIP)},
     {C_LEAF_NONAME},
     {0},
     FAIL(MISMATCH)},
    {"EE 3 1 0 wrong",
     {RM(3, 1, 0, C_LEAF_NONAME, M_FLIP)},
     {C_LEAF_NONAME},
     {0},
     FAIL(MISMATCH)},
    {"EE on expired leaf",
     {R(3, 1, 1, C_LEAF_EXPIRED)},
     {C_LEAF_EXPIRED, C_INT},
     {0},
     OK(0, 3)},

    /* -- DANE-EE(3) in a full chain (danetest 9-12) */
    {"EE 3 0 1 chain", {R(3, 0, 1, C_LEAF)}, CHAIN3, {0}, OK(0, 3)},
    {"EE 3 1 1 chain", {R(3, 1, 1, C_LEAF)}, CHAIN3, {0}, OK(0, 3)},
    {"EE 3 0 2 chain", {R(3, 0, 2, C_LEAF)}, CHAIN3, {0}, OK(0, 3)},
    {"EE 3 1 2 chain", {R(3, 1, 2, C_LEAF)}, CHAIN3, {0}, OK(0, 3)},
    {"EE matches only the leaf",
     {R(3, 1, 1, C_INT)},
     CHAIN3,
     {0},
     FAIL(MISMATCH)},

    /* -- DANE-TA(2) at depth 1 (danetest 13-16) */
    {"TA 2 0 1 depth 1", {R(2, 0, 1, C_INT)}, CHAIN3, {0}, OK(1, 2)},
    {"TA 2 1 1 depth 1", {R(2, 1, 1, C_INT)}, CHAIN3, {0}, OK(1, 2)},
    {"TA 2 0 2 depth 1", {R(2, 0, 2, C_INT)}, CHAIN3, {0}, OK(1, 2)},
    {"TA 2 1 2 depth 1", {R(2, 1, 2, C_INT)}, CHAIN3, {0}, OK(1, 2)},
    {"TA 2 0 0 depth 1 presented", {R(2, 0, 0, C_INT)}, CHAIN3, {0}, OK(1, 2)},
    {"TA 2 1 0 depth 1 presented", {R(2, 1, 0, C_INT)}, CHAIN3, {0}, OK(1, 2)},
    /* -- DANE-TA(2) at depth 2 (danetest 17-20) */
    {"TA 2 0 1 depth 2", {R(2, 0, 1, C_ROOT)}, CHAIN3, {0}, OK(2, 2)},
    {"TA 2 1 1 depth 2", {R(2, 1, 1, C_ROOT)}, CHAIN3, {0}, OK(2, 2)},
    {"TA 2 0 2 depth 2", {R(2, 0, 2, C_ROOT)}, CHAIN3, {0}, OK(2, 2)},
    {"TA 2 1 2 depth 2", {R(2, 1, 2, C_ROOT)}, CHAIN3, {0}, OK(2, 2)},
    {"TA chain out of order",
     {R(2, 0, 1, C_ROOT)},
     {C_LEAF, C_ROOT, C_INT},
     {0},
     OK(2, 2)},
    {"TA past garbage in chain",
     {R(2, 0, 1, C_INT)},
     {C_LEAF, C_GARBAGE, C_INT},
     {0},
     OK(1, 2)},
    {"TA at depth 0, self-signed leaf",
     {R(2, 0, 1, C_LEAF_SELF)},
     {C_LEAF_SELF},
     {0},
     OK(0, 2)},

    /* -- PKIX-TA(0)/PKIX-EE(1) are unusable for SMTP (danetest 21-33) */
    {"PKIX-EE only",
     {R(1, 0, 1, C_LEAF), R(1, 1, 1, C_LEAF)},
     CHAIN3,
     {0},
     FAIL(NO_USABLE)},
    {"PKIX-TA only",
     {R(0, 0, 1, C_INT), R(0, 1, 2, C_ROOT)},
     CHAIN3,
     {0},
     FAIL(NO_USABLE)},
    {"PKIX-TA full only",
     {R(0, 1, 0, C_INT), R(0, 0, 0, C_ROOT)},
     CHAIN3,
     {0},
     FAIL(NO_USABLE)},

    /* -- failures (danetest 34-38) */
    {"missing intermediate, root digest",
     {R(2, 0, 1, C_ROOT)},
     {C_LEAF},
     {0},
     FAIL(MISMATCH)},
    {"missing intermediate, root presented",
     {R(2, 0, 1, C_ROOT)},
     {C_LEAF, C_ROOT},
     {0},
     FAIL(CHAIN)},
    {"wrong leaf digest",
     {RM(3, 0, 2, C_LEAF, M_FLIP)},
     CHAIN3,
     {0},
     FAIL(MISMATCH)},
    {"wrong intermediate digest",
     {RM(2, 0, 1, C_INT, M_FLIP)},
     CHAIN3,
     {0},
     FAIL(MISMATCH)},
    {"wrong root digest",
     {RM(2, 0, 1, C_ROOT, M_FLIP)},
     CHAIN3,
     {0},
     FAIL(MISMATCH)},
    {"wrong digests everywhere",
     {RM(3, 1, 1, C_LEAF, M_FLIP), RM(2, 1, 2, C_INT, M_FLIP),
      RM(2, 0, 2, C_ROOT, M_FLIP)},
     CHAIN3,
     {0},
     FAIL(MISMATCH)},
    {"TA matches a CA that did not sign the leaf",
     {R(2, 0, 1, C_OTHER_CA)},
     {C_LEAF, C_OTHER_CA},
     {0},
     FAIL(CHAIN)},
    {"TA but leaf not for TLS servers",
     {R(2, 0, 1, C_INT)},
     {C_LEAF_CLIENT, C_INT},
     {0},
     FAIL(CHAIN)},

    /* -- mixed usages (danetest 39-42) */
    {"EE beats TA (TA would fail: expired leaf)",
     {R(2, 1, 2, C_ROOT), R(3, 1, 2, C_LEAF_EXPIRED)},
     {C_LEAF_EXPIRED, C_INT, C_ROOT},
     {0},
     OK(0, 3)},
    {"EE beats TA (TA would fail: name)",
     {R(2, 1, 1, C_INT), R(3, 0, 1, C_LEAF_OTHER)},
     {C_LEAF_OTHER, C_INT, C_ROOT},
     {0},
     OK(0, 3)},
    {"EE beats TA (both match)",
     {R(2, 0, 1, C_INT), R(3, 1, 1, C_LEAF)},
     CHAIN3,
     {0},
     OK(0, 3)},
    {"TA depth 1 beats TA depth 2",
     {R(2, 1, 2, C_ROOT), R(2, 1, 2, C_INT)},
     CHAIN3,
     {0},
     OK(1, 2)},
    {"TA depth 2 beats PKIX-TA depth 1",
     {R(0, 0, 1, C_INT), R(2, 0, 1, C_ROOT)},
     CHAIN3,
     {0},
     OK(2, 2)},
    {"TA depth 2 beats PKIX-EE depth 0",
     {R(1, 0, 1, C_LEAF), R(2, 0, 1, C_ROOT)},
     CHAIN3,
     {0},
     OK(2, 2)},

    /* -- trust anchors given only in DNS (danetest 43-46) */
    {"TA 2 0 0 root from DNS",
     {R(2, 0, 0, C_ROOT)},
     {C_LEAF, C_INT},
     {0},
     OK(2, 2)},
    {"TA 2 0 0 intermediate from DNS",
     {R(2, 0, 0, C_INT)},
     {C_LEAF},
     {0},
     OK(1, 2)},
    {"TA 2 1 0 intermediate key from DNS",
     {R(2, 1, 0, C_INT)},
     {C_LEAF},
     {0},
     OK(0, 2)},
    {"TA 2 1 0 root key from DNS",
     {R(2, 1, 0, C_ROOT)},
     {C_LEAF, C_INT},
     {0},
     OK(1, 2)},
    {"TA 2 1 0 wrong key",
     {RM(2, 1, 0, C_OTHER_CA, M_NONE)},
     {C_LEAF, C_INT},
     {0},
     FAIL(MISMATCH)},
    {"TA 2 0 0 unrelated CA from DNS",
     {R(2, 0, 0, C_OTHER_CA)},
     {C_LEAF},
     {0},
     FAIL(CHAIN)},

    /* -- names under TA (danetest 47-50; RFC 7672 §3.2.3) */
    {"EE ignores name mismatch",
     {R(3, 1, 1, C_LEAF_OTHER)},
     {C_LEAF_OTHER, C_INT, C_ROOT},
     {0},
     OK(0, 3)},
    {"name mismatch under TA intermediate",
     {R(2, 1, 1, C_INT)},
     {C_LEAF_OTHER, C_INT, C_ROOT},
     {0},
     FAIL(NAME)},
    {"name mismatch under TA root",
     {R(2, 1, 1, C_ROOT)},
     {C_LEAF_OTHER, C_INT, C_ROOT},
     {0},
     FAIL(NAME)},
    {"name mismatch under TA from DNS",
     {R(2, 0, 0, C_INT)},
     {C_LEAF_OTHER},
     {0},
     FAIL(NAME)},
    {"self-signed TA leaf, wrong name",
     {R(2, 0, 1, C_LEAF_SELF)},
     {C_LEAF_SELF},
     {"other.example.com"},
     FAIL(NAME)},
    {"reference name case and trailing dot",
     {R(2, 0, 1, C_INT)},
     CHAIN3,
     {"MX.Example.COM."},
     OK(1, 2)},
    {"wildcard covers one label",
     {R(2, 0, 1, C_INT)},
     {C_LEAF_WILD, C_INT},
     {0},
     OK(1, 2)},
    {"wildcard not two labels",
     {R(2, 0, 1, C_INT)},
     {C_LEAF_WILD, C_INT},
     {"a.mx.example.com"},
     FAIL(NAME)},
    {"wildcard not the parent",
     {R(2, 0, 1, C_INT)},
     {C_LEAF_WILD, C_INT},
     {"example.com"},
     FAIL(NAME)},
    {"TLSA base domain as second name",
     {R(2, 0, 1, C_INT)},
     {C_LEAF_BASE, C_INT},
     {"mx.example.com", "base.example.net"},
     OK(1, 2)},
    {"TLSA base domain missing",
     {R(2, 0, 1, C_INT)},
     {C_LEAF_BASE, C_INT},
     {"mx.example.com"},
     FAIL(NAME)},
    {"CN used without DNS-ID",
     {R(2, 0, 1, C_INT)},
     {C_LEAF_CN, C_INT},
     {0},
     OK(1, 2)},
    {"CN ignored when DNS-ID present",
     {R(2, 0, 1, C_INT)},
     {C_LEAF_SANX, C_INT},
     {0},
     FAIL(NAME)},

    /* -- validity below the anchor (RFC 7672 §3.1.2) */
    {"expired leaf under TA",
     {R(2, 0, 1, C_INT)},
     {C_LEAF_EXPIRED, C_INT},
     {0},
     FAIL(EXPIRED)},
    {"future leaf under TA",
     {R(2, 1, 2, C_ROOT)},
     {C_LEAF_FUTURE, C_INT, C_ROOT},
     {0},
     FAIL(EXPIRED)},
    {"never-valid nameless leaf under TA",
     {R(2, 0, 1, C_INT)},
     {C_LEAF_NONAME, C_INT},
     {0},
     FAIL(EXPIRED)},
    {"expired intermediate under TA root",
     {R(2, 0, 1, C_ROOT)},
     {C_LEAF, C_INT_EXPIRED, C_ROOT},
     {0},
     FAIL(EXPIRED)},
    {"expired intermediate is the TA",
     {R(2, 0, 1, C_INT_EXPIRED)},
     {C_LEAF, C_INT_EXPIRED, C_ROOT},
     {0},
     OK(1, 2)},
    {"expired root is the TA",
     {R(2, 0, 1, C_ROOT_EXPIRED)},
     {C_LEAF, C_INT, C_ROOT_EXPIRED},
     {0},
     OK(2, 2)},
    {"expired root TA from DNS",
     {R(2, 0, 0, C_ROOT_EXPIRED)},
     {C_LEAF, C_INT},
     {0},
     OK(2, 2)},
    {"bare key signs an expired intermediate",
     {R(2, 1, 0, C_ROOT)},
     {C_LEAF, C_INT_EXPIRED},
     {0},
     FAIL(EXPIRED)},

    /* -- unusable records (RFC 7672 §3.1.3, RFC 7671) */
    {"unknown usage", {R(4, 0, 1, C_LEAF)}, CHAIN3, {0}, FAIL(NO_USABLE)},
    {"unknown selector", {R(3, 2, 1, C_LEAF)}, CHAIN3, {0}, FAIL(NO_USABLE)},
    {"unknown matching type",
     {R(3, 0, 3, C_LEAF)},
     CHAIN3,
     {0},
     FAIL(NO_USABLE)},
    {"short SHA-256",
     {RM(3, 0, 1, C_LEAF, M_SHORT)},
     CHAIN3,
     {0},
     FAIL(NO_USABLE)},
    {"short SHA-512",
     {RM(2, 1, 2, C_INT, M_SHORT)},
     CHAIN3,
     {0},
     FAIL(NO_USABLE)},
    {"TA full certificate that does not parse",
     {RM(2, 0, 0, C_INT, M_GARBAGE)},
     CHAIN3,
     {0},
     FAIL(NO_USABLE)},
    {"TA full key that does not parse",
     {RM(2, 1, 0, C_INT, M_SHORT)},
     CHAIN3,
     {0},
     FAIL(NO_USABLE)},
    {"unusable-only mix",
     {R(4, 0, 1, C_LEAF), R(1, 1, 1, C_LEAF), R(0, 0, 1, C_INT),
      R(3, 2, 1, C_LEAF), RM(3, 0, 1, C_LEAF, M_SHORT)},
     CHAIN3,
     {0},
     FAIL(NO_USABLE)},
    {"unusable records next to a usable match",
     {R(4, 0, 1, C_LEAF), R(1, 1, 1, C_LEAF), R(2, 1, 1, C_INT)},
     CHAIN3,
     {0},
     OK(1, 2)},
    {"usable but unmatched next to unusable matches",
     {R(1, 1, 1, C_LEAF), R(0, 0, 1, C_INT), RM(3, 1, 1, C_LEAF, M_FLIP)},
     CHAIN3,
     {0},
     FAIL(MISMATCH)},

    /* -- the reported reason is the one that got furthest */
    {"furthest reason: expired beats chain",
     {R(2, 0, 1, C_OTHER_CA), R(2, 0, 1, C_INT)},
     {C_LEAF_EXPIRED, C_OTHER_CA, C_INT},
     {0},
     FAIL(EXPIRED)},
    {"furthest reason: name beats mismatch",
     {RM(3, 1, 1, C_LEAF_OTHER, M_FLIP), R(2, 0, 2, C_ROOT)},
     {C_LEAF_OTHER, C_INT, C_ROOT},
     {0},
     FAIL(NAME)},
};

/* Computes a record's association data the way a zone operator would. */
static uint8_t *record_data(const struct rec_spec *r, size_t *len) {
  uint8_t *raw = NULL;
  int n;
  X509 *x = certs[r->target];
  if (r->mangle == M_GARBAGE) {
    static const uint8_t junk[] = {0x30, 0x82, 0x01, 0x00, 0xde, 0xad};
    raw = OPENSSL_malloc(sizeof junk);
    memcpy(raw, junk, sizeof junk);
    *len = sizeof junk;
    return raw;
  }
  if (r->selector == 1) {
    EVP_PKEY *k = X509_get_pubkey(x);
    assert_non_null(k);
    n = i2d_PUBKEY(k, &raw);
    EVP_PKEY_free(k);
  } else {
    n = i2d_X509(x, &raw);
  }
  assert_true(n > 0);
  size_t rlen = (size_t)n;
  uint8_t *out;
  if (r->mtype == 1 || r->mtype == 2) {
    size_t dl = r->mtype == 1 ? SHA256_DIGEST_LENGTH : SHA512_DIGEST_LENGTH;
    out = OPENSSL_malloc(dl);
    if (r->mtype == 1)
      SHA256(raw, rlen, out);
    else
      SHA512(raw, rlen, out);
    OPENSSL_free(raw);
    rlen = dl;
  } else {
    out = raw; /* full data; also for unknown mtypes (3) */
  }
  if (r->mangle == M_FLIP)
    out[rlen - 1] ^= 0x5a;
  if (r->mangle == M_SHORT)
    rlen--;
  *len = rlen;
  return out;
}

static void run_case(const struct dane_case *c) {
  struct policy_tlsa recs[MAXREC];
  uint8_t *bufs[MAXREC] = {0};
  size_t nrecs = 0;
  for (; nrecs < MAXREC && c->recs[nrecs].target != C_NONE; nrecs++) {
    const struct rec_spec *r = &c->recs[nrecs];
    size_t len;
    bufs[nrecs] = record_data(r, &len);
    recs[nrecs].usage = (uint8_t)r->usage;
    recs[nrecs].selector = (uint8_t)r->selector;
    recs[nrecs].mtype = (uint8_t)r->mtype;
    recs[nrecs].data = bufs[nrecs];
    recs[nrecs].len = len;
  }
  struct policy_dane_cert chain[MAXCHAIN];
  size_t nchain = 0;
  for (; nchain < MAXCHAIN && c->chain[nchain] != C_NONE; nchain++) {
    chain[nchain].der = ders[c->chain[nchain]];
    chain[nchain].len = der_lens[c->chain[nchain]];
  }
  const char *def[] = {"mx.example.com"};
  const char *const *names = c->names[0] ? c->names : def;
  size_t nnames = c->names[0] ? (c->names[1] ? 2 : 1) : 1;

  struct policy_dane_result res;
  int rc =
      policy_dane_verify(recs, nrecs, chain, nchain, names, nnames, NOW, &res);
  for (size_t i = 0; i < nrecs; i++)
    OPENSSL_free(bufs[i]);
  if (rc != 0)
    fail_msg("case '%s': rc %s", c->what, postern_err_name(rc));
  if (res.status != c->want)
    fail_msg("case '%s': status %s, want %s", c->what,
             policy_dane_status_name(res.status),
             policy_dane_status_name(c->want));
  if (res.status == POLICY_DANE_OK &&
      (res.depth != c->depth || res.usage != c->usage))
    fail_msg("case '%s': depth %d usage %d, want depth %d usage %d", c->what,
             res.depth, res.usage, c->depth, c->usage);
  if (res.status != POLICY_DANE_OK && res.depth != -1)
    fail_msg("case '%s': depth %d on failure", c->what, res.depth);
  if (res.status == POLICY_DANE_OK) {
    /* The reported record is one of the given ones, with that usage. */
    assert_true(res.record < nrecs);
    assert_int_equal(recs[res.record].usage, res.usage);
  }
}

static void test_dane_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    run_case(&cases[i]);
}

/* The same checks at a later `now`: time is an input, not the clock. */
static void test_now_is_an_input(void **state) {
  (void)state;
  struct rec_spec r = {2, 0, 1, C_INT, M_NONE};
  size_t len;
  uint8_t *data = record_data(&r, &len);
  struct policy_tlsa rec = {2, 0, 1, data, len};
  struct policy_dane_cert chain[2] = {{ders[C_LEAF], der_lens[C_LEAF]},
                                      {ders[C_INT], der_lens[C_INT]}};
  const char *names[] = {"mx.example.com"};
  struct policy_dane_result res;
  assert_int_equal(policy_dane_verify(&rec, 1, chain, 2, names, 1, NOW, &res),
                   0);
  assert_int_equal(res.status, POLICY_DANE_OK);
  /* 91 days later the leaf has expired; 2 days earlier it was not valid. */
  assert_int_equal(
      policy_dane_verify(&rec, 1, chain, 2, names, 1, NOW + 91 * DAY, &res), 0);
  assert_int_equal(res.status, POLICY_DANE_EXPIRED);
  assert_int_equal(
      policy_dane_verify(&rec, 1, chain, 2, names, 1, NOW - 2 * DAY, &res), 0);
  assert_int_equal(res.status, POLICY_DANE_EXPIRED);
  OPENSSL_free(data);
}

static void test_bad_arguments(void **state) {
  (void)state;
  uint8_t d[32] = {0};
  struct policy_tlsa rec = {3, 1, 1, d, sizeof d};
  struct policy_dane_cert leaf = {ders[C_LEAF], der_lens[C_LEAF]};
  struct policy_dane_cert junk = {ders[C_GARBAGE], der_lens[C_GARBAGE]};
  struct policy_dane_cert trunc = {ders[C_LEAF], der_lens[C_LEAF] - 1};
  const char *names[] = {"mx.example.com"};
  struct policy_dane_result res;
  assert_int_equal(policy_dane_verify(&rec, 1, &leaf, 0, names, 1, NOW, &res),
                   POSTERN_EINVAL);
  assert_int_equal(policy_dane_verify(&rec, 1, NULL, 1, names, 1, NOW, &res),
                   POSTERN_EINVAL);
  assert_int_equal(policy_dane_verify(&rec, 1, &leaf, 1, names, 1, NOW, NULL),
                   POSTERN_EINVAL);
  assert_int_equal(policy_dane_verify(NULL, 1, &leaf, 1, names, 1, NOW, &res),
                   POSTERN_EINVAL);
  assert_int_equal(policy_dane_verify(&rec, 1, &junk, 1, names, 1, NOW, &res),
                   POSTERN_EINVAL);
  assert_int_equal(policy_dane_verify(&rec, 1, &trunc, 1, names, 1, NOW, &res),
                   POSTERN_EINVAL);
  /* No records at all: nothing usable. */
  assert_int_equal(policy_dane_verify(NULL, 0, &leaf, 1, NULL, 0, NOW, &res),
                   0);
  assert_int_equal(res.status, POLICY_DANE_NO_USABLE);
  assert_int_equal(res.depth, -1);
}

struct usable_case {
  uint8_t usage, selector, mtype;
  size_t len;
  bool usable;
};

static void test_usable_table(void **state) {
  (void)state;
  static const struct usable_case uc[] = {
      {3, 0, 1, 32, true},
      {3, 1, 1, 32, true},
      {3, 0, 2, 64, true},
      {3, 1, 2, 64, true},
      {3, 0, 0, 5, true},
      {3, 1, 0, 1, true},
      {2, 0, 1, 32, true},
      {2, 1, 2, 64, true},
      {3, 0, 1, 31, false},
      {3, 0, 1, 33, false},
      {3, 0, 2, 32, false},
      {2, 1, 1, 64, false},
      {3, 0, 0, 0, false},
      {0, 0, 1, 32, false},
      {1, 0, 1, 32, false},
      {4, 0, 1, 32, false},
      {255, 0, 1, 32, false},
      {3, 2, 1, 32, false},
      {3, 0, 3, 32, false},
      {3, 0, 255, 32, false},
      /* 2 0 0 / 2 1 0 with bytes that are neither a certificate nor a key */
      {2, 0, 0, 16, false},
      {2, 1, 0, 16, false},
  };
  uint8_t data[64];
  memset(data, 0xab, sizeof data);
  for (size_t i = 0; i < sizeof uc / sizeof uc[0]; i++) {
    struct policy_tlsa r = {uc[i].usage, uc[i].selector, uc[i].mtype, data,
                            uc[i].len};
    if (policy_tlsa_usable(&r) != uc[i].usable)
      fail_msg("usable case %u %u %u len %zu: want %d", uc[i].usage,
               uc[i].selector, uc[i].mtype, uc[i].len, uc[i].usable);
  }
  assert_false(policy_tlsa_usable(NULL));
  /* A real certificate and key make 2 0 0 and 2 1 0 usable. */
  struct policy_tlsa full = {2, 0, 0, ders[C_ROOT], der_lens[C_ROOT]};
  assert_true(policy_tlsa_usable(&full));
  full.len--; /* truncated certificate */
  assert_false(policy_tlsa_usable(&full));
}

static void test_rdata(void **state) {
  (void)state;
  static const uint8_t rd[] = {3, 1, 1, 0xaa, 0xbb};
  struct policy_tlsa t;
  assert_int_equal(policy_tlsa_from_rdata(rd, sizeof rd, &t), 0);
  assert_int_equal(t.usage, 3);
  assert_int_equal(t.selector, 1);
  assert_int_equal(t.mtype, 1);
  assert_ptr_equal(t.data, rd + 3);
  assert_int_equal(t.len, 2);
  assert_int_equal(policy_tlsa_from_rdata(rd, 3, &t), POSTERN_EPROTO);
  assert_int_equal(policy_tlsa_from_rdata(rd, 0, &t), POSTERN_EPROTO);
  assert_int_equal(policy_tlsa_from_rdata(NULL, 5, &t), POSTERN_EINVAL);
}

static void test_status_names(void **state) {
  (void)state;
  assert_string_equal(policy_dane_status_name(POLICY_DANE_OK), "ok");
  assert_string_equal(policy_dane_status_name(POLICY_DANE_NAME), "name");
  assert_string_equal(policy_dane_status_name(POLICY_DANE_STATUS_COUNT),
                      "unknown");
  for (int i = 0; i < POLICY_DANE_STATUS_COUNT; i++) {
    assert_true(strlen(policy_dane_status_message(i)) > 0);
    for (int j = i + 1; j < POLICY_DANE_STATUS_COUNT; j++)
      assert_string_not_equal(policy_dane_status_name(i),
                              policy_dane_status_name(j));
  }
  /* The failure order used to pick the reported reason. */
  assert_true(POLICY_DANE_MISMATCH < POLICY_DANE_CHAIN);
  assert_true(POLICY_DANE_CHAIN < POLICY_DANE_EXPIRED);
  assert_true(POLICY_DANE_EXPIRED < POLICY_DANE_NAME);
}

/* Hostile chains: every truncation of the leaf is refused cleanly, and a
 * truncated intermediate is simply unusable. */
static void test_truncated_chains(void **state) {
  (void)state;
  struct rec_spec r = {2, 0, 1, C_INT, M_NONE};
  size_t len;
  uint8_t *data = record_data(&r, &len);
  struct policy_tlsa rec = {2, 0, 1, data, len};
  const char *names[] = {"mx.example.com"};
  struct policy_dane_result res;
  for (size_t n = 1; n < der_lens[C_LEAF]; n++) {
    uint8_t *cut = malloc(n);
    assert_non_null(cut);
    memcpy(cut, ders[C_LEAF], n);
    struct policy_dane_cert c = {cut, n};
    assert_int_equal(policy_dane_verify(&rec, 1, &c, 1, names, 1, NOW, &res),
                     POSTERN_EINVAL);
    free(cut);
  }
  for (size_t n = 1; n < der_lens[C_INT]; n += 7) {
    uint8_t *cut = malloc(n);
    assert_non_null(cut);
    memcpy(cut, ders[C_INT], n);
    struct policy_dane_cert c[2] = {{ders[C_LEAF], der_lens[C_LEAF]}, {cut, n}};
    assert_int_equal(policy_dane_verify(&rec, 1, c, 2, names, 1, NOW, &res), 0);
    assert_int_equal(res.status, POLICY_DANE_MISMATCH);
    free(cut);
  }
  OPENSSL_free(data);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dane_table),
      cmocka_unit_test(test_now_is_an_input),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_truncated_chains),
      cmocka_unit_test(test_usable_table),
      cmocka_unit_test(test_rdata),
      cmocka_unit_test(test_status_names),
  };
  return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
