/*
 * mtasts_parse_test.c - table-driven tests of the MTA-STS parsers and MX
 * pattern matching (RFC 8461 §3.1, §3.2, §4.1), including hostile input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/chain.h"
#include "base/postern_err.h"

/* ---- TXT --------------------------------------------------------------- */

#define MAXREC 4
struct txt_case {
  const char *what;
  const char *recs[MAXREC]; /* NULL-terminated list */
  int rc;
  const char *id;
};

static const struct txt_case txt_cases[] = {
    {"minimal", {"v=STSv1; id=20160831085700Z"}, 0, "20160831085700Z"},
    {"no space", {"v=STSv1;id=abc"}, 0, "abc"},
    {"trailing delimiter", {"v=STSv1; id=abc;"}, 0, "abc"},
    {"trailing delimiter and blanks", {"v=STSv1; id=abc ; "}, 0, "abc"},
    {"tabs around delimiter", {"v=STSv1\t;\tid=abc"}, 0, "abc"},
    {"blank before delimiter", {"v=STSv1 ; id=abc"}, 0, "abc"},
    {"32 character id",
     {"v=STSv1; id=0123456789abcdefABCDEF0123456789"},
     0,
     "0123456789abcdefABCDEF0123456789"},
    {"extension tolerated", {"v=STSv1; id=abc; ext=value"}, 0, "abc"},
    {"extension first", {"v=STSv1; x.y_z-1=a:b/c; id=abc"}, 0, "abc"},
    {"other TXT ignored",
     {"v=spf1 -all", "v=STSv1; id=abc", "google-site-verification=xyz"},
     0,
     "abc"},
    {"no STS record", {"v=spf1 -all", "hello"}, POSTERN_ENOENT, NULL},
    {"no TXT at all", {NULL}, POSTERN_ENOENT, NULL},
    {"version is case-sensitive", {"v=stsv1; id=abc"}, POSTERN_ENOENT, NULL},
    {"other version ignored", {"v=STSv10; id=abc"}, POSTERN_ENOENT, NULL},
    {"leading blank is not STS", {" v=STSv1; id=abc"}, POSTERN_ENOENT, NULL},
    {"two STS records",
     {"v=STSv1; id=a", "v=STSv1; id=b"},
     POSTERN_EPROTO,
     NULL},
    {"two identical STS records",
     {"v=STSv1; id=a", "v=STSv1; id=a"},
     POSTERN_EPROTO,
     NULL},
    {"one valid one invalid",
     {"v=STSv1; id=a", "v=STSv1"},
     POSTERN_EPROTO,
     NULL},
    {"no id", {"v=STSv1;"}, POSTERN_EPROTO, NULL},
    {"bare version", {"v=STSv1"}, POSTERN_EPROTO, NULL},
    {"only extension", {"v=STSv1; foo=bar"}, POSTERN_EPROTO, NULL},
    {"empty id", {"v=STSv1; id="}, POSTERN_EPROTO, NULL},
    {"33 character id",
     {"v=STSv1; id=0123456789abcdefABCDEF0123456789x"},
     POSTERN_EPROTO,
     NULL},
    {"id with hyphen", {"v=STSv1; id=2016-08-31"}, POSTERN_EPROTO, NULL},
    {"id with dot", {"v=STSv1; id=a.b"}, POSTERN_EPROTO, NULL},
    {"two ids", {"v=STSv1; id=a; id=b"}, POSTERN_EPROTO, NULL},
    {"ID is an extension", {"v=STSv1; ID=abc"}, POSTERN_EPROTO, NULL},
    {"junk after id", {"v=STSv1; id=abc def"}, POSTERN_EPROTO, NULL},
    {"missing delimiter", {"v=STSv1 id=abc"}, POSTERN_EPROTO, NULL},
    {"double delimiter", {"v=STSv1;; id=abc"}, POSTERN_EPROTO, NULL},
    {"field without =", {"v=STSv1; id=abc; flag"}, POSTERN_EPROTO, NULL},
    {"empty extension value", {"v=STSv1; id=abc; x="}, POSTERN_EPROTO, NULL},
    {"= in extension value", {"v=STSv1; id=abc; x=a=b"}, POSTERN_EPROTO, NULL},
    {"bad extension name", {"v=STSv1; id=abc; _x=1"}, POSTERN_EPROTO, NULL},
    {"long extension name",
     {"v=STSv1; id=abc; a23456789012345678901234567890123=1"},
     POSTERN_EPROTO,
     NULL},
    {"control character", {"v=STSv1; id=abc\r\n"}, POSTERN_EPROTO, NULL},
    {"non-ASCII in value",
     {"v=STSv1; id=abc; x=caf\xc3\xa9"},
     POSTERN_EPROTO,
     NULL},
};

static void test_txt_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof txt_cases / sizeof txt_cases[0]; i++) {
    const struct txt_case *c = &txt_cases[i];
    struct policy_txt recs[MAXREC];
    size_t n = 0;
    while (n < MAXREC && c->recs[n] != NULL) {
      recs[n].data = c->recs[n];
      recs[n].len = strlen(c->recs[n]);
      n++;
    }
    struct policy_mtasts_txt out;
    memset(&out, 'X', sizeof out);
    int rc = policy_mtasts_txt_parse(recs, n, &out);
    if (rc != c->rc)
      fail_msg("txt case '%s': rc %d, want %d", c->what, rc, c->rc);
    if (c->id != NULL && strcmp(out.id, c->id) != 0)
      fail_msg("txt case '%s': id '%s', want '%s'", c->what, out.id, c->id);
  }
}

static void test_txt_embedded_nul(void **state) {
  (void)state;
  /* Lengths, not NULs, bound the input: a NUL inside is just a bad byte. */
  static const char rec[] = "v=STSv1; id=ab\0cd";
  struct policy_txt t = {rec, sizeof rec - 1};
  struct policy_mtasts_txt out;
  assert_int_equal(policy_mtasts_txt_parse(&t, 1, &out), POSTERN_EPROTO);
  /* Not NUL-terminated: only `len` bytes are read. */
  static const char buf[] = "v=STSv1; id=abcXYZ";
  struct policy_txt u = {buf, 15};
  assert_int_equal(policy_mtasts_txt_parse(&u, 1, &out), 0);
  assert_string_equal(out.id, "abc");
  assert_int_equal(policy_mtasts_txt_parse(NULL, 1, &out), POSTERN_EINVAL);
  assert_int_equal(policy_mtasts_txt_parse(&u, 1, NULL), POSTERN_EINVAL);
}

/* ---- Policy body ------------------------------------------------------- */

#define MAXMX 4
struct body_case {
  const char *what;
  const char *body;
  int rc;
  enum policy_mtasts_mode mode;
  uint32_t max_age;
  const char *mx[MAXMX]; /* expected patterns, NULL-terminated */
};

static const struct body_case body_cases[] = {
    /* RFC 8461 §3.2 example */
    {"RFC example",
     "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
     "mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     604800,
     {"mail.example.com", "*.example.net", "backupmx.example.com"}},
    {"LF only, no final newline",
     "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400",
     0,
     POLICY_MTASTS_MODE_TESTING,
     86400,
     {"mx.example.com"}},
    {"mixed line ends",
     "version: STSv1\r\nmode: enforce\nmx: mx.example.com\r\nmax_age: 1\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     1,
     {"mx.example.com"}},
    {"whitespace tolerant",
     "  version:STSv1  \n\tmode :\tenforce\t\nmx:   mx.example.com \n"
     "max_age  :  3600\n\n\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     3600,
     {"mx.example.com"}},
    {"blank lines between fields",
     "version: STSv1\n\nmode: enforce\r\n\r\nmx: mx.example.com\nmax_age: 5\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     5,
     {"mx.example.com"}},
    {"mode none needs no mx",
     "version: STSv1\nmode: none\nmax_age: 0\n",
     0,
     POLICY_MTASTS_MODE_NONE,
     0,
     {NULL}},
    {"mode none may have mx",
     "version: STSv1\nmode: none\nmx: a.example\nmax_age: 10\n",
     0,
     POLICY_MTASTS_MODE_NONE,
     10,
     {"a.example"}},
    {"max_age maximum",
     "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557600\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     31557600,
     {"a.example"}},
    {"max_age leading zeros",
     "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 0000000042\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     42,
     {"a.example"}},
    {"unknown keys ignored",
     "version: STSv1\nmode: enforce\nfoo: bar baz\nx_y.z-1: caf\xc3\xa9 ;=\n"
     "mx: a.example\nmax_age: 10\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     10,
     {"a.example"}},
    {"mx normalised",
     "version: STSv1\nmode: enforce\nmx: MX.Example.COM.\nmx: *.EXAMPLE.net\n"
     "max_age: 10\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     10,
     {"mx.example.com", "*.example.net"}},
    /* U-labels (RFC 6531 Domain): stored as A-labels (IDNA2008). */
    {"mx U-labels become A-labels",
     "version: STSv1\nmode: enforce\nmx: mx.B\xc3\xbc"
     "cher.example\n"
     "mx: *.m\xc3\xbc.example.\nmax_age: 10\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     10,
     {"mx.xn--bcher-kva.example", "*.xn--m-eha.example"}},
    {"mx invalid IDNA2008: malformed",
     "version: STSv1\nmode: enforce\nmx: mx.\xe2\x98\x83.example\n"
     "max_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"mx not UTF-8: malformed",
     "version: STSv1\nmode: enforce\nmx: mx.\xff.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"first occurrence wins",
     "version: STSv1\nmode: testing\nmax_age: 10\nmode: enforce\n"
     "max_age: 99\nversion: STSv2\nmx: a.example\n",
     0,
     POLICY_MTASTS_MODE_TESTING,
     10,
     {"a.example"}},
    {"empty body", "", POSTERN_EPROTO, 0, 0, {NULL}},
    {"only blank lines", "\n\r\n  \n", POSTERN_EPROTO, 0, 0, {NULL}},
    /* RFC 8461 §3.2: fields may come in any order ("Parsers MUST accept
     * TXT records and policy files which are syntactically valid"). */
    {"version not first",
     "mode: enforce\nversion: STSv1\nmx: a.example\nmax_age: 10\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     10,
     {"a.example"}},
    {"version last",
     "mx: a.example\nmax_age: 10\nmode: testing\nversion: STSv1\n",
     0,
     POLICY_MTASTS_MODE_TESTING,
     10,
     {"a.example"}},
    {"mx before and after version",
     "mx: a.example\nversion: STSv1\nmx: *.b.example\nmode: enforce\n"
     "max_age: 7\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     7,
     {"a.example", "*.b.example"}},
    {"unknown key before version",
     "foo: bar\nversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 10\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     10,
     {"a.example"}},
    {"no version",
     "mode: enforce\nmx: a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"wrong version after other fields",
     "mode: enforce\nmx: a.example\nmax_age: 10\nversion: STSv2\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"wrong version",
     "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"version value case",
     "version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"key case-sensitive",
     "Version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"no mode",
     "version: STSv1\nmx: a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"Mode is unknown key so mode missing",
     "version: STSv1\nMode: enforce\nmx: a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"bad mode",
     "version: STSv1\nmode: enforcing\nmx: a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"mode case",
     "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"no max_age",
     "version: STSv1\nmode: enforce\nmx: a.example\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    /* Above 31557600 the value is capped, not rejected (RFC 8461 §3.2
     * grammar: 1*10DIGIT; "values MUST be ... up to 31557600"). */
    {"max_age over the maximum is capped",
     "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     31557600,
     {"a.example"}},
    {"max_age 11 digits",
     "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 00000000001\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"max_age negative",
     "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"max_age with unit",
     "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 10s\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"max_age of 10 nines is capped",
     "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n",
     0,
     POLICY_MTASTS_MODE_ENFORCE,
     31557600,
     {"a.example"}},
    {"enforce without mx",
     "version: STSv1\nmode: enforce\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"testing without mx",
     "version: STSv1\nmode: testing\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"line without colon",
     "version: STSv1\nmode: enforce\nmx a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"empty value",
     "version: STSv1\nmode: enforce\nmx:\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"empty unknown value",
     "version: STSv1\nmode: enforce\nmx: a.example\nfoo:\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"bad key",
     "version: STSv1\nmode: enforce\nmx: a.example\n-x: 1\n"
     "max_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"key with space",
     "version: STSv1\nmode: enforce\nmax age: 10\nmx: a.example\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"mx wildcard in middle",
     "version: STSv1\nmode: enforce\nmx: mx.*.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"mx partial wildcard",
     "version: STSv1\nmode: enforce\nmx: mx*.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"mx bare star",
     "version: STSv1\nmode: enforce\nmx: *\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"mx two wildcards",
     "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"mx with two names",
     "version: STSv1\nmode: enforce\nmx: a.example b.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"mx empty label",
     "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"mx underscore",
     "version: STSv1\nmode: enforce\nmx: a_b.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"mx hyphen edge",
     "version: STSv1\nmode: enforce\nmx: -a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"bare CR inside line",
     "version: STSv1\nmode: enforce\rmx: a.example\nmax_age: 10\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"CRCRLF",
     "version: STSv1\r\r\nmode: enforce\nmx: a.example\nmax_age: 1\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"control character in unknown value",
     "version: STSv1\nmode: enforce\nfoo: a\x01z\nmx: a.example\nmax_age: 1\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"DEL character",
     "version: STSv1\nmode: enforce\nfoo: a\x7fz\nmx: a.example\nmax_age: 1\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"HTML error page",
     "<html><body>Not Found</body></html>\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
    {"JSON", "{\"version\": \"STSv1\"}\n", POSTERN_EPROTO, 0, 0, {NULL}},
    {"byte order mark",
     "\xef\xbb\xbfversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
     POSTERN_EPROTO,
     0,
     0,
     {NULL}},
};

static void test_body_table(void **state) {
  (void)state;
  struct policy_mtasts_policy *p = malloc(sizeof *p);
  assert_non_null(p);
  for (size_t i = 0; i < sizeof body_cases / sizeof body_cases[0]; i++) {
    const struct body_case *c = &body_cases[i];
    int rc = policy_mtasts_policy_parse(c->body, strlen(c->body), p);
    if (rc != c->rc)
      fail_msg("body case '%s': rc %d, want %d", c->what, rc, c->rc);
    if (rc != 0)
      continue;
    if (p->mode != c->mode || p->max_age != c->max_age)
      fail_msg("body case '%s': mode %s max_age %u", c->what,
               policy_mtasts_mode_name(p->mode), p->max_age);
    size_t n = 0;
    while (n < MAXMX && c->mx[n] != NULL)
      n++;
    if (p->n_mx != n)
      fail_msg("body case '%s': %zu mx, want %zu", c->what, p->n_mx, n);
    for (size_t k = 0; k < n; k++)
      if (strcmp(p->mx[k], c->mx[k]) != 0)
        fail_msg("body case '%s': mx[%zu] '%s', want '%s'", c->what, k,
                 p->mx[k], c->mx[k]);
  }
  free(p);
}

/* Appends to a growing buffer; fails the test on overflow. */
static void put(char *buf, size_t cap, size_t *len, const char *s) {
  size_t n = strlen(s);
  assert_true(*len + n <= cap);
  memcpy(buf + *len, s, n);
  *len += n;
}

static void test_body_limits(void **state) {
  (void)state;
  struct policy_mtasts_policy *p = malloc(sizeof *p);
  char *buf = malloc(POLICY_MTASTS_BODY_MAX + 16);
  assert_non_null(p);
  assert_non_null(buf);
  const size_t cap = POLICY_MTASTS_BODY_MAX + 16;

  /* Exactly the cap parses (padding is an ignored extension field). */
  size_t len = 0;
  put(buf, cap, &len,
      "version: STSv1\nmode: enforce\nmx: a.example\n"
      "max_age: 10\npad: ");
  while (len < POLICY_MTASTS_BODY_MAX - 1)
    buf[len++] = 'x';
  buf[len++] = '\n';
  assert_int_equal(len, POLICY_MTASTS_BODY_MAX);
  assert_int_equal(policy_mtasts_policy_parse(buf, len, p), 0);
  /* One more byte is too big, whatever it is. */
  buf[len++] = '\n';
  assert_int_equal(policy_mtasts_policy_parse(buf, len, p), POSTERN_ETOOBIG);

  /* POLICY_MTASTS_MX_MAX patterns are kept, one more is refused. */
  len = 0;
  put(buf, cap, &len, "version: STSv1\nmode: enforce\nmax_age: 10\n");
  char line[64];
  for (int i = 0; i < POLICY_MTASTS_MX_MAX; i++) {
    snprintf(line, sizeof line, "mx: mx%d.example\n", i);
    put(buf, cap, &len, line);
  }
  assert_int_equal(policy_mtasts_policy_parse(buf, len, p), 0);
  assert_int_equal(p->n_mx, POLICY_MTASTS_MX_MAX);
  assert_string_equal(p->mx[POLICY_MTASTS_MX_MAX - 1], "mx63.example");
  put(buf, cap, &len, "mx: one-more.example\n");
  assert_int_equal(policy_mtasts_policy_parse(buf, len, p), POSTERN_ETOOBIG);

  /* A 253-character name is valid; 254 is not. */
  char name[300];
  memset(name, 0, sizeof name);
  for (int i = 0; i < 4; i++) { /* 4 * 63 + 3 dots = 255; trimmed below */
    memset(name + i * 64, 'a', 63);
    if (i < 3)
      name[i * 64 + 63] = '.';
  }
  name[253] = '\0'; /* 253 chars, last label 61 long */
  len = 0;
  put(buf, cap, &len, "version: STSv1\nmode: enforce\nmax_age: 10\nmx: ");
  put(buf, cap, &len, name);
  assert_int_equal(policy_mtasts_policy_parse(buf, len, p), 0);
  assert_string_equal(p->mx[0], name);
  assert_true(policy_mtasts_policy_match(p, name));
  put(buf, cap, &len, "a");
  assert_int_equal(policy_mtasts_policy_parse(buf, len, p), POSTERN_EPROTO);
  /* A 64-character label is not valid either. */
  len = 0;
  put(buf, cap, &len, "version: STSv1\nmode: enforce\nmax_age: 10\nmx: ");
  memset(name, 'b', 64);
  strcpy(name + 64, ".example");
  put(buf, cap, &len, name);
  assert_int_equal(policy_mtasts_policy_parse(buf, len, p), POSTERN_EPROTO);

  /* Only `len` bytes are read; a NUL inside is a control character. */
  static const char nul[] = "version: STSv1\nmode: enforce\nmx: a.ex\0ample\n"
                            "max_age: 1\n";
  assert_int_equal(policy_mtasts_policy_parse(nul, sizeof nul - 1, p),
                   POSTERN_EPROTO);
  static const char cut[] =
      "version: STSv1\nmode: none\nmax_age: 7\ngarbage without colon";
  assert_int_equal(policy_mtasts_policy_parse(cut, 37, p), 0);
  assert_int_equal(p->max_age, 7);
  assert_int_equal(policy_mtasts_policy_parse(cut, sizeof cut - 1, p),
                   POSTERN_EPROTO);
  assert_int_equal(policy_mtasts_policy_parse(NULL, 0, p), POSTERN_EPROTO);
  assert_int_equal(policy_mtasts_policy_parse(NULL, 3, p), POSTERN_EINVAL);
  assert_int_equal(policy_mtasts_policy_parse(cut, 3, NULL), POSTERN_EINVAL);
  free(buf);
  free(p);
}

/* ---- MX matching ------------------------------------------------------- */

struct mx_case {
  const char *pattern;
  const char *host;
  bool match;
};

static const struct mx_case mx_cases[] = {
    /* RFC 8461 §4.1 */
    {"mail.example.com", "mail.example.com", true},
    {"*.example.com", "mx1.example.com", true},
    {"*.example.com", "example.com", false},
    {"*.example.com", "foo.mx1.example.com", false},
    /* case and trailing dots */
    {"mail.example.com", "MAIL.Example.COM", true},
    {"MAIL.EXAMPLE.COM", "mail.example.com.", true},
    {"mail.example.com.", "mail.example.com", true},
    {"*.Example.Com.", "MX.EXAMPLE.COM.", true},
    {"mail.example.com", "mail.example.com..", false},
    /* exact names do not match neighbours */
    {"mail.example.com", "mail.example.co", false},
    {"mail.example.com", "xmail.example.com", false},
    {"mail.example.com", "mx.mail.example.com", false},
    {"example.com", "mail.example.com", false},
    /* the wildcard label must be a whole, non-empty label */
    {"*.example.com", ".example.com", false},
    {"*.example.com", "mxexample.com", false},
    {"*.example.com", "mx.example.com.evil", false},
    {"*.example.com", "mx.notexample.com", false},
    {"*.com", "example.com", true},
    {"*.", "a.", false},
    {"*", "a", false},
    {"", "", false},
    {"mail.example.com", "", false},
    {"*.example.com", "*.example.com", false},
    {"mail.example.com", "mail example.com", false},
    {"mx*.example.com", "mx1.example.com", false},
};

static void test_mx_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof mx_cases / sizeof mx_cases[0]; i++) {
    const struct mx_case *c = &mx_cases[i];
    if (policy_mtasts_mx_match(c->pattern, c->host) != c->match)
      fail_msg("mx case '%s' vs '%s': want %s", c->pattern, c->host,
               c->match ? "match" : "no match");
  }
  assert_false(policy_mtasts_mx_match(NULL, "a"));
  assert_false(policy_mtasts_mx_match("a", NULL));
}

static void test_policy_match(void **state) {
  (void)state;
  static const char body[] = "version: STSv1\nmode: enforce\n"
                             "mx: mail.example.com\nmx: *.example.net\n"
                             "max_age: 86400\n";
  struct policy_mtasts_policy *p = malloc(sizeof *p);
  assert_non_null(p);
  assert_int_equal(policy_mtasts_policy_parse(body, sizeof body - 1, p), 0);
  assert_true(policy_mtasts_policy_match(p, "mail.example.com"));
  assert_true(policy_mtasts_policy_match(p, "Mail.Example.Com."));
  assert_true(policy_mtasts_policy_match(p, "mx1.example.net"));
  assert_false(policy_mtasts_policy_match(p, "example.net"));
  assert_false(policy_mtasts_policy_match(p, "a.b.example.net"));
  assert_false(policy_mtasts_policy_match(p, "mail.example.org"));
  assert_false(policy_mtasts_policy_match(NULL, "mail.example.com"));
  assert_string_equal(policy_mtasts_mode_name(p->mode), "enforce");
  assert_string_equal(policy_mtasts_mode_name((enum policy_mtasts_mode)9),
                      "unknown");
  free(p);
}

/*
 * Hostile input: every single-byte substitution and every truncation of
 * valid objects yields a clean answer (checked under ASan by the asan
 * config), never a crash or a read past `len`.
 */
static void test_mutations(void **state) {
  (void)state;
  static const char body[] =
      "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
      "mx: *.example.net\r\nmax_age: 604800\r\nfoo: bar\r\n";
  static const char txt[] = "v=STSv1; id=20160831085700Z; ext=1;";
  static const unsigned char subst[] = {0x00, '\r', '\n', ':', ' ', '\t',
                                        '*',  '.',  ';',  '=', '-', 'a',
                                        '9',  0x7f, 0x80, 0xff};
  struct policy_mtasts_policy *p = malloc(sizeof *p);
  assert_non_null(p);
  const size_t blen = sizeof body - 1, tlen = sizeof txt - 1;
  for (size_t i = 0; i <= blen; i++) {
    /* Truncation: exactly `i` bytes, in a buffer of exactly that size. */
    char *cut = malloc(i ? i : 1);
    assert_non_null(cut);
    memcpy(cut, body, i);
    int rc = policy_mtasts_policy_parse(cut, i, p);
    assert_true(rc == 0 || rc == POSTERN_EPROTO);
    free(cut);
  }
  char buf[sizeof body];
  for (size_t i = 0; i < blen; i++) {
    for (size_t k = 0; k < sizeof subst; k++) {
      memcpy(buf, body, blen);
      buf[i] = (char)subst[k];
      int rc = policy_mtasts_policy_parse(buf, blen, p);
      assert_true(rc == 0 || rc == POSTERN_EPROTO);
      if (rc == 0) {
        assert_true(p->max_age <= POLICY_MTASTS_MAX_AGE_MAX);
        assert_true(p->n_mx <= POLICY_MTASTS_MX_MAX);
      }
    }
  }
  char tbuf[sizeof txt];
  for (size_t i = 0; i < tlen; i++) {
    for (size_t k = 0; k < sizeof subst; k++) {
      memcpy(tbuf, txt, tlen);
      tbuf[i] = (char)subst[k];
      struct policy_txt t = {tbuf, tlen};
      struct policy_mtasts_txt out;
      int rc = policy_mtasts_txt_parse(&t, 1, &out);
      assert_true(rc == 0 || rc == POSTERN_EPROTO || rc == POSTERN_ENOENT);
      if (rc == 0) {
        size_t n = strlen(out.id);
        assert_true(n >= 1 && n <= POLICY_MTASTS_ID_MAX);
      }
    }
    struct policy_txt t = {txt, i};
    struct policy_mtasts_txt out;
    int rc = policy_mtasts_txt_parse(&t, 1, &out);
    assert_true(rc == 0 || rc == POSTERN_EPROTO || rc == POSTERN_ENOENT);
  }
  free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_txt_table),
      cmocka_unit_test(test_txt_embedded_nul),
      cmocka_unit_test(test_body_table),
      cmocka_unit_test(test_body_limits),
      cmocka_unit_test(test_mx_table),
      cmocka_unit_test(test_policy_match),
      cmocka_unit_test(test_mutations),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
