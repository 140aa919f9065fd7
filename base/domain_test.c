/*
 * domain_test.c - the one domain name check (base/postern_domain.h) and the
 * UTF-8 sequence check under it, table-driven: the base rule with its
 * boundaries (label of 63, name of 253), each flag alone and combined, the
 * explanation given for each fault, and the U-label flag's report.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/postern_domain.h"
#include "base/postern_err.h"
#include "base/postern_utf8.h"

#include <stdio.h>
#include <string.h>

#define N(a) (sizeof a / sizeof a[0])

#define DOT POSTERN_DOMAIN_TRAILING_DOT
#define STAR POSTERN_DOMAIN_WILDCARD
#define SMTP POSTERN_DOMAIN_SMTP
#define URL POSTERN_DOMAIN_URL_HOST

#define EMPTY "empty host name"
#define LONG253 "host name longer than 253 bytes"
#define LONG255 "host name longer than 255 bytes"
#define LABEL "each dot-separated label must have 1 to 63 characters"
#define HYPHEN "a label must not start or end with '-'"
#define CHARS "a host name has only letters, digits, '-' and '.'"
#define CHARS_URL "a host name has only letters, digits, '-', '_' and '.'"
#define CHARS_SMTP "a host name has only letters, digits, '-', '.' and UTF-8"
#define UTF8 "invalid UTF-8 in a host name"
#define NUMERIC "the last label must not be all digits"

struct domain_case {
  const char *in;
  unsigned flags;
  const char *why; /* NULL: valid */
  bool utf8;       /* for valid names: whether a U-label was reported */
};

static const struct domain_case cases[] = {
    /* The base rule. */
    {"mail.example.net", 0, NULL, false},
    {"localhost", 0, NULL, false},
    {"a-b.c1", 0, NULL, false},
    {"xn--bcher-kva.example", 0, NULL, false},
    {"MiXeD.Example", 0, NULL, false},
    {"1.2.3.4", 0, NULL, false},
    {"", 0, EMPTY, false},
    {".", 0, LABEL, false},
    {"a..b", 0, LABEL, false},
    {".a", 0, LABEL, false},
    {"a.b.", 0, LABEL, false},
    {"-a.b", 0, HYPHEN, false},
    {"a-.b", 0, HYPHEN, false},
    {"a.b-", 0, HYPHEN, false},
    {"a_b.example", 0, CHARS, false},
    {"a b", 0, CHARS, false},
    {"*.example.com", 0, CHARS, false},
    {"b\xc3\xbc"
     "cher.example",
     0, CHARS, false},
    /* The leftmost fault wins: the '_' comes before the label ends. */
    {"-a_b", 0, CHARS, false},
    /* One trailing dot. */
    {"mail.example.net.", DOT, NULL, false},
    {"a.b..", DOT, LABEL, false},
    {".", DOT, EMPTY, false},
    {"", DOT, EMPTY, false},
    /* MTA-STS patterns. */
    {"*.example.com", STAR, NULL, false},
    {"*.example.com.", STAR | DOT, NULL, false},
    {"*.example.com.", STAR, LABEL, false},
    {"*.", STAR, EMPTY, false},
    {"*..", STAR | DOT, EMPTY, false},
    {"*", STAR, CHARS, false},
    {"a.*.example.com", STAR, CHARS, false},
    {"*.*.example.com", STAR, CHARS, false},
    /* SMTP: U-labels, no trailing dot. */
    {"b\xc3\xbc"
     "cher.example",
     SMTP, NULL, true},
    {"\xe4\xbe\x8b\xe3\x81\x88.jp", SMTP, NULL, true},
    {"example.org", SMTP, NULL, false},
    {"example.org.", SMTP, LABEL, false},
    {"b\xc3.example", SMTP, UTF8, false},
    {"b\xc0\xaf.example", SMTP, UTF8, false},         /* overlong */
    {"b\xed\xa0\x80.example", SMTP, UTF8, false},     /* surrogate */
    {"b\xf4\x90\x80\x80.example", SMTP, UTF8, false}, /* above U+10FFFF */
    {"a_b.example", SMTP, CHARS_SMTP, false},
    {"-\xc3\xa9.example", SMTP, HYPHEN, false},
    /* URL hosts: '_' and hyphens anywhere, no all-digit last label. */
    {"mta-sts.example.com", URL, NULL, false},
    {"_x.example.com", URL, NULL, false},
    {"-a-.example.com", URL, NULL, false},
    {"a.b2", URL, NULL, false},
    {"127.0.0.1", URL, NUMERIC, false},
    {"0x7f.1", URL, NUMERIC, false},
    {"12345", URL, NUMERIC, false},
    {"a..b", URL, LABEL, false},
    {"a.b.", URL, LABEL, false},
    {"a b", URL, CHARS_URL, false},
    {"b\xc3\xbc.example", URL, CHARS_URL, false},
};

static void test_table(void **state) {
  (void)state;
  for (size_t i = 0; i < N(cases); i++) {
    const struct domain_case *c = &cases[i];
    bool utf8 = false;
    const char *why = NULL;
    int rc = postern_domain_check(c->in, strlen(c->in), c->flags, &utf8, &why);
    if (c->why == NULL) {
      if (rc != 0)
        fail_msg("'%s' flags %u: refused (%s)", c->in, c->flags, why);
      if (utf8 != c->utf8)
        fail_msg("'%s' flags %u: utf8 %d", c->in, c->flags, utf8);
    } else {
      if (rc != POSTERN_EINVAL)
        fail_msg("'%s' flags %u: rc %d, want EINVAL", c->in, c->flags, rc);
      if (why == NULL || strcmp(why, c->why) != 0)
        fail_msg("'%s' flags %u: why '%s', want '%s'", c->in, c->flags,
                 why ? why : "(null)", c->why);
    }
    /* utf8 and why may be NULL. */
    assert_int_equal(
        postern_domain_check(c->in, strlen(c->in), c->flags, NULL, NULL), rc);
  }
}

/* Labels of 63 and names of 253 (255 for SMTP) are the limits. */
static void test_lengths(void **state) {
  (void)state;
  char name[300];
  memset(name, 'a', sizeof name);
  const char *why;
  assert_int_equal(postern_domain_check(name, 63, 0, NULL, &why), 0);
  assert_int_equal(postern_domain_check(name, 64, 0, NULL, &why),
                   POSTERN_EINVAL);
  assert_string_equal(why, LABEL);
  /* Labels of 60 and dots: a..a.a..a... */
  for (int i = 60; i < 300; i += 61)
    name[i] = '.';
  assert_int_equal(postern_domain_check(name, 253, 0, NULL, &why), 0);
  assert_int_equal(postern_domain_check(name, 254, 0, NULL, &why),
                   POSTERN_EINVAL);
  assert_string_equal(why, LONG253);
  assert_int_equal(postern_domain_check(name, 254, URL, NULL, &why),
                   POSTERN_EINVAL);
  assert_int_equal(postern_domain_check(name, 255, SMTP, NULL, &why), 0);
  assert_int_equal(postern_domain_check(name, 256, SMTP, NULL, &why),
                   POSTERN_EINVAL);
  assert_string_equal(why, LONG255);
  /* The trailing dot and the "*." are not counted. */
  name[253] = '.';
  assert_int_equal(postern_domain_check(name, 254, DOT, NULL, &why), 0);
  char star[300] = "*.";
  memcpy(star + 2, name, 254);
  assert_int_equal(postern_domain_check(star, 255, STAR, NULL, &why), 0);
  assert_int_equal(postern_domain_check(star, 256, STAR | DOT, NULL, &why), 0);
  /* Only the n bytes given are read; a NUL inside is refused. */
  assert_int_equal(postern_domain_check("ab_", 2, 0, NULL, &why), 0);
  assert_int_equal(postern_domain_check("a\0b", 3, 0, NULL, &why),
                   POSTERN_EINVAL);
}

static void test_utf8(void **state) {
  (void)state;
  static const struct {
    const char *in;
    size_t n, len;
  } cases[] = {
      {"a", 1, 0},
      {"\xc3\xa9", 2, 2},
      {"\xc3\xa9", 1, 0}, /* cut short */
      {"\xc2\x80", 2, 2},
      {"\xc1\xbf", 2, 0}, /* overlong */
      {"\xe2\x82\xac", 3, 3},
      {"\xe0\x9f\xbf", 3, 0}, /* overlong */
      {"\xed\x9f\xbf", 3, 3},
      {"\xed\xa0\x80", 3, 0}, /* surrogate */
      {"\xf0\x9f\x98\x80", 4, 4},
      {"\xf4\x8f\xbf\xbf", 4, 4},
      {"\xf4\x90\x80\x80", 4, 0}, /* above U+10FFFF */
      {"\xf5\x80\x80\x80", 4, 0},
      {"\x80", 1, 0},
      {"\xc3(", 2, 0},
  };
  for (size_t i = 0; i < N(cases); i++)
    if (postern_utf8_len((const unsigned char *)cases[i].in, cases[i].n) !=
        cases[i].len)
      fail_msg("utf8 case %zu", i);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_lengths),
      cmocka_unit_test(test_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
