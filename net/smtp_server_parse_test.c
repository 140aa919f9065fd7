/*
 * smtp_server_parse_test.c - table-driven tests of the SMTP server's pure
 * parsers: every verb, every MAIL/RCPT parameter form, bad syntax, overlong
 * lines, SIZE= overflow, bad addresses, SMTPUTF8, REQUIRETLS, and the DATA
 * line scanner (dot-unstuffing, end of data, bare CR/LF, NUL, long lines).
 */
#include "net/smtp_server.h"
#include "net/smtp_server_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define OK SMTP_SERVER__OK
#define MORE SMTP_SERVER__NEED_MORE
#define ERR SMTP_SERVER__PROTO_ERROR
#define V(x) SMTP_SERVER__V_##x

struct cmd_case {
  const char *in;
  enum smtp_server__parse res;
  enum smtp_server__verb verb;
  const char *expect; /* OK: addr (MAIL/RCPT) or arg; ERR: reply prefix */
};

static const struct cmd_case cmd_cases[] = {
    /* Verbs, case-insensitive, with and without arguments. */
    {"EHLO client.example.org\r\n", OK, V(EHLO), "client.example.org"},
    {"ehlo client.example.org\r\n", OK, V(EHLO), "client.example.org"},
    {"EHLO [192.0.2.1]\r\n", OK, V(EHLO), "[192.0.2.1]"},
    {"EHLO [IPv6:2001:db8::1]\r\n", OK, V(EHLO), "[IPv6:2001:db8::1]"},
    {"EHLO my_pc   \r\n", OK, V(EHLO), "my_pc"},
    {"HELO x\r\n", OK, V(HELO), "x"},
    {"EHLO\r\n", ERR, V(EHLO), "501 5.5.4"},
    {"HELO \r\n", ERR, V(HELO), "501 5.5.4"},
    {"EHLO [300.1.1.1]\r\n", ERR, V(EHLO), "501 5.5.2"},
    {"EHLO a\x01"
     "b\r\n",
     ERR, V(EHLO), "501 5.5.2"},
    {"EHLO caf\xc3\xa9\r\n", ERR, V(EHLO), "501 5.5.2"},
    {"DATA\r\n", OK, V(DATA), ""},
    {"data\r\n", OK, V(DATA), ""},
    {"DATA x\r\n", ERR, V(DATA), "501 5.5.4"},
    {"RSET\r\n", OK, V(RSET), ""},
    {"RSET now\r\n", ERR, V(RSET), "501 5.5.4"},
    {"QUIT\r\n", OK, V(QUIT), ""},
    {"QUIT bye\r\n", ERR, V(QUIT), "501 5.5.4"},
    {"NOOP\r\n", OK, V(NOOP), ""},
    {"NOOP anything at all\r\n", OK, V(NOOP), "anything at all"},
    {"VRFY postmaster\r\n", OK, V(VRFY), "postmaster"},
    {"VRFY\r\n", ERR, V(VRFY), "501 5.5.4"},
    {"EXPN list\r\n", OK, V(EXPN), "list"},
    {"HELP\r\n", OK, V(HELP), ""},
    {"HELP MAIL\r\n", OK, V(HELP), "MAIL"},
    {"STARTTLS\r\n", OK, V(STARTTLS), ""},
    {"starttls\r\n", OK, V(STARTTLS), ""},
    {"STARTTLS x\r\n", ERR, V(STARTTLS), "501 5.5.4"},
    {"BDAT 100\r\n", OK, V(BDAT), "100"},
    {"bdat 0 last\r\n", OK, V(BDAT), "0 last"},
    {"BDAT 10 LAST\r\n", OK, V(BDAT), "10 LAST"},
    {"BDAT\r\n", ERR, V(BDAT), "501 5.5.4"},
    {"BDAT x\r\n", ERR, V(BDAT), "501 5.5.4"},
    {"BDAT -1\r\n", ERR, V(BDAT), "501 5.5.4"},
    {"BDAT 10 NOTLAST\r\n", ERR, V(BDAT), "501 5.5.4"},
    {"BDAT 10 LAST x\r\n", ERR, V(BDAT), "501 5.5.4"},
    /* AUTH (RFC 4954 §4): the mechanism in arg, any initial response
     * apart; which mechanisms exist is the session's business. */
    {"AUTH PLAIN\r\n", OK, V(AUTH), "PLAIN"},
    {"auth login dXNlcg==\r\n", OK, V(AUTH), "login"},
    {"AUTH PLAIN =\r\n", OK, V(AUTH), "PLAIN"},
    {"AUTH CRAM-MD5\r\n", OK, V(AUTH), "CRAM-MD5"},
    {"AUTH\r\n", ERR, V(AUTH), "501 5.5.4"},
    {"AUTH PLAIN a b\r\n", ERR, V(AUTH), "501 5.5.4"},
    {"AUTH ABCDEFGHIJKLMNOPQRSTU\r\n", ERR, V(AUTH), "501 5.5.4"},
    {"MAIL FROM:<a@b> AUTH=<>\r\n", OK, V(MAIL), "a@b"},
    {"MAIL FROM:<a@b> AUTH=u+2Bx@b\r\n", OK, V(MAIL), "a@b"},
    {"MAIL FROM:<a@b> AUTH=\r\n", ERR, V(MAIL), "501 5.5.4"},
    {"MAIL FROM:<a@b> AUTH=a+zz\r\n", ERR, V(MAIL), "501 5.5.4 Bad AUTH"},
    {"MAIL FROM:<a@b> AUTH=<> AUTH=<>\r\n", ERR, V(MAIL), "501 5.5.4"},
    {"RCPT TO:<a@b> AUTH=<>\r\n", ERR, V(RCPT), "555 5.5.4"},
    {"MAILFROM:<a@b>\r\n", ERR, V(NONE), "500 5.5.1"},
    {"\r\n", ERR, V(NONE), "500 5.5.1"},
    {"GET / HTTP/1.1\r\n", ERR, V(NONE), "500 5.5.1"},
    /* Line framing. */
    {"NOOP", MORE, V(NONE), NULL},
    {"NOOP\r", MORE, V(NONE), NULL},
    {"", MORE, V(NONE), NULL},
    {"NOOP\n", ERR, V(NONE), "500 5.5.2 Bare LF"},
    {"\n", ERR, V(NONE), "500 5.5.2 Bare LF"},
    {"NO\rOP\r\n", ERR, V(NONE), "500 5.5.2 Bare CR"},
    /* MAIL FROM. */
    {"MAIL FROM:<a@example.org>\r\n", OK, V(MAIL), "a@example.org"},
    {"mail from:<a@example.org>\r\n", OK, V(MAIL), "a@example.org"},
    {"MAIL FROM: <a@example.org>\r\n", OK, V(MAIL), "a@example.org"},
    {"MAIL FROM:<>\r\n", OK, V(MAIL), ""},
    {"MAIL FROM:<a.b.c@sub.example.org>\r\n", OK, V(MAIL),
     "a.b.c@sub.example.org"},
    {"MAIL FROM:<\"a b\"@example.org>\r\n", OK, V(MAIL), "\"a b\"@example.org"},
    {"MAIL FROM:<\"a>b\"@example.org>\r\n", OK, V(MAIL), "\"a>b\"@example.org"},
    {"MAIL FROM:<\"a\\\"b\"@example.org>\r\n", OK, V(MAIL),
     "\"a\\\"b\"@example.org"},
    {"MAIL FROM:<@relay.example,@r2.example:a@example.org>\r\n", OK, V(MAIL),
     "a@example.org"},
    {"MAIL FROM:<a@[192.0.2.1]>\r\n", OK, V(MAIL), "a@[192.0.2.1]"},
    {"MAIL FROM:<a@[IPv6:2001:db8::1]>\r\n", OK, V(MAIL),
     "a@[IPv6:2001:db8::1]"},
    {"MAIL FROM:<a+tag=x@example.org>\r\n", OK, V(MAIL), "a+tag=x@example.org"},
    {"MAIL FROM:<a@example.org>   \r\n", OK, V(MAIL), "a@example.org"},
    {"MAIL FROM:a@example.org\r\n", ERR, V(MAIL), "501 5.5.4"},
    {"MAIL TO:<a@example.org>\r\n", ERR, V(MAIL), "501 5.5.4"},
    {"MAIL\r\n", ERR, V(MAIL), "501 5.5.4"},
    {"MAIL FROM:\r\n", ERR, V(MAIL), "501 5.5.4"},
    {"MAIL FROM:<a@example.org\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a@example.org>x\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<@example.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a@>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a..b@example.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<.a@example.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a.@example.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a b@example.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a@exa mple.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a@-example.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a@example-.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a@example..org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a@example_x.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a@[300.0.0.1]>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a@[IPv6:zz::1]>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<\"unterminated@example.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<a@b@example.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<@relay.example:>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<@relay.example a@example.org>\r\n", ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<postmaster>\r\n", ERR, V(MAIL), "501 5.1.7"},
    /* 65-octet local part (RFC 5321 §4.5.3.1.1). */
    {"MAIL "
     "FROM:<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@"
     "example.org>\r\n",
     ERR, V(MAIL), "501 5.1.7"},
    {"MAIL "
     "FROM:<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@"
     "example.org>\r\n",
     OK, V(MAIL), NULL},
    /* 64-octet label. */
    {"MAIL "
     "FROM:<a@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
     "org>\r\n",
     ERR, V(MAIL), "501 5.1.7"},
    /* MAIL parameters. */
    {"MAIL FROM:<a@b.example> SIZE=1000\r\n", OK, V(MAIL), "a@b.example"},
    {"MAIL FROM:<a@b.example> size=1000 body=8bitmime\r\n", OK, V(MAIL), NULL},
    {"MAIL FROM:<a@b.example> SIZE=\r\n", ERR, V(MAIL), "501 5.5.4"},
    {"MAIL FROM:<a@b.example> SIZE\r\n", ERR, V(MAIL), "501 5.5.4 Bad SIZE"},
    {"MAIL FROM:<a@b.example> SIZE=-1\r\n", ERR, V(MAIL), "501 5.5.4 Bad SIZE"},
    {"MAIL FROM:<a@b.example> SIZE=1k\r\n", ERR, V(MAIL), "501 5.5.4 Bad SIZE"},
    {"MAIL FROM:<a@b.example> SIZE=1 SIZE=2\r\n", ERR, V(MAIL),
     "501 5.5.4 Duplicate"},
    {"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n", ERR, V(MAIL),
     "501 5.5.4 Bad BODY"},
    {"MAIL FROM:<a@b.example> BODY=7BIT\r\n", OK, V(MAIL), NULL},
    {"MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n", ERR, V(MAIL), "501 5.5.4"},
    {"MAIL FROM:<a@b.example> RET=FULL\r\n", OK, V(MAIL), NULL},
    {"MAIL FROM:<a@b.example> RET=ALL\r\n", ERR, V(MAIL), "501 5.5.4 Bad RET"},
    {"MAIL FROM:<a@b.example> ENVID=QQ314159\r\n", OK, V(MAIL), NULL},
    {"MAIL FROM:<a@b.example> ENVID=a+2Bb\r\n", OK, V(MAIL), NULL},
    {"MAIL FROM:<a@b.example> ENVID=a+2b\r\n", ERR, V(MAIL),
     "501 5.5.4 Bad ENVID"},
    {"MAIL FROM:<a@b.example> ENVID=a+2\r\n", ERR, V(MAIL),
     "501 5.5.4 Bad ENVID"},
    {"MAIL FROM:<a@b.example> ENVID=a=b\r\n", ERR, V(MAIL),
     "501 5.5.4 Bad ENVID"},
    {"MAIL FROM:<a@b.example> ENVID=0123456789012345678901234567890123456789"
     "0123456789012345678901234567890123456789012345678901234567890\r\n",
     ERR, V(MAIL), "501 5.5.4 Bad ENVID"},
    {"MAIL FROM:<a@b.example> AUTH=<>\r\n", OK, V(MAIL), "a@b.example"},
    {"MAIL FROM:<a@b.example> NOTIFY=NEVER\r\n", ERR, V(MAIL), "555 5.5.4"},
    {"MAIL FROM:<a@b.example> X-FOO\r\n", ERR, V(MAIL), "555 5.5.4"},
    {"MAIL FROM:<a@b.example> =x\r\n", ERR, V(MAIL), "501 5.5.4"},
    {"MAIL FROM:<a@b.example> _X=1\r\n", ERR, V(MAIL), "501 5.5.4"},
    /* SMTPUTF8 (RFC 6531): UTF-8 in local part and domain. */
    {"MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc"
     "cher.example> SMTPUTF8\r\n",
     OK, V(MAIL),
     "j\xc3\xb6rg@b\xc3\xbc"
     "cher.example"},
    {"MAIL FROM:<\xe7\x94\xb0\xe4\xb8\xad@example.jp>\r\n", OK, V(MAIL), NULL},
    {"MAIL FROM:<j\xc3"
     "rg@example.org> SMTPUTF8\r\n",
     ERR, V(MAIL), "501 5.1.7"},
    {"MAIL FROM:<j\xc0\xafrg@example.org> SMTPUTF8\r\n", ERR, V(MAIL),
     "501 5.1.7"},
    {"MAIL FROM:<j\xed\xa0\x80rg@example.org> SMTPUTF8\r\n", ERR, V(MAIL),
     "501 5.1.7"},
    {"MAIL FROM:<j\xffrg@example.org> SMTPUTF8\r\n", ERR, V(MAIL), "501 5.1.7"},
    /* RCPT TO. */
    {"RCPT TO:<b@example.org>\r\n", OK, V(RCPT), "b@example.org"},
    {"rcpt to: <b@example.org>\r\n", OK, V(RCPT), "b@example.org"},
    {"RCPT TO:<Postmaster>\r\n", OK, V(RCPT), "Postmaster"},
    {"RCPT TO:<>\r\n", ERR, V(RCPT), "501 5.1.3"},
    {"RCPT TO:<b>\r\n", ERR, V(RCPT), "501 5.1.3"},
    {"RCPT FROM:<b@example.org>\r\n", ERR, V(RCPT), "501 5.5.4"},
    {"RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE,DELAY\r\n", OK, V(RCPT),
     NULL},
    {"RCPT TO:<b@example.org> NOTIFY=never\r\n", OK, V(RCPT), NULL},
    {"RCPT TO:<b@example.org> NOTIFY=NEVER,SUCCESS\r\n", ERR, V(RCPT),
     "501 5.5.4 Bad NOTIFY"},
    {"RCPT TO:<b@example.org> NOTIFY=SUCCESS,\r\n", ERR, V(RCPT),
     "501 5.5.4 Bad NOTIFY"},
    {"RCPT TO:<b@example.org> NOTIFY=SUCCESS,SUCCESS\r\n", ERR, V(RCPT),
     "501 5.5.4 Bad NOTIFY"},
    {"RCPT TO:<b@example.org> NOTIFY=SOMETIMES\r\n", ERR, V(RCPT),
     "501 5.5.4 Bad NOTIFY"},
    {"RCPT TO:<b@example.org> ORCPT=rfc822;b@example.org\r\n", OK, V(RCPT),
     NULL},
    {"RCPT TO:<b@example.org> ORCPT=rfc822;b+2Bx@example.org\r\n", OK, V(RCPT),
     NULL},
    {"RCPT TO:<b@example.org> ORCPT=utf-8;j\xc3\xb6rg@example.org\r\n", OK,
     V(RCPT), NULL},
    {"RCPT TO:<b@example.org> ORCPT=rfc822\r\n", ERR, V(RCPT),
     "501 5.5.4 Bad ORCPT"},
    {"RCPT TO:<b@example.org> ORCPT=;b@example.org\r\n", ERR, V(RCPT),
     "501 5.5.4 Bad ORCPT"},
    {"RCPT TO:<b@example.org> ORCPT=rfc822;\r\n", ERR, V(RCPT),
     "501 5.5.4 Bad ORCPT"},
    {"RCPT TO:<b@example.org> SIZE=10\r\n", ERR, V(RCPT), "555 5.5.4"},
    /* REQUIRETLS (RFC 8689 §2): MAIL only, no value, once. */
    {"MAIL FROM:<a@b.example> REQUIRETLS\r\n", OK, V(MAIL), "a@b.example"},
    {"MAIL FROM:<> requiretls\r\n", OK, V(MAIL), ""},
    {"MAIL FROM:<a@b.example> REQUIRETLS=x\r\n", ERR, V(MAIL),
     "501 5.5.4 REQUIRETLS takes no value"},
    {"MAIL FROM:<a@b.example> REQUIRETLS=\r\n", ERR, V(MAIL), "501 5.5.4"},
    {"MAIL FROM:<a@b.example> REQUIRETLS SIZE=1 REQUIRETLS\r\n", ERR, V(MAIL),
     "501 5.5.4 Duplicate"},
    {"RCPT TO:<b@example.org> REQUIRETLS\r\n", ERR, V(RCPT), "555 5.5.4"},
    {"RCPT TO:<b@example.org> NOTIFY=DELAY NOTIFY=DELAY\r\n", ERR, V(RCPT),
     "501 5.5.4 Duplicate"},
};

static void test_cmd_table(void **state) {
  for (size_t i = 0; i < sizeof cmd_cases / sizeof cmd_cases[0]; i++) {
    const struct cmd_case *t = &cmd_cases[i];
    struct smtp_server__cmd c;
    size_t len = strlen(t->in);
    enum smtp_server__parse r = smtp_server__cmd_parse(t->in, len, &c);
    if (r != t->res || c.verb != t->verb)
      fail_msg("case %zu %s: result %d verb %d, want %d %d (reply %s)", i,
               t->in, r, c.verb, t->res, t->verb, c.reply ? c.reply : "-");
    if (r == ERR) {
      if (strncmp(c.reply, t->expect, strlen(t->expect)) != 0)
        fail_msg("case %zu %s: reply '%s', want '%s'", i, t->in, c.reply,
                 t->expect);
      assert_true(c.consumed == len);
    } else if (r == OK) {
      assert_int_equal(c.consumed, len);
      if (t->expect) {
        const struct smtp_server__str *s =
            (c.verb == V(MAIL) || c.verb == V(RCPT)) ? &c.addr : &c.arg;
        if (s->n != strlen(t->expect) || memcmp(s->p, t->expect, s->n) != 0)
          fail_msg("case %zu %s: got '%.*s' want '%s'", i, t->in, (int)s->n,
                   s->p, t->expect);
      }
    }
  }
}

/* Parameter values land in the right fields. */
static void test_mail_params(void **state) {
  struct smtp_server__cmd c;
  const char *l = "MAIL FROM:<a@b.example> SIZE=12345 BODY=8BITMIME "
                  "SMTPUTF8 RET=HDRS ENVID=QQ+2B1\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_true(c.has_size);
  assert_true(c.size == 12345);
  assert_int_equal(c.body, SMTP_SERVER_BODY_8BITMIME);
  assert_true(c.smtputf8);
  assert_int_equal(c.ret, SMTP_SERVER_RET_HDRS);
  assert_int_equal(c.envid.n, 6);
  assert_memory_equal(c.envid.p, "QQ+2B1", 6);
  assert_false(c.addr_utf8);
  assert_false(c.requiretls);

  l = "MAIL FROM:<a@b.example> AUTH=e+3Dmc2@b.example\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_int_equal(c.auth_param.n, 17);
  assert_memory_equal(c.auth_param.p, "e+3Dmc2@b.example", 17);
  l = "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_int_equal(c.arg.n, 5);
  assert_int_equal(c.auth_ir.n, 20);
  assert_memory_equal(c.auth_ir.p, "AGFsaWNlAHNlY3JldA==", 20);
  l = "AUTH LOGIN\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_null(c.auth_ir.p);

  l = "MAIL FROM:<a@b.example> SMTPUTF8 ReQuIrEtLs BODY=7BIT\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_true(c.requiretls);
  assert_true(c.smtputf8);
  assert_int_equal(c.body, SMTP_SERVER_BODY_7BIT);

  l = "MAIL FROM:<a@b.example>\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_false(c.has_size);
  assert_int_equal(c.body, SMTP_SERVER_BODY_NONE);
  assert_int_equal(c.ret, SMTP_SERVER_RET_NONE);
  assert_null(c.envid.p);

  l = "MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_true(c.addr_utf8);
  /* Without SMTPUTF8 the parser still accepts the syntax and flags it: the
   * session answers 553 5.6.7 (RFC 6531 §3.7.4.1). */
  l = "MAIL FROM:<j\xc3\xb6rg@example.org>\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_true(c.addr_utf8);
  assert_false(c.smtputf8);
}

/* SIZE saturates instead of wrapping, so an absurd value is "too big". */
static void test_size_overflow(void **state) {
  static const struct {
    const char *v;
    uint64_t want;
  } t[] = {
      {"0", 0},
      {"18446744073709551615", UINT64_MAX},
      {"18446744073709551616", UINT64_MAX},
      {"99999999999999999999999999999999999999", UINT64_MAX},
      {"33554432", 33554432},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char l[200];
    struct smtp_server__cmd c;
    snprintf(l, sizeof l, "MAIL FROM:<a@b.example> SIZE=%s\r\n", t[i].v);
    assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
    assert_true(c.has_size);
    if (c.size != t[i].want)
      fail_msg("SIZE=%s parsed as %llu", t[i].v, (unsigned long long)c.size);
  }
}

static void test_rcpt_params(void **state) {
  struct smtp_server__cmd c;
  const char *l = "RCPT TO:<b@example.org> NOTIFY=FAILURE,DELAY "
                  "ORCPT=rfc822;B@Example.org\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_int_equal(c.notify,
                   SMTP_SERVER_NOTIFY_FAILURE | SMTP_SERVER_NOTIFY_DELAY);
  assert_int_equal(c.orcpt.n, strlen("rfc822;B@Example.org"));
  l = "RCPT TO:<b@example.org> NOTIFY=NEVER\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_int_equal(c.notify, SMTP_SERVER_NOTIFY_NEVER);
  l = "RCPT TO:<postmaster>\r\n";
  assert_int_equal(smtp_server__cmd_parse(l, strlen(l), &c), OK);
  assert_true(c.postmaster);
}

/* BDAT chunk sizes and the LAST marker (RFC 3030 §3). */
static void test_bdat(void **state) {
  static const struct {
    const char *l;
    uint64_t size;
    bool last;
  } t[] = {
      {"BDAT 0 LAST\r\n", 0, true},
      {"BDAT 1000\r\n", 1000, false},
      {"BDAT 99999999999999999999999 last\r\n", UINT64_MAX, true},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    struct smtp_server__cmd c;
    assert_int_equal(smtp_server__cmd_parse(t[i].l, strlen(t[i].l), &c), OK);
    assert_int_equal(c.verb, V(BDAT));
    assert_true(c.size == t[i].size);
    assert_int_equal(c.last, t[i].last);
  }
}

/* Overlong lines: NEED_MORE below the limit, PROTO_ERROR with consumed 0
 * at the limit (the caller skips to the next LF), and a line of exactly
 * 512 octets with CRLF is still fine (RFC 5321 §4.5.3.1.4). */
static void test_line_length(void **state) {
  char buf[2048];
  struct smtp_server__cmd c;
  memset(buf, 'a', sizeof buf);
  memcpy(buf, "NOOP ", 5);
  assert_int_equal(smtp_server__cmd_parse(buf, 511, &c), MORE);
  assert_int_equal(smtp_server__cmd_parse(buf, 512, &c), ERR);
  assert_int_equal(c.consumed, 0);
  assert_string_equal(c.reply, "500 5.5.2 Line too long");
  assert_int_equal(smtp_server__cmd_parse(buf, sizeof buf, &c), ERR);
  assert_int_equal(c.consumed, 0);

  memcpy(buf + 510, "\r\n", 2); /* 512 octets in all */
  assert_int_equal(smtp_server__cmd_parse(buf, 512, &c), OK);
  assert_int_equal(c.consumed, 512);
  buf[510] = 'a';
  buf[511] = '\r';
  buf[512] = '\n'; /* 513 octets */
  assert_int_equal(smtp_server__cmd_parse(buf, 513, &c), ERR);
  assert_int_equal(c.consumed, 0);

  /* RFC 4954 §4: AUTH with an initial response may be longer, up to
   * SMTP_SERVER__AUTH_LINE_MAX; one octet more is too long. */
  memset(buf, 'A', sizeof buf);
  memcpy(buf, "auth PLAIN ", 11);
  assert_int_equal(smtp_server__cmd_line_max(buf, 5),
                   SMTP_SERVER__AUTH_LINE_MAX);
  assert_int_equal(smtp_server__cmd_line_max("AUTHX", 5),
                   SMTP_SERVER__CMD_LINE_MAX);
  assert_int_equal(smtp_server__cmd_line_max("AUTH", 4),
                   SMTP_SERVER__CMD_LINE_MAX);
  memcpy(buf + 1098, "\r\n", 2);
  assert_int_equal(smtp_server__cmd_parse(buf, 1100, &c), OK);
  assert_int_equal(c.verb, V(AUTH));
  assert_int_equal(c.auth_ir.n, 1098 - 11);
  assert_int_equal(smtp_server__cmd_parse(buf, 900, &c), MORE);
  buf[1098] = 'A';
  memcpy(buf + 1099, "\r\n", 2);
  assert_int_equal(smtp_server__cmd_parse(buf, 1101, &c), ERR);
  assert_int_equal(c.consumed, 0);
  /* Only the AUTH verb: the same length with another verb is too long. */
  memcpy(buf, "NOOP ", 5);
  assert_int_equal(smtp_server__cmd_parse(buf, 900, &c), ERR);
  assert_int_equal(c.consumed, 0);
}

/* NUL inside a line refuses the line but consumes it. */
static void test_nul(void **state) {
  static const char l[] = "NOOP a\0b\r\nQUIT\r\n";
  struct smtp_server__cmd c;
  assert_int_equal(smtp_server__cmd_parse(l, sizeof l - 1, &c), ERR);
  assert_string_equal(c.reply, "500 5.5.2 NUL byte not allowed");
  assert_int_equal(c.consumed, 10);
  assert_int_equal(smtp_server__cmd_parse(l + 10, sizeof l - 11, &c), OK);
  assert_int_equal(c.verb, V(QUIT));
}

/* Pipelined commands come out one at a time, in order. */
static void test_pipelined(void **state) {
  const char *in = "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
                   "RCPT TO:<e@f.example>\r\nDATA\r\nSubj";
  size_t len = strlen(in), off = 0;
  enum smtp_server__verb want[] = {V(MAIL), V(RCPT), V(RCPT), V(DATA)};
  for (size_t i = 0; i < 4; i++) {
    struct smtp_server__cmd c;
    assert_int_equal(smtp_server__cmd_parse(in + off, len - off, &c), OK);
    assert_int_equal(c.verb, want[i]);
    off += c.consumed;
  }
  assert_string_equal(in + off, "Subj");
}

struct data_case {
  const char *in;
  size_t len; /* 0: strlen */
  bool midline, partial_ok;
  enum smtp_server__parse res;
  const char *payload;
  bool end, bad, too_long, partial;
  size_t consumed;
};

static const struct data_case data_cases[] = {
    {"hello\r\n", 0, false, false, OK, "hello", false, false, false, false, 7},
    {"\r\n", 0, false, false, OK, "", false, false, false, false, 2},
    {".\r\n", 0, false, false, OK, "", true, false, false, false, 3},
    {"..\r\n", 0, false, false, OK, ".", false, false, false, false, 4},
    {"..hidden\r\n", 0, false, false, OK, ".hidden", false, false, false, false,
     10},
    {".x\r\n", 0, false, false, OK, "x", false, false, false, false, 4},
    /* A dot line right after a fragment is no end of data. */
    {".\r\n", 0, true, false, OK, ".", false, false, false, false, 3},
    {"hello", 0, false, false, MORE, NULL, false, false, false, false, 0},
    {"hello\r", 0, false, false, MORE, NULL, false, false, false, false, 0},
    {".", 0, false, false, MORE, NULL, false, false, false, false, 0},
    /* Bare LF is content: "\n.\r\n" does not end DATA (SMTP smuggling). */
    {"a\n.\r\n", 0, false, false, OK, "a\n.", false, true, false, false, 5},
    {"a\n.\nb\r\n", 0, false, false, OK, "a\n.\nb", false, true, false, false,
     7},
    {"a\r.\r\n", 0, false, false, OK, "a\r.", false, true, false, false, 5},
    {"a\0b\r\n", 5, false, false, OK, "a\0b", false, true, false, false, 5},
    /* Partial fragments of an overlong line keep their last byte. */
    {"abcdef", 0, false, true, OK, "abcde", false, false, true, true, 5},
    {"abcde\r", 0, false, true, OK, "abcde", false, false, true, true, 5},
};

static void test_data_table(void **state) {
  for (size_t i = 0; i < sizeof data_cases / sizeof data_cases[0]; i++) {
    const struct data_case *t = &data_cases[i];
    size_t len = t->len ? t->len : strlen(t->in);
    struct smtp_server__data_line l;
    enum smtp_server__parse r =
        smtp_server__data_scan(t->in, len, t->midline, t->partial_ok, &l);
    if (r != t->res)
      fail_msg("data case %zu: result %d want %d", i, r, t->res);
    if (r != OK)
      continue;
    size_t pn = t->len ? t->len - 2 : strlen(t->payload);
    if (t->payload && (l.n != pn || memcmp(l.p, t->payload, pn) != 0))
      fail_msg("data case %zu: payload '%.*s'", i, (int)l.n, l.p);
    if (l.end != t->end || l.bad != t->bad || l.too_long != t->too_long ||
        l.partial != t->partial || l.consumed != t->consumed)
      fail_msg("data case %zu: end %d bad %d long %d partial %d consumed %zu",
               i, l.end, l.bad, l.too_long, l.partial, l.consumed);
  }
}

/* RFC 5321 §4.5.3.1.6: 1000 octets with CRLF is the longest text line. */
static void test_data_line_length(void **state) {
  char buf[1100];
  struct smtp_server__data_line l;
  memset(buf, 'x', sizeof buf);
  memcpy(buf + 998, "\r\n", 2);
  assert_int_equal(smtp_server__data_scan(buf, 1000, false, false, &l), OK);
  assert_false(l.too_long);
  assert_int_equal(l.n, 998);
  buf[998] = 'x';
  memcpy(buf + 999, "\r\n", 2);
  assert_int_equal(smtp_server__data_scan(buf, 1001, false, false, &l), OK);
  assert_true(l.too_long);
}

struct mbox_case {
  const char *in;
  bool ok, utf8;
};

static const struct mbox_case mbox_cases[] = {
    {"a@example.org", true, false},
    {"first.last@sub.example.org", true, false},
    {"!#$%&'*+-/=?^_`{|}~@example.org", true, false},
    {"\"quoted string\"@example.org", true, false},
    {"\"\"@example.org", true, false},
    {"a@localhost", true, false},
    {"a@[127.0.0.1]", true, false},
    {"\xe7\x94\xb0\xe4\xb8\xad@\xe4\xbe\x8b\xe3\x81\x88.jp", true, true},
    {"a@b\xc3\xbc"
     "cher.example",
     true, true},
    {"", false, false},
    {"@", false, false},
    {"a@", false, false},
    {"@b", false, false},
    {"a", false, false},
    {"a(comment)@example.org", false, false},
    {"a@example.org.", false, false},
    {"a@.example.org", false, false},
    {"a@exa\"mple.org", false, false},
    {"\"a\x01\"@example.org", false, false},
    {"a@[1.2.3]", false, false},
    {"a@[general:tag]", false, false},
};

static void test_mailbox_table(void **state) {
  for (size_t i = 0; i < sizeof mbox_cases / sizeof mbox_cases[0]; i++) {
    bool utf8 = false;
    bool ok = smtp_server__mailbox_ok(mbox_cases[i].in,
                                      strlen(mbox_cases[i].in), &utf8);
    if (ok != mbox_cases[i].ok || (ok && utf8 != mbox_cases[i].utf8))
      fail_msg("mailbox %s: ok %d utf8 %d", mbox_cases[i].in, ok, utf8);
  }
}

/* Property test: pseudo-random input (biased towards SMTP's alphabet) never
 * makes the parsers read outside their input or give an answer outside the
 * three, and every answer is self-consistent. Under ASan this is a small
 * fuzzer run. */
static uint32_t rng_state = 12345;
static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

static void test_random_input(void **state) {
  static const char alpha[] = "MAILFROMRCPTODATEHLOBDTSZ=<>@.:;, \r\n\r\n\"\\+"
                              "0123456789abcXYZ-\x00\xc3\xa9\xff";
  static const char *const seeds[] = {
      "MAIL FROM:<", "RCPT TO:<",      "EHLO ",   "BDAT ",  " SIZE=",
      " NOTIFY=",    " ORCPT=rfc822;", " ENVID=", " BODY=", "@[IPv6:",
      "\"",          "\r\n",           ".",
  };
  for (int iter = 0; iter < 100000; iter++) {
    size_t len = rng() % 600;
    char *buf = malloc(len ? len : 1);
    size_t i = 0;
    while (i < len) {
      if (rng() % 8 == 0) {
        const char *sd = seeds[rng() % (sizeof seeds / sizeof seeds[0])];
        for (size_t k = 0; sd[k] && i < len; k++)
          buf[i++] = sd[k];
      } else {
        buf[i++] = alpha[rng() % (sizeof alpha - 1)];
      }
    }
    struct smtp_server__cmd c;
    enum smtp_server__parse r = smtp_server__cmd_parse(buf, len, &c);
    switch (r) {
    case MORE:
      assert_true(len < smtp_server__cmd_line_max(buf, len));
      assert_null(memchr(buf, '\n', len));
      break;
    case OK:
      assert_true(c.consumed >= 2 && c.consumed <= len &&
                  c.consumed <= smtp_server__cmd_line_max(buf, len));
      assert_true(buf[c.consumed - 1] == '\n' && buf[c.consumed - 2] == '\r');
      assert_true(c.verb != V(NONE));
      if (c.addr.p)
        assert_true(c.addr.p >= buf && c.addr.p + c.addr.n <= buf + len);
      if (c.arg.p)
        assert_true(c.arg.p >= buf && c.arg.p + c.arg.n <= buf + len);
      break;
    case ERR:
      assert_non_null(c.reply);
      assert_true(c.reply[0] == '5' && c.reply[3] == ' ' && c.reply[5] == '.');
      assert_true(c.consumed <= len);
      if (c.consumed == 0)
        assert_true(len >= smtp_server__cmd_line_max(buf, len));
      break;
    default:
      fail_msg("unexpected answer %d", r);
    }
    struct smtp_server__data_line l;
    bool mid = rng() & 1, part = rng() & 1;
    r = smtp_server__data_scan(buf, len, mid, part, &l);
    if (r == OK) {
      assert_true(l.consumed >= 1 && l.consumed <= len);
      assert_true(l.p >= buf && l.p + l.n <= buf + l.consumed);
      assert_true(!l.end || (!mid && l.consumed == 3));
    } else {
      assert_int_equal(r, MORE);
    }
    free(buf);
  }
}

static void test_names(void **state) {
  assert_string_equal(smtp_server__verb_name(V(STARTTLS)), "STARTTLS");
  assert_string_equal(smtp_server__state_name(SMTP_SERVER__S_QUEUEING),
                      "queueing");
  assert_string_equal(smtp_server__state_name((enum smtp_server__state)99),
                      "?");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cmd_table),
      cmocka_unit_test(test_mail_params),
      cmocka_unit_test(test_size_overflow),
      cmocka_unit_test(test_rcpt_params),
      cmocka_unit_test(test_line_length),
      cmocka_unit_test(test_bdat),
      cmocka_unit_test(test_nul),
      cmocka_unit_test(test_pipelined),
      cmocka_unit_test(test_data_table),
      cmocka_unit_test(test_data_line_length),
      cmocka_unit_test(test_mailbox_table),
      cmocka_unit_test(test_random_input),
      cmocka_unit_test(test_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
