/*
 * mtasts_cache_test.c - the persistent MTA-STS cache (policy/mtasts_cache.h):
 * the record format (round trips, and a table of hostile or foreign
 * records), many domains in a small map, eviction of expired records by a
 * sweep and when the map is full, a full map reported, a record of the old
 * fixed-size format ignored and replaced, and the read-only sizes qtool
 * shows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy/mtasts_cache.h"
#include "base/postern_err.h"

/* ---- helpers ---- */

static char *tmpdir(void) {
  const char *base = getenv("TEST_TMPDIR");
  char *dir = malloc(512);
  assert_non_null(dir);
  snprintf(dir, 512, "%s/mtscache-XXXXXX", base ? base : "/tmp");
  assert_non_null(mkdtemp(dir));
  return dir;
}

static void rmdir_all(char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
  free(dir);
}

static struct policy_mtasts_rec *rec_new(const char *id, uint64_t fetched,
                                         uint64_t expires, size_t nmx) {
  struct policy_mtasts_rec *r = calloc(1, sizeof *r);
  assert_non_null(r);
  snprintf(r->id, sizeof r->id, "%s", id);
  r->fetched = fetched;
  r->expires = expires;
  r->last_used = fetched;
  r->policy.mode = POLICY_MTASTS_MODE_ENFORCE;
  r->policy.max_age = (uint32_t)(expires - fetched);
  r->policy.n_mx = nmx;
  for (size_t i = 0; i < nmx; i++)
    snprintf(r->policy.mx[i], sizeof r->policy.mx[i], "mx%zu.example.net", i);
  return r;
}

static void assert_rec_equal(const struct policy_mtasts_rec *a,
                             const struct policy_mtasts_rec *b) {
  assert_string_equal(a->id, b->id);
  assert_int_equal(a->fetched, b->fetched);
  assert_int_equal(a->expires, b->expires);
  assert_int_equal(a->last_used, b->last_used);
  assert_int_equal(a->tried, b->tried);
  assert_int_equal(a->policy.mode, b->policy.mode);
  assert_int_equal(a->policy.max_age, b->policy.max_age);
  assert_int_equal(a->policy.n_mx, b->policy.n_mx);
  for (size_t i = 0; i < a->policy.n_mx; i++)
    assert_string_equal(a->policy.mx[i], b->policy.mx[i]);
}

/* ---- the record format ---- */

static void test_rec_roundtrip(void **state) {
  (void)state;
  static uint8_t buf[POLICY_MTASTS_REC_MAX];
  struct policy_mtasts_rec *out = calloc(1, sizeof *out);
  size_t sizes[] = {0, 1, 3, POLICY_MTASTS_MX_MAX};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    struct policy_mtasts_rec *r =
        rec_new("20260101T000000Z", 1700000000, 1731557600, sizes[s]);
    r->tried = 42;
    r->policy.mode = (enum policy_mtasts_mode)(s % POLICY_MTASTS_MODE_COUNT);
    if (sizes[s] == POLICY_MTASTS_MX_MAX) /* the longest patterns */
      for (size_t i = 0; i < sizes[s]; i++) {
        memset(r->policy.mx[i], 'a', 255);
        r->policy.mx[i][255] = '\0';
        r->policy.mx[i][0] = (char)('a' + i % 26);
      }
    size_t len = policy_mtasts_rec_encode(r, buf, sizeof buf);
    assert_true(len > 0 && len <= sizeof buf);
    if (sizes[s] == 1) /* compact: a typical policy is well under 100 B */
      assert_true(len < 100);
    assert_int_equal(policy_mtasts_rec_decode(buf, len, out), 0);
    assert_rec_equal(r, out);
    /* Every truncation is malformed, never a shorter valid record. */
    for (size_t cut = 1; cut < len; cut++)
      assert_int_equal(policy_mtasts_rec_decode(buf, cut, out), POSTERN_EPROTO);
    /* Too small a buffer: nothing encoded. */
    assert_int_equal(policy_mtasts_rec_encode(r, buf, len - 1), 0);
    free(r);
  }
  /* Unrepresentable records. */
  struct policy_mtasts_rec *r = rec_new("", 1, 2, 1);
  assert_int_equal(policy_mtasts_rec_encode(r, buf, sizeof buf), 0);
  snprintf(r->id, sizeof r->id, "x");
  r->policy.n_mx = POLICY_MTASTS_MX_MAX + 1;
  assert_int_equal(policy_mtasts_rec_encode(r, buf, sizeof buf), 0);
  free(r);
  free(out);
}

struct decode_case {
  const char *what;
  const char *hex; /* the stored value, hex; header fields little-endian */
  int rc;
};

/* Header: format mode idlen nmx | max_age(4) | fetched expires last_used
 * tried (8 each) = 40 bytes, then the id, then (len, bytes) per pattern. */
#define H(mode, idlen, nmx)                                                    \
  "02" mode idlen nmx "10000000"                                               \
  "0100000000000000"                                                           \
  "1100000000000000"                                                           \
  "0100000000000000"                                                           \
  "0000000000000000"

static const struct decode_case decode_cases[] = {
    {"valid: id ab, one mx a.b",
     H("00", "02", "01") "6162"
                         "03612e62",
     0},
    {"valid: mode none, no mx", H("02", "01", "00") "7a", 0},
    {"empty", "", POSTERN_ENOENT},
    {"format 1 (the old fixed-size record)", "01000000", POSTERN_ENOENT},
    {"format 3 (a newer relay)",
     "03"
     "000101",
     POSTERN_ENOENT},
    {"header cut short", "02000101", POSTERN_EPROTO},
    {"unknown mode", H("03", "01", "00") "7a", POSTERN_EPROTO},
    {"empty id", H("00", "00", "00"), POSTERN_EPROTO},
    {"id of 33", H("00", "21", "00"), POSTERN_EPROTO},
    {"id with a dash", H("00", "02", "00") "612d", POSTERN_EPROTO},
    {"id with a NUL", H("00", "02", "00") "6100", POSTERN_EPROTO},
    {"65 patterns", H("00", "01", "41") "7a", POSTERN_EPROTO},
    {"pattern length past the end",
     H("00", "01", "01") "7a"
                         "05612e62",
     POSTERN_EPROTO},
    {"missing pattern",
     H("00", "01", "02") "7a"
                         "03612e62",
     POSTERN_EPROTO},
    {"empty pattern",
     H("00", "01", "01") "7a"
                         "00",
     POSTERN_EPROTO},
    {"pattern with a NUL",
     H("00", "01", "01") "7a"
                         "03610062",
     POSTERN_EPROTO},
    {"trailing bytes",
     H("00", "01", "01") "7a"
                         "03612e62"
                         "00",
     POSTERN_EPROTO},
};

static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = strlen(hex) / 2;
  assert_true(n <= cap);
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
    out[i] = (uint8_t)v;
  }
  return n;
}

static void test_rec_decode_table(void **state) {
  (void)state;
  struct policy_mtasts_rec *out = calloc(1, sizeof *out);
  for (size_t i = 0; i < sizeof decode_cases / sizeof decode_cases[0]; i++) {
    const struct decode_case *c = &decode_cases[i];
    uint8_t buf[256];
    size_t n = unhex(c->hex, buf, sizeof buf);
    int rc = policy_mtasts_rec_decode(buf, n, out);
    if (rc != c->rc)
      fail_msg("decode case '%s': rc %d, want %d", c->what, rc, c->rc);
  }
  /* The first valid case, field by field. */
  uint8_t buf[256];
  size_t n = unhex(decode_cases[0].hex, buf, sizeof buf);
  assert_int_equal(policy_mtasts_rec_decode(buf, n, out), 0);
  assert_string_equal(out->id, "ab");
  assert_int_equal(out->policy.max_age, 16);
  assert_int_equal(out->fetched, 1);
  assert_int_equal(out->expires, 17);
  assert_int_equal(out->policy.n_mx, 1);
  assert_string_equal(out->policy.mx[0], "a.b");
  free(out);
}

/* ---- the cache ---- */

static void test_many_domains_small_map(void **state) {
  (void)state;
  char *dir = tmpdir();
  struct policy_mtasts_cache *c;
  /* 20,000 domains in 4 MiB: the old 16 KiB records would need 320 MiB. */
  assert_int_equal(policy_mtasts_cache_open(dir, 4u << 20, &c), 0);
  struct policy_mtasts_rec *r = rec_new("1", 1000, 1000 + 86400, 2);
  char dom[64];
  for (int i = 0; i < 20000; i++) {
    snprintf(dom, sizeof dom, "d%05d.example.org", i);
    snprintf(r->id, sizeof r->id, "id%d", i);
    int rc = policy_mtasts_cache_put(c, dom, r, 1000);
    if (rc != 0)
      fail_msg("put %d: %s", i, postern_strerror(rc));
  }
  struct policy_mtasts_cache_stat st;
  assert_int_equal(policy_mtasts_cache_stat(c, &st), 0);
  assert_int_equal(st.entries, 20000);
  assert_int_equal(st.map_size, 4u << 20);
  assert_true(st.used_bytes > 0 && st.used_bytes <= st.map_size);
  assert_int_equal(st.full_events, 0);
  struct policy_mtasts_rec *got = calloc(1, sizeof *got);
  assert_int_equal(policy_mtasts_cache_get(c, "d12345.example.org", got), 0);
  assert_string_equal(got->id, "id12345");
  assert_string_equal(got->policy.mx[1], "mx1.example.net");
  assert_int_equal(policy_mtasts_cache_get(c, "d20000.example.org", got),
                   POSTERN_ENOENT);
  /* The bookkeeping key is never a domain. */
  assert_int_equal(policy_mtasts_cache_get(c, "#tick", got), POSTERN_ENOENT);
  assert_int_equal(policy_mtasts_cache_put(c, "#tick", r, 1000),
                   POSTERN_EINVAL);
  policy_mtasts_cache_release(c);
  free(got);
  free(r);
  rmdir_all(dir);
}

struct seen {
  size_t n;
  bool bad;
};

static void count_each(void *arg, const char *domain,
                       const struct policy_mtasts_rec *rec) {
  struct seen *s = arg;
  s->n++;
  if (rec->expires <= 1050 || strncmp(domain, "e", 1) != 0)
    s->bad = true;
}

static void test_sweep_evicts_expired(void **state) {
  (void)state;
  char *dir = tmpdir();
  struct policy_mtasts_cache *c;
  assert_int_equal(policy_mtasts_cache_open(dir, 0, &c), 0);
  struct policy_mtasts_rec *r = rec_new("a", 900, 0, 1);
  char dom[64];
  for (int i = 0; i < 100; i++) {
    snprintf(dom, sizeof dom, "e%03d.example", i);
    r->expires = 1000 + (uint64_t)i;
    assert_int_equal(policy_mtasts_cache_put(c, dom, r, 900), 0);
  }
  /* Expired: expires <= now, i.e. e000 .. e050. */
  struct seen s = {0, false};
  uint64_t kept = 0, evicted = 0;
  assert_int_equal(
      policy_mtasts_cache_sweep(c, 1050, count_each, &s, &kept, &evicted), 0);
  assert_int_equal(evicted, 51);
  assert_int_equal(kept, 49);
  assert_int_equal(s.n, 49);
  assert_false(s.bad);
  struct policy_mtasts_rec *got = calloc(1, sizeof *got);
  assert_int_equal(policy_mtasts_cache_get(c, "e050.example", got),
                   POSTERN_ENOENT);
  assert_int_equal(policy_mtasts_cache_get(c, "e051.example", got), 0);
  struct policy_mtasts_cache_stat st;
  assert_int_equal(policy_mtasts_cache_stat(c, &st), 0);
  assert_int_equal(st.entries, 49);
  /* touch: bookkeeping times only, on existing records only. */
  assert_int_equal(policy_mtasts_cache_touch(c, "e051.example", 1234, 0), 0);
  assert_int_equal(policy_mtasts_cache_touch(c, "e051.example", 0, 99), 0);
  assert_int_equal(policy_mtasts_cache_get(c, "e051.example", got), 0);
  assert_int_equal(got->last_used, 1234);
  assert_int_equal(got->tried, 99);
  assert_int_equal(got->fetched, 900);
  assert_int_equal(policy_mtasts_cache_touch(c, "e000.example", 1234, 0),
                   POSTERN_ENOENT);
  policy_mtasts_cache_release(c);
  free(got);
  free(r);
  rmdir_all(dir);
}

static void test_full_map(void **state) {
  (void)state;
  char *dir = tmpdir();
  struct policy_mtasts_cache *c;
  assert_int_equal(policy_mtasts_cache_open(dir, 1u << 20, &c), 0);
  /* Fill with policies valid until 2000 until the map refuses one. */
  struct policy_mtasts_rec *r = rec_new("a", 1000, 2000, 8);
  char dom[64];
  int i, rc = 0;
  for (i = 0; i < 200000; i++) {
    snprintf(dom, sizeof dom, "full%06d.example", i);
    if ((rc = policy_mtasts_cache_put(c, dom, r, 1500)) != 0)
      break;
  }
  assert_int_equal(rc, POSTERN_ENOSPC);
  assert_true(i > 1000);
  struct policy_mtasts_cache_stat st;
  assert_int_equal(policy_mtasts_cache_stat(c, &st), 0);
  assert_int_equal(st.full_events, 1);
  assert_int_equal(st.entries, (uint64_t)i);
  /* Nothing has expired at 1500: still full, reported again. */
  assert_int_equal(policy_mtasts_cache_put(c, "late.example", r, 1500),
                   POSTERN_ENOSPC);
  assert_int_equal(policy_mtasts_cache_stat(c, &st), 0);
  assert_int_equal(st.full_events, 2);
  /* At 2500 everything has expired: the full map makes room and the write
   * succeeds. */
  r->expires = 9000;
  assert_int_equal(policy_mtasts_cache_put(c, "late.example", r, 2500), 0);
  assert_int_equal(policy_mtasts_cache_stat(c, &st), 0);
  assert_int_equal(st.entries, 1);
  assert_int_equal(st.full_events, 2);
  /* And the freed space is reusable (pages filled by inserts in the
   * middle of the key order are about half full: a third of the first
   * fill, which appended, is a safe count). */
  for (int k = 0; k < i / 3; k++) {
    snprintf(dom, sizeof dom, "again%06d.example", k);
    assert_int_equal(policy_mtasts_cache_put(c, dom, r, 2500), 0);
  }
  policy_mtasts_cache_release(c);
  free(r);
  rmdir_all(dir);
}

static void test_old_format_replaced(void **state) {
  (void)state;
  char *dir = tmpdir();
  /* A cache written by an older relay: a fixed 16 KiB record whose first
   * field is a 32-bit version 1. */
  char path[600];
  snprintf(path, sizeof path, "%s/mtasts", dir);
  assert_int_equal(mkdir(path, 0700), 0);
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_set_mapsize(env, 64u << 20), 0);
  assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
  size_t oldlen = 16 * 1024 + 64;
  uint8_t *old = calloc(1, oldlen);
  uint32_t one = 1;
  memcpy(old, &one, sizeof one);
  MDB_val k = {strlen("old.example"), "old.example"}, v = {oldlen, old};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  free(old);

  struct policy_mtasts_cache *c;
  assert_int_equal(policy_mtasts_cache_open(dir, 0, &c), 0);
  struct policy_mtasts_rec *got = calloc(1, sizeof *got);
  assert_int_equal(policy_mtasts_cache_get(c, "old.example", got),
                   POSTERN_ENOENT);
  /* Replaced by the next write... */
  struct policy_mtasts_rec *r = rec_new("b", 10, 20, 1);
  assert_int_equal(policy_mtasts_cache_put(c, "old.example", r, 10), 0);
  assert_int_equal(policy_mtasts_cache_get(c, "old.example", got), 0);
  assert_string_equal(got->id, "b");
  /* ...or deleted by a sweep. */
  policy_mtasts_cache_release(c);
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
  MDB_val k2 = {strlen("old2.example"), "old2.example"};
  v = (MDB_val){4, &one};
  assert_int_equal(mdb_put(txn, dbi, &k2, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  assert_int_equal(policy_mtasts_cache_open(dir, 0, &c), 0);
  uint64_t kept = 0, evicted = 0;
  assert_int_equal(
      policy_mtasts_cache_sweep(c, 15, NULL, NULL, &kept, &evicted), 0);
  assert_int_equal(kept, 1);
  assert_int_equal(evicted, 1);
  policy_mtasts_cache_release(c);
  free(r);
  free(got);
  rmdir_all(dir);
}

static void test_stat_dir(void **state) {
  (void)state;
  char *dir = tmpdir();
  struct policy_mtasts_cache_stat st;
  /* No cache yet: reported as absent, and nothing is created. */
  assert_int_equal(policy_mtasts_cache_stat_dir(dir, &st), POSTERN_ENOENT);
  char path[600];
  snprintf(path, sizeof path, "%s/mtasts", dir);
  assert_int_not_equal(access(path, F_OK), 0);
  assert_int_equal(mkdir(path, 0700), 0);
  assert_int_equal(policy_mtasts_cache_stat_dir(dir, &st), POSTERN_ENOENT);

  struct policy_mtasts_cache *c;
  assert_int_equal(policy_mtasts_cache_open(dir, 8u << 20, &c), 0);
  struct policy_mtasts_rec *r = rec_new("a", 1, 100, 1);
  assert_int_equal(policy_mtasts_cache_put(c, "a.example", r, 1), 0);
  assert_int_equal(policy_mtasts_cache_put(c, "b.example", r, 1), 0);
  r->expires = 2;
  assert_int_equal(policy_mtasts_cache_put(c, "c.example", r, 1), 0);
  /* A sweep at 5 evicts c.example. */
  assert_int_equal(policy_mtasts_cache_sweep(c, 5, NULL, NULL, NULL, NULL), 0);
  policy_mtasts_cache_release(c);
  /* LMDB allows one open per process: the relay is another process in
   * real use; here the handle is closed first. */
  assert_int_equal(policy_mtasts_cache_stat_dir(dir, &st), 0);
  assert_int_equal(st.entries, 2);
  assert_int_equal(st.map_size, 8u << 20);
  assert_true(st.used_bytes > 0 && st.used_bytes < st.map_size);
  free(r);
  rmdir_all(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rec_roundtrip),
      cmocka_unit_test(test_rec_decode_table),
      cmocka_unit_test(test_many_domains_small_map),
      cmocka_unit_test(test_sweep_evicts_expired),
      cmocka_unit_test(test_full_map),
      cmocka_unit_test(test_old_format_replaced),
      cmocka_unit_test(test_stat_dir),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
