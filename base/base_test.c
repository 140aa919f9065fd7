/*
 * base_test.c - unit tests for the error table and the logger: names and
 * messages come from one table, and no value can break out of its field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/postern_buf.h"
#include "base/postern_err.h"
#include "base/postern_json.h"
#include "base/postern_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_err_table(void **state) {
  (void)state;
  assert_string_equal(postern_strerror(POSTERN_EQFULL), "queue full");
  assert_string_equal(postern_err_name(POSTERN_EQFULL), "QFULL");
  assert_string_equal(postern_err_name(0), "OK");
  assert_string_equal(postern_strerror(-100000), "unknown error");
  assert_string_equal(postern_strerror(5), "unknown error");
  assert_int_equal(POSTERN_ENOMEM, -1);
  /* every code has a distinct, non-empty name */
  for (int e = -1; e >= -POSTERN__ERR_COUNT; e--) {
    assert_true(strlen(postern_err_name(e)) > 0);
    for (int f = e - 1; f >= -POSTERN__ERR_COUNT; f--)
      assert_string_not_equal(postern_err_name(e), postern_err_name(f));
  }
  assert_int_equal(postern_err_from_errno(28 /* ENOSPC */), POSTERN_ENOSPC);
}

struct esc_case {
  const char *in;
  size_t n;
  const char *out;
};

static void test_escape_table(void **state) {
  (void)state;
  static const struct esc_case cases[] = {
      {"plain", 5, "plain"},
      {"", 0, "\"\""},
      {"two words", 9, "\"two words\""},
      {"a=b", 3, "\"a=b\""},
      {"quote\"x", 7, "\"quote\\\"x\""},
      {"line\r\nlevel=error event=forged", 30,
       "\"line\\r\\nlevel=error event=forged\""},
      {"nul\0byte", 8, "\"nul\\x00byte\""},
      {"\x1b[31m", 5, "\"\\x1b[31m\""},
      /* well-formed UTF-8 stays as it is (quoted); a C1 control, a lone
       * continuation byte and a cut sequence are escaped */
      {"caf\xc3\xa9", 5, "\"caf\xc3\xa9\""},
      {"a\xc2\x85"
       "b",
       4,
       "\"a\\xc2\\x85"
       "b\""},
      {"a\xa9"
       "b",
       3,
       "\"a\\xa9"
       "b\""},
      {"b\xc3\xbc\xe2\x98", 5, "\"b\xc3\xbc\\xe2\\x98\""},
      {"back\\slash", 10, "\"back\\\\slash\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char buf[256];
    postern_log_escape(buf, sizeof buf, cases[i].in, cases[i].n);
    assert_string_equal(buf, cases[i].out);
  }
  /* a tiny buffer never overflows and never cuts an escape in half */
  char small[8];
  postern_log_escape(small, sizeof small, "\n\n\n\n\n", 5);
  assert_true(strlen(small) < sizeof small);
  assert_int_equal(small[strlen(small) - 1], '"');
}

static char *capture(void (*emit)(void)) {
  char path[] = "/tmp/postern_log_testXXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  postern_log_set_fd(fd);
  emit();
  postern_log_set_fd(2);
  static char out[20000];
  ssize_t n = pread(fd, out, sizeof out - 1, 0);
  assert_true(n > 0);
  out[n] = 0;
  close(fd);
  unlink(path);
  return out;
}

static void emit_basic(void) {
  struct postern_log_rec r;
  postern_log_begin(&r, POSTERN_LOG_INFO, "delivery");
  postern_log_str(&r, "rcpt", "a@b.example");
  postern_log_str(&r, "reply", "550 5.1.1 no\r\nlevel=error x");
  postern_log_int(&r, "attempt", -3);
  postern_log_uint(&r, "size", 1024);
  postern_log_end(&r);
  postern_log(POSTERN_LOG_DEBUG, "hidden", "k", "v", NULL);
}

static void test_logfmt_line(void **state) {
  (void)state;
  postern_log_configure(POSTERN_LOG_INFO, POSTERN_LOG_LOGFMT, NULL);
  char *out = capture(emit_basic);
  assert_non_null(strstr(out, " level=info event=delivery rcpt=a@b.example "
                              "reply=\"550 5.1.1 no\\r\\nlevel=error x\" "
                              "attempt=-3 size=1024\n"));
  assert_int_equal(strncmp(out, "ts=", 3), 0);
  /* exactly one line: the debug event was filtered, the CRLF escaped */
  assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
}

static void test_json_line(void **state) {
  (void)state;
  postern_log_configure(POSTERN_LOG_INFO, POSTERN_LOG_JSON, NULL);
  char *out = capture(emit_basic);
  postern_log_configure(POSTERN_LOG_INFO, POSTERN_LOG_LOGFMT, NULL);
  assert_non_null(strstr(out, "\"level\":\"info\",\"event\":\"delivery\","
                              "\"rcpt\":\"a@b.example\",\"reply\":\"550 5.1.1 "
                              "no\\r\\nlevel=error x\",\"attempt\":-3,"
                              "\"size\":1024}\n"));
  assert_int_equal(out[0], '{');
}

static void emit_huge(void) {
  static char big[100000];
  memset(big, '\n', sizeof big);
  struct postern_log_rec r;
  postern_log_begin(&r, POSTERN_LOG_WARN, "huge");
  postern_log_strn(&r, "v", big, sizeof big);
  postern_log_str(&r, "after", "x");
  postern_log_end(&r);
}

/* The JSON rule: valid UTF-8 through, invalid bytes as \xHH, control
 * characters escaped by JSON. Each input is turned into a JSON string and
 * written compactly. */
struct json_case {
  const char *in;
  size_t n;
  const char *out;
};

static void test_json_strings(void **state) {
  (void)state;
  static const struct json_case cases[] = {
      {"plain", 5, "\"plain\""},
      {"", 0, "\"\""},
      {"jos\xc3\xa9@exa\xcc\x88mple.test", 20,
       "\"jos\xc3\xa9@exa\xcc\x88mple.test\""},
      {"\xe2\x82\xac \xf0\x9f\x93\xa7", 8, "\"\xe2\x82\xac \xf0\x9f\x93\xa7\""},
      {"q\"b\\", 4, "\"q\\\"b\\\\\""},
      {"cr\r\nlf", 6, "\"cr\\r\\nlf\""},
      {"nul\0x", 5, "\"nul\\u0000x\""},
      {"\x1b[0m", 4, "\"\\u001B[0m\""},
      /* invalid: a lone continuation byte, a truncated sequence, an
       * overlong form, a surrogate, above U+10FFFF, 0xff */
      {"a\x80"
       "b",
       3, "\"a\\\\x80b\""},
      {"caf\xc3", 4, "\"caf\\\\xc3\""},
      {"\xc0\xaf", 2, "\"\\\\xc0\\\\xaf\""},
      {"\xed\xa0\x80", 3, "\"\\\\xed\\\\xa0\\\\x80\""},
      {"\xf4\x90\x80\x80", 4, "\"\\\\xf4\\\\x90\\\\x80\\\\x80\""},
      {"\xff\xc3\xa9", 3, "\"\\\\xff\xc3\xa9\""},
      /* valid, but controls a terminal may obey: DEL and C1 (CSI) */
      {"a\x7f"
       "b",
       3, "\"a\\\\x7fb\""},
      {"\xc2\x9b"
       "2J",
       4, "\"\\\\xc2\\\\x9b2J\""},
      {"\xc2\xa0", 2, "\"\xc2\xa0\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_t *v = postern_json_str(cases[i].in, cases[i].n);
    assert_non_null(v);
    char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(d);
    if (strcmp(d, cases[i].out) != 0)
      fprintf(stderr, "case %zu: got %s want %s\n", i, d, cases[i].out);
    assert_string_equal(d, cases[i].out);
    /* Whatever went in, what comes out parses back as JSON. */
    json_error_t err;
    json_t *back = json_loads(d, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    assert_non_null(back);
    json_decref(back);
    free(d);
    json_decref(v);
  }
  json_t *big = postern_json_u64(18446744073709551615ull);
  assert_string_equal(json_string_value(big), "18446744073709551615");
  json_decref(big);
  json_t *small = postern_json_u64(42);
  assert_int_equal(json_integer_value(small), 42);
  json_decref(small);
}

static void emit_utf8(void) {
  struct postern_log_rec r;
  postern_log_begin(&r, POSTERN_LOG_INFO, "delivery");
  postern_log_str(&r, "rcpt",
                  "jos\xc3\xa9@b\xc3\xbc"
                  "cher.example");
  postern_log_str(&r, "reply", "bad \xff byte");
  postern_log_end(&r);
}

static void test_json_utf8_line(void **state) {
  (void)state;
  postern_log_configure(POSTERN_LOG_INFO, POSTERN_LOG_JSON, NULL);
  char *out = capture(emit_utf8);
  postern_log_configure(POSTERN_LOG_INFO, POSTERN_LOG_LOGFMT, NULL);
  /* The address is readable as sent; the invalid byte shows as \xff. */
  assert_non_null(strstr(out, "\"rcpt\":\"jos\xc3\xa9@b\xc3\xbc"
                              "cher.example\""));
  assert_non_null(strstr(out, "\"reply\":\"bad \\\\xff byte\""));
  json_error_t err;
  json_t *v = json_loads(out, 0, &err);
  assert_non_null(v);
  assert_string_equal(json_string_value(json_object_get(v, "rcpt")),
                      "jos\xc3\xa9@b\xc3\xbc"
                      "cher.example");
  json_decref(v);
}

static void emit_huge_json(void) {
  static char big[100000];
  /* Multi-byte characters everywhere: a cut must land between them. */
  for (size_t i = 0; i + 2 <= sizeof big; i += 2) {
    big[i] = (char)0xc3;
    big[i + 1] = (char)0xa9;
  }
  struct postern_log_rec r;
  postern_log_begin(&r, POSTERN_LOG_WARN, "huge");
  postern_log_strn(&r, "v", big, sizeof big);
  postern_log_strn(&r, "w", big, 20000);
  postern_log_str(&r, "after", "x");
  postern_log_end(&r);
}

static void test_json_truncation(void **state) {
  (void)state;
  postern_log_configure(POSTERN_LOG_INFO, POSTERN_LOG_JSON, NULL);
  char *out = capture(emit_huge_json);
  postern_log_configure(POSTERN_LOG_INFO, POSTERN_LOG_LOGFMT, NULL);
  size_t n = strlen(out);
  assert_true(n <= POSTERN_LOG_LINE_MAX);
  assert_ptr_equal(strchr(out, '\n'), out + n - 1);
  json_error_t err;
  json_t *v = json_loads(out, 0, &err);
  assert_non_null(v);
  assert_true(json_is_true(json_object_get(v, "truncated")));
  assert_string_equal(json_string_value(json_object_get(v, "after")), "x");
  assert_string_equal(json_string_value(json_object_get(v, "event")), "huge");
  json_decref(v);
}

static void test_truncation(void **state) {
  (void)state;
  char *out = capture(emit_huge);
  size_t n = strlen(out);
  assert_true(n <= POSTERN_LOG_LINE_MAX);
  assert_non_null(strstr(out, " truncated=yes\n"));
  assert_ptr_equal(strchr(out, '\n'), out + n - 1);
}

static void test_levels(void **state) {
  (void)state;
  enum postern_log_level l;
  assert_int_equal(postern_log_level_parse("debug", &l), 0);
  assert_int_equal(l, POSTERN_LOG_DEBUG);
  assert_int_equal(postern_log_level_parse("verbose", &l), POSTERN_EINVAL);
  assert_string_equal(postern_log_level_name(POSTERN_LOG_WARN), "warn");
  postern_log_set_level(POSTERN_LOG_ERROR);
  assert_false(postern_log_enabled(POSTERN_LOG_WARN));
  assert_true(postern_log_enabled(POSTERN_LOG_ERROR));
  postern_log_set_level(POSTERN_LOG_INFO);
}

/* The text buffer grows past its first 256 bytes, keeps NULs it is
 * given, stays NUL-terminated, and printf output of any length fits. */
static void test_buf(void **state) {
  (void)state;
  struct postern_buf b = {0};
  postern_buf_puts(&b, "");
  assert_non_null(b.p);
  assert_int_equal(b.len, 0);
  assert_string_equal(b.p, "");
  char big[1000];
  memset(big, 'x', sizeof big);
  postern_buf_put(&b, big, sizeof big);
  postern_buf_put(&b, "a\0b", 3);
  postern_buf_printf(&b, "%s-%d-%0700d", "n", 42, 7);
  assert_false(b.oom);
  assert_int_equal(b.len, 1000 + 3 + 5 + 700);
  assert_memory_equal(b.p + 1000, "a\0bn-42-0", 9);
  assert_int_equal(b.p[b.len - 1], '7');
  assert_int_equal(b.p[b.len], '\0');
  assert_true(b.cap > b.len);
  postern_buf_free(&b);
  assert_null(b.p);
  assert_int_equal(b.len, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_err_table),
      cmocka_unit_test(test_buf),
      cmocka_unit_test(test_escape_table),
      cmocka_unit_test(test_logfmt_line),
      cmocka_unit_test(test_json_line),
      cmocka_unit_test(test_truncation),
      cmocka_unit_test(test_levels),
      cmocka_unit_test(test_json_strings),
      cmocka_unit_test(test_json_utf8_line),
      cmocka_unit_test(test_json_truncation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
