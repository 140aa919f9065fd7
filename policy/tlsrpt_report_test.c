/*
 * tlsrpt_report_test.c - tests of the SMTP TLS Reporting report builders
 * (RFC 8460): the JSON report (§4.4, read back with jansson, every field
 * and every absent one checked), gzip (read back with zlib's inflate), the
 * file name and the mail (§5.3, taken apart line by line, its attachment
 * decoded back to the report), and the inputs each refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <openssl/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "base/postern_err.h"
#include "policy/tlsrpt.h"

/* ---- JSON report (§4.4) ------------------------------------------------- */

static const char *const sts_strings[] = {"version: STSv1", "mode: testing",
                                          "mx: *.mail.company-y.example",
                                          "max_age: 86400"};
static const char *const sts_mx[] = {"*.mail.company-y.example",
                                     "mx.company-y.example"};
static const struct policy_tlsrpt_failure sts_failures[] = {
    {.result = POLICY_TLSRPT_CERTIFICATE_EXPIRED,
     .sending_mta_ip = "2001:db8:abcd:0012::1",
     .receiving_mx_hostname = "mx1.mail.company-y.example",
     .count = 100},
    {.result = POLICY_TLSRPT_STARTTLS_NOT_SUPPORTED,
     .sending_mta_ip = "2001:db8:abcd:0013::1",
     .receiving_mx_hostname = "mx2.mail.company-y.example",
     .receiving_ip = "203.0.113.56",
     .count = 200,
     .receiving_mx_helo = "mx2-helo.mail.company-y.example",
     .failure_reason_code = "no STARTTLS in the EHLO reply"},
    /* Counts nothing: left out. */
    {.result = POLICY_TLSRPT_VALIDATION_FAILURE, .count = 0},
    {.result = POLICY_TLSRPT_VALIDATION_FAILURE,
     .sending_mta_ip = "198.51.100.62",
     .receiving_mx_hostname = "mx-backup.mail.company-y.example",
     .receiving_ip = "",
     .count = 3,
     .failure_reason_code = "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"},
};
static const char *const tlsa_strings[] = {
    "3 1 1 "
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "2 1 1 "
    "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"};
static const struct policy_tlsrpt_failure tlsa_failures[] = {
    {.result = POLICY_TLSRPT_TLSA_INVALID,
     .sending_mta_ip = "192.0.2.10",
     .receiving_mx_hostname = "mx.company-z.example",
     .receiving_ip = "192.0.2.25",
     .count = 7},
};

static const struct policy_tlsrpt_policy sample_policies[] = {
    {.type = POLICY_TLSRPT_POLICY_STS,
     .domain = "company-y.example",
     .strings = sts_strings,
     .nstrings = 4,
     .mx_hosts = sts_mx,
     .nmx_hosts = 2,
     .successful = 5326,
     .failed = 303,
     .failures = sts_failures,
     .nfailures = 4},
    {.type = POLICY_TLSRPT_POLICY_TLSA,
     .domain = "company-z.example",
     .strings = tlsa_strings,
     .nstrings = 2,
     .successful = 0,
     .failed = 7,
     .failures = tlsa_failures,
     .nfailures = 1},
    {.type = POLICY_TLSRPT_POLICY_NO_POLICY_FOUND,
     .domain = "company-w.example",
     .successful = 12,
     .failed = 0},
};

static const struct policy_tlsrpt_report sample_report = {
    .organization = "Company-X",
    .contact = "sts-reporting@company-x.example",
    .report_id = "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    .start = 1459468800, /* 2016-04-01T00:00:00Z */
    .end = 1459555199,   /* 2016-04-01T23:59:59Z */
    .policies = sample_policies,
    .npolicies = 3,
};

/* The keys of object `o`, in order, must be exactly `keys` (NULL-ended). */
static void assert_keys(json_t *o, const char *const *keys) {
  assert_true(json_is_object(o));
  void *it = json_object_iter(o);
  size_t n = 0;
  for (; keys[n] != NULL; n++, it = json_object_iter_next(o, it)) {
    assert_non_null(it);
    assert_string_equal(json_object_iter_key(it), keys[n]);
  }
  assert_null(it);
  assert_int_equal(json_object_size(o), n);
}

static void assert_str(json_t *o, const char *key, const char *want) {
  json_t *v = json_object_get(o, key);
  if (!json_is_string(v))
    fail_msg("'%s' is not a string", key);
  assert_string_equal(json_string_value(v), want);
}

static void assert_int(json_t *o, const char *key, json_int_t want) {
  json_t *v = json_object_get(o, key);
  if (!json_is_integer(v))
    fail_msg("'%s' is not an integer", key);
  assert_int_equal(json_integer_value(v), want);
}

static void assert_strings(json_t *a, const char *const *want, size_t n) {
  assert_true(json_is_array(a));
  assert_int_equal(json_array_size(a), n);
  for (size_t i = 0; i < n; i++)
    assert_string_equal(json_string_value(json_array_get(a, i)), want[i]);
}

static json_t *report_parse(const struct policy_tlsrpt_report *r) {
  char *s = NULL;
  size_t len = 0;
  assert_int_equal(policy_tlsrpt_report_json(r, &s, &len), 0);
  assert_int_equal(strlen(s), len);
  json_error_t err;
  json_t *doc = json_loadb(s, len, JSON_REJECT_DUPLICATES, &err);
  if (doc == NULL)
    fail_msg("report is not JSON: %s: %s", err.text, s);
  free(s);
  return doc;
}

static void test_report_json(void **state) {
  (void)state;
  json_t *doc = report_parse(&sample_report);
  assert_keys(doc,
              (const char *[]){"organization-name", "date-range",
                               "contact-info", "report-id", "policies", NULL});
  assert_str(doc, "organization-name", "Company-X");
  assert_str(doc, "contact-info", "sts-reporting@company-x.example");
  assert_str(doc, "report-id", "5065427c-23d3-47ca-b6e0-946ea0e8c4be");
  json_t *range = json_object_get(doc, "date-range");
  assert_keys(range, (const char *[]){"start-datetime", "end-datetime", NULL});
  assert_str(range, "start-datetime", "2016-04-01T00:00:00Z");
  assert_str(range, "end-datetime", "2016-04-01T23:59:59Z");
  json_t *pols = json_object_get(doc, "policies");
  assert_true(json_is_array(pols));
  assert_int_equal(json_array_size(pols), 3);

  /* sts: policy-string and mx-host, three of four failures. */
  json_t *p = json_array_get(pols, 0);
  assert_keys(p,
              (const char *[]){"policy", "summary", "failure-details", NULL});
  json_t *pol = json_object_get(p, "policy");
  assert_keys(pol, (const char *[]){"policy-type", "policy-string",
                                    "policy-domain", "mx-host", NULL});
  assert_str(pol, "policy-type", "sts");
  assert_strings(json_object_get(pol, "policy-string"), sts_strings, 4);
  assert_str(pol, "policy-domain", "company-y.example");
  assert_strings(json_object_get(pol, "mx-host"), sts_mx, 2);
  json_t *sum = json_object_get(p, "summary");
  assert_keys(sum, (const char *[]){"total-successful-session-count",
                                    "total-failure-session-count", NULL});
  assert_int(sum, "total-successful-session-count", 5326);
  assert_int(sum, "total-failure-session-count", 303);
  json_t *fd = json_object_get(p, "failure-details");
  assert_int_equal(json_array_size(fd), 3);
  json_t *f = json_array_get(fd, 0);
  assert_keys(f, (const char *[]){"result-type", "sending-mta-ip",
                                  "receiving-mx-hostname",
                                  "failed-session-count", NULL});
  assert_str(f, "result-type", "certificate-expired");
  assert_str(f, "sending-mta-ip", "2001:db8:abcd:0012::1");
  assert_str(f, "receiving-mx-hostname", "mx1.mail.company-y.example");
  assert_int(f, "failed-session-count", 100);
  f = json_array_get(fd, 1);
  assert_keys(f, (const char *[]){"result-type", "sending-mta-ip",
                                  "receiving-mx-hostname", "receiving-mx-helo",
                                  "receiving-ip", "failed-session-count",
                                  "failure-reason-code", NULL});
  assert_str(f, "result-type", "starttls-not-supported");
  assert_str(f, "sending-mta-ip", "2001:db8:abcd:0013::1");
  assert_str(f, "receiving-mx-hostname", "mx2.mail.company-y.example");
  assert_str(f, "receiving-mx-helo", "mx2-helo.mail.company-y.example");
  assert_str(f, "receiving-ip", "203.0.113.56");
  assert_int(f, "failed-session-count", 200);
  assert_str(f, "failure-reason-code", "no STARTTLS in the EHLO reply");
  f = json_array_get(fd, 2);
  assert_keys(f, (const char *[]){
                     "result-type", "sending-mta-ip", "receiving-mx-hostname",
                     "failed-session-count", "failure-reason-code", NULL});
  assert_str(f, "result-type", "validation-failure");
  assert_str(f, "sending-mta-ip", "198.51.100.62");
  assert_str(f, "receiving-mx-hostname", "mx-backup.mail.company-y.example");
  assert_int(f, "failed-session-count", 3);
  assert_str(f, "failure-reason-code", "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED");

  /* tlsa: policy-string, no mx-host. */
  p = json_array_get(pols, 1);
  pol = json_object_get(p, "policy");
  assert_keys(pol, (const char *[]){"policy-type", "policy-string",
                                    "policy-domain", NULL});
  assert_str(pol, "policy-type", "tlsa");
  assert_strings(json_object_get(pol, "policy-string"), tlsa_strings, 2);
  assert_str(pol, "policy-domain", "company-z.example");
  sum = json_object_get(p, "summary");
  assert_int(sum, "total-successful-session-count", 0);
  assert_int(sum, "total-failure-session-count", 7);
  fd = json_object_get(p, "failure-details");
  assert_int_equal(json_array_size(fd), 1);
  f = json_array_get(fd, 0);
  assert_keys(f, (const char *[]){"result-type", "sending-mta-ip",
                                  "receiving-mx-hostname", "receiving-ip",
                                  "failed-session-count", NULL});
  assert_str(f, "result-type", "tlsa-invalid");
  assert_str(f, "sending-mta-ip", "192.0.2.10");
  assert_str(f, "receiving-mx-hostname", "mx.company-z.example");
  assert_str(f, "receiving-ip", "192.0.2.25");
  assert_int(f, "failed-session-count", 7);

  /* no-policy-found without failures: no failure-details at all. */
  p = json_array_get(pols, 2);
  assert_keys(p, (const char *[]){"policy", "summary", NULL});
  pol = json_object_get(p, "policy");
  assert_keys(pol, (const char *[]){"policy-type", "policy-domain", NULL});
  assert_str(pol, "policy-type", "no-policy-found");
  assert_str(pol, "policy-domain", "company-w.example");
  sum = json_object_get(p, "summary");
  assert_int(sum, "total-successful-session-count", 12);
  assert_int(sum, "total-failure-session-count", 0);
  json_decref(doc);
}

static void test_report_json_edges(void **state) {
  (void)state;
  /* Only count-0 failures: failure-details is left out. */
  struct policy_tlsrpt_failure zero = {.result = POLICY_TLSRPT_DANE_REQUIRED,
                                       .count = 0};
  struct policy_tlsrpt_policy p = {.type = POLICY_TLSRPT_POLICY_TLSA,
                                   .domain = "example.com",
                                   .failures = &zero,
                                   .nfailures = 1};
  struct policy_tlsrpt_report r = sample_report;
  r.policies = &p;
  r.npolicies = 1;
  json_t *doc = report_parse(&r);
  json_t *p0 = json_array_get(json_object_get(doc, "policies"), 0);
  assert_keys(p0, (const char *[]){"policy", "summary", NULL});
  json_decref(doc);

  /* Text that is not UTF-8 stays visible and the JSON stays valid. */
  const char *bad[] = {"mode: \xff\xfe"};
  p.strings = bad;
  p.nstrings = 1;
  r.organization = "Org \"quoted\"\n";
  doc = report_parse(&r);
  assert_str(doc, "organization-name", "Org \"quoted\"\n");
  p0 = json_array_get(json_object_get(doc, "policies"), 0);
  json_t *ps = json_object_get(json_object_get(p0, "policy"), "policy-string");
  assert_string_equal(json_string_value(json_array_get(ps, 0)),
                      "mode: \\xff\\xfe");
  json_decref(doc);

  /* The largest count is still an integer. */
  p.successful = INT64_MAX;
  doc = report_parse(&r);
  p0 = json_array_get(json_object_get(doc, "policies"), 0);
  assert_int(json_object_get(p0, "summary"), "total-successful-session-count",
             INT64_MAX);
  json_decref(doc);
  /* A zero-length period is a period. */
  r.start = r.end = 0;
  doc = report_parse(&r);
  assert_str(json_object_get(doc, "date-range"), "start-datetime",
             "1970-01-01T00:00:00Z");
  json_decref(doc);
  r.start = r.end = 253402300799; /* 9999-12-31T23:59:59Z */
  doc = report_parse(&r);
  assert_str(json_object_get(doc, "date-range"), "end-datetime",
             "9999-12-31T23:59:59Z");
  json_decref(doc);
}

/* One way to spoil the sample report, and what that must return. */
struct report_bad {
  const char *what;
  int rc;
  void (*spoil)(struct policy_tlsrpt_report *r, struct policy_tlsrpt_policy *p,
                struct policy_tlsrpt_failure *f);
};

#define SPOIL(name, body)                                                      \
  static void name(struct policy_tlsrpt_report *r,                             \
                   struct policy_tlsrpt_policy *p,                             \
                   struct policy_tlsrpt_failure *f) {                          \
    (void)r;                                                                   \
    (void)p;                                                                   \
    (void)f;                                                                   \
    body;                                                                      \
  }

static const char *const one_null[] = {NULL};

SPOIL(no_org, r->organization = NULL)
SPOIL(empty_org, r->organization = "")
SPOIL(no_contact, r->contact = NULL)
SPOIL(empty_id, r->report_id = "")
SPOIL(start_after_end, r->start = r->end + 1)
SPOIL(negative_start, r->start = -1)
SPOIL(year_10000, r->end = 253402300800)
SPOIL(no_policies, r->npolicies = 0)
SPOIL(null_policies, r->policies = NULL)
SPOIL(bad_type, p->type = POLICY_TLSRPT_POLICY_COUNT)
SPOIL(no_domain, p->domain = NULL)
SPOIL(bad_domain, p->domain = "exa mple.com")
SPOIL(crlf_domain, p->domain = "example.com\r\n")
SPOIL(null_strings, p->strings = NULL)
SPOIL(null_string, p->strings = one_null; p->nstrings = 1)
SPOIL(null_mx, p->mx_hosts = one_null; p->nmx_hosts = 1)
SPOIL(null_failures, p->failures = NULL)
SPOIL(big_success, p->successful = (uint64_t)INT64_MAX + 1)
SPOIL(big_failed, p->failed = UINT64_MAX)
SPOIL(success_result, f->result = POLICY_TLSRPT_SUCCESS)
SPOIL(unknown_result, f->result = POLICY_TLSRPT_RESULT_COUNT)
SPOIL(bad_sending_ip, f->sending_mta_ip = "192.0.2")
SPOIL(bad_receiving_ip, f->receiving_ip = "mx.example.com")
SPOIL(big_count, f->count = UINT64_MAX)

static const struct report_bad report_bads[] = {
    {"no organization", POSTERN_EINVAL, no_org},
    {"empty organization", POSTERN_EINVAL, empty_org},
    {"no contact", POSTERN_EINVAL, no_contact},
    {"empty report-id", POSTERN_EINVAL, empty_id},
    {"start after end", POSTERN_EINVAL, start_after_end},
    {"before the epoch", POSTERN_EINVAL, negative_start},
    {"year 10000", POSTERN_ERANGE, year_10000},
    {"no policies", POSTERN_EINVAL, no_policies},
    {"NULL policies", POSTERN_EINVAL, null_policies},
    {"unknown policy type", POSTERN_EINVAL, bad_type},
    {"no policy domain", POSTERN_EINVAL, no_domain},
    {"bad policy domain", POSTERN_EINVAL, bad_domain},
    {"CRLF in policy domain", POSTERN_EINVAL, crlf_domain},
    {"NULL policy strings", POSTERN_EINVAL, null_strings},
    {"NULL policy string", POSTERN_EINVAL, null_string},
    {"NULL mx-host", POSTERN_EINVAL, null_mx},
    {"NULL failures", POSTERN_EINVAL, null_failures},
    {"successful count over INT64_MAX", POSTERN_ERANGE, big_success},
    {"failed count over INT64_MAX", POSTERN_ERANGE, big_failed},
    {"failure with result success", POSTERN_EINVAL, success_result},
    {"unknown result", POSTERN_EINVAL, unknown_result},
    {"bad sending-mta-ip", POSTERN_EINVAL, bad_sending_ip},
    {"bad receiving-ip", POSTERN_EINVAL, bad_receiving_ip},
    {"failure count over INT64_MAX", POSTERN_ERANGE, big_count},
};

static void test_report_json_refused(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof report_bads / sizeof report_bads[0]; i++) {
    struct policy_tlsrpt_report r = sample_report;
    struct policy_tlsrpt_policy pols[3];
    memcpy(pols, sample_policies, sizeof pols);
    struct policy_tlsrpt_failure f = tlsa_failures[0];
    pols[1].failures = &f;
    r.policies = pols;
    report_bads[i].spoil(&r, &pols[1], &f);
    char *out = (char *)"untouched";
    size_t len = 42;
    int rc = policy_tlsrpt_report_json(&r, &out, &len);
    if (rc != report_bads[i].rc)
      fail_msg("report '%s': rc %s, want %s", report_bads[i].what,
               postern_err_name(rc), postern_err_name(report_bads[i].rc));
    assert_string_equal(out, "untouched");
    assert_int_equal(len, 42);
  }
  char *out;
  size_t len;
  assert_int_equal(policy_tlsrpt_report_json(NULL, &out, &len), POSTERN_EINVAL);
  assert_int_equal(policy_tlsrpt_report_json(&sample_report, NULL, &len),
                   POSTERN_EINVAL);
  assert_int_equal(policy_tlsrpt_report_json(&sample_report, &out, NULL),
                   POSTERN_EINVAL);
}

/* ---- gzip ---------------------------------------------------------------- */

/* Inflates a gzip file with zlib; returns the malloc'd data. */
static uint8_t *gunzip(const uint8_t *gz, size_t gzlen, size_t *outlen) {
  size_t cap = 1 << 16, n = 0;
  uint8_t *buf = malloc(cap);
  assert_non_null(buf);
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  /* 15 + 16: gzip only (a zlib stream would be refused). */
  assert_int_equal(inflateInit2(&zs, 15 + 16), Z_OK);
  zs.next_in = (Bytef *)(uintptr_t)gz;
  zs.avail_in = (uInt)gzlen;
  int rc;
  do {
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
    zs.next_out = buf + n;
    zs.avail_out = (uInt)(cap - n);
    rc = inflate(&zs, Z_NO_FLUSH);
    n = cap - zs.avail_out;
  } while (rc == Z_OK);
  assert_int_equal(rc, Z_STREAM_END);
  assert_int_equal(zs.avail_in, 0); /* nothing after the gzip member */
  inflateEnd(&zs);
  *outlen = n;
  return buf;
}

static void round_trip(const uint8_t *in, size_t len) {
  uint8_t *gz = NULL;
  size_t gzlen = 0;
  assert_int_equal(policy_tlsrpt_gzip(in, len, &gz, &gzlen), 0);
  /* RFC 1952 §2.3.1: ID1 ID2 CM=8 (deflate). */
  assert_true(gzlen >= 18);
  assert_int_equal(gz[0], 0x1f);
  assert_int_equal(gz[1], 0x8b);
  assert_int_equal(gz[2], 8);
  size_t n = 0;
  uint8_t *back = gunzip(gz, gzlen, &n);
  assert_int_equal(n, len);
  assert_memory_equal(back, in, len);
  /* Equal inputs, equal files (no time stamp in the header). */
  uint8_t *gz2 = NULL;
  size_t gzlen2 = 0;
  assert_int_equal(policy_tlsrpt_gzip(in, len, &gz2, &gzlen2), 0);
  assert_int_equal(gzlen2, gzlen);
  assert_memory_equal(gz2, gz, gzlen);
  free(gz2);
  free(back);
  free(gz);
}

static void test_gzip(void **state) {
  (void)state;
  char *json = NULL;
  size_t len = 0;
  assert_int_equal(policy_tlsrpt_report_json(&sample_report, &json, &len), 0);
  round_trip((const uint8_t *)json, len);
  free(json);
  round_trip((const uint8_t *)"", 0);
  /* Incompressible data: the output is larger than the input. */
  size_t big = 1 << 20;
  uint8_t *rnd = malloc(big);
  assert_non_null(rnd);
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < big; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rnd[i] = (uint8_t)x;
  }
  round_trip(rnd, big);
  free(rnd);
  uint8_t *gz;
  size_t gzlen;
  assert_int_equal(policy_tlsrpt_gzip(NULL, 1, &gz, &gzlen), POSTERN_EINVAL);
  assert_int_equal(policy_tlsrpt_gzip("x", 1, NULL, &gzlen), POSTERN_EINVAL);
  assert_int_equal(policy_tlsrpt_gzip("x", 1, &gz, NULL), POSTERN_EINVAL);
}

/* ---- File name (§5.3) ---------------------------------------------------- */

static void test_filename(void **state) {
  (void)state;
  char buf[POLICY_TLSRPT_FILENAME_MAX];
  /* §5.3's example, without the optional unique-id. */
  static const char want[] = "mail.sender.example.com!recipient.example.com!"
                             "1470013207!1470186007.json.gz";
  assert_int_equal(policy_tlsrpt_filename("mail.sender.example.com",
                                          "recipient.example.com", 1470013207,
                                          1470186007, buf, sizeof buf),
                   0);
  assert_string_equal(buf, want);
  /* Exactly enough room, and one byte less. */
  char small[sizeof want];
  assert_int_equal(policy_tlsrpt_filename("mail.sender.example.com",
                                          "recipient.example.com", 1470013207,
                                          1470186007, small, sizeof small),
                   0);
  assert_string_equal(small, want);
  assert_int_equal(policy_tlsrpt_filename("mail.sender.example.com",
                                          "recipient.example.com", 1470013207,
                                          1470186007, small, sizeof small - 1),
                   POSTERN_ETOOBIG);
  assert_string_equal(small, "");
  /* The longest names fit POLICY_TLSRPT_FILENAME_MAX. */
  char dom[254];
  for (size_t i = 0; i < 253; i++)
    dom[i] = i % 64 == 63 ? '.' : 'd';
  dom[253] = '\0';
  assert_int_equal(
      policy_tlsrpt_filename(dom, dom, INT64_MAX, INT64_MAX, buf, sizeof buf),
      0);
  assert_int_equal(strlen(buf), POLICY_TLSRPT_FILENAME_MAX - 1);
  /* Refused. */
  static const char *const bad[] = {NULL,
                                    "",
                                    "a!b.example",
                                    "example.com.",
                                    "exa mple.com",
                                    "example.com\r\nX: y",
                                    "\"example.com\"",
                                    "ex\xc3\xa4mple.com"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(
        policy_tlsrpt_filename(bad[i], "example.com", 1, 2, buf, sizeof buf),
        POSTERN_EINVAL);
    assert_int_equal(
        policy_tlsrpt_filename("example.com", bad[i], 1, 2, buf, sizeof buf),
        POSTERN_EINVAL);
  }
  assert_int_equal(
      policy_tlsrpt_filename("a.example", "b.example", 3, 2, buf, sizeof buf),
      POSTERN_EINVAL);
  assert_int_equal(
      policy_tlsrpt_filename("a.example", "b.example", -1, 2, buf, sizeof buf),
      POSTERN_EINVAL);
  assert_int_equal(
      policy_tlsrpt_filename("a.example", "b.example", 1, 2, NULL, 10),
      POSTERN_EINVAL);
}

/* ---- Mail (§5.3) --------------------------------------------------------- */

static const char *const mail_to[] = {"tlsrpt@company-y.example",
                                      "tls+reports@ops.company-y.example"};

static const struct policy_tlsrpt_mail sample_mail = {
    .from = "tlsrpt-noreply@mail.sender.example.com",
    .to = mail_to,
    .nto = 2,
    .submitter = "mail.sender.example.com",
    .policy_domain = "company-y.example",
    .report_id = "2016-04-01.company-y.example@mail.sender.example.com",
    .start = 1459468800,
    .end = 1459555199,
    .date = 1494348870, /* Tue, 09 May 2017 16:54:30 +0000 */
    .message_id = "tlsrpt.1459468800.company-y.example@mail.sender.example.com",
};

/* The header section unfolded (RFC 5322 §2.2.3: CRLF before WSP removed),
 * one field a line, LF-separated; NULL-terminated copy, caller frees. */
static char *unfold(const char *h, size_t n) {
  char *u = malloc(n + 1);
  assert_non_null(u);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (h[i] == '\r' && i + 2 < n && h[i + 1] == '\n' &&
        (h[i + 2] == ' ' || h[i + 2] == '\t')) {
      i++;
      continue;
    }
    if (h[i] == '\r')
      continue;
    u[k++] = h[i];
  }
  u[k] = '\0';
  return u;
}

/* The value of the one field `name` in unfolded headers `u`; fails when
 * the field is missing or there twice. Returns a malloc'd copy. */
static char *field(const char *u, const char *name) {
  size_t nl = strlen(name);
  const char *found = NULL;
  for (const char *l = u; *l != '\0';) {
    const char *e = strchr(l, '\n');
    if (e == NULL)
      e = l + strlen(l);
    if ((size_t)(e - l) > nl && strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
      if (found != NULL)
        fail_msg("header '%s' twice", name);
      found = l;
    }
    l = *e ? e + 1 : e;
  }
  if (found == NULL)
    fail_msg("header '%s' missing", name);
  const char *v = found + nl + 1;
  while (*v == ' ')
    v++;
  const char *e = strchr(v, '\n');
  size_t vn = e != NULL ? (size_t)(e - v) : strlen(v);
  char *out = malloc(vn + 1);
  assert_non_null(out);
  memcpy(out, v, vn);
  out[vn] = '\0';
  return out;
}

static void assert_field(const char *u, const char *name, const char *want) {
  char *v = field(u, name);
  if (strcmp(v, want) != 0)
    fail_msg("%s: '%s', want '%s'", name, v, want);
  free(v);
}

/* Counts the lines of body[0..n) equal to `line` (without the CRLF). */
static size_t count_lines(const char *body, size_t n, const char *line) {
  size_t c = 0, ln = strlen(line);
  for (size_t i = 0; i < n;) {
    const char *e = memchr(body + i, '\n', n - i);
    size_t end = e != NULL ? (size_t)(e - body) : n;
    if (end - i == ln + 1 && memcmp(body + i, line, ln) == 0)
      c++;
    i = end + 1;
  }
  return c;
}

static void test_mail(void **state) {
  (void)state;
  /* The real thing: the JSON report, gzipped, mailed. */
  char *json = NULL;
  size_t jlen = 0;
  assert_int_equal(policy_tlsrpt_report_json(&sample_report, &json, &jlen), 0);
  uint8_t *gz = NULL;
  size_t gzlen = 0;
  assert_int_equal(policy_tlsrpt_gzip(json, jlen, &gz, &gzlen), 0);
  char *msg = NULL;
  size_t len = 0;
  assert_int_equal(
      policy_tlsrpt_mail_build(&sample_mail, gz, gzlen, &msg, &len), 0);
  assert_int_equal(strlen(msg), len);

  /* CRLF everywhere, 7-bit, lines within RFC 5322's 998. */
  size_t col = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)msg[i];
    if (c == '\n') {
      assert_true(i > 0 && msg[i - 1] == '\r');
      col = 0;
      continue;
    }
    if (c == '\r')
      assert_true(i + 1 < len && msg[i + 1] == '\n');
    else
      assert_true(c >= 0x20 && c < 0x7f);
    assert_true(++col <= 998);
  }
  assert_true(len >= 2 && msg[len - 2] == '\r' && msg[len - 1] == '\n');

  const char *sep = strstr(msg, "\r\n\r\n");
  assert_non_null(sep);
  char *u = unfold(msg, (size_t)(sep - msg) + 2);
  assert_field(u, "From", "tlsrpt-noreply@mail.sender.example.com");
  assert_field(u, "To",
               "tlsrpt@company-y.example, tls+reports@ops.company-y.example");
  assert_field(u, "Date", "Tue, 09 May 2017 16:54:30 +0000");
  assert_field(u, "Message-ID",
               "<tlsrpt.1459468800.company-y.example@mail.sender.example.com>");
  assert_field(u, "Subject",
               "Report Domain: company-y.example Submitter: "
               "mail.sender.example.com Report-ID: "
               "<2016-04-01.company-y.example@mail.sender.example.com>");
  assert_field(u, "TLS-Report-Domain", "company-y.example");
  assert_field(u, "TLS-Report-Submitter", "mail.sender.example.com");
  assert_field(u, "MIME-Version", "1.0");
  assert_field(u, "Auto-Submitted", "auto-generated");
  assert_field(u, "TLS-Required", "No");
  char *ct = field(u, "Content-Type");
  static const char ct_pre[] =
      "multipart/report; report-type=\"tlsrpt\"; boundary=\"";
  assert_int_equal(strncmp(ct, ct_pre, sizeof ct_pre - 1), 0);
  char boundary[80];
  const char *b = ct + sizeof ct_pre - 1;
  const char *q = strchr(b, '"');
  assert_non_null(q);
  assert_string_equal(q, "\"");
  assert_true(q - b > 0 && q - b <= 70); /* RFC 2046 §5.1.1 */
  snprintf(boundary, sizeof boundary, "%.*s", (int)(q - b), b);
  free(ct);
  free(u);

  /* The body: a delimiter line before each of the two parts, one closing
   * delimiter at the very end, and the boundary nowhere else. */
  const char *body = sep + 4;
  size_t blen = len - (size_t)(body - msg);
  char delim[96], close[96];
  snprintf(delim, sizeof delim, "--%s", boundary);
  snprintf(close, sizeof close, "--%s--", boundary);
  assert_int_equal(count_lines(body, blen, delim), 2);
  assert_int_equal(count_lines(body, blen, close), 1);
  size_t seen = 0;
  for (const char *p = body; (p = strstr(p, boundary)) != NULL; p++)
    seen++;
  assert_int_equal(seen, 3);
  char tail[100];
  snprintf(tail, sizeof tail, "\r\n%s\r\n", close);
  assert_string_equal(msg + len - strlen(tail), tail);

  /* Part one: for people. */
  char d2[100];
  snprintf(d2, sizeof d2, "%s\r\n", delim);
  const char *p1 = strstr(body, d2);
  assert_non_null(p1);
  p1 += strlen(d2);
  const char *p1_end = strstr(p1, "\r\n\r\n");
  assert_non_null(p1_end);
  u = unfold(p1, (size_t)(p1_end - p1) + 2);
  assert_field(u, "Content-Type", "text/plain; charset=\"us-ascii\"");
  assert_field(u, "Content-Transfer-Encoding", "7bit");
  free(u);
  const char *p2 = strstr(p1_end, d2);
  assert_non_null(p2);
  assert_non_null(
      memmem(p1_end, (size_t)(p2 - p1_end), "mail.sender.example.com", 23));
  assert_non_null(memmem(p1_end, (size_t)(p2 - p1_end),
                         "2016-04-01T00:00:00Z to 2016-04-01T23:59:59Z", 44));

  /* Part two: the report. */
  p2 += strlen(d2);
  const char *p2_end = strstr(p2, "\r\n\r\n");
  assert_non_null(p2_end);
  u = unfold(p2, (size_t)(p2_end - p2) + 2);
  assert_field(u, "Content-Type", "application/tlsrpt+gzip");
  assert_field(u, "Content-Transfer-Encoding", "base64");
  assert_field(u, "Content-Disposition",
               "attachment; filename=\"mail.sender.example.com!"
               "company-y.example!1459468800!1459555199.json.gz\"");
  free(u);
  /* Base64 lines of 76 characters (the last one shorter), then the
   * closing delimiter. */
  const char *data = p2_end + 4;
  const char *data_end = msg + len - strlen(tail) + 2;
  char *b64 = malloc((size_t)(data_end - data) + 1);
  assert_non_null(b64);
  size_t bn = 0;
  for (const char *l = data; l < data_end;) {
    const char *e = strstr(l, "\r\n");
    assert_non_null(e);
    size_t ll = (size_t)(e - l);
    if (e + 2 < data_end)
      assert_int_equal(ll, 76);
    else
      assert_true(ll > 0 && ll <= 76);
    memcpy(b64 + bn, l, ll);
    bn += ll;
    l = e + 2;
  }
  size_t dmax = 0;
  assert_int_equal(EVP_DecodedLength(&dmax, bn), 1);
  uint8_t *dec = malloc(dmax);
  assert_non_null(dec);
  size_t dn = 0;
  assert_int_equal(EVP_DecodeBase64(dec, &dn, dmax, (const uint8_t *)b64, bn),
                   1);
  assert_int_equal(dn, gzlen);
  assert_memory_equal(dec, gz, gzlen);
  /* And the gzip holds the JSON report. */
  size_t back_len = 0;
  uint8_t *back = gunzip(dec, dn, &back_len);
  assert_int_equal(back_len, jlen);
  assert_memory_equal(back, json, jlen);
  free(back);
  free(dec);
  free(b64);
  free(msg);
  free(gz);
  free(json);
}

static void test_mail_sizes(void **state) {
  (void)state;
  /* The attachment's last line: 0, 1 and 2 bytes over a multiple of 57. */
  static const size_t sizes[] = {0, 1, 56, 57, 58, 114, 115, 1000};
  uint8_t data[1000];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (uint8_t)(i * 7 + 3);
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    char *msg = NULL;
    size_t len = 0;
    assert_int_equal(
        policy_tlsrpt_mail_build(&sample_mail, data, sizes[s], &msg, &len), 0);
    const char *att = strstr(msg, ".json.gz\"\r\n\r\n");
    assert_non_null(att);
    att += strlen(".json.gz\"\r\n\r\n");
    const char *end = strstr(att, "--");
    assert_non_null(end);
    size_t want = (sizes[s] + 2) / 3 * 4;
    size_t lines = (sizes[s] + 56) / 57;
    assert_int_equal((size_t)(end - att), want + 2 * lines);
    free(msg);
  }
  /* One recipient: a one-line To. */
  struct policy_tlsrpt_mail m = sample_mail;
  m.nto = 1;
  char *msg = NULL;
  size_t len = 0;
  assert_int_equal(policy_tlsrpt_mail_build(&m, "x", 1, &msg, &len), 0);
  assert_non_null(strstr(msg, "\r\nTo: tlsrpt@company-y.example\r\nDate: "));
  free(msg);
}

struct mail_bad {
  const char *what;
  int rc;
  struct policy_tlsrpt_mail m;
};

static const char *const to_crlf[] = {"a@example.com\r\nBcc: x@example.org"};
static const char *const to_lf[] = {"a@example.com", "b@example.com\nX: y"};
static const char *const to_null[] = {"a@example.com", NULL};
static const char *const to_name[] = {"Someone <a@example.com>"};
static const char *const to_nine[] = {
    "a@example.com", "a@example.com", "a@example.com",
    "a@example.com", "a@example.com", "a@example.com",
    "a@example.com", "a@example.com", "a@example.com"};

/* Each entry overrides fields of the valid base M() on purpose. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
#define M(...)                                                                 \
  {                                                                            \
    .from = "r@s.example", .to = mail_to, .nto = 1, .submitter = "s.example",  \
    .policy_domain = "p.example", .report_id = "id@s.example", .start = 1,     \
    .end = 2, .date = 3, .message_id = "m@s.example", __VA_ARGS__              \
  }

static const struct mail_bad mail_bads[] = {
    {"from with CRLF", POSTERN_EINVAL,
     M(.from = "r@s.example\r\nBcc: x@example.org")},
    {"from with a name", POSTERN_EINVAL, M(.from = "Reports <r@s.example>")},
    {"no from", POSTERN_EINVAL, M(.from = NULL)},
    {"to with CRLF", POSTERN_EINVAL, M(.to = to_crlf)},
    {"second to with LF", POSTERN_EINVAL, M(.to = to_lf, .nto = 2)},
    {"NULL to", POSTERN_EINVAL, M(.to = to_null, .nto = 2)},
    {"to with a name", POSTERN_EINVAL, M(.to = to_name)},
    {"no recipients", POSTERN_EINVAL, M(.nto = 0)},
    {"NULL to list", POSTERN_EINVAL, M(.to = NULL)},
    {"nine recipients", POSTERN_EINVAL, M(.to = to_nine, .nto = 9)},
    {"submitter with CRLF", POSTERN_EINVAL,
     M(.submitter = "s.example\r\nX-Injected: 1")},
    {"submitter with space", POSTERN_EINVAL, M(.submitter = "s.example x")},
    {"policy domain with LF", POSTERN_EINVAL,
     M(.policy_domain = "p.example\n")},
    {"no policy domain", POSTERN_EINVAL, M(.policy_domain = NULL)},
    {"report-id with CRLF", POSTERN_EINVAL,
     M(.report_id = "id@s.example\r\nX: y")},
    {"report-id without @", POSTERN_EINVAL, M(.report_id = "abc")},
    {"report-id with brackets", POSTERN_EINVAL,
     M(.report_id = "<id@s.example>")},
    {"report-id with a space", POSTERN_EINVAL, M(.report_id = "i d@s.example")},
    {"no report-id", POSTERN_EINVAL, M(.report_id = NULL)},
    {"message-id with brackets", POSTERN_EINVAL,
     M(.message_id = "<m@s.example>")},
    {"message-id with CR", POSTERN_EINVAL, M(.message_id = "m@s.example\r")},
    {"no message-id", POSTERN_EINVAL, M(.message_id = NULL)},
    {"start after end", POSTERN_EINVAL, M(.start = 3, .end = 2)},
    {"negative start", POSTERN_EINVAL, M(.start = -5)},
    {"end in year 10000", POSTERN_ERANGE, M(.end = 253402300800)},
};
#pragma GCC diagnostic pop

static void test_mail_refused(void **state) {
  (void)state;
  char *out = (char *)"untouched";
  size_t len = 42;
  /* The base of the table is valid. */
  struct policy_tlsrpt_mail ok = M();
  assert_int_equal(policy_tlsrpt_mail_build(&ok, "x", 1, &out, &len), 0);
  free(out);
  out = (char *)"untouched";
  for (size_t i = 0; i < sizeof mail_bads / sizeof mail_bads[0]; i++) {
    int rc = policy_tlsrpt_mail_build(&mail_bads[i].m, "x", 1, &out, &len);
    if (rc != mail_bads[i].rc)
      fail_msg("mail '%s': rc %s, want %s", mail_bads[i].what,
               postern_err_name(rc), postern_err_name(mail_bads[i].rc));
    assert_string_equal(out, "untouched");
  }
  assert_int_equal(policy_tlsrpt_mail_build(&ok, NULL, 1, &out, &len),
                   POSTERN_EINVAL);
  assert_int_equal(policy_tlsrpt_mail_build(NULL, "x", 1, &out, &len),
                   POSTERN_EINVAL);
  assert_int_equal(policy_tlsrpt_mail_build(&ok, "x", 1, NULL, &len),
                   POSTERN_EINVAL);
  assert_int_equal(policy_tlsrpt_mail_build(&ok, "x", 1, &out, NULL),
                   POSTERN_EINVAL);
  /* No attachment bytes is still a message. */
  assert_int_equal(policy_tlsrpt_mail_build(&ok, NULL, 0, &out, &len), 0);
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_report_json),
      cmocka_unit_test(test_report_json_edges),
      cmocka_unit_test(test_report_json_refused),
      cmocka_unit_test(test_gzip),
      cmocka_unit_test(test_filename),
      cmocka_unit_test(test_mail),
      cmocka_unit_test(test_mail_sizes),
      cmocka_unit_test(test_mail_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
