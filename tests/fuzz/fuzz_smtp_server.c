/*
 * fuzz_smtp_server.c - libFuzzer target for the SMTP server's pure parsers:
 * smtp_server__cmd_parse() and smtp_server__data_scan()
 * (net/smtp_server_internal.h).
 *
 * The input is what a client sends on one connection. The target walks it
 * as the session does: command lines until a DATA command parses, then
 * content lines until the "." line, then commands again. A line the
 * command parser refuses without consuming (too long) is skipped up to the
 * next LF, as the caller is told to. Beyond "no crash" it checks:
 *  - the three answers mean what the header says: NEED_MORE only without a
 *    LF and under the line limit; OK and PROTO_ERROR consume exactly one
 *    line ending in LF and at most SMTP_SERVER__CMD_LINE_MAX bytes
 *    (SMTP_SERVER__AUTH_LINE_MAX for an AUTH command, RFC 4954 §4);
 *    PROTO_ERROR with nothing consumed only for a line over the limit;
 *  - every PROTO_ERROR carries a reply "4yz"/"5yz ..." without CR, LF;
 *  - an OK command ended in CRLF, has no NUL or bare CR, a known verb, and
 *    every returned string lies inside the line; addresses and parameters
 *    respect their RFC limits and pass the validators the header exports
 *    (mailbox, HELO argument, xtext);
 *  - parsing exactly the consumed bytes again gives the same result;
 *  - DATA lines: a complete line is the first CRLF; the payload, dot
 *    unstuffing, `end`, `bad` (NUL, CR, LF in the payload) and `too_long`
 *    are recomputed independently and must agree; fragments (`partial`)
 *    keep the last byte back and are only given when asked for;
 *  - every step consumes at least one byte, so the session always makes
 *    progress.
 */
#include "net/smtp_server.h"
#include "net/smtp_server_internal.h"
#include "net/smtp_syntax.h"
#include "tests/fuzz/fuzz_util.h"

static bool inside(const char *p, size_t n, const char *base, size_t len) {
  if (n == 0)
    return true; /* empty strings may point anywhere (or nowhere) */
  return p != NULL && p >= base && p + n <= base + len;
}

static void check_reply(const char *r) {
  FUZZ_CHECK(r != NULL);
  size_t n = strlen(r);
  FUZZ_CHECK(n >= 3 && (r[0] == '4' || r[0] == '5'));
  FUZZ_CHECK(r[1] >= '0' && r[1] <= '9' && r[2] >= '0' && r[2] <= '9');
  FUZZ_CHECK(n == 3 || r[3] == ' ');
  FUZZ_CHECK(strpbrk(r, "\r\n") == NULL);
}

static void check_cmd(const char *buf, size_t len, enum smtp_server__parse st,
                      const struct smtp_server__cmd *c) {
  const char *lf = memchr(buf, '\n', len);
  /* AUTH lines may be longer; the verb decides, whatever else the line
   * holds. */
  bool is_auth = len >= 5 && (buf[0] | 0x20) == 'a' && (buf[1] | 0x20) == 'u' &&
                 (buf[2] | 0x20) == 't' && (buf[3] | 0x20) == 'h' &&
                 buf[4] == ' ';
  size_t max = is_auth ? SMTP_SERVER__AUTH_LINE_MAX : SMTP_SERVER__CMD_LINE_MAX;
  FUZZ_CHECK(smtp_server__cmd_line_max(buf, len) == max);
  switch (st) {
  case SMTP_SERVER__NEED_MORE:
    FUZZ_CHECK(lf == NULL && len < max);
    return;
  case SMTP_SERVER__PROTO_ERROR:
    check_reply(c->reply);
    if (c->consumed == 0) {
      FUZZ_CHECK(len >= max);
      FUZZ_CHECK(memchr(buf, '\n', max) == NULL);
      return;
    }
    FUZZ_CHECK(lf != NULL && c->consumed == (size_t)(lf - buf) + 1);
    FUZZ_CHECK(c->consumed <= max);
    return;
  case SMTP_SERVER__OK:
    break;
  default:
    FUZZ_CHECK(!"unknown parse answer");
  }
  FUZZ_CHECK(lf != NULL && c->consumed == (size_t)(lf - buf) + 1);
  FUZZ_CHECK(c->consumed <= max);
  FUZZ_CHECK(c->consumed <= SMTP_SERVER__CMD_LINE_MAX ||
             c->verb == SMTP_SERVER__V_AUTH);
  size_t n = c->consumed;
  FUZZ_CHECK(n >= 2 && buf[n - 2] == '\r');
  size_t body = n - 2; /* the line without CRLF */
  FUZZ_CHECK(memchr(buf, '\0', body) == NULL);
  FUZZ_CHECK(memchr(buf, '\r', body) == NULL);
  FUZZ_CHECK(c->verb != SMTP_SERVER__V_NONE);
  FUZZ_CHECK(strcmp(smtp_server__verb_name(c->verb), "?") != 0);
  FUZZ_CHECK(inside(c->arg.p, c->arg.n, buf, body));
  FUZZ_CHECK(inside(c->addr.p, c->addr.n, buf, body));
  FUZZ_CHECK(inside(c->envid.p, c->envid.n, buf, body));
  FUZZ_CHECK(inside(c->orcpt.p, c->orcpt.n, buf, body));
  FUZZ_CHECK(inside(c->auth_param.p, c->auth_param.n, buf, body));
  if (c->auth_param.n > 0)
    FUZZ_CHECK(c->verb == SMTP_SERVER__V_MAIL);
  switch (c->verb) {
  case SMTP_SERVER__V_EHLO:
  case SMTP_SERVER__V_HELO:
    FUZZ_CHECK(c->arg.n > 0 && smtp_server__helo_ok(c->arg.p, c->arg.n));
    break;
  case SMTP_SERVER__V_MAIL:
  case SMTP_SERVER__V_RCPT: {
    FUZZ_CHECK(c->addr.n <= SMTP_SERVER__PATH_MAX);
    if (c->verb == SMTP_SERVER__V_RCPT)
      FUZZ_CHECK(c->addr.n > 0); /* "<>" is only a reverse-path */
    if (c->addr.n > 0 && !c->postmaster) {
      bool utf8 = false;
      FUZZ_CHECK(smtp_server__mailbox_ok(c->addr.p, c->addr.n, &utf8));
      FUZZ_CHECK(utf8 == c->addr_utf8);
    }
    if (c->postmaster)
      FUZZ_CHECK(c->verb == SMTP_SERVER__V_RCPT);
    FUZZ_CHECK(c->envid.n <= SMTP_SERVER__ENVID_MAX);
    if (c->envid.n > 0)
      FUZZ_CHECK(smtp_syntax_xtext_ok(c->envid.p, c->envid.n));
    FUZZ_CHECK(c->orcpt.n <= SMTP_SERVER__ORCPT_MAX);
    if (c->verb == SMTP_SERVER__V_MAIL)
      FUZZ_CHECK(c->notify == 0 && c->orcpt.n == 0);
    else
      FUZZ_CHECK(!c->has_size && c->envid.n == 0 && !c->smtputf8);
    break;
  }
  case SMTP_SERVER__V_DATA:
  case SMTP_SERVER__V_RSET:
  case SMTP_SERVER__V_QUIT:
  case SMTP_SERVER__V_STARTTLS:
    FUZZ_CHECK(c->arg.n == 0);
    break;
  case SMTP_SERVER__V_VRFY:
  case SMTP_SERVER__V_EXPN:
    FUZZ_CHECK(c->arg.n > 0);
    break;
  case SMTP_SERVER__V_AUTH:
    FUZZ_CHECK(c->arg.n > 0 && c->arg.n <= 20);
    FUZZ_CHECK(memchr(c->arg.p, ' ', c->arg.n) == NULL);
    FUZZ_CHECK(c->auth_ir.p == NULL ||
               (c->auth_ir.n > 0 &&
                inside(c->auth_ir.p, c->auth_ir.n, buf, body) &&
                memchr(c->auth_ir.p, ' ', c->auth_ir.n) == NULL));
    break;
  default:
    break;
  }
}

static void same_cmd(const struct smtp_server__cmd *a,
                     const struct smtp_server__cmd *b) {
  FUZZ_CHECK(a->verb == b->verb && a->consumed == b->consumed);
  FUZZ_CHECK(a->arg.n == b->arg.n && a->arg.p == b->arg.p);
  FUZZ_CHECK(a->addr.n == b->addr.n && a->addr.p == b->addr.p);
  FUZZ_CHECK(a->addr_utf8 == b->addr_utf8 && a->postmaster == b->postmaster);
  FUZZ_CHECK(a->has_size == b->has_size && a->size == b->size);
  FUZZ_CHECK(a->body == b->body && a->smtputf8 == b->smtputf8);
  FUZZ_CHECK(a->ret == b->ret && a->notify == b->notify);
  FUZZ_CHECK(a->envid.n == b->envid.n && a->orcpt.n == b->orcpt.n);
  FUZZ_CHECK((a->reply == NULL) == (b->reply == NULL));
  if (a->reply)
    FUZZ_CHECK(strcmp(a->reply, b->reply) == 0);
}

/* Index of the first LF preceded by CR in buf[0..len), or len. */
static size_t first_crlf(const char *buf, size_t len) {
  for (size_t i = 1; i < len; i++)
    if (buf[i] == '\n' && buf[i - 1] == '\r')
      return i;
  return len;
}

static void check_data(const char *buf, size_t len, bool midline,
                       bool partial_ok, enum smtp_server__parse st,
                       const struct smtp_server__data_line *l) {
  size_t lf = first_crlf(buf, len);
  FUZZ_CHECK(st == SMTP_SERVER__NEED_MORE || st == SMTP_SERVER__OK);
  if (st == SMTP_SERVER__NEED_MORE) {
    FUZZ_CHECK(lf == len && (!partial_ok || len < 2));
    return;
  }
  FUZZ_CHECK(l->consumed >= 1 && l->consumed <= len);
  size_t raw; /* payload bytes before unstuffing */
  if (lf < len) {
    FUZZ_CHECK(!l->partial);
    FUZZ_CHECK(l->consumed == lf + 1);
    raw = lf - 1;
    FUZZ_CHECK(l->too_long == (l->consumed > SMTP_SERVER__TEXT_LINE_MAX));
  } else {
    FUZZ_CHECK(partial_ok && l->partial && l->too_long);
    FUZZ_CHECK(l->consumed == len - 1);
    raw = len - 1;
  }
  bool forbidden = false;
  for (size_t i = 0; i < raw; i++)
    if (buf[i] == '\0' || buf[i] == '\r' || buf[i] == '\n')
      forbidden = true;
  FUZZ_CHECK(l->bad == forbidden);
  bool dot = !midline && !l->partial && raw >= 1 && buf[0] == '.';
  FUZZ_CHECK(l->end == (dot && raw == 1));
  if (l->end) {
    FUZZ_CHECK(l->n == 0);
  } else if (dot) {
    FUZZ_CHECK(l->p == buf + 1 && l->n == raw - 1);
  } else {
    FUZZ_CHECK(l->p == buf && l->n == raw);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A private copy, so that reads past the end are caught exactly. */
  char *buf = fuzz_strndup(data, size);
  size_t pos = 0;
  bool in_data = false, midline = false;
  while (pos < size) {
    const char *p = buf + pos;
    size_t left = size - pos;
    if (!in_data) {
      struct smtp_server__cmd c;
      enum smtp_server__parse st = smtp_server__cmd_parse(p, left, &c);
      check_cmd(p, left, st, &c);
      if (st == SMTP_SERVER__NEED_MORE)
        break;
      if (st == SMTP_SERVER__PROTO_ERROR && c.consumed == 0) {
        /* Over-long line: discard up to and including the next LF. */
        const char *lf = memchr(p, '\n', left);
        if (lf == NULL)
          break;
        pos += (size_t)(lf - p) + 1;
        continue;
      }
      struct smtp_server__cmd again;
      enum smtp_server__parse st2 =
          smtp_server__cmd_parse(p, c.consumed, &again);
      FUZZ_CHECK(st2 == st);
      same_cmd(&c, &again);
      pos += c.consumed;
      if (st == SMTP_SERVER__OK && c.verb == SMTP_SERVER__V_DATA) {
        in_data = true;
        midline = false;
      }
    } else {
      struct smtp_server__data_line l;
      bool partial_ok = left > SMTP_SERVER__TEXT_LINE_MAX;
      enum smtp_server__parse st =
          smtp_server__data_scan(p, left, midline, partial_ok, &l);
      check_data(p, left, midline, partial_ok, st, &l);
      /* Asking for fragments never changes a complete line's answer. */
      struct smtp_server__data_line l2;
      enum smtp_server__parse st2 =
          smtp_server__data_scan(p, left, midline, true, &l2);
      check_data(p, left, midline, true, st2, &l2);
      if (st == SMTP_SERVER__OK && !l.partial)
        FUZZ_CHECK(st2 == st && l2.consumed == l.consumed && l2.n == l.n &&
                   l2.end == l.end && l2.bad == l.bad);
      if (st == SMTP_SERVER__NEED_MORE)
        break;
      pos += l.consumed;
      midline = l.partial;
      if (l.end)
        in_data = false;
    }
  }
  free(buf);
  return 0;
}
