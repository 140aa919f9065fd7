/*
 * net/redis_url_test.c - table-driven tests of redis_url_parse: the forms
 * the config may give, and hostile inputs (overlong parts, bad numbers,
 * control characters, bad escapes, trailing garbage).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "net/redis.h"

#include <stdio.h>
#include <string.h>

struct ucase {
  const char *in;
  int rc;
  enum redis_transport transport;
  const char *host; /* or path */
  unsigned port;
  const char *user;
  const char *password;
  unsigned db;
  bool tls;
};

static const struct ucase ucases[] = {
    {"redis://127.0.0.1", 0, REDIS_TCP, "127.0.0.1", 6379, "", "", 0, false},
    {"redis://127.0.0.1:6380", 0, REDIS_TCP, "127.0.0.1", 6380, "", "", 0,
     false},
    {"redis://127.0.0.1:6380/", 0, REDIS_TCP, "127.0.0.1", 6380, "", "", 0,
     false},
    {"redis://127.0.0.1:6380/3", 0, REDIS_TCP, "127.0.0.1", 6380, "", "", 3,
     false},
    {"redis://:s3cret@10.0.0.1:1/15", 0, REDIS_TCP, "10.0.0.1", 1, "", "s3cret",
     15, false},
    {"redis://bob:pw@redis.example.org", 0, REDIS_TCP, "redis.example.org",
     6379, "bob", "pw", 0, false},
    {"redis://:p%40ss%2Fw%3a@h", 0, REDIS_TCP, "h", 6379, "", "p@ss/w:", 0,
     false},
    {"redis://:a@b@h:7", 0, REDIS_TCP, "h", 7, "", "a@b", 0, false},
    {"redis://[::1]:6379/2", 0, REDIS_TCP, "::1", 6379, "", "", 2, false},
    {"redis://[::1]", 0, REDIS_TCP, "::1", 6379, "", "", 0, false},
    {"redis://h:65535/65535", 0, REDIS_TCP, "h", 65535, "", "", 65535, false},
    {"unix:///run/redis/redis.sock", 0, REDIS_UNIX, "/run/redis/redis.sock", 0,
     "", "", 0, false},
    {"unix:///tmp/r.sock?db=4", 0, REDIS_UNIX, "/tmp/r.sock", 0, "", "", 4,
     false},
    /* hostile or malformed */
    {NULL, POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"rediss://127.0.0.1", 0, REDIS_TCP, "127.0.0.1", 6379, "", "", 0, true},
    {"rediss://u:p@r.example:6380/2", 0, REDIS_TCP, "r.example", 6380, "u", "p",
     2, true},
    {"redisss://127.0.0.1", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"rediss:///tmp/x", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"http://127.0.0.1", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"REDIS://127.0.0.1", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h:0", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h:65536", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h:", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h:-1", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h:+80", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h:99999999999999999999", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL,
     0, false},
    {"redis://h/65536", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h/x", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h/1/2", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h/-1", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h?x", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h x", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://h\r\nAUTH x", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://:pw%0d%0aFLUSHALL@h", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0,
     false},
    {"redis://:pw\n@h", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://:%zz@h", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://:%4@h", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://:pw%@h", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://:@h", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://user@h", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://:pw@", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://[::1", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://[]:1", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://[::1]x", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"redis://[::1/]", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"unix://", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"unix://relative.sock", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0, false},
    {"unix:///tmp/r.sock?db=", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0,
     false},
    {"unix:///tmp/r.sock?db=70000", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0,
     false},
    {"unix:///tmp/r.sock?pw=1", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0,
     false},
    {"unix:///tmp/r\x01.sock", POSTERN_EINVAL, 0, NULL, 0, NULL, NULL, 0,
     false},
};

static void test_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof ucases / sizeof ucases[0]; i++) {
    const struct ucase *t = &ucases[i];
    struct redis_url u;
    memset(&u, 0x5a, sizeof u);
    int rc = redis_url_parse(t->in, &u);
    if (rc != t->rc)
      fail_msg("case %zu (%s): rc %d, want %d", i, t->in ? t->in : "NULL", rc,
               t->rc);
    if (rc != 0) {
      /* Nothing half-parsed (a password) is left behind. */
      assert_string_equal(u.password, "");
      assert_string_equal(u.host, "");
      continue;
    }
    assert_int_equal(u.transport, t->transport);
    if (t->transport == REDIS_TCP) {
      assert_string_equal(u.host, t->host);
      assert_int_equal(u.port, t->port);
    } else {
      assert_string_equal(u.path, t->host);
    }
    assert_string_equal(u.user, t->user);
    assert_string_equal(u.password, t->password);
    assert_int_equal(u.db, t->db);
    assert_int_equal(u.tls, t->tls);
  }
}

/* Parts at and beyond their bounds. */
static void test_bounds(void **state) {
  (void)state;
  static char buf[4096];
  struct redis_url u;
  char part[600];

  memset(part, 'a', sizeof part);
  part[REDIS_HOST_MAX] = '\0';
  snprintf(buf, sizeof buf, "redis://%s:1", part);
  assert_int_equal(redis_url_parse(buf, &u), 0);
  assert_int_equal(strlen(u.host), REDIS_HOST_MAX);
  part[REDIS_HOST_MAX] = 'a';
  part[REDIS_HOST_MAX + 1] = '\0';
  snprintf(buf, sizeof buf, "redis://%s:1", part);
  assert_int_equal(redis_url_parse(buf, &u), POSTERN_EINVAL);

  memset(part, 'p', sizeof part);
  part[REDIS_SECRET_MAX] = '\0';
  snprintf(buf, sizeof buf, "redis://:%s@h", part);
  assert_int_equal(redis_url_parse(buf, &u), 0);
  part[REDIS_SECRET_MAX] = 'p';
  part[REDIS_SECRET_MAX + 1] = '\0';
  snprintf(buf, sizeof buf, "redis://:%s@h", part);
  assert_int_equal(redis_url_parse(buf, &u), POSTERN_EINVAL);

  memset(part, 'x', sizeof part);
  part[0] = '/';
  part[REDIS_PATH_MAX] = '\0';
  snprintf(buf, sizeof buf, "unix://%s", part);
  assert_int_equal(redis_url_parse(buf, &u), 0);
  part[REDIS_PATH_MAX] = 'x';
  part[REDIS_PATH_MAX + 1] = '\0';
  snprintf(buf, sizeof buf, "unix://%s", part);
  assert_int_equal(redis_url_parse(buf, &u), POSTERN_EINVAL);

  memset(buf, 'a', sizeof buf);
  memcpy(buf, "redis://", 8);
  buf[sizeof buf - 1] = '\0';
  assert_int_equal(redis_url_parse(buf, &u), POSTERN_EINVAL);
  assert_int_equal(redis_url_parse("redis://h", NULL), POSTERN_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_bounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
