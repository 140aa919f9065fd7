/*
 * tests/client/smtp_reply_test.c - table-driven tests of smtp_reply_parse():
 * single and multi-line replies, enhanced status codes, malformed codes,
 * mixed codes in continuation lines, bounds, and every NEED_MORE split of
 * the valid inputs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/smtp_reply.h"

struct reply_case {
  const char *name;
  const char *in;
  enum smtp_reply_status want;
  int code;
  const char *enh; /* NULL: none expected */
  const char *text;
  unsigned lines;
  size_t consumed; /* 0: the whole input */
};

static const struct reply_case cases[] = {
    {"single line", "250 ok\r\n", SMTP_REPLY_OK, 250, NULL, "ok", 1, 0},
    {"bare code", "250\r\n", SMTP_REPLY_OK, 250, NULL, "", 1, 0},
    {"bare LF tolerated", "220 mx ESMTP\n", SMTP_REPLY_OK, 220, NULL,
     "mx ESMTP", 1, 0},
    {"enhanced code", "550 5.1.1 <a@b>: user unknown\r\n", SMTP_REPLY_OK, 550,
     "5.1.1", "<a@b>: user unknown", 1, 0},
    {"enhanced code alone", "250 2.0.0\r\n", SMTP_REPLY_OK, 250, "2.0.0", "", 1,
     0},
    {"enhanced three-digit parts", "452 4.123.456 busy\r\n", SMTP_REPLY_OK, 452,
     "4.123.456", "busy", 1, 0},
    {"enhanced class mismatch is text", "550 4.1.1 odd\r\n", SMTP_REPLY_OK, 550,
     NULL, "4.1.1 odd", 1, 0},
    {"enhanced too many digits is text", "550 5.1111.1 x\r\n", SMTP_REPLY_OK,
     550, NULL, "5.1111.1 x", 1, 0},
    {"enhanced glued to text is text", "550 5.1.1x\r\n", SMTP_REPLY_OK, 550,
     NULL, "5.1.1x", 1, 0},
    {"multi-line", "250-mx.example\r\n250-PIPELINING\r\n250 DSN\r\n",
     SMTP_REPLY_OK, 250, NULL, "mx.example PIPELINING DSN", 3, 0},
    {"multi-line enhanced repeated",
     "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n",
     SMTP_REPLY_OK, 550, "5.7.1", "first second third", 3, 0},
    {"multi-line empty continuation", "250-\r\n250 ok\r\n", SMTP_REPLY_OK, 250,
     NULL, "ok", 2, 0},
    {"second reply left alone", "250 a\r\n354 go\r\n", SMTP_REPLY_OK, 250, NULL,
     "a", 1, 7},
    {"421 service closing", "421 4.3.2 shutting down\r\n", SMTP_REPLY_OK, 421,
     "4.3.2", "shutting down", 1, 0},
    {"NUL in text replaced", "250 a\0b\r\n", SMTP_REPLY_OK, 250, NULL, "a?b", 1,
     0},
    {"empty input", "", SMTP_REPLY_NEED_MORE, 0, NULL, NULL, 0, 0},
    {"partial code", "25", SMTP_REPLY_NEED_MORE, 0, NULL, NULL, 0, 0},
    {"partial line", "250 o", SMTP_REPLY_NEED_MORE, 0, NULL, NULL, 0, 0},
    {"continuation pending", "250-a\r\n", SMTP_REPLY_NEED_MORE, 0, NULL, NULL,
     0, 0},
    {"letters for code", "abc hello\r\n", SMTP_REPLY_PROTO_ERROR, 0, NULL, NULL,
     0, 0},
    {"garbage start detected early", "HTTP/1.1", SMTP_REPLY_PROTO_ERROR, 0,
     NULL, NULL, 0, 0},
    {"1yz code", "150 x\r\n", SMTP_REPLY_PROTO_ERROR, 0, NULL, NULL, 0, 0},
    {"6yz code", "650 x\r\n", SMTP_REPLY_PROTO_ERROR, 0, NULL, NULL, 0, 0},
    {"second digit 6", "260 x\r\n", SMTP_REPLY_PROTO_ERROR, 0, NULL, NULL, 0,
     0},
    {"short code", "25\r\n", SMTP_REPLY_PROTO_ERROR, 0, NULL, NULL, 0, 0},
    {"bad separator", "250_ok\r\n", SMTP_REPLY_PROTO_ERROR, 0, NULL, NULL, 0,
     0},
    {"mixed codes", "250-a\r\n251 b\r\n", SMTP_REPLY_PROTO_ERROR, 0, NULL, NULL,
     0, 0},
    {"mixed classes", "250-a\r\n550 b\r\n", SMTP_REPLY_PROTO_ERROR, 0, NULL,
     NULL, 0, 0},
    {"empty line", "\r\n", SMTP_REPLY_PROTO_ERROR, 0, NULL, NULL, 0, 0},
};

static void check_case(const struct reply_case *tc, const char *in,
                       size_t len) {
  struct smtp_reply r;
  size_t used = 12345;
  const char *why = NULL;
  enum smtp_reply_status st = smtp_reply_parse(in, len, &r, &used, &why);
  if (st != tc->want) {
    fail_msg("%s: got %s, want %s (%s)", tc->name, smtp_reply_status_name(st),
             smtp_reply_status_name(tc->want), why ? why : "");
  }
  if (st == SMTP_REPLY_PROTO_ERROR) {
    assert_non_null(why);
  }
  if (st != SMTP_REPLY_OK) {
    return;
  }
  assert_int_equal(r.code, tc->code);
  assert_int_equal(r.has_enh, tc->enh != NULL);
  assert_string_equal(r.enh, tc->enh ? tc->enh : "");
  assert_string_equal(r.text, tc->text);
  assert_int_equal(r.text_len, strlen(tc->text));
  assert_int_equal(r.lines, tc->lines);
  assert_int_equal(used, tc->consumed ? tc->consumed : len);
}

static size_t case_len(const struct reply_case *tc) {
  /* "a\0b" holds a NUL on purpose: measure up to the final "\r\n". */
  if (strcmp(tc->name, "NUL in text replaced") == 0) {
    return 9;
  }
  return strlen(tc->in);
}

static void test_table(void **state) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    check_case(&cases[i], cases[i].in, case_len(&cases[i]));
  }
}

/* Every strict prefix of a complete reply is NEED_MORE; the whole is OK. */
static void test_splits(void **state) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct reply_case *tc = &cases[i];
    if (tc->want != SMTP_REPLY_OK) {
      continue;
    }
    size_t len = tc->consumed ? tc->consumed : case_len(tc);
    for (size_t cut = 0; cut < len; cut++) {
      char *copy = malloc(cut + 1); /* exact size: ASan catches overreads */
      memcpy(copy, tc->in, cut);
      struct smtp_reply r;
      size_t used = 0;
      enum smtp_reply_status st = smtp_reply_parse(copy, cut, &r, &used, NULL);
      if (st != SMTP_REPLY_NEED_MORE) {
        fail_msg("%s: prefix %zu gave %s", tc->name, cut,
                 smtp_reply_status_name(st));
      }
      free(copy);
    }
  }
}

static char *repeat_line(const char *prefix, size_t n, const char *suffix) {
  size_t pl = strlen(prefix), sl = strlen(suffix);
  char *s = malloc(pl + n + sl + 1);
  memcpy(s, prefix, pl);
  memset(s + pl, 'x', n);
  memcpy(s + pl + n, suffix, sl + 1);
  return s;
}

static void test_line_bounds(void **state) {
  struct smtp_reply r;
  size_t used;
  const char *why = NULL;
  /* Longest accepted line: SMTP_REPLY_LINE_MAX bytes including CRLF. */
  char *ok = repeat_line("250 ", SMTP_REPLY_LINE_MAX - 6, "\r\n");
  assert_int_equal(strlen(ok), SMTP_REPLY_LINE_MAX);
  assert_int_equal(smtp_reply_parse(ok, strlen(ok), &r, &used, &why),
                   SMTP_REPLY_OK);
  assert_int_equal(r.text_len, SMTP_REPLY_TEXT_MAX);
  assert_true(r.text_truncated);
  free(ok);
  /* One byte more is a protocol error, complete or not. */
  char *big = repeat_line("250 ", SMTP_REPLY_LINE_MAX - 5, "\r\n");
  assert_int_equal(smtp_reply_parse(big, strlen(big), &r, &used, &why),
                   SMTP_REPLY_PROTO_ERROR);
  assert_int_equal(smtp_reply_parse(big, SMTP_REPLY_LINE_MAX, &r, &used, &why),
                   SMTP_REPLY_PROTO_ERROR);
  /* ... but a shorter unterminated prefix only needs more. */
  assert_int_equal(
      smtp_reply_parse(big, SMTP_REPLY_LINE_MAX - 1, &r, &used, &why),
      SMTP_REPLY_NEED_MORE);
  free(big);
}

static void test_too_many_lines(void **state) {
  size_t n = SMTP_REPLY_LINES_MAX + 1;
  char *buf = malloc(n * 6 + 1);
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    memcpy(buf + off, i + 1 < n ? "250-\r\n" : "250 \r\n", 6);
    off += 6;
  }
  struct smtp_reply r;
  size_t used;
  const char *why = NULL;
  assert_int_equal(smtp_reply_parse(buf, off, &r, &used, &why),
                   SMTP_REPLY_PROTO_ERROR);
  assert_string_equal(why, "too many reply lines");
  /* Exactly the maximum is fine. */
  memcpy(buf + (n - 2) * 6, "250 \r\n", 6);
  assert_int_equal(smtp_reply_parse(buf, off - 6, &r, &used, &why),
                   SMTP_REPLY_OK);
  assert_int_equal(r.lines, SMTP_REPLY_LINES_MAX);
  free(buf);
}

static void test_too_many_bytes(void **state) {
  /* Long continuation lines: the byte bound trips before the line bound. */
  size_t per = SMTP_REPLY_LINE_MAX - 10;
  size_t n = SMTP_REPLY_BYTES_MAX / per + 2;
  char *buf = malloc(n * per + 1);
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    memcpy(buf + off, "250-", 4);
    memset(buf + off + 4, 'y', per - 6);
    memcpy(buf + off + per - 2, "\r\n", 2);
    off += per;
  }
  struct smtp_reply r;
  size_t used;
  const char *why = NULL;
  assert_int_equal(smtp_reply_parse(buf, off, &r, &used, &why),
                   SMTP_REPLY_PROTO_ERROR);
  assert_string_equal(why, "reply too long");
  free(buf);
}

static void test_format(void **state) {
  struct smtp_reply r;
  size_t used;
  const char *in = "550-5.1.1 no\r\n550 5.1.1 such user\r\n";
  assert_int_equal(smtp_reply_parse(in, strlen(in), &r, &used, NULL),
                   SMTP_REPLY_OK);
  char out[64];
  smtp_reply_format(&r, out, sizeof out);
  assert_string_equal(out, "550 5.1.1 no such user");
  char tiny[8];
  assert_int_equal(smtp_reply_format(&r, tiny, sizeof tiny), 7);
  assert_string_equal(tiny, "550 5.1");
  in = "250 fine\r\n";
  assert_int_equal(smtp_reply_parse(in, strlen(in), &r, &used, NULL),
                   SMTP_REPLY_OK);
  smtp_reply_format(&r, out, sizeof out);
  assert_string_equal(out, "250 fine");
}

/* Property check on pseudo-random input over a reply-like alphabet: the
 * parser always gives one of its three answers, never consumes more than it
 * was given, and an OK reply satisfies the invariants of struct smtp_reply.
 * A fixed seed keeps the run reproducible. */
static void test_random_input(void **state) {
  static const char alphabet[] = "2345012 -\r\n\r\n.5xyz\0";
  unsigned seed = 12345;
  char buf[300];
  size_t ok = 0, more = 0, bad = 0;
  for (int round = 0; round < 20000; round++) {
    seed = seed * 1103515245u + 12345u;
    size_t len = (seed >> 8) % sizeof buf;
    for (size_t i = 0; i < len; i++) {
      seed = seed * 1103515245u + 12345u;
      buf[i] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
    }
    struct smtp_reply r;
    size_t used = 0;
    const char *why = NULL;
    switch (smtp_reply_parse(buf, len, &r, &used, &why)) {
    case SMTP_REPLY_OK:
      ok++;
      assert_true(used > 0 && used <= len);
      assert_true(r.code >= 200 && r.code <= 559);
      assert_true(r.lines >= 1);
      assert_int_equal(strlen(r.text), r.text_len);
      break;
    case SMTP_REPLY_NEED_MORE:
      more++;
      break;
    case SMTP_REPLY_PROTO_ERROR:
      bad++;
      assert_non_null(why);
      break;
    default:
      fail_msg("unknown status");
    }
  }
  /* The generator reaches all three answers. */
  assert_true(ok > 0 && more > 0 && bad > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_splits),
      cmocka_unit_test(test_line_bounds),
      cmocka_unit_test(test_too_many_lines),
      cmocka_unit_test(test_too_many_bytes),
      cmocka_unit_test(test_format),
      cmocka_unit_test(test_random_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
