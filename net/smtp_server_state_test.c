/*
 * tests/server/smtp_server_state_test.c - the server session's legal state
 * transitions (smtp_server__transition_ok, net/smtp_server_state.c): what
 * the protocol allows from every state, and some of what it must not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/smtp_server_internal.h"

#define S(x) SMTP_SERVER__S_##x

static const struct {
  enum smtp_server__state from, to;
  bool want;
} cases[] = {
    {S(GREETING), S(CONNECTED), true},       /* greeting sent */
    {S(GREETING), S(READY), false},          /* no EHLO before the greeting */
    {S(CONNECTED), S(READY), true},          /* EHLO */
    {S(CONNECTED), S(MAIL), false},          /* MAIL before EHLO */
    {S(CONNECTED), S(TLS_HANDSHAKE), false}, /* STARTTLS needs EHLO */
    {S(READY), S(MAIL), true},
    {S(READY), S(TLS_HANDSHAKE), true},
    {S(READY), S(RCPT), false},
    {S(MAIL), S(RCPT), true},
    {S(MAIL), S(READY), true}, /* RSET */
    {S(MAIL), S(DATA), false}, /* DATA without a recipient */
    {S(MAIL), S(TLS_HANDSHAKE), false},
    {S(RCPT), S(DATA), true},
    {S(RCPT), S(BDAT), true},
    {S(RCPT), S(QUEUEING), false},
    {S(DATA), S(QUEUEING), true},
    {S(DATA), S(READY), true}, /* refused content */
    {S(DATA), S(BDAT), false},
    {S(BDAT), S(CHUNKING), true},
    {S(BDAT), S(QUEUEING), true},
    {S(BDAT), S(READY), true},
    {S(CHUNKING), S(BDAT), true},
    {S(CHUNKING), S(READY), true},
    {S(CHUNKING), S(RCPT), false}, /* no RCPT after BDAT (RFC 3030) */
    {S(CHUNKING), S(DATA), false},
    {S(QUEUEING), S(READY), true},
    {S(QUEUEING), S(MAIL), false},
    {S(READY), S(AUTH), true},       /* 334 (RFC 4954 §4) */
    {S(READY), S(AUTH_CHECK), true}, /* initial response complete */
    {S(CONNECTED), S(AUTH), false},  /* AUTH needs EHLO */
    {S(MAIL), S(AUTH), false},       /* no AUTH in a transaction (§4) */
    {S(RCPT), S(AUTH_CHECK), false},
    {S(AUTH), S(AUTH_CHECK), true},
    {S(AUTH), S(READY), true}, /* "*", bad base64 */
    {S(AUTH), S(MAIL), false},
    {S(AUTH_CHECK), S(READY), true}, /* 235 or 535 */
    {S(AUTH_CHECK), S(MAIL), false},
    {S(AUTH_CHECK), S(AUTH), false},
    {S(TLS_HANDSHAKE), S(CONNECTED), true}, /* RFC 3207 §4.2 */
    {S(TLS_HANDSHAKE), S(READY), false},
    {S(CLOSING), S(CLOSED), true},
    {S(CLOSING), S(READY), false},
    {S(CLOSED), S(CLOSING), false},
    {S(CLOSED), S(READY), false},
};

static void test_cases(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (smtp_server__transition_ok(cases[i].from, cases[i].to) != cases[i].want)
      fail_msg("%s -> %s: want %d", smtp_server__state_name(cases[i].from),
               smtp_server__state_name(cases[i].to), cases[i].want);
  }
}

/* Every state but CLOSING and CLOSED may end (QUIT, timeouts, limits,
 * errors, shutdown, the client gone); only CLOSING becomes CLOSED. */
static void test_ends(void **state) {
  (void)state;
  for (int s = S(GREETING); s <= S(CLOSED); s++) {
    bool open = s != S(CLOSING) && s != S(CLOSED);
    if (smtp_server__transition_ok(s, S(CLOSING)) != open)
      fail_msg("%s -> closing", smtp_server__state_name(s));
    if (smtp_server__transition_ok(s, S(CLOSED)) != (s == S(CLOSING)))
      fail_msg("%s -> closed", smtp_server__state_name(s));
  }
  assert_false(
      smtp_server__transition_ok((enum smtp_server__state)99, S(READY)));
  assert_false(
      smtp_server__transition_ok(S(READY), (enum smtp_server__state)99));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cases),
      cmocka_unit_test(test_ends),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
