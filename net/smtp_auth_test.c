/*
 * smtp_auth_test.c - SMTP AUTH's pure parts and libxcrypt glue
 * (net/smtp_auth.h): the PLAIN and LOGIN exchanges (authzid handling, bad
 * base64, cancel, overlong lines), the users file parser (table-driven,
 * line:col errors), hashing and verification, and the limiter with an
 * injected clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/smtp_auth.h"

#include "base/postern_err.h"

#include <openssl/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST(x) SMTP_AUTH_STEP_##x

/* base64 of n raw bytes (NULs included) into a static buffer. */
static const char *b64(const char *raw, size_t n) {
  static char out[4][2048];
  static int k;
  char *o = out[k++ % 4];
  EVP_EncodeBlock((uint8_t *)o, (const uint8_t *)raw, n);
  return o;
}
#define B64(lit) b64(lit, sizeof lit - 1)

static void test_mech_parse(void **state) {
  (void)state;
  assert_int_equal(smtp_auth_mech_parse("PLAIN", 5), SMTP_AUTH_MECH_PLAIN);
  assert_int_equal(smtp_auth_mech_parse("plain", 5), SMTP_AUTH_MECH_PLAIN);
  assert_int_equal(smtp_auth_mech_parse("Login", 5), SMTP_AUTH_MECH_LOGIN);
  assert_int_equal(smtp_auth_mech_parse("CRAM-MD5", 8), SMTP_AUTH_MECH_NONE);
  assert_int_equal(smtp_auth_mech_parse("PLAINX", 6), SMTP_AUTH_MECH_NONE);
  assert_int_equal(smtp_auth_mech_parse("PLAI", 4), SMTP_AUTH_MECH_NONE);
  assert_int_equal(smtp_auth_mech_parse("", 0), SMTP_AUTH_MECH_NONE);
}

static char long_name[300];

/* PLAIN with the initial response: raw message -> result. */
static const struct {
  const char *raw;
  size_t n;
  enum smtp_auth_step want;
  const char *user, *pass;
} plain_cases[] = {
#define R(lit) lit, sizeof lit - 1
    {R("\0alice\0secret"), ST(DONE), "alice", "secret"},
    {R("alice\0alice\0secret"), ST(DONE), "alice", "secret"}, /* authz=authc */
    {R("bob\0alice\0secret"), ST(AUTHZID), "alice", ""},
    {R("\0al ice\0p w"), ST(DONE), "al ice", "p w"},
    {R("\0j\xc3\xb6rg\0s\xc3\xa9"), ST(DONE), "j\xc3\xb6rg", "s\xc3\xa9"},
    {R("alice\0secret"), ST(MALFORMED), "", ""},     /* one NUL */
    {R("\0\0secret"), ST(MALFORMED), "", ""},        /* empty authcid */
    {R("\0alice\0"), ST(MALFORMED), "", ""},         /* empty passwd */
    {R("\0alice\0sec\0ret"), ST(MALFORMED), "", ""}, /* NUL in passwd */
    {R("nonuls"), ST(MALFORMED), "", ""},
#undef R
};

static void test_plain_initial(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof plain_cases / sizeof plain_cases[0]; i++) {
    struct smtp_auth_exchange x;
    const char *ch = "unset";
    const char *ir = b64(plain_cases[i].raw, plain_cases[i].n);
    enum smtp_auth_step r =
        smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_PLAIN, ir, strlen(ir), &ch);
    if (r != plain_cases[i].want)
      fail_msg("case %zu: got %s want %s", i, smtp_auth_step_name(r),
               smtp_auth_step_name(plain_cases[i].want));
    if (r == ST(DONE) || r == ST(AUTHZID))
      assert_string_equal(x.user, plain_cases[i].user);
    if (r == ST(DONE))
      assert_string_equal(x.pass, plain_cases[i].pass);
    else
      assert_string_equal(x.pass, "");
  }
}

static void test_plain_limits(void **state) {
  (void)state;
  struct smtp_auth_exchange x;
  const char *ch;
  /* A 256-byte authcid: over the limit. */
  char raw[600];
  memset(long_name, 'u', sizeof long_name);
  raw[0] = '\0';
  memcpy(raw + 1, long_name, 256);
  raw[257] = '\0';
  memcpy(raw + 258, "pw", 2);
  const char *ir = b64(raw, 260);
  assert_int_equal(
      smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_PLAIN, ir, strlen(ir), &ch),
      ST(MALFORMED));
  /* 255 is fine. */
  memcpy(raw + 1, long_name, 255);
  raw[256] = '\0';
  memcpy(raw + 257, "pw", 2);
  ir = b64(raw, 259);
  assert_int_equal(
      smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_PLAIN, ir, strlen(ir), &ch),
      ST(DONE));
  assert_int_equal(strlen(x.user), 255);
  /* An overlong continuation line. */
  char line[SMTP_AUTH_LINE_MAX];
  memset(line, 'A', sizeof line);
  assert_int_equal(
      smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_PLAIN, NULL, 0, &ch),
      ST(CONTINUE));
  assert_int_equal(smtp_auth_exchange_line(&x, line, sizeof line - 1, &ch),
                   ST(TOO_LONG));
  /* Valid base64 that decodes to more than any message may hold. */
  char big[1100];
  memset(big, 'x', 800);
  const char *bb = b64(big, 800);
  assert_int_equal(smtp_auth_exchange_line(&x, bb, strlen(bb), &ch),
                   ST(MALFORMED));
}

static void test_plain_continuation(void **state) {
  (void)state;
  struct smtp_auth_exchange x;
  const char *ch = NULL;
  assert_int_equal(
      smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_PLAIN, NULL, 0, &ch),
      ST(CONTINUE));
  assert_string_equal(ch, ""); /* RFC 4616: empty challenge */
  const char *l = B64("\0alice\0secret");
  assert_int_equal(smtp_auth_exchange_line(&x, l, strlen(l), &ch), ST(DONE));
  assert_string_equal(x.user, "alice");
  assert_string_equal(x.pass, "secret");
  /* "*" cancels; "=" as initial response is an empty (malformed) message;
   * bad base64 in many forms. */
  smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_PLAIN, NULL, 0, &ch);
  assert_int_equal(smtp_auth_exchange_line(&x, "*", 1, &ch), ST(CANCEL));
  assert_int_equal(
      smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_PLAIN, "=", 1, &ch),
      ST(MALFORMED));
  static const char *const bad[] = {"AGFsaWNlAHNlY3JldA", /* no padding */
                                    "AGFs aWNl",
                                    "!!!!",
                                    "AGFsaWNlAHNlY3Jld===",
                                    "*",
                                    "AGFsaWNlAHNlY3JldA=\r"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    enum smtp_auth_step r = smtp_auth_exchange_begin(
        &x, SMTP_AUTH_MECH_PLAIN, bad[i], strlen(bad[i]), &ch);
    if (r != ST(BAD_B64))
      fail_msg("bad[%zu] %s: %s", i, bad[i], smtp_auth_step_name(r));
  }
}

static void test_login(void **state) {
  (void)state;
  struct smtp_auth_exchange x;
  const char *ch = NULL;
  assert_int_equal(
      smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_LOGIN, NULL, 0, &ch),
      ST(CONTINUE));
  assert_string_equal(ch, "VXNlcm5hbWU6"); /* Username: */
  const char *u = B64("alice"), *p = B64("s3cret pass");
  assert_int_equal(smtp_auth_exchange_line(&x, u, strlen(u), &ch),
                   ST(CONTINUE));
  assert_string_equal(ch, "UGFzc3dvcmQ6"); /* Password: */
  assert_int_equal(smtp_auth_exchange_line(&x, p, strlen(p), &ch), ST(DONE));
  assert_string_equal(x.user, "alice");
  assert_string_equal(x.pass, "s3cret pass");
  /* The user name as initial response. */
  assert_int_equal(
      smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_LOGIN, u, strlen(u), &ch),
      ST(CONTINUE));
  assert_string_equal(ch, "UGFzc3dvcmQ6");
  assert_int_equal(smtp_auth_exchange_line(&x, "*", 1, &ch), ST(CANCEL));
  /* Bad base64, empty answers, NULs. */
  smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_LOGIN, NULL, 0, &ch);
  assert_int_equal(smtp_auth_exchange_line(&x, "@@@@", 4, &ch), ST(BAD_B64));
  smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_LOGIN, NULL, 0, &ch);
  assert_int_equal(smtp_auth_exchange_line(&x, "", 0, &ch), ST(MALFORMED));
  smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_LOGIN, NULL, 0, &ch);
  const char *nul = B64("al\0ice");
  assert_int_equal(smtp_auth_exchange_line(&x, nul, strlen(nul), &ch),
                   ST(MALFORMED));
  /* A 256-byte user name. */
  smtp_auth_exchange_begin(&x, SMTP_AUTH_MECH_LOGIN, NULL, 0, &ch);
  memset(long_name, 'u', sizeof long_name);
  const char *lu = b64(long_name, 256);
  assert_int_equal(smtp_auth_exchange_line(&x, lu, strlen(lu), &ch),
                   ST(MALFORMED));
}

static void test_b64(void **state) {
  (void)state;
  char out[8];
  size_t n = 99;
  assert_int_equal(smtp_auth_b64_decode("=", 1, out, sizeof out, &n), 0);
  assert_int_equal(n, 0);
  assert_int_equal(smtp_auth_b64_decode("YWJj", 4, out, sizeof out, &n), 0);
  assert_int_equal(n, 3);
  assert_memory_equal(out, "abc", 3);
  assert_int_equal(smtp_auth_b64_decode("YWJjZGVmZ2hp", 12, out, 8, &n),
                   POSTERN_ETOOBIG);
  assert_int_equal(smtp_auth_b64_decode("YWJ", 3, out, 8, &n), POSTERN_ESYNTAX);
}

/* ---- users file ---- */

static char yes_hash[400], sha_hash[400], bf_hash[400];

static int hashes_setup(void **state) {
  (void)state;
  if (smtp_auth_hash_password("right horse", NULL, yes_hash, sizeof yes_hash) ||
      smtp_auth_hash_password("battery", "$6$", sha_hash, sizeof sha_hash) ||
      smtp_auth_hash_password("staple", "$2b$", bf_hash, sizeof bf_hash))
    return -1;
  return 0;
}

static void test_hash_verify(void **state) {
  (void)state;
  assert_memory_equal(yes_hash, "$y$", 3);
  assert_memory_equal(sha_hash, "$6$", 3);
  assert_memory_equal(bf_hash, "$2b$", 4);
  assert_true(smtp_auth_verify("right horse", yes_hash));
  assert_false(smtp_auth_verify("right horsE", yes_hash));
  assert_false(smtp_auth_verify("", yes_hash));
  assert_true(smtp_auth_verify("battery", sha_hash));
  assert_false(smtp_auth_verify("batter", sha_hash));
  assert_true(smtp_auth_verify("staple", bf_hash));
  assert_false(smtp_auth_verify("stapler", bf_hash));
  assert_false(smtp_auth_verify("x", "*"));
  assert_false(smtp_auth_verify("x", ""));
  char out[400];
  assert_int_equal(smtp_auth_hash_password("x", "$1$", out, sizeof out),
                   POSTERN_EINVAL);
  assert_null(smtp_auth_hash_refusal(yes_hash, strlen(yes_hash)));
  assert_null(smtp_auth_hash_refusal(sha_hash, strlen(sha_hash)));
  assert_null(smtp_auth_hash_refusal(bf_hash, strlen(bf_hash)));
}

struct ucase {
  const char *text; /* %Y, %S, %B: the three hashes */
  unsigned line, col;
  const char *msg; /* substring of the error; NULL: parses */
  size_t count;
};

static const struct ucase ucases[] = {
    {"alice:%Y\n", 0, 0, NULL, 1},
    {"# users\n\nalice:%Y\nbob:%S\r\n  # indented comment\ncarol:%B", 0, 0,
     NULL, 3},
    {"", 0, 0, NULL, 0},
    {"j\xc3\xb6rg:%Y\n", 0, 0, NULL, 1},
    {"alice:%Y\nalice:%S\n", 2, 1, "twice", 0},
    {"alice\n", 1, 6, "expected 'name:hash'", 0},
    {":%Y\n", 1, 1, "empty user name", 0},
    {"alice:\n", 1, 7, "missing hash", 0},
    {"\nbob:$1$abcdefgh$0123456789012345678901\n", 2, 5, "weak hash", 0},
    {"bob:abJnggxhB/yWI\n", 1, 5, "weak hash", 0}, /* DES */
    {"bob:$5$rounds=5000$abc$012345678901234567890123456789\n", 1, 5,
     "weak hash", 0},
    {"bob:{SHA}abc\n", 1, 5, "unknown", 0},
    {"al ice:%Y\n", 1, 3, "printable", 0},
    {"al\x01ice:%Y\n", 1, 3, "printable", 0},
    {"al\xffice:%Y\n", 1, 3, "printable", 0},
    {" alice:%Y\n", 1, 1, "no blanks", 0},
    {"alice:$y$j9T$short\n", 1, 7, "", 0},
    {"alice:$y$j9T$abc$de f\n", 1, 7, "crypt(3) never writes", 0},
};

/* Expands %Y %S %B in t. */
static void expand(const char *t, char *out, size_t cap) {
  size_t o = 0;
  for (; *t && o + 400 < cap; t++) {
    if (t[0] == '%' && (t[1] == 'Y' || t[1] == 'S' || t[1] == 'B')) {
      const char *h = t[1] == 'Y' ? yes_hash : t[1] == 'S' ? sha_hash : bf_hash;
      o += (size_t)snprintf(out + o, cap - o, "%s", h);
      t++;
    } else {
      out[o++] = *t;
    }
  }
  out[o] = '\0';
}

static void test_users_parse(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof ucases / sizeof ucases[0]; i++) {
    char text[4096];
    expand(ucases[i].text, text, sizeof text);
    struct smtp_auth_users *u = NULL;
    struct smtp_auth_error err;
    int rc = smtp_auth_users_parse(text, strlen(text), &u, &err);
    if (ucases[i].msg == NULL) {
      if (rc != 0)
        fail_msg("case %zu: %u:%u: %s", i, err.line, err.col, err.msg);
      assert_int_equal(smtp_auth_users_count(u), ucases[i].count);
      smtp_auth_users_free(u);
      continue;
    }
    if (rc != POSTERN_ECONFIG)
      fail_msg("case %zu: parsed (rc %d)", i, rc);
    assert_null(u);
    if (err.line != ucases[i].line || err.col != ucases[i].col ||
        strstr(err.msg, ucases[i].msg) == NULL)
      fail_msg("case %zu: %u:%u: %s (want %u:%u: ...%s...)", i, err.line,
               err.col, err.msg, ucases[i].line, ucases[i].col, ucases[i].msg);
  }
}

static void test_users_lookup(void **state) {
  (void)state;
  char text[2048];
  expand("alice:%Y\nbob:%S\n", text, sizeof text);
  struct smtp_auth_users *u;
  struct smtp_auth_error err;
  assert_int_equal(smtp_auth_users_parse(text, strlen(text), &u, &err), 0);
  assert_string_equal(smtp_auth_users_hash(u, "alice"), yes_hash);
  assert_string_equal(smtp_auth_users_hash(u, "bob"), sha_hash);
  assert_null(smtp_auth_users_hash(u, "Alice"));
  assert_null(smtp_auth_users_hash(u, "carol"));
  /* The dummy is a real hash of the table's first method. */
  assert_string_equal(smtp_auth_users_dummy(u), yes_hash);
  assert_false(smtp_auth_verify("", smtp_auth_users_dummy(u)));
  smtp_auth_users_free(u);
  struct smtp_auth_users *e;
  assert_int_equal(smtp_auth_users_parse("", 0, &e, &err), 0);
  assert_memory_equal(smtp_auth_users_dummy(e), "$y$", 3);
  assert_null(smtp_auth_hash_refusal(smtp_auth_users_dummy(e),
                                     strlen(smtp_auth_users_dummy(e))));
  smtp_auth_users_free(e);
  assert_int_equal(smtp_auth_users_load("/nonexistent/users", &e, &err),
                   POSTERN_ENOENT);
  assert_non_null(strstr(err.msg, "cannot read"));
  /* Not a regular file: refused, and a FIFO does not block the load. */
  char fifo[] = "/tmp/postern-auth-fifo-XXXXXX";
  assert_non_null(mkdtemp(fifo));
  char path[64];
  snprintf(path, sizeof path, "%s/users", fifo);
  assert_int_equal(mkfifo(path, 0600), 0);
  assert_int_equal(smtp_auth_users_load(path, &e, &err), POSTERN_EIO);
  assert_non_null(strstr(err.msg, "regular file"));
  assert_int_equal(smtp_auth_users_load(fifo, &e, &err), POSTERN_EIO);
  unlink(path);
  rmdir(fifo);
}

/* ---- the limiter ---- */

static void test_limit_addr(void **state) {
  (void)state;
  struct smtp_auth_limit_opts o;
  smtp_auth_limit_defaults(&o);
  o.addr_free = 2;
  o.addr_refuse = 5;
  o.user_free = 100;
  o.delay_ms = 100;
  o.max_delay_ms = 250;
  o.window_ms = 1000;
  struct smtp_auth_limit *l;
  assert_int_equal(smtp_auth_limit_new(&o, &l), 0);
  uint64_t now = 5000, d;
  static const struct {
    enum smtp_auth_verdict v;
    uint64_t delay;
  } want[] = {
      {SMTP_AUTH_ALLOW, 0},   {SMTP_AUTH_ALLOW, 0},   {SMTP_AUTH_DELAY, 100},
      {SMTP_AUTH_DELAY, 200}, {SMTP_AUTH_DELAY, 250}, {SMTP_AUTH_REFUSE, 0},
      {SMTP_AUTH_REFUSE, 0},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    enum smtp_auth_verdict v =
        smtp_auth_limit_check(l, "192.0.2.1", "alice", now, &d);
    if (v != want[i].v || d != want[i].delay)
      fail_msg("attempt %zu: verdict %d delay %llu", i, v,
               (unsigned long long)d);
    smtp_auth_limit_fail(l, "192.0.2.1", "alice", now);
    now += 10;
  }
  /* Another address is not affected. */
  assert_int_equal(smtp_auth_limit_check(l, "192.0.2.2", "alice", now, &d),
                   SMTP_AUTH_ALLOW);
  /* The window passes: free again. */
  now += 1000;
  assert_int_equal(smtp_auth_limit_check(l, "192.0.2.1", NULL, now, &d),
                   SMTP_AUTH_ALLOW);
  smtp_auth_limit_fail(l, "192.0.2.1", NULL, now);
  assert_int_equal(smtp_auth_limit_check(l, "192.0.2.1", NULL, now, &d),
                   SMTP_AUTH_ALLOW);
  smtp_auth_limit_free(l);
}

static void test_limit_user(void **state) {
  (void)state;
  struct smtp_auth_limit_opts o;
  smtp_auth_limit_defaults(&o);
  o.user_free = 2;
  o.delay_ms = 100;
  o.max_delay_ms = 400;
  struct smtp_auth_limit *l;
  assert_int_equal(smtp_auth_limit_new(&o, &l), 0);
  uint64_t d;
  /* Failures for one name from many addresses: delayed, never refused. */
  for (int i = 0; i < 50; i++) {
    char a[32];
    snprintf(a, sizeof a, "198.51.100.%d", i);
    smtp_auth_limit_fail(l, a, "alice", 1000);
  }
  assert_int_equal(smtp_auth_limit_check(l, "203.0.113.9", "alice", 1000, &d),
                   SMTP_AUTH_DELAY);
  assert_int_equal(d, 400);
  assert_int_equal(smtp_auth_limit_check(l, "203.0.113.9", "bob", 1000, &d),
                   SMTP_AUTH_ALLOW);
  assert_int_equal(d, 0);
  assert_int_equal(smtp_auth_limit_check(l, "203.0.113.9", NULL, 1000, &d),
                   SMTP_AUTH_ALLOW);
  smtp_auth_limit_free(l);
}

static void test_limit_bounded(void **state) {
  (void)state;
  struct smtp_auth_limit_opts o;
  smtp_auth_limit_defaults(&o);
  o.max_entries = 4;
  o.addr_free = 1;
  struct smtp_auth_limit *l;
  assert_int_equal(smtp_auth_limit_new(&o, &l), 0);
  uint64_t d;
  /* The first address's window started first: it goes when a fifth
   * arrives; the newest are kept. */
  for (int i = 0; i < 5; i++) {
    char a[32];
    snprintf(a, sizeof a, "10.0.0.%d", i);
    smtp_auth_limit_fail(l, a, NULL, 100 + (uint64_t)i);
  }
  assert_int_equal(smtp_auth_limit_check(l, "10.0.0.0", NULL, 200, &d),
                   SMTP_AUTH_ALLOW);
  assert_int_equal(smtp_auth_limit_check(l, "10.0.0.4", NULL, 200, &d),
                   SMTP_AUTH_DELAY);
  assert_int_equal(smtp_auth_limit_check(l, "10.0.0.1", NULL, 200, &d),
                   SMTP_AUTH_DELAY);
  smtp_auth_limit_free(l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mech_parse),
      cmocka_unit_test(test_plain_initial),
      cmocka_unit_test(test_plain_limits),
      cmocka_unit_test(test_plain_continuation),
      cmocka_unit_test(test_login),
      cmocka_unit_test(test_b64),
      cmocka_unit_test(test_hash_verify),
      cmocka_unit_test(test_users_parse),
      cmocka_unit_test(test_users_lookup),
      cmocka_unit_test(test_limit_addr),
      cmocka_unit_test(test_limit_user),
      cmocka_unit_test(test_limit_bounded),
  };
  return cmocka_run_group_tests(tests, hashes_setup, NULL);
}
