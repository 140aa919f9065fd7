/*
 * idna_test.c - postern_idna_to_ascii against cases that matter for mail
 * (from libidn2's and UTS #46's test data): U-labels, upper case, ß kept
 * (non-transitional), other scripts, mixed scripts, disallowed symbols,
 * contextual rules, bidi, hyphen rules, bad punycode, broken UTF-8, empty
 * labels, lengths.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "base/postern_idna.h"

#include <string.h>

static const struct {
  const char *in;
  int rc;
  const char *want;
} cases[] = {
    {"example.com", 0, "example.com"},
    {"EXAMPLE.com.", 0, "example.com"},
    {"b\xc3\xbc"
     "cher.example",
     0, "xn--bcher-kva.example"},
    {"B\xc3\x9c"
     "CHER.example",
     0, "xn--bcher-kva.example"},
    {"fa\xc3\x9f.de", 0, "xn--fa-hia.de"},
    {"xn--bcher-kva.example", 0, "xn--bcher-kva.example"},
    {"\xe2\x98\x83.com", POSTERN_EINVAL, NULL}, /* snowman */
    {"\xd7\x90"
     "a.com",
     POSTERN_EINVAL, NULL}, /* bidi rule */
    /* Other scripts; upper-case Cyrillic folds (UTS #46 mapping). */
    {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e.jp", 0, "xn--wgv71a119e.jp"},
    {"\xd0\x9f\xd0\xa0\xd0\x98\xd0\x9c\xd0\x95\xd0\xa0.\xd0\xa0\xd0\xa4", 0,
     "xn--e1afmkfd.xn--p1ai"},
    {"\xe1\xbd\x80\xce\xb4\xcf\x85\xcf\x83\xcf\x83\xce\xb5\xcf\x8d\xcf\x82.gr",
     0, "xn--pxac3bcak3d8526a.gr"},
    {"l\xc2\xb7l.cat", 0, "xn--ll-0ea.cat"}, /* Catalan middle dot */
    /* Mixed scripts in one label (Latin with a Cyrillic a): IDNA2008 has
     * no rule against it; look-alikes are the registries' business. */
    {"p\xd0\xb0ypal.com", 0, "xn--pypal-4ve.com"},
    {"a\xe2\x80\x8d"
     "b.com",
     POSTERN_EINVAL, NULL}, /* ZWJ: CONTEXTJ */
    {"\xcc\x81"
     "abc.com",
     POSTERN_EINVAL, NULL}, /* leading combining mark */
    {"-abc.com", POSTERN_EINVAL, NULL},
    {"ab--c.com", POSTERN_EINVAL, NULL},
    {"xn--zz.com", POSTERN_EINVAL, NULL}, /* bad punycode */
    {"\xff.com", POSTERN_EINVAL, NULL},   /* not UTF-8 */
    {"a..b", POSTERN_EINVAL, NULL},       /* empty label */
    {"", POSTERN_EINVAL, NULL},
    {"a.b\xc3\xbc"
     "cher\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc"
     "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc"
     "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc"
     "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc"
     "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc"
     "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc"
     "\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc.com",
     POSTERN_EINVAL, NULL}, /* a label over 63 bytes as an A-label */
};

static void test_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char out[256] = "unchanged";
    const char *why = NULL;
    int rc = postern_idna_to_ascii(cases[i].in, out, sizeof out, &why);
    if (rc != cases[i].rc)
      fail_msg("case %zu (%s): rc %d want %d (%s)", i, cases[i].in, rc,
               cases[i].rc, why ? why : "");
    if (rc == 0 && strcmp(out, cases[i].want) != 0)
      fail_msg("case %zu: '%s' want '%s'", i, out, cases[i].want);
    if (rc != 0)
      assert_true(why != NULL && why[0] != '\0');
  }
  char small[8];
  assert_int_equal(
      postern_idna_to_ascii("example.com", small, sizeof small, NULL),
      POSTERN_ETOOBIG);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_table)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
