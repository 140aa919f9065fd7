/*
 * dns_cache_test.c - the resolver's answer cache (net/dns_cache.c) with a
 * clock the test moves: what is kept and for how long (TTL, max_ttl, the
 * RFC 2308 cap on denials, no denial without an SOA, never a failure), the
 * remaining TTL handed out, copies independent of the entry, least recently
 * used eviction, counters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "net/dns_internal.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

/* An answer with `n` MX records, or none for a denial. */
static void make(struct dns_answer *a, enum dns_status st, uint32_t ttl,
                 size_t n, bool ad) {
  memset(a, 0, sizeof *a);
  a->status = st;
  a->ttl = ttl;
  a->authenticated = ad;
  a->qname = strdup("example.org");
  a->cname = strdup("example.org");
  a->rr = n ? calloc(n, sizeof *a->rr) : NULL;
  for (size_t i = 0; i < n; i++) {
    a->rr[i].type = DNS_T_MX;
    a->rr[i].ttl = ttl;
    a->rr[i].u.mx.pref = (uint16_t)(10 * (i + 1));
    a->rr[i].u.mx.host = strdup(i ? "mx2.example.org" : "mx1.example.org");
  }
  a->nrr = n;
}

static void test_kept_for_ttl(void **state) {
  (void)state;
  struct dns__cache *c;
  assert_int_equal(dns__cache_new(100, 86400, &c), 0);
  struct dns_answer a, got;
  make(&a, DNS_ANSWER, 300, 2, true);
  dns__cache_put(c, "example.org", DNS_T_MX, &a, 1000);
  dns_answer_free(&a); /* the cache has its own copy */
  assert_int_equal(dns__cache_get(c, "example.org", DNS_T_TXT, 1000, &got),
                   POSTERN_ENOENT);
  assert_int_equal(dns__cache_get(c, "example.org", DNS_T_MX, 61000, &got), 0);
  assert_int_equal(got.nrr, 2);
  assert_string_equal(got.rr[1].u.mx.host, "mx2.example.org");
  assert_true(got.authenticated);
  assert_int_equal(got.ttl, 240); /* what is left, never the original */
  /* The copy is the caller's: changing it changes nothing cached. */
  got.rr[0].u.mx.host[0] = 'X';
  dns_answer_free(&got);
  assert_int_equal(dns__cache_get(c, "example.org", DNS_T_MX, 300999, &got), 0);
  assert_string_equal(got.rr[0].u.mx.host, "mx1.example.org");
  assert_int_equal(got.ttl, 1);
  dns_answer_free(&got);
  /* At the TTL it is gone, and dropped. */
  assert_int_equal(dns__cache_get(c, "example.org", DNS_T_MX, 301000, &got),
                   POSTERN_ENOENT);
  struct dns_cache_stats st;
  dns__cache_stats(c, &st);
  assert_int_equal(st.hits, 2);
  assert_int_equal(st.misses, 2);
  assert_int_equal(st.entries, 0);
  dns__cache_free(c);
}

static void test_what_is_kept(void **state) {
  (void)state;
  struct dns__cache *c;
  assert_int_equal(dns__cache_new(100, 3600, &c), 0);
  struct dns_answer a, got;
  /* max_ttl caps a long TTL. */
  make(&a, DNS_ANSWER, 86400 * 7, 1, false);
  dns__cache_put(c, "long.example", DNS_T_MX, &a, 0);
  dns_answer_free(&a);
  assert_int_equal(dns__cache_get(c, "long.example", DNS_T_MX, 0, &got), 0);
  assert_int_equal(got.ttl, 3600);
  assert_false(got.authenticated);
  dns_answer_free(&got);
  /* A denial for its SOA's TTL, at most 3 hours even under a larger
   * max_ttl; without an SOA (TTL 0) not at all. */
  struct dns__cache *c2;
  assert_int_equal(dns__cache_new(100, 86400, &c2), 0);
  make(&a, DNS_NXDOMAIN, 86400, 0, true);
  dns__cache_put(c2, "nx.example", DNS_T_A, &a, 0);
  dns_answer_free(&a);
  assert_int_equal(dns__cache_get(c2, "nx.example", DNS_T_A, 0, &got), 0);
  assert_int_equal(got.status, DNS_NXDOMAIN);
  assert_true(got.authenticated);
  assert_int_equal(got.ttl, DNS__NEG_TTL_MAX);
  dns_answer_free(&got);
  make(&a, DNS_NODATA, 0, 0, true);
  dns__cache_put(c2, "nosoa.example", DNS_T_A, &a, 0);
  dns_answer_free(&a);
  assert_int_equal(dns__cache_get(c2, "nosoa.example", DNS_T_A, 0, &got),
                   POSTERN_ENOENT);
  /* Failures are never kept, whatever TTL they claim. */
  static const enum dns_status fail[] = {DNS_TEMPFAIL, DNS_MALFORMED,
                                         DNS_CANCELED};
  for (size_t i = 0; i < 3; i++) {
    make(&a, fail[i], 300, 0, false);
    dns__cache_put(c2, "fail.example", DNS_T_A, &a, 0);
    dns_answer_free(&a);
    assert_int_equal(dns__cache_get(c2, "fail.example", DNS_T_A, 0, &got),
                     POSTERN_ENOENT);
  }
  /* A newer answer replaces the old one. */
  make(&a, DNS_ANSWER, 100, 1, false);
  dns__cache_put(c2, "nx.example", DNS_T_A, &a, 0);
  dns_answer_free(&a);
  assert_int_equal(dns__cache_get(c2, "nx.example", DNS_T_A, 0, &got), 0);
  assert_int_equal(got.status, DNS_ANSWER);
  dns_answer_free(&got);
  dns__cache_free(c2);
  dns__cache_free(c);
}

static void test_lru_bound(void **state) {
  (void)state;
  struct dns__cache *c;
  assert_int_equal(dns__cache_new(3, 86400, &c), 0);
  struct dns_answer a, got;
  const char *names[] = {"a.example", "b.example", "c.example", "d.example"};
  for (size_t i = 0; i < 3; i++) {
    make(&a, DNS_ANSWER, 300, 1, false);
    dns__cache_put(c, names[i], DNS_T_MX, &a, 0);
    dns_answer_free(&a);
  }
  /* Using a.example makes b.example the least recently used. */
  assert_int_equal(dns__cache_get(c, "a.example", DNS_T_MX, 0, &got), 0);
  dns_answer_free(&got);
  make(&a, DNS_ANSWER, 300, 1, false);
  dns__cache_put(c, names[3], DNS_T_MX, &a, 0);
  dns_answer_free(&a);
  assert_int_equal(dns__cache_get(c, "b.example", DNS_T_MX, 0, &got),
                   POSTERN_ENOENT);
  for (size_t i = 0; i < 4; i++) {
    if (i == 1)
      continue;
    assert_int_equal(dns__cache_get(c, names[i], DNS_T_MX, 0, &got), 0);
    dns_answer_free(&got);
  }
  struct dns_cache_stats st;
  dns__cache_stats(c, &st);
  assert_int_equal(st.entries, 3);
  assert_int_equal(st.evicted, 1);
  dns__cache_free(c);
  /* Size 0: no cache at all, and every call is harmless. */
  assert_int_equal(dns__cache_new(0, 86400, &c), 0);
  assert_null(c);
  make(&a, DNS_ANSWER, 300, 1, false);
  dns__cache_put(c, "a.example", DNS_T_MX, &a, 0);
  dns_answer_free(&a);
  assert_int_equal(dns__cache_get(c, "a.example", DNS_T_MX, 0, &got),
                   POSTERN_ENOENT);
  dns__cache_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kept_for_ttl),
      cmocka_unit_test(test_what_is_kept),
      cmocka_unit_test(test_lru_bound),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
