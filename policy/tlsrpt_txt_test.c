/*
 * tlsrpt_txt_test.c - table-driven tests of the `_smtp._tls` TXT record
 * parser (RFC 8460 §3): the RFC's examples, the grammar, the URI schemes
 * and targets, limits, and hostile input (control characters, header
 * injection through mailto:, credentials in https: URLs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/postern_err.h"
#include "policy/tlsrpt.h"

/* ---- TXT record (§3) --------------------------------------------------- */

#define MAXREC 4
struct txt_case {
  const char *what;
  const char *recs[MAXREC]; /* NULL-terminated list */
  int rc;
  size_t nskipped;
  /* On 0: the kept targets in order; those starting "https://" are
   * POLICY_TLSRPT_URI_HTTPS, the others POLICY_TLSRPT_URI_MAILTO. */
  const char *targets[POLICY_TLSRPT_RUA_MAX + 1];
};

#define A "mailto:a@example.com"
#define A_T "a@example.com"
#define H "https://r.example.com/v1/tlsrpt"

/* Table rows: a record that parses (the URIs skipped, then the targets
 * kept), one that is not there, one that is invalid. */
// clang-format off
#define OK(what, rec, skipped, ...) {what, {rec}, 0, skipped, {__VA_ARGS__}}
#define NONE(what, ...) {what, {__VA_ARGS__}, POSTERN_ENOENT, 0, {NULL}}
#define BAD(what, ...) {what, {__VA_ARGS__}, POSTERN_EPROTO, 0, {NULL}}
// clang-format on
#define V "v=TLSRPTv1; rua="

static const struct txt_case txt_cases[] = {
    /* The two examples of §3. */
    OK("RFC example mailto", "v=TLSRPTv1;rua=mailto:reports@example.com", 0,
       "reports@example.com"),
    OK("RFC example https",
       "v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt", 0,
       "https://reporting.example.com/v1/tlsrpt"),
    /* Delimiters and blanks. */
    OK("trailing delimiter", V A ";", 0, A_T),
    OK("trailing delimiter and blanks", V A " ; ", 0, A_T),
    OK("tabs around delimiter", "v=TLSRPTv1\t;\trua=" A, 0, A_T),
    OK("blank before delimiter", "v=TLSRPTv1 ; rua=" A, 0, A_T),
    OK("several URIs", V A "," H, 0, A_T, H),
    OK("blanks around commas", V A " ,\t" H " , mailto:b@example.org", 0, A_T,
       H, "b@example.org"),
    /* Extensions: tolerated and ignored, wherever they are. */
    OK("extensions around rua", "v=TLSRPTv1; ext=1; rua=" A "; x.y_z-1=a:b/c;",
       0, A_T),
    OK("extension named like the version", "v=TLSRPTv1; v=TLSRPTv2; rua=" A, 0,
       A_T),
    OK("RUA in capitals is an extension",
       "v=TLSRPTv1; RUA=mailto:x@example.com; rua=" A, 0, A_T),
    /* Which records count. */
    {"other TXT records ignored",
     {"v=spf1 -all", V A, "v=STSv1; id=1"},
     0,
     0,
     {A_T}},
    NONE("no TLSRPT record", "v=spf1 -all", "hello"),
    NONE("no TXT at all", NULL),
    NONE("version is case-sensitive", "v=tlsrptv1; rua=" A),
    NONE("other version ignored", "v=TLSRPTv10; rua=" A),
    NONE("leading blank is not TLSRPT", " " V A),
    BAD("two records", V A, V H),
    BAD("two identical records", V A, V A),
    BAD("one valid one invalid", V A, "v=TLSRPTv1"),
    /* The grammar. */
    BAD("bare version", "v=TLSRPTv1"),
    BAD("version and delimiter", "v=TLSRPTv1;"),
    BAD("missing rua", "v=TLSRPTv1; ext=1"),
    BAD("empty rua", V),
    BAD("empty rua then delimiter", V ";"),
    BAD("blank after rua=", V " " A),
    BAD("blank before =", "v=TLSRPTv1; rua =" A),
    BAD("trailing comma", V A ","),
    BAD("double comma", V A ",," H),
    BAD("two rua fields", V A "; rua=" H),
    BAD("missing delimiter", "v=TLSRPTv1 rua=" A),
    BAD("double delimiter", "v=TLSRPTv1;; rua=" A),
    BAD("field without =", V A "; flag"),
    BAD("empty extension value", V A "; x="),
    BAD("= in extension value", V A "; x=a=b"),
    BAD("bad extension name", "v=TLSRPTv1; _x=1; rua=" A),
    BAD("URIs separated by blanks only", V A " " H),
    BAD("URI without scheme", V "reports@example.com"),
    BAD("scheme starting with a digit", V "1mailto:a@example.com"),
    BAD("raw ! in a URI (must be encoded)", V "mailto:a!b@example.com"),
    BAD("truncated percent-encoding", V "mailto:a%2"),
    BAD("bad percent-encoding", V "mailto:a%zz@example.com"),
    BAD("quote in a URI", V "mailto:\"a\"@example.com"),
    /* Control characters and 8-bit bytes, raw. */
    BAD("CRLF after the URI", V A "\r\n"),
    BAD("CRLF inside the URI", V A "\r\nBcc:x@example.org"),
    BAD("control character in an extension", V A "; x=a\x01"),
    BAD("non-ASCII in a URI", V "mailto:caf\xc3\xa9@example.com"),
    /* Schemes: mailto and https are kept, others skipped. */
    BAD("unknown scheme only", V "ftp://r.example.com/tlsrpt"),
    BAD("http is not https", V "http://r.example.com/tlsrpt"),
    OK("unknown scheme then mailto", V "ftp://r.example.com/x," A, 1, A_T),
    OK("schemes in any case", V "MailTo:a@Example.COM,HTTPS://R.Example.COM/X",
       0, A_T, "https://r.example.com/X"),
    /* mailto: targets. */
    OK("mailto hfields dropped",
       V "mailto:a@example.com?subject=hi&to=b@example.org", 0, A_T),
    OK("mailto percent-decoded", V "mailto:tls%2Brpt%21x@example.com", 0,
       "tls+rpt!x@example.com"),
    BAD("mailto list (encoded comma)",
        V "mailto:a@example.com%2Cb@example.com"),
    BAD("mailto without @", V "mailto:not-an-address"),
    BAD("mailto empty", V "mailto:"),
    BAD("mailto only in hfields", V "mailto:?to=a@example.com"),
    BAD("mailto empty local part", V "mailto:@example.com"),
    BAD("mailto double dot", V "mailto:a..b@example.com"),
    BAD("mailto quoted local part", V "mailto:%22a%20b%22@example.com"),
    BAD("mailto encoded CRLF",
        V "mailto:a@example.com%0D%0ABcc:%20x@example.org"),
    BAD("mailto encoded NUL", V "mailto:a%00@example.com"),
    BAD("mailto single-label domain", V "mailto:postmaster@localhost"),
    BAD("mailto IPv4 domain", V "mailto:a@192.0.2.1"),
    BAD("mailto address literal", V "mailto:a@[192.0.2.1]"),
    BAD("mailto two @", V "mailto:a@b@example.com"),
    BAD("mailto trailing dot", V "mailto:a@example.com."),
    OK("bad mailto then https", V "mailto:x," H, 1, H),
    /* https: targets. */
    BAD("https userinfo", V "https://user:pw@r.example.com/x"),
    BAD("https user only", V "https://user@r.example.com/x"),
    OK("https userinfo then mailto", V "https://u@r.example.com/x," A, 1, A_T),
    OK("https port and query", V "https://R.example.com:8443/v1?x=1&y=%2C", 0,
       "https://r.example.com:8443/v1?x=1&y=%2C"),
    OK("https port with leading zeros", V "https://r.example.com:0443/", 0,
       "https://r.example.com:443/"),
    OK("https without path", V "https://r.example.com", 0,
       "https://r.example.com/"),
    OK("https query without path", V "https://r.example.com?a=b", 0,
       "https://r.example.com/?a=b"),
    BAD("https fragment", V "https://r.example.com/x#frag"),
    BAD("https IPv6 literal", V "https://[::1]/x"),
    BAD("https IPv4 address", V "https://127.0.0.1/x"),
    BAD("https localhost", V "https://localhost/x"),
    BAD("https no host", V "https:///x"),
    BAD("https no //", V "https:r.example.com"),
    BAD("https port 0", V "https://r.example.com:0/x"),
    BAD("https port 65536", V "https://r.example.com:65536/x"),
    BAD("https empty port", V "https://r.example.com:/x"),
    BAD("https port not a number", V "https://r.example.com:https/x"),
    BAD("https encoded control character",
        V "https://r.example.com/a%0d%0aHost:x"),
    BAD("https encoded host", V "https://r%2Eexample.com/x"),
    BAD("https bracket in path", V "https://r.example.com/[x]"),
    /* Duplicates and the limit on kept URIs. */
    OK("duplicate target kept once", V A ",mailto:a@EXAMPLE.com," H "," H, 2,
       A_T, H),
    OK("ten URIs: eight kept",
       V "mailto:a0@example.com,mailto:a1@example.com,"
         "mailto:a2@example.com,mailto:a3@example.com,mailto:a4@example.com,"
         "mailto:a5@example.com,mailto:a6@example.com,mailto:a7@example.com,"
         "mailto:a8@example.com,mailto:a9@example.com",
       2, "a0@example.com", "a1@example.com", "a2@example.com",
       "a3@example.com", "a4@example.com", "a5@example.com", "a6@example.com",
       "a7@example.com"),
    BAD("bad URI past the limit still invalid",
        V "mailto:a0@example.com,mailto:a1@example.com,"
          "mailto:a2@example.com,mailto:a3@example.com,mailto:a4@example.com,"
          "mailto:a5@example.com,mailto:a6@example.com,mailto:a7@example.com,"
          "mailto:a8@example.com,mailto:a9%@example.com"),
};

static struct policy_tlsrpt_record *new_record(void) {
  struct policy_tlsrpt_record *r = malloc(sizeof *r);
  assert_non_null(r);
  memset(r, 'X', sizeof *r);
  return r;
}

/* The case's records as policy_txt; returns how many. */
static size_t case_recs(const struct txt_case *c, struct policy_txt *recs) {
  size_t n = 0;
  for (; n < MAXREC && c->recs[n] != NULL; n++)
    recs[n] = (struct policy_txt){c->recs[n], strlen(c->recs[n])};
  return n;
}

static void test_txt_table(void **state) {
  (void)state;
  struct policy_tlsrpt_record *out = new_record();
  for (size_t i = 0; i < sizeof txt_cases / sizeof txt_cases[0]; i++) {
    const struct txt_case *c = &txt_cases[i];
    struct policy_txt recs[MAXREC];
    size_t n = case_recs(c, recs);
    memset(out, 'X', sizeof *out);
    int rc = policy_tlsrpt_txt_parse(recs, n, out);
    if (rc != c->rc)
      fail_msg("txt case '%s': rc %s, want %s", c->what, postern_err_name(rc),
               postern_err_name(c->rc));
    if (rc != 0) {
      /* Nothing is written on an error. */
      assert_int_equal(((unsigned char *)out)[0], 'X');
      continue;
    }
    size_t want = 0;
    while (want < POLICY_TLSRPT_RUA_MAX && c->targets[want] != NULL)
      want++;
    if (out->nrua != want || out->nskipped != c->nskipped)
      fail_msg("txt case '%s': %zu kept, %zu skipped; want %zu, %zu", c->what,
               out->nrua, out->nskipped, want, c->nskipped);
    for (size_t k = 0; k < want; k++) {
      enum policy_tlsrpt_uri_kind kind =
          strncmp(c->targets[k], "https://", 8) == 0 ? POLICY_TLSRPT_URI_HTTPS
                                                     : POLICY_TLSRPT_URI_MAILTO;
      if (out->rua[k].kind != kind ||
          strcmp(out->rua[k].target, c->targets[k]) != 0)
        fail_msg("txt case '%s': URI %zu is %d '%s', want %d '%s'", c->what, k,
                 out->rua[k].kind, out->rua[k].target, kind, c->targets[k]);
      /* The published form is kept as it was, and it is in the record. */
      if (strstr(c->recs[0], out->rua[k].uri) == NULL &&
          (n < 2 || strstr(c->recs[1], out->rua[k].uri) == NULL))
        fail_msg("txt case '%s': uri '%s' not as published", c->what,
                 out->rua[k].uri);
    }
  }
  free(out);
}

static void test_txt_uri_fields(void **state) {
  (void)state;
  static const char rec[] =
      "v=TLSRPTv1; rua=MAILTO:Tls%2Brpt@Example.com?subject=x , "
      "https://Reports.example.com:8443/a?b=c";
  struct policy_txt t = {rec, sizeof rec - 1};
  struct policy_tlsrpt_record *out = new_record();
  assert_int_equal(policy_tlsrpt_txt_parse(&t, 1, out), 0);
  assert_int_equal(out->nrua, 2);
  assert_int_equal(out->nskipped, 0);
  assert_int_equal(out->rua[0].kind, POLICY_TLSRPT_URI_MAILTO);
  assert_string_equal(out->rua[0].uri,
                      "MAILTO:Tls%2Brpt@Example.com?subject=x");
  /* The local part keeps its case; the domain does not need it. */
  assert_string_equal(out->rua[0].target, "Tls+rpt@example.com");
  assert_int_equal(out->rua[1].kind, POLICY_TLSRPT_URI_HTTPS);
  assert_string_equal(out->rua[1].uri,
                      "https://Reports.example.com:8443/a?b=c");
  assert_string_equal(out->rua[1].target,
                      "https://reports.example.com:8443/a?b=c");
  free(out);
}

/* Appends `fill` to `prefix` until the string is `len` bytes long. */
static char *padded(const char *prefix, char fill, size_t len) {
  char *s = malloc(len + 1);
  assert_non_null(s);
  size_t p = strlen(prefix);
  assert_true(p <= len);
  memcpy(s, prefix, p);
  memset(s + p, fill, len - p);
  s[len] = '\0';
  return s;
}

/* Parses "v=TLSRPTv1; rua=<uri>,<tail>" and returns the result code. */
static int parse_uri(const char *uri, const char *tail,
                     struct policy_tlsrpt_record *out) {
  size_t n = strlen(uri) + strlen(tail) + 32;
  char *rec = malloc(n);
  assert_non_null(rec);
  snprintf(rec, n, "v=TLSRPTv1; rua=%s%s%s", uri, *tail ? "," : "", tail);
  struct policy_txt t = {rec, strlen(rec)};
  int rc = policy_tlsrpt_txt_parse(&t, 1, out);
  free(rec);
  return rc;
}

static void test_txt_lengths(void **state) {
  (void)state;
  struct policy_tlsrpt_record *out = new_record();
  const size_t max = POLICY_TLSRPT_URI_MAX - 1;
  /* The longest URI kept, and one byte more: skipped, not an error. */
  char *u = padded("https://r.example.com/", 'p', max);
  assert_int_equal(parse_uri(u, "", out), 0);
  assert_int_equal(out->nrua, 1);
  assert_string_equal(out->rua[0].uri, u);
  assert_string_equal(out->rua[0].target, u);
  free(u);
  u = padded("https://r.example.com/", 'p', max + 1);
  assert_int_equal(parse_uri(u, "", out), POSTERN_EPROTO);
  assert_int_equal(parse_uri(u, A, out), 0);
  assert_int_equal(out->nrua, 1);
  assert_int_equal(out->nskipped, 1);
  assert_string_equal(out->rua[0].target, A_T);
  free(u);
  /* An https URL whose normalised form (with "/") would not fit. */
  u = padded("https://r.example.com?", 'q', max);
  assert_int_equal(parse_uri(u, "", out), POSTERN_EPROTO);
  free(u);
  /* mailto: hfields count towards the URI, not the address. */
  u = padded("mailto:a@example.com?subject=", 's', max);
  assert_int_equal(parse_uri(u, "", out), 0);
  assert_string_equal(out->rua[0].target, A_T);
  free(u);
  /* Local part: 64 bytes at most (RFC 5321 §4.5.3.1.1). */
  char *local = padded("mailto:", 'l', 7 + 64);
  char addr[512];
  snprintf(addr, sizeof addr, "%s@example.com", local);
  assert_int_equal(parse_uri(addr, "", out), 0);
  snprintf(addr, sizeof addr, "%sl@example.com", local);
  assert_int_equal(parse_uri(addr, "", out), POSTERN_EPROTO);
  free(local);
  /* An address of 255 bytes (domain of 253) is over RFC 5321's 254. */
  char dom[254];
  for (size_t i = 0; i < 253; i++)
    dom[i] = i % 64 == 63 ? '.' : 'd';
  dom[253] = '\0';
  snprintf(addr, sizeof addr, "mailto:a@%s", dom);
  assert_int_equal(parse_uri(addr, "", out), POSTERN_EPROTO);
  dom[251] = '\0'; /* "ab@" and 251 bytes: 254 */
  snprintf(addr, sizeof addr, "mailto:ab@%s", dom);
  assert_int_equal(parse_uri(addr, "", out), 0);
  assert_int_equal(strlen(out->rua[0].target), 254);
  free(out);
}

static void test_txt_bytes(void **state) {
  (void)state;
  struct policy_tlsrpt_record *out = new_record();
  /* Lengths, not NULs, bound the input: a NUL inside is a bad byte. */
  static const char nul[] = "v=TLSRPTv1; rua=mailto:a@exa\0mple.com";
  struct policy_txt t = {nul, sizeof nul - 1};
  assert_int_equal(policy_tlsrpt_txt_parse(&t, 1, out), POSTERN_EPROTO);
  /* Not NUL-terminated: only `len` bytes are read. */
  static const char buf[] = "v=TLSRPTv1; rua=mailto:a@example.comXYZ";
  struct policy_txt u = {buf, sizeof buf - 4};
  assert_int_equal(policy_tlsrpt_txt_parse(&u, 1, out), 0);
  assert_string_equal(out->rua[0].target, A_T);
  /* An empty record (data NULL, len 0) is no record. */
  struct policy_txt recs[2] = {{NULL, 0}, {buf, sizeof buf - 4}};
  assert_int_equal(policy_tlsrpt_txt_parse(recs, 2, out), 0);
  recs[0].len = 3;
  assert_int_equal(policy_tlsrpt_txt_parse(recs, 2, out), POSTERN_EINVAL);
  assert_int_equal(policy_tlsrpt_txt_parse(NULL, 1, out), POSTERN_EINVAL);
  assert_int_equal(policy_tlsrpt_txt_parse(&u, 1, NULL), POSTERN_EINVAL);
  assert_int_equal(policy_tlsrpt_txt_parse(NULL, 0, out), POSTERN_ENOENT);
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_txt_table),
      cmocka_unit_test(test_txt_uri_fields),
      cmocka_unit_test(test_txt_lengths),
      cmocka_unit_test(test_txt_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
