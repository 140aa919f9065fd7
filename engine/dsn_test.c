/*
 * dsn_test.c - the DSN builder: required fields, RET handling, hostile
 * diagnostics that try to add headers, and boundary collisions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/postern_utf8.h"
#include "engine/dsn.h"
#include "base/postern_err.h"

#include <stdlib.h>
#include <string.h>

static const char orig[] = "From: a@example.org\r\nTo: b@example.net\r\n"
                           "Subject: hello\r\n\r\nbody line\r\nsecret\r\n";

static struct dsn_input base_input(struct dsn_rcpt *r, size_t n) {
  struct dsn_input in = {
      .kind = DSN_FAILURE,
      .reporting_mta = "relay.example.org",
      .sender = "a@example.org",
      .queue_id = "01JQID",
      .ret = DSN_RET_DEFAULT,
      .arrival = 1700000000,
      .now = 1700000600,
      .boundary_seed = "01JQIDDSN",
      .original = (const uint8_t *)orig,
      .original_len = sizeof orig - 1,
      .full_limit = 1 << 20,
      .rcpts = r,
      .nrcpts = n,
  };
  return in;
}

static void test_failure_report(void **state) {
  (void)state;
  struct dsn_rcpt r[2] = {
      {.addr = "b@example.net",
       .orcpt = "rfc822;B@example.net",
       .status = "5.1.1",
       .remote_mta = "mx.example.net",
       .diagnostic = "550 5.1.1 no such user",
       .last_attempt = 1700000500},
      {.addr = "c@example.net", .status = "5.4.4"},
  };
  struct dsn_input in = base_input(r, 2);
  char *out;
  size_t len;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_int_equal(strlen(out), len);
  assert_non_null(strstr(out, "To: <a@example.org>\r\n"));
  assert_non_null(strstr(out, "report-type=delivery-status"));
  assert_non_null(strstr(out, "Final-Recipient: rfc822; b@example.net\r\n"
                              "Original-Recipient: rfc822;B@example.net\r\n"
                              "Action: failed\r\nStatus: 5.1.1\r\n"
                              "Remote-MTA: dns; mx.example.net\r\n"
                              "Diagnostic-Code: smtp; 550 5.1.1 no such user"));
  assert_non_null(strstr(out, "Final-Recipient: rfc822; c@example.net\r\n"
                              "Action: failed\r\nStatus: 5.4.4\r\n"));
  assert_non_null(strstr(out, "Content-Type: text/rfc822-headers"));
  assert_non_null(strstr(out, "Subject: hello\r\n"));
  /* headers only by default: the body stays private */
  assert_null(strstr(out, "secret"));
  free(out);
}

/* RFC 6533: a report on internationalized mail is a global one. */
static void test_global_report(void **state) {
  (void)state;
  struct dsn_rcpt r[2] = {
      {.addr = "\xc3\xbcnsal@ex\xc3\xa4mple.com", /* ünsal@exämple.com */
       .status = "5.1.1",
       .remote_mta = "mx.xn--exmple-cua.com",
       /* invalid UTF-8 (a lone continuation byte): '?'; a C1 control: ' ' */
       .diagnostic = "550 5.1.1 \xc3\xbcnsal \x80 unknown \xc2\x85 x"},
      {.addr = "plain@example.net", .status = "5.4.4"},
  };
  struct dsn_input in = base_input(r, 2);
  in.sender = "j\xc3\xb6ran@example.org";
  char *out;
  size_t len;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_non_null(strstr(out, "To: <j\xc3\xb6ran@example.org>\r\n"));
  assert_non_null(strstr(out, "report-type=global-delivery-status"));
  assert_non_null(strstr(out, "Content-Type: text/plain; charset=utf-8"));
  assert_non_null(strstr(out, "Content-Type: message/global-delivery-status"));
  assert_non_null(strstr(
      out, "Final-Recipient: utf-8; \xc3\xbcnsal@ex\xc3\xa4mple.com\r\n"));
  /* An ASCII address keeps its type in a global report. */
  assert_non_null(
      strstr(out, "Final-Recipient: rfc822; plain@example.net\r\n"));
  assert_non_null(strstr(
      out, "Diagnostic-Code: smtp; 550 5.1.1 \xc3\xbcnsal ? unknown   x\r\n"));
  assert_non_null(strstr(out, "Content-Type: message/global-headers"));
  assert_null(strstr(out, "text/rfc822-headers"));
  assert_non_null(strstr(out, "Content-Transfer-Encoding: 8bit"));
  free(out);

  /* Full content: message/global. */
  in.ret = DSN_RET_FULL;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_non_null(strstr(out, "Content-Type: message/global\r\n"));
  free(out);

  /* ASCII addresses, a UTF-8 header in the original (RFC 6532): global. */
  static const char u8orig[] =
      "From: a@example.org\r\nSubject: gr\xc3\xbc\xc3\x9f"
      "e\r\n\r\nbody\r\n";
  struct dsn_rcpt a = {.addr = "b@example.net", .status = "5.1.1"};
  in = base_input(&a, 1);
  in.original = (const uint8_t *)u8orig;
  in.original_len = sizeof u8orig - 1;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_non_null(strstr(out, "report-type=global-delivery-status"));
  assert_non_null(strstr(out, "Final-Recipient: rfc822; b@example.net\r\n"));
  assert_non_null(strstr(out, "Subject: gr\xc3\xbc\xc3\x9f"
                              "e\r\n"));
  free(out);

  /* Without UTF-8 anywhere: the classic report, 8-bit bytes as '?'. */
  struct dsn_rcpt c = {
      .addr = "b@example.net", .status = "5.1.1", .diagnostic = "550 \xc3\xbc"};
  in = base_input(&c, 1);
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_non_null(strstr(out, "report-type=delivery-status"));
  assert_non_null(strstr(out, "Diagnostic-Code: smtp; 550 ??\r\n"));
  free(out);
}

/* A long UTF-8 value is folded between characters, never inside one. */
static void test_global_fold(void **state) {
  (void)state;
  char diag[1200];
  size_t n = 0;
  memcpy(diag, "550 ", 4);
  n = 4;
  while (n + 2 < 1100) {
    diag[n++] = '\xc3';
    diag[n++] = '\xa4';
  }
  diag[n] = '\0';
  struct dsn_rcpt r = {.addr = "\xc3\xbc@example.net",
                       .status = "5.1.1",
                       .remote_mta = "mx.example.net",
                       .diagnostic = diag};
  struct dsn_input in = base_input(&r, 1);
  char *out;
  size_t len;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  /* Every line under 998 bytes, and every line is well-formed UTF-8 on its
   * own: no fold split a character. */
  const char *line = out;
  while (*line) {
    const char *e = strstr(line, "\r\n");
    size_t l = e ? (size_t)(e - line) : strlen(line);
    assert_true(l < 998);
    for (size_t i = 0; i < l;) {
      unsigned char ch = (unsigned char)line[i];
      if (ch < 0x80) {
        i++;
        continue;
      }
      size_t k = postern_utf8_len((const unsigned char *)line + i, l - i);
      assert_true(k > 0);
      i += k;
    }
    line = e ? e + 2 : line + l;
  }
  free(out);
}

static void test_ret_full_and_limit(void **state) {
  (void)state;
  struct dsn_rcpt r = {.addr = "b@example.net", .status = "5.0.0"};
  struct dsn_input in = base_input(&r, 1);
  in.ret = DSN_RET_FULL;
  char *out;
  size_t len;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_non_null(strstr(out, "Content-Type: message/rfc822"));
  assert_non_null(strstr(out, "secret"));
  free(out);
  in.full_limit = 10; /* too large to return in full: headers only */
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_null(strstr(out, "secret"));
  assert_non_null(strstr(out, "text/rfc822-headers"));
  free(out);
}

static void test_hostile_text(void **state) {
  (void)state;
  struct dsn_rcpt r = {
      .addr = "b@example.net\r\nBcc: victim@example.com",
      .status = "5.0.0",
      .remote_mta = "mx\r\n",
      .diagnostic = "550 bad\r\n\r\n--injected\r\nContent-Type: text/html",
  };
  struct dsn_input in = base_input(&r, 1);
  in.envid = "id\nX-Evil: 1";
  char *out;
  size_t len;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_null(strstr(out, "\r\nBcc:"));
  assert_null(strstr(out, "\r\nX-Evil"));
  assert_null(strstr(out, "\r\n--injected"));
  assert_null(strstr(out, "\r\nContent-Type: text/html"));
  /* every LF is part of a CRLF, and no line exceeds 998 bytes */
  size_t line = 0;
  for (size_t i = 0; i < len; i++) {
    if (out[i] == '\n') {
      assert_true(i > 0 && out[i - 1] == '\r');
      line = 0;
    } else {
      assert_true(++line <= 998);
    }
  }
  free(out);
}

static void test_long_diagnostic(void **state) {
  (void)state;
  char diag[5000];
  memset(diag, 'x', sizeof diag - 1);
  diag[sizeof diag - 1] = 0;
  struct dsn_rcpt r = {.addr = "b@x", .status = "5.0.0", .diagnostic = diag};
  struct dsn_input in = base_input(&r, 1);
  char *out;
  size_t len;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  for (char *l = out; (l = strchr(l, '\n')) != NULL; l++) {
    char *n = strchr(l + 1, '\n');
    assert_true(n == NULL || n - l <= 1000);
  }
  free(out);
}

static void test_boundary_collision(void **state) {
  (void)state;
  /* an original that contains the first boundary we would pick */
  static const char evil[] = "Subject: x\r\n\r\n--01JQIDDSN.0/relay.example.org"
                             "\r\nContent-Type: text/plain\r\n";
  struct dsn_rcpt r = {.addr = "b@x", .status = "5.0.0"};
  struct dsn_input in = base_input(&r, 1);
  in.original = (const uint8_t *)evil;
  in.original_len = sizeof evil - 1;
  in.ret = DSN_RET_FULL;
  char *out;
  size_t len;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_non_null(strstr(out, "boundary=\"01JQIDDSN.1/relay.example.org\""));
  free(out);
}

static void test_delay_and_errors(void **state) {
  (void)state;
  struct dsn_rcpt r = {.addr = "b@x", .status = "4.4.1"};
  struct dsn_input in = base_input(&r, 1);
  in.kind = DSN_DELAY;
  char *out;
  size_t len;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_non_null(strstr(out, "Action: delayed\r\nStatus: 4.4.1"));
  assert_non_null(strstr(out, "Subject: Delayed Mail"));
  free(out);
  in.sender = "";
  assert_int_equal(dsn_build(&in, &out, &len), POSTERN_EINVAL);
  in.sender = "a@b";
  in.nrcpts = 0;
  assert_int_equal(dsn_build(&in, &out, &len), POSTERN_EINVAL);
  enum dsn_ret ret;
  assert_int_equal(dsn_ret_parse("full", &ret), 0);
  assert_int_equal(ret, DSN_RET_FULL);
  assert_int_equal(dsn_ret_parse("HDRS", &ret), 0);
  assert_int_equal(ret, DSN_RET_HDRS);
  assert_int_equal(dsn_ret_parse("body", &ret), POSTERN_EINVAL);
}

/* Found by tests/fuzz/fuzz_dsn.c: an empty line written "\n" after a CRLF
 * line, or a message starting with an empty line, ends the header section
 * too; before, the whole body was returned as "headers". */
static void test_headers_end_at_any_empty_line(void **state) {
  (void)state;
  static const char *const msgs[] = {
      "Subject: a\r\n\nsecret\r\n",
      "Subject: a\n\r\nsecret\n",
      "\nsecret\r\n",
      "\r\nsecret\r\n",
  };
  for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
    struct dsn_rcpt r = {.addr = "b@example.net", .status = "5.0.0"};
    struct dsn_input in = base_input(&r, 1);
    in.original = (const uint8_t *)msgs[i];
    in.original_len = strlen(msgs[i]);
    char *out;
    size_t len;
    assert_int_equal(dsn_build(&in, &out, &len), 0);
    assert_non_null(strstr(out, "text/rfc822-headers"));
    assert_null(strstr(out, "secret"));
    free(out);
  }
}

/* Found by tests/fuzz/fuzz_dsn.c: the human-readable line holds the address,
 * the remote MTA and the diagnostic, each cut at 900 bytes, and reached
 * 2,700 bytes; long values are now folded. */
static void test_long_values_on_one_line(void **state) {
  (void)state;
  char addr[1000], mta[1000], diag[1000];
  memset(addr, 'a', sizeof addr - 1);
  memset(mta, 'm', sizeof mta - 1);
  memset(diag, 'd', sizeof diag - 1);
  addr[sizeof addr - 1] = mta[sizeof mta - 1] = diag[sizeof diag - 1] = 0;
  struct dsn_rcpt r = {
      .addr = addr, .status = "5.0.0", .remote_mta = mta, .diagnostic = diag};
  struct dsn_input in = base_input(&r, 1);
  char *out;
  size_t len;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  size_t line = 0;
  for (size_t i = 0; i < len; i++) {
    if (out[i] == '\n') {
      assert_true(i > 0 && out[i - 1] == '\r');
      line = 0;
    } else if (out[i] != '\r') {
      assert_true(++line <= 998);
    }
  }
  /* The machine-readable fields are not folded: one line each. */
  const char *dc = strstr(out, "\r\nDiagnostic-Code: smtp; ddd");
  assert_non_null(dc);
  assert_int_equal(strchr(dc + 2, '\r') - (dc + 2), 23 + 900);
  free(out);
}

static void test_eight_bit_original(void **state) {
  (void)state;
  static const char o8[] = "Subject: caf\xc3\xa9\r\n\r\nbody\r\n";
  struct dsn_rcpt r = {.addr = "b@x", .status = "5.0.0"};
  struct dsn_input in = base_input(&r, 1);
  in.original = (const uint8_t *)o8;
  in.original_len = sizeof o8 - 1;
  char *out;
  size_t len;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_non_null(strstr(out, "Content-Transfer-Encoding: 8bit\r\n\r\n"
                              "This is a MIME-encapsulated message."));
  free(out);
  in.original = (const uint8_t *)orig;
  in.original_len = sizeof orig - 1;
  assert_int_equal(dsn_build(&in, &out, &len), 0);
  assert_non_null(strstr(out, "Content-Transfer-Encoding: 7bit\r\n\r\n"
                              "This is a MIME-encapsulated message."));
  free(out);
}

/* RFC 8689 §5: the report on a REQUIRETLS message returns none of it (not
 * even its header), since the report may travel without TLS; the same
 * message without the flag gets its header back. */
static void test_requiretls_returns_nothing(void **state) {
  (void)state;
  struct queue_rcpt rc = {.addr = "a@dst.test", .orcpt = "", .notify = 0};
  struct queue_env env = {.sender = "s@snd.test",
                          .envid = "",
                          .ret = QUEUE_RET_FULL,
                          .arrival_ms = 1700000000000ull,
                          .n_rcpts = 1,
                          .rcpts = &rc};
  memcpy(env.id, "01HZX3K4Q9ABCDEFGHJKMNPQRS", sizeof env.id - 1);
  const char *body = "Subject: secret plans\r\n\r\nthe secret itself\r\n";
  struct dsn_note note = {.index = 0,
                          .event = QUEUE_DSN_BOUNCED,
                          .status = "5.7.30",
                          .reply = "REQUIRETLS: no host offers it",
                          .mx = "",
                          .when_ms = 1700000001000ull};
  for (int req = 0; req < 2; req++) {
    env.requiretls = req;
    char *out;
    size_t len, nw;
    assert_int_equal(dsn_build_for(&env, body, strlen(body), &note, 1,
                                   QUEUE_DSN_BOUNCED, "relay.test",
                                   1700000002000ull, "01HZX3K5AB", &out, &len,
                                   &nw),
                     0);
    assert_int_equal(nw, 1);
    assert_non_null(strstr(out, "5.7.30"));
    if (req) {
      assert_null(strstr(out, "secret"));
    } else {
      assert_non_null(strstr(out, "Subject: secret plans"));
      assert_non_null(strstr(out, "the secret itself")); /* RET=FULL */
    }
    free(out);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_failure_report),
      cmocka_unit_test(test_global_report),
      cmocka_unit_test(test_global_fold),
      cmocka_unit_test(test_requiretls_returns_nothing),
      cmocka_unit_test(test_ret_full_and_limit),
      cmocka_unit_test(test_hostile_text),
      cmocka_unit_test(test_long_diagnostic),
      cmocka_unit_test(test_boundary_collision),
      cmocka_unit_test(test_delay_and_errors),
      cmocka_unit_test(test_eight_bit_original),
      cmocka_unit_test(test_headers_end_at_any_empty_line),
      cmocka_unit_test(test_long_values_on_one_line),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
