/*
 * tlsrpt_share_test.c - summing the TLS report counts nodes share
 * (tlsrpt_store.h "Fleet mode", tlsrpt_share.c): a table of node texts and
 * the sums they must give (equal records add up, different ones stay
 * apart, a malformed text is left out whole), the bounds, and the export
 * of a real queue's records (exactly the day and domain asked for, records
 * the reader would refuse left out) read back by the sum.
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
#include "engine/tlsrpt_store.h"
#include "queue/queue.h"

#define MAGIC "postern-tlsrpt 1\n"
#define PID "0123456789abcdef"
#define PID2 "fedcba9876543210"
#define FID "00112233445566ff"
#define FID2 "aabbccddeeff0011"
#define PNOTE                                                                  \
  "{\"mx-host\":[\"mx.a.test\"],\"policy-string\":[\"version: STSv1\","        \
  "\"mode: enforce\"],\"policy-type\":\"sts\"}"
#define FNOTE(ip)                                                              \
  "{\"receiving-ip\":\"" ip "\",\"receiving-mx-hostname\":\"mx.a.test\","      \
  "\"result-type\":\"starttls-not-supported\",\"sending-mta-ip\":"             \
  "\"127.0.0.1\"}"
#define P(pid) pid "\tP\t1\t" PNOTE "\n"
#define S(pid, n) pid "\tS\t" #n "\t\n"
#define F(pid, fid, n, ip) pid "\tF\t" fid "\t" #n "\t" FNOTE(ip) "\n"

struct want {
  size_t npolicies;
  uint64_t successful, failed; /* of the first policy */
  size_t nfailures;            /* of the first policy */
  size_t bad;
};

static void check_sum(const char *what, const char *const *texts, size_t n,
                      struct want w) {
  struct tlsrpt_share_text t[8];
  for (size_t i = 0; i < n; i++)
    t[i] = (struct tlsrpt_share_text){texts[i], strlen(texts[i])};
  struct tlsrpt_store_domain *d = NULL;
  size_t nd = 0, bad = 0;
  int rc = tlsrpt_store_sum("2026-12-06", "a.test", t, n, &d, &nd, &bad);
  if (rc != 0)
    fail_msg("%s: rc %d", what, rc);
  if (bad != w.bad)
    fail_msg("%s: bad %zu, want %zu", what, bad, w.bad);
  if (w.npolicies == 0) {
    if (nd != 0)
      fail_msg("%s: %zu entries, want none", what, nd);
    return;
  }
  if (nd != 1 || strcmp(d[0].domain, "a.test") != 0 ||
      strcmp(d[0].day, "2026-12-06") != 0)
    fail_msg("%s: %zu entries", what, nd);
  const struct tlsrpt_store_policy *p = &d[0].policies[0];
  if (d[0].npolicies != w.npolicies || p->successful != w.successful ||
      p->failed != w.failed || p->nfailures != w.nfailures)
    fail_msg("%s: %zu policies, %llu ok, %llu failed, %zu failures", what,
             d[0].npolicies, (unsigned long long)p->successful,
             (unsigned long long)p->failed, p->nfailures);
  tlsrpt_store_free(d, nd);
}

static void test_sums(void **state) {
  (void)state;
  static const char n1[] = MAGIC F(PID, FID, 2, "127.0.0.9") P(PID) S(PID, 3);
  static const char n2[] = MAGIC P(PID) S(PID, 4);
  static const char n3[] = MAGIC F(PID, FID, 1, "127.0.0.9")
      F(PID, FID2, 5, "127.0.0.8") P(PID) S(PID, 10);
  static const char other_policy[] = MAGIC P(PID2) S(PID2, 7);
  static const char empty[] = MAGIC;
  static const struct {
    const char *what;
    const char *texts[4];
    size_t n;
    struct want w;
  } t[] = {
      {"one node", {n1}, 1, {1, 3, 2, 1, 0}},
      {"two nodes, same policy", {n1, n2}, 2, {1, 7, 2, 1, 0}},
      {"three nodes: equal failures add up, others stay apart",
       {n1, n2, n3},
       3,
       {1, 17, 8, 2, 0}},
      {"order does not matter", {n3, n2, n1}, 3, {1, 17, 8, 2, 0}},
      {"a second policy stays apart", {n2, other_policy}, 2, {2, 4, 0, 0, 0}},
      {"no records", {empty}, 1, {0}},
      {"nothing at all", {NULL}, 0, {0}},
      {"bad magic: left out whole",
       {n2, "postern-tlsrpt 2\n" P(PID) S(PID, 100)},
       2,
       {1, 4, 0, 0, 1}},
      {"a bad line spoils its text only",
       {n2, MAGIC P(PID) S(PID, 100) "junk\n"},
       2,
       {1, 4, 0, 0, 1}},
      {"a pid that is not hex",
       {n2, MAGIC "0123456789abcdeg\tS\t9\t\n"},
       2,
       {1, 4, 0, 0, 1}},
      {"upper-case hex",
       {n2, MAGIC "0123456789ABCDEF\tS\t9\t\n"},
       2,
       {1, 4, 0, 0, 1}},
      {"an unknown kind", {n2, MAGIC PID "\tX\t9\t\n"}, 2, {1, 4, 0, 0, 1}},
      {"F without its failure id",
       {n2, MAGIC PID "\tF\t9\t{}\n"},
       2,
       {1, 4, 0, 0, 1}},
      {"a count that is not a number",
       {n2, MAGIC PID "\tS\t-9\t\n"},
       2,
       {1, 4, 0, 0, 1}},
      {"an overlong count",
       {n2, MAGIC PID "\tS\t99999999999999999\t\n"},
       2,
       {1, 4, 0, 0, 1}},
      {"a control byte in a note",
       {n2, MAGIC PID "\tS\t9\t\x01\n"},
       2,
       {1, 4, 0, 0, 1}},
      {"a last line without newline",
       {n2, MAGIC PID "\tS\t9\t"},
       2,
       {1, 4, 0, 0, 1}},
      {"no note field", {n2, MAGIC PID "\tS\t9\n"}, 2, {1, 4, 0, 0, 1}},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    check_sum(t[i].what, t[i].texts, t[i].n, t[i].w);
}

static void test_bounds(void **state) {
  (void)state;
  struct tlsrpt_store_domain *d;
  size_t nd, bad;
  struct tlsrpt_share_text t = {MAGIC, strlen(MAGIC)};
  assert_int_equal(
      tlsrpt_store_sum("2026-13-06x", "a.test", &t, 1, &d, &nd, &bad),
      POSTERN_EINVAL);
  assert_int_equal(tlsrpt_store_sum("2026-12-06", "a\tb", &t, 1, &d, &nd, &bad),
                   POSTERN_EINVAL);
  /* A text over the bound is left out. */
  size_t big = TLSRPT_SHARE_MAX + 1;
  char *s = malloc(big);
  assert_non_null(s);
  memcpy(s, MAGIC, strlen(MAGIC));
  memset(s + strlen(MAGIC), '\n', big - strlen(MAGIC));
  t = (struct tlsrpt_share_text){s, big};
  assert_int_equal(
      tlsrpt_store_sum("2026-12-06", "a.test", &t, 1, &d, &nd, &bad), 0);
  assert_int_equal(bad, 1);
  assert_int_equal(nd, 0);
  free(s);
}

static void add(struct queue *q, const char *key, uint64_t n,
                const char *note) {
  struct queue_counter_add a = {key, strlen(key), n, note,
                                note ? strlen(note) : 0};
  assert_int_equal(queue_counters_submit(q, &a, 1, NULL, NULL), 0);
}

static void test_export(void **state) {
  (void)state;
  char dir[512];
  const char *tmp = getenv("TEST_TMPDIR");
  snprintf(dir, sizeof dir, "%s/shareXXXXXX", tmp ? tmp : "/tmp");
  assert_non_null(mkdtemp(dir));
  struct queue_opts o = {.state_dir = dir, .map_size = 16u << 20};
  struct queue *q;
  assert_int_equal(queue_open(&o, &q), 0);
#define T "T2026-12-06\ta.test\t"
  add(q, T PID "\tF\t" FID, 2, FNOTE("127.0.0.9"));
  add(q, T PID "\tP", 1, PNOTE);
  add(q, T PID "\tS", 3, NULL);
  /* Not ours to share: another domain (a prefix of whose name is ours),
   * another day, a tail the reader would refuse. */
  add(q, "T2026-12-06\ta.test.au\t" PID "\tS", 50, NULL);
  add(q, "T2026-12-07\ta.test\t" PID "\tS", 60, NULL);
  add(q, T "XYZ\tS", 70, NULL);
  queue_close(q); /* waits for the writer */
  assert_int_equal(queue_open(&o, &q), 0);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(tlsrpt_store_export(q, "2026-12-06", "a.test", &text, &len),
                   0);
  static const char want[] = MAGIC F(PID, FID, 2, "127.0.0.9") P(PID) S(PID, 3);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(text, want, len);
  free(text);
  assert_int_equal(tlsrpt_store_export(q, "2026-12-06", "b.test", &text, &len),
                   POSTERN_ENOENT);
  assert_int_equal(tlsrpt_store_export(q, "06/12/2026", "a.test", &text, &len),
                   POSTERN_EINVAL);
  queue_close(q);
  /* Read back: the same as the loader gives from the queue itself. */
  const char *texts[] = {want};
  check_sum("export read back", texts, 1, (struct want){1, 3, 2, 1, 0});
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sums),
      cmocka_unit_test(test_bounds),
      cmocka_unit_test(test_export),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
