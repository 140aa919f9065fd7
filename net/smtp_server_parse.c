/*
 * smtp_server_parse.c - pure parsers of the SMTP server: command lines
 * (RFC 5321 §4.1, with the parameters of RFC 1870 SIZE, RFC 6152 8BITMIME,
 * RFC 6531 SMTPUTF8, RFC 3461 DSN and RFC 8689 REQUIRETLS) and DATA
 * content lines.
 *
 * Invariants: no allocation, no global state, no reads outside buf[0..len).
 * Every answer is one of NEED_MORE, OK, PROTO_ERROR. Results point into the
 * caller's buffer. This file is the fuzz target's surface.
 *
 * Leniency, deliberately chosen (Postel where harmless, strict where the
 * input shapes what we store or relay):
 *  - verbs and parameter keywords are case-insensitive (§2.4);
 *  - "MAIL FROM: <a@b>" with spaces after the colon is accepted, as most
 *    servers do; the angle brackets themselves are required;
 *  - a source route ("<@a,@b:u@c>") is accepted and dropped (§4.1.1.3);
 *  - a command line must end in CRLF: a bare LF ends the line (so we can
 *    resynchronise) but the command is refused, and a NUL byte refuses the
 *    line (§2.3.8: bare CR/LF are not line ends, NUL is not text).
 */
#include "net/smtp_server.h"
#include "net/smtp_server_internal.h"
#include "net/smtp_syntax.h"

#include "base/postern_domain.h"
#include "base/postern_utf8.h"

#include <arpa/inet.h>
#include <string.h>

static const char *const verb_names[] = {
#define VERB_NAME(name, str) str,
    SMTP_SERVER__VERB_MAP(VERB_NAME)
#undef VERB_NAME
};

const char *smtp_server__verb_name(enum smtp_server__verb v) {
  if ((unsigned)v < sizeof verb_names / sizeof verb_names[0])
    return verb_names[v];
  return "?";
}

/* ---- character classes ---------------------------------------------- */

static int lower(int c) {
  return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool is_alpha(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static bool is_digit(int c) {
  return c >= '0' && c <= '9';
}

static bool ieq(const char *p, size_t n, const char *lit) {
  size_t m = strlen(lit);
  if (n != m)
    return false;
  for (size_t i = 0; i < n; i++)
    if (lower((unsigned char)p[i]) != lower((unsigned char)lit[i]))
      return false;
  return true;
}

static bool iprefix(const char *p, size_t n, const char *lit) {
  size_t m = strlen(lit);
  return n >= m && ieq(p, m, lit);
}

/* ---- addresses (RFC 5321 §4.1.2, RFC 6531 §3.3) ----------------------- */

static bool dot_string_ok(const unsigned char *p, size_t n, bool *utf8) {
  if (n == 0 || p[0] == '.' || p[n - 1] == '.')
    return false;
  for (size_t i = 0; i < n;) {
    if (p[i] == '.') {
      if (p[i + 1] == '.')
        return false;
      i++;
    } else if (p[i] >= 0x80) {
      size_t k = postern_utf8_len(p + i, n - i);
      if (k == 0)
        return false;
      *utf8 = true;
      i += k;
    } else if (smtp_syntax_is_atext(p[i])) {
      i++;
    } else {
      return false;
    }
  }
  return true;
}

static bool quoted_string_ok(const unsigned char *p, size_t n, bool *utf8) {
  if (n < 2 || p[0] != '"' || p[n - 1] != '"')
    return false;
  for (size_t i = 1; i < n - 1;) {
    unsigned c = p[i];
    if (c == '\\') {
      if (i + 1 >= n - 1 || p[i + 1] < 32 || p[i + 1] > 126)
        return false;
      i += 2;
    } else if (c >= 0x80) {
      size_t k = postern_utf8_len(p + i, n - 1 - i);
      if (k == 0)
        return false;
      *utf8 = true;
      i += k;
    } else if (c == 32 || c == 33 || (c >= 35 && c <= 91) ||
               (c >= 93 && c <= 126)) {
      i++;
    } else {
      return false;
    }
  }
  return true;
}

/* A domain name: dot-separated labels of letters, digits, hyphens (not at
 * either end) or UTF-8 (U-labels, RFC 6531), each 1..63 octets, at most
 * SMTP_SERVER__DOMAIN_MAX octets in all. */
static bool domain_ok(const unsigned char *p, size_t n, bool *utf8) {
  return postern_domain_check((const char *)p, n, POSTERN_DOMAIN_SMTP, utf8,
                              NULL) == 0;
}
_Static_assert(SMTP_SERVER__DOMAIN_MAX == 255,
               "POSTERN_DOMAIN_SMTP allows RFC 5321's 255 octets");

static bool address_literal_ok(const char *p, size_t n) {
  char buf[64];
  struct in6_addr a6;
  if (n < 3 || p[0] != '[' || p[n - 1] != ']' || n - 2 >= sizeof buf)
    return false;
  memcpy(buf, p + 1, n - 2);
  buf[n - 2] = '\0';
  if (iprefix(buf, n - 2, "IPv6:"))
    return inet_pton(AF_INET6, buf + 5, &a6) == 1;
  return inet_pton(AF_INET, buf, &a6) == 1;
}

bool smtp_server__mailbox_ok(const char *s, size_t n, bool *utf8) {
  const unsigned char *p = (const unsigned char *)s;
  *utf8 = false;
  if (n == 0 || n > SMTP_SERVER__PATH_MAX - 2)
    return false;
  /* The local part ends at the last '@' that is not inside quotes; the
   * domain can never contain '@' or '"', so the last '@' is it. */
  const unsigned char *at = NULL;
  for (size_t i = n; i > 0; i--) {
    if (p[i - 1] == '@') {
      at = p + i - 1;
      break;
    }
  }
  if (at == NULL)
    return false;
  size_t ln = (size_t)(at - p), dn = n - ln - 1;
  if (ln == 0 || ln > SMTP_SERVER__LOCAL_MAX || dn == 0)
    return false;
  bool ok =
      p[0] == '"' ? quoted_string_ok(p, ln, utf8) : dot_string_ok(p, ln, utf8);
  if (!ok)
    return false;
  if (at[1] == '[')
    return address_literal_ok((const char *)at + 1, dn);
  return domain_ok(at + 1, dn, utf8);
}

bool smtp_server__helo_ok(const char *p, size_t n) {
  /* RFC 5321 §4.1.1.1 asks for a domain or an address literal, but in the
   * wild many clients send bare host names with underscores and the like.
   * The name only appears in our Received: header, so what matters is that
   * it is one printable token: no spaces, no controls, no 8-bit bytes. */
  if (n == 0 || n > SMTP_SERVER__DOMAIN_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)p[i] <= 32 || (unsigned char)p[i] >= 127)
      return false;
  if (p[0] == '[')
    return address_literal_ok(p, n);
  return true;
}

/* ---- command lines ---------------------------------------------------- */

#define R_TOO_LONG "500 5.5.2 Line too long"
#define R_BARE_LF "500 5.5.2 Bare LF not allowed, lines end with CRLF"
#define R_NUL "500 5.5.2 NUL byte not allowed"
#define R_UNKNOWN "500 5.5.1 Command unrecognized"
#define R_NOARGS "501 5.5.4 Syntax error, no parameters allowed"
#define R_MAIL_SYNTAX "501 5.5.4 Syntax: MAIL FROM:<address>"
#define R_RCPT_SYNTAX "501 5.5.4 Syntax: RCPT TO:<address>"
#define R_BAD_SENDER "501 5.1.7 Bad sender address syntax"
#define R_BAD_RCPT "501 5.1.3 Bad recipient address syntax"
#define R_PARAM_SYNTAX "501 5.5.4 Syntax error in parameters"
#define R_PARAM_DUP "501 5.5.4 Duplicate parameter"
#define R_PARAM_UNKNOWN "555 5.5.4 Unsupported parameter"
#define R_HELO_SYNTAX "501 5.5.4 Syntax: EHLO hostname"
#define R_HELO_BAD "501 5.5.2 Invalid hostname"
#define R_VRFY_SYNTAX "501 5.5.4 Syntax: VRFY address"

static enum smtp_server__parse fail(struct smtp_server__cmd *c,
                                    const char *reply) {
  c->reply = reply;
  return SMTP_SERVER__PROTO_ERROR;
}

/* Finds the '>' closing a path that opens at p[0] == '<', skipping quoted
 * strings. Returns its index or 0. */
static size_t path_end(const char *p, size_t n) {
  bool q = false;
  for (size_t i = 1; i < n; i++) {
    if (q && p[i] == '\\') {
      i++;
    } else if (p[i] == '"') {
      q = !q;
    } else if (!q && p[i] == '>') {
      return i;
    }
  }
  return 0;
}

/* Parses "<...>" at the start of p[0..n) into c->addr. Returns bytes used or
 * 0 on a syntax error. `null_ok` admits "<>" (reverse-path). */
static size_t parse_path(const char *p, size_t n, bool null_ok,
                         struct smtp_server__cmd *c) {
  if (n < 2 || p[0] != '<')
    return 0;
  size_t e = path_end(p, n);
  if (e == 0 || e + 1 > SMTP_SERVER__PATH_MAX)
    return 0;
  const char *a = p + 1;
  size_t an = e - 1;
  if (an == 0) {
    if (!null_ok)
      return 0;
    c->addr.p = a;
    c->addr.n = 0;
    return e + 1;
  }
  if (a[0] == '@') {
    /* A-d-l ":" : each At-domain must be "@" Domain, separated by ",". */
    const char *colon = memchr(a, ':', an);
    if (colon == NULL)
      return 0;
    const char *d = a;
    while (d < colon) {
      const char *comma = memchr(d, ',', (size_t)(colon - d));
      const char *de = comma ? comma : colon;
      bool u = false;
      if (d[0] != '@' ||
          !domain_ok((const unsigned char *)d + 1, (size_t)(de - d - 1), &u))
        return 0;
      d = de + (comma ? 1 : 0);
      if (comma == NULL)
        break;
    }
    an -= (size_t)(colon + 1 - a);
    a = colon + 1;
  }
  if (!null_ok && ieq(a, an, "postmaster")) {
    c->postmaster = true;
  } else if (!smtp_server__mailbox_ok(a, an, &c->addr_utf8)) {
    return 0;
  }
  c->addr.p = a;
  c->addr.n = an;
  return e + 1;
}

static bool parse_u64(const char *p, size_t n, uint64_t *out) {
  uint64_t v = 0;
  if (n == 0)
    return false;
  for (size_t i = 0; i < n; i++) {
    if (!is_digit((unsigned char)p[i]))
      return false;
    unsigned d = (unsigned)(p[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      v = UINT64_MAX; /* saturate: the size check turns it into a 552 */
    else
      v = v * 10 + d;
  }
  *out = v;
  return true;
}

static bool parse_notify(const char *p, size_t n, unsigned *out) {
  unsigned f = 0;
  while (n > 0) {
    const char *comma = memchr(p, ',', n);
    size_t k = comma ? (size_t)(comma - p) : n;
    unsigned bit;
    if (ieq(p, k, "NEVER"))
      bit = SMTP_SERVER_NOTIFY_NEVER;
    else if (ieq(p, k, "SUCCESS"))
      bit = SMTP_SERVER_NOTIFY_SUCCESS;
    else if (ieq(p, k, "FAILURE"))
      bit = SMTP_SERVER_NOTIFY_FAILURE;
    else if (ieq(p, k, "DELAY"))
      bit = SMTP_SERVER_NOTIFY_DELAY;
    else
      return false;
    if (f & bit)
      return false;
    f |= bit;
    if (comma == NULL)
      break;
    n -= k + 1;
    p = comma + 1;
    if (n == 0)
      return false; /* trailing comma */
  }
  /* RFC 3461 §4.1: NEVER stands alone. */
  if (f == 0 ||
      ((f & SMTP_SERVER_NOTIFY_NEVER) && f != SMTP_SERVER_NOTIFY_NEVER))
    return false;
  *out = f;
  return true;
}

/* ORCPT=addr-type;xtext (RFC 3461 §4.2, RFC 6533 §3 for "utf-8"), at most
 * SMTP_SERVER__ORCPT_MAX characters (RFC 3461 §4.2: 500). */
static bool parse_orcpt(const char *p, size_t n) {
  return n <= SMTP_SERVER__ORCPT_MAX && smtp_syntax_orcpt_ok(p, n);
}

/* Parses SP-separated esmtp-params of MAIL (is_mail) or RCPT. */
static enum smtp_server__parse parse_params(const char *p, size_t n,
                                            bool is_mail,
                                            struct smtp_server__cmd *c) {
  unsigned seen = 0;
  size_t i = 0;
  while (i < n) {
    if (p[i] == ' ') {
      i++;
      continue;
    }
    size_t s = i;
    while (i < n && p[i] != ' ')
      i++;
    const char *kw = p + s;
    const char *eq = memchr(kw, '=', i - s);
    size_t kn = eq ? (size_t)(eq - kw) : i - s;
    const char *v = eq ? eq + 1 : NULL;
    size_t vn = eq ? (size_t)(p + i - v) : 0;
    /* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
    if (kn == 0 ||
        !(is_alpha((unsigned char)kw[0]) || is_digit((unsigned char)kw[0])))
      return fail(c, R_PARAM_SYNTAX);
    for (size_t k = 1; k < kn; k++)
      if (!is_alpha((unsigned char)kw[k]) && !is_digit((unsigned char)kw[k]) &&
          kw[k] != '-')
        return fail(c, R_PARAM_SYNTAX);
    if (eq != NULL && vn == 0)
      return fail(c, R_PARAM_SYNTAX);
    unsigned bit;
    if (is_mail && ieq(kw, kn, "SIZE")) {
      bit = 1;
      if (!v || !parse_u64(v, vn, &c->size))
        return fail(c, "501 5.5.4 Bad SIZE parameter");
      c->has_size = true;
    } else if (is_mail && ieq(kw, kn, "BODY")) {
      bit = 2;
      if (v && ieq(v, vn, "7BIT"))
        c->body = SMTP_SERVER_BODY_7BIT;
      else if (v && ieq(v, vn, "8BITMIME"))
        c->body = SMTP_SERVER_BODY_8BITMIME;
      else
        return fail(c, "501 5.5.4 Bad BODY parameter (7BIT or 8BITMIME)");
    } else if (is_mail && ieq(kw, kn, "SMTPUTF8")) {
      bit = 4;
      if (v)
        return fail(c, "501 5.5.4 SMTPUTF8 takes no value");
      c->smtputf8 = true;
    } else if (is_mail && ieq(kw, kn, "RET")) {
      bit = 8;
      if (v && ieq(v, vn, "FULL"))
        c->ret = SMTP_SERVER_RET_FULL;
      else if (v && ieq(v, vn, "HDRS"))
        c->ret = SMTP_SERVER_RET_HDRS;
      else
        return fail(c, "501 5.5.4 Bad RET parameter (FULL or HDRS)");
    } else if (is_mail && ieq(kw, kn, "ENVID")) {
      bit = 16;
      if (!v || vn > SMTP_SERVER__ENVID_MAX || !smtp_syntax_xtext_ok(v, vn))
        return fail(c, "501 5.5.4 Bad ENVID parameter");
      c->envid.p = v;
      c->envid.n = vn;
    } else if (is_mail && ieq(kw, kn, "REQUIRETLS")) {
      /* RFC 8689 §2: the parameter has no value. */
      bit = 128;
      if (v)
        return fail(c, "501 5.5.4 REQUIRETLS takes no value");
      c->requiretls = true;
    } else if (is_mail && ieq(kw, kn, "AUTH")) {
      /* RFC 4954 §5: AUTH=<> or AUTH=xtext-encoded mailbox. Accepted from
       * any client and not trusted: it only says who submitted. */
      bit = 256;
      if (!v || vn > SMTP_SERVER__PATH_MAX * 3 ||
          !(ieq(v, vn, "<>") || smtp_syntax_xtext_ok(v, vn)))
        return fail(c, "501 5.5.4 Bad AUTH parameter");
      c->auth_param.p = v;
      c->auth_param.n = vn;
    } else if (!is_mail && ieq(kw, kn, "NOTIFY")) {
      bit = 32;
      if (!v || !parse_notify(v, vn, &c->notify))
        return fail(c, "501 5.5.4 Bad NOTIFY parameter");
    } else if (!is_mail && ieq(kw, kn, "ORCPT")) {
      bit = 64;
      if (!v || !parse_orcpt(v, vn))
        return fail(c, "501 5.5.4 Bad ORCPT parameter");
      c->orcpt.p = v;
      c->orcpt.n = vn;
    } else {
      return fail(c, R_PARAM_UNKNOWN);
    }
    if (seen & bit)
      return fail(c, R_PARAM_DUP);
    seen |= bit;
  }
  return SMTP_SERVER__OK;
}

static enum smtp_server__parse parse_mail_rcpt(const char *a, size_t n,
                                               bool is_mail,
                                               struct smtp_server__cmd *c) {
  const char *kw = is_mail ? "FROM:" : "TO:";
  size_t kl = strlen(kw);
  if (!iprefix(a, n, kw))
    return fail(c, is_mail ? R_MAIL_SYNTAX : R_RCPT_SYNTAX);
  a += kl;
  n -= kl;
  while (n > 0 && a[0] == ' ') {
    a++;
    n--;
  }
  if (n == 0 || a[0] != '<')
    return fail(c, is_mail ? R_MAIL_SYNTAX : R_RCPT_SYNTAX);
  size_t used = parse_path(a, n, is_mail, c);
  if (used == 0)
    return fail(c, is_mail ? R_BAD_SENDER : R_BAD_RCPT);
  a += used;
  n -= used;
  if (n > 0 && a[0] != ' ')
    return fail(c, is_mail ? R_BAD_SENDER : R_BAD_RCPT);
  return parse_params(a, n, is_mail, c);
}

size_t smtp_server__cmd_line_max(const char *buf, size_t len) {
  return len >= 5 && ieq(buf, 5, "AUTH ") ? SMTP_SERVER__AUTH_LINE_MAX
                                          : SMTP_SERVER__CMD_LINE_MAX;
}

enum smtp_server__frame smtp_server__line_frame(const char *buf, size_t len,
                                                size_t max, size_t *n,
                                                size_t *consumed) {
  const char *lf = memchr(buf, '\n', len < max ? len : max);
  *n = *consumed = 0;
  if (lf == NULL)
    return len >= max ? SMTP_SERVER__FRAME_LONG : SMTP_SERVER__FRAME_MORE;
  size_t k = (size_t)(lf - buf);
  *consumed = k + 1;
  if (k == 0 || buf[k - 1] != '\r')
    return SMTP_SERVER__FRAME_BARE_LF;
  *n = k - 1;
  return SMTP_SERVER__FRAME_OK;
}

enum smtp_server__parse smtp_server__cmd_parse(const char *buf, size_t len,
                                               struct smtp_server__cmd *c) {
  memset(c, 0, sizeof *c);
  size_t n;
  switch (smtp_server__line_frame(buf, len, smtp_server__cmd_line_max(buf, len),
                                  &n, &c->consumed)) {
  case SMTP_SERVER__FRAME_MORE:
    return SMTP_SERVER__NEED_MORE;
  case SMTP_SERVER__FRAME_LONG:
    c->consumed = 0;
    return fail(c, R_TOO_LONG);
  case SMTP_SERVER__FRAME_BARE_LF:
    return fail(c, R_BARE_LF);
  case SMTP_SERVER__FRAME_OK:
    break;
  }
  if (memchr(buf, '\0', n) != NULL)
    return fail(c, R_NUL);
  if (memchr(buf, '\r', n) != NULL)
    return fail(c, "500 5.5.2 Bare CR not allowed");

  /* Verb: letters up to SP or end of line. */
  size_t vn = 0;
  while (vn < n && buf[vn] != ' ')
    vn++;
  for (unsigned v = 1; v < sizeof verb_names / sizeof verb_names[0]; v++) {
    if (ieq(buf, vn, verb_names[v])) {
      c->verb = (enum smtp_server__verb)v;
      break;
    }
  }
  if (c->verb == SMTP_SERVER__V_NONE)
    return fail(c, R_UNKNOWN);

  /* Argument: after one SP; trailing spaces are tolerated. */
  const char *a = buf + vn;
  size_t an = n - vn;
  if (an > 0) {
    a++;
    an--;
  }
  while (an > 0 && a[an - 1] == ' ')
    an--;
  c->arg.p = a;
  c->arg.n = an;

  switch (c->verb) {
  case SMTP_SERVER__V_EHLO:
  case SMTP_SERVER__V_HELO:
    if (an == 0)
      return fail(c, c->verb == SMTP_SERVER__V_EHLO
                         ? R_HELO_SYNTAX
                         : "501 5.5.4 Syntax: HELO hostname");
    if (!smtp_server__helo_ok(a, an))
      return fail(c, R_HELO_BAD);
    return SMTP_SERVER__OK;
  case SMTP_SERVER__V_MAIL:
    return parse_mail_rcpt(a, an, true, c);
  case SMTP_SERVER__V_RCPT:
    return parse_mail_rcpt(a, an, false, c);
  case SMTP_SERVER__V_BDAT: {
    /* RFC 3030 §3: "BDAT" SP chunk-size [ SP end-marker ] */
    size_t k = 0;
    while (k < an && a[k] != ' ')
      k++;
    if (!parse_u64(a, k, &c->size))
      return fail(c, "501 5.5.4 Syntax: BDAT size [LAST]");
    if (k < an) {
      if (!ieq(a + k + 1, an - k - 1, "LAST"))
        return fail(c, "501 5.5.4 Syntax: BDAT size [LAST]");
      c->last = true;
    }
    c->has_size = true;
    return SMTP_SERVER__OK;
  }
  case SMTP_SERVER__V_AUTH: {
    /* RFC 4954 §4: "AUTH" SP sasl-mech [SP initial-response] */
    size_t k = 0;
    while (k < an && a[k] != ' ')
      k++;
    if (k == 0 || k > 20)
      return fail(c, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
    c->arg.n = k;
    if (k < an) {
      c->auth_ir.p = a + k + 1;
      c->auth_ir.n = an - k - 1;
      if (c->auth_ir.n == 0 || memchr(c->auth_ir.p, ' ', c->auth_ir.n))
        return fail(c, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
    }
    return SMTP_SERVER__OK;
  }
  case SMTP_SERVER__V_DATA:
  case SMTP_SERVER__V_RSET:
  case SMTP_SERVER__V_QUIT:
  case SMTP_SERVER__V_STARTTLS:
    if (an != 0)
      return fail(c, R_NOARGS);
    return SMTP_SERVER__OK;
  case SMTP_SERVER__V_VRFY:
  case SMTP_SERVER__V_EXPN:
    if (an == 0)
      return fail(c, R_VRFY_SYNTAX);
    return SMTP_SERVER__OK;
  case SMTP_SERVER__V_NOOP:
  case SMTP_SERVER__V_HELP:
  case SMTP_SERVER__V_NONE:
    return SMTP_SERVER__OK;
  }
  return SMTP_SERVER__OK;
}

/* ---- DATA lines ------------------------------------------------------- */

static bool has_forbidden(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char ch = p[i];
    if (ch == '\0' || ch == '\r' || ch == '\n')
      return true;
  }
  return false;
}

enum smtp_server__parse
smtp_server__data_scan(const char *buf, size_t len, bool midline,
                       bool partial_ok, struct smtp_server__data_line *l) {
  memset(l, 0, sizeof *l);
  size_t from = 0;
  const char *lf = NULL;
  while (from < len) {
    lf = memchr(buf + from, '\n', len - from);
    if (lf == NULL || (lf > buf && lf[-1] == '\r'))
      break;
    from = (size_t)(lf - buf) + 1; /* a bare LF is content, not a line end */
    lf = NULL;
  }
  size_t n;
  if (lf != NULL) {
    n = (size_t)(lf - buf) - 1; /* payload before CRLF */
    l->consumed = n + 2;
    l->too_long = l->consumed > SMTP_SERVER__TEXT_LINE_MAX;
  } else {
    if (!partial_ok || len < 2)
      return SMTP_SERVER__NEED_MORE;
    n = len - 1; /* keep the last byte: it may be the CR of a CRLF */
    l->consumed = n;
    l->too_long = true;
    l->partial = true;
  }
  l->p = buf;
  l->n = n;
  l->bad = has_forbidden(buf, n);
  if (!midline && lf != NULL && n >= 1 && buf[0] == '.') {
    if (n == 1) {
      l->end = true;
      l->n = 0;
    } else {
      l->p++; /* RFC 5321 §4.5.2: drop the leading dot */
      l->n--;
    }
  }
  return SMTP_SERVER__OK;
}
