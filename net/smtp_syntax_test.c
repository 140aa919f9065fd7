/*
 * tests/client/smtp_syntax_test.c - table-driven tests of net/smtp_syntax:
 * RFC 3461 §4 xtext, ORCPT values (RFC 3461 §4.2, RFC 6533 §3 "utf-8")
 * and UTF-8 sequence lengths (RFC 3629), the rules the SMTP client and
 * server share.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/postern_utf8.h"
#include "net/smtp_syntax.h"

struct text_case {
  const char *in;
  bool want;
};

static const struct text_case xtext_cases[] = {
    {"", true},       {"Q123", true},
    {"QQ+2B1", true}, {"<id@x.test>", true}, /* '<' and '>' are xchars */
    {"!~;,/?", true}, {"+2B", true},
    {"+2b", false}, /* hexchar digits are upper case */
    {"a+", false},    {"a+2", false},
    {"a+zz", false},  {"a=b", false},
    {"a b", false},   {"a\tb", false},
    {"a\x7f", false}, {"j\xc3\xb6rg", false}, /* 8-bit bytes are never xtext */
};

static const struct text_case orcpt_cases[] = {
    {"rfc822;a@x.test", true},
    {"RFC822;a+2Bb@x.test", true},
    {"x-type;v", true},
    {"rfc822;", false},
    {";a@x.test", false},
    {"a@x.test", false},
    {"rfc 822;a@x.test", false},
    {"rfc822;a b@x.test", false},
    {"rfc822;a+zz@x.test", false},
    {"rfc822;j\xc3\xb6rg@x.test", false},
    {"utf-8;j\xc3\xb6rg@x.test", true},   /* RFC 6533 utf-8-addr-unitext */
    {"UTF-8;j\\x{F6}rg@x.test", true},    /* utf-8-addr-xtext */
    {"utf-8;a+zz@x.test", true},          /* lenient, see smtp_syntax.h */
    {"utf-8;j\xc3rg@x.test", false},      /* broken sequence */
    {"utf-8;\xed\xa0\x80@x.test", false}, /* surrogate */
    {"utf-8;a=b@x.test", false},
    {"utf-8;a b@x.test", false},
};

static void test_xtext(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof xtext_cases / sizeof xtext_cases[0]; i++) {
    const struct text_case *c = &xtext_cases[i];
    if (smtp_syntax_xtext_ok(c->in, strlen(c->in)) != c->want)
      fail_msg("xtext \"%s\": want %d", c->in, c->want);
  }
  /* Bounded by n, not by a NUL: "+2" followed by bytes outside n. */
  assert_false(smtp_syntax_xtext_ok("a+2B", 3));
}

static void test_orcpt(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof orcpt_cases / sizeof orcpt_cases[0]; i++) {
    const struct text_case *c = &orcpt_cases[i];
    if (smtp_syntax_orcpt_ok(c->in, strlen(c->in)) != c->want)
      fail_msg("orcpt \"%s\": want %d", c->in, c->want);
  }
}

static void test_utf8_len(void **state) {
  (void)state;
  static const struct {
    const char *in;
    size_t want;
  } cases[] = {
      {"\xc3\xb6", 2},
      {"\xe7\x94\xb0", 3},
      {"\xf0\x9f\x98\x80", 4},
      {"a", 0},
      {"\x80", 0},
      {"\xc0\xaf", 0}, /* overlong */
      {"\xed\xa0\x80", 0},
      {"\xf4\x90\x80\x80", 0}, /* above U+10FFFF */
      {"\xe7\x94", 0},         /* cut short */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = strlen(cases[i].in);
    if (postern_utf8_len((const unsigned char *)cases[i].in, n) !=
        cases[i].want)
      fail_msg("utf8 case %zu: want %zu", i, cases[i].want);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_xtext),
      cmocka_unit_test(test_orcpt),
      cmocka_unit_test(test_utf8_len),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
