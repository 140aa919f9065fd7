/*
 * dane_lookup_test.c - the pure parts of the dane module's lookups (RFC
 * 7672): where TLSA records are looked up for a host reached through
 * aliases (§2.2.2), and the order-independent digest of a TLSA RRset that
 * keys cached TLS sessions. The matcher itself is tested in dane_test.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/postern_err.h"
#include "policy/chain.h"

/* ---- the TLSA RRset digest that keys cached TLS sessions ---- */

static void test_rrset_digest(void **state) {
  (void)state;
  static const uint8_t d1[32] = {1}, d2[32] = {2};
  static const uint8_t c1[3] = {0xaa, 0xbb, 0xcc};
  const struct policy_tlsa a = {3, 1, 1, d1, 32}, b = {2, 0, 1, d2, 32},
                           c = {3, 0, 0, c1, 3}, c_short = {3, 0, 0, c1, 2},
                           a_sel = {3, 0, 1, d1, 32};
  const struct {
    const char *what;
    struct policy_tlsa recs[3];
    size_t n;
    const char *base;
  } sets[] = {
      /* 0..3: the same RRset for the same name */
      {"a b c", {a, b, c}, 3, "mx.test"},
      {"c a b", {c, a, b}, 3, "mx.test"},
      {"b c a, name in capitals with a dot", {b, c, a}, 3, "MX.Test."},
      {"c b a", {c, b, a}, 3, "mx.test"},
      /* 4..: each different from all the others */
      {"another base domain", {a, b, c}, 3, "alias.test"},
      {"one record fewer", {a, b}, 2, "mx.test"},
      {"shorter data", {a, b, c_short}, 3, "mx.test"},
      {"another selector", {a_sel, b, c}, 3, "mx.test"},
      {"no records", {a}, 0, "mx.test"},
  };
  enum { SAME = 4 };
  uint8_t dig[sizeof sets / sizeof sets[0]][32];
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
    assert_int_equal(
        policy_tlsa_rrset_digest(sets[i].recs, sets[i].n, sets[i].base, dig[i]),
        0);
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
    for (size_t k = i + 1; k < sizeof sets / sizeof sets[0]; k++) {
      bool equal = memcmp(dig[i], dig[k], 32) == 0;
      if (equal != (i < SAME && k < SAME))
        fail_msg("%s vs %s: digests %s", sets[i].what, sets[k].what,
                 equal ? "equal" : "differ");
    }
  uint8_t out[32];
  assert_int_equal(policy_tlsa_rrset_digest(&a, 1, "", out), POSTERN_EINVAL);
  assert_int_equal(policy_tlsa_rrset_digest(NULL, 1, "mx.test", out),
                   POSTERN_EINVAL);
}

/* ---- where TLSA records are looked up (RFC 7672 §2.2.2) ---- */

static void test_tlsa_bases(void **state) {
  (void)state;
  static const struct {
    const char *what;
    const char *host, *canonical;
    bool name, addrs, cname;
    const char *first, *second; /* NULL: no such name */
  } cases[] = {
      {"no alias, secure", "mx.a.test", "mx.a.test", true, true, false,
       "mx.a.test", NULL},
      {"no alias, canonical NULL", "mx.a.test", NULL, true, true, false,
       "mx.a.test", NULL},
      {"no alias, case and dot differ", "MX.a.test.", "mx.a.test", true, true,
       false, "MX.a.test.", NULL},
      {"no alias, insecure addresses", "mx.a.test", "mx.a.test", true, false,
       false, NULL, NULL},
      {"no alias, a secure CNAME cannot exist", "mx.a.test", "mx.a.test", true,
       false, true, NULL, NULL},
      {"secure chain: expanded, then original", "alias.a.test", "mx.b.test",
       true, true, false, "mx.b.test", "alias.a.test"},
      {"secure chain, CNAME also secure", "alias.a.test", "mx.b.test", true,
       true, true, "mx.b.test", "alias.a.test"},
      {"secure first link into an unsigned zone: original only", "alias.a.test",
       "mx.plain.test", true, false, true, "alias.a.test", NULL},
      {"insecure first link", "alias.plain.test", "mx.a.test", true, false,
       false, NULL, NULL},
      {"name not authenticated (insecure MX RRset)", "mx.a.test", "mx.a.test",
       false, true, false, NULL, NULL},
      {"name not authenticated, secure alias", "alias.a.test", "mx.plain.test",
       false, false, true, NULL, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct policy_dane_host h = {.host = cases[i].host,
                                 .canonical = cases[i].canonical,
                                 .name_authenticated = cases[i].name,
                                 .addrs_authenticated = cases[i].addrs,
                                 .cname_authenticated = cases[i].cname};
    const char *out[2] = {NULL, NULL};
    size_t n = policy_dane_tlsa_bases(&h, out);
    size_t want = cases[i].first ? (cases[i].second ? 2 : 1) : 0;
    if (n != want)
      fail_msg("%s: %zu names, want %zu", cases[i].what, n, want);
    if (want >= 1 && strcmp(out[0], cases[i].first) != 0)
      fail_msg("%s: first %s", cases[i].what, out[0]);
    if (want == 2 && strcmp(out[1], cases[i].second) != 0)
      fail_msg("%s: second %s", cases[i].what, out[1]);
  }
  const char *out[2];
  assert_int_equal(policy_dane_tlsa_bases(NULL, out), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tlsa_bases),
      cmocka_unit_test(test_rrset_digest),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
