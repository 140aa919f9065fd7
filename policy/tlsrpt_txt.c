/*
 * policy/tlsrpt_txt.c - the `_smtp._tls.<domain>` TXT record of SMTP TLS
 * Reporting (RFC 8460 §3): where a policy domain wants its reports.
 *
 * The record comes from DNS and is hostile, and what it names becomes an
 * SMTP envelope recipient or the URL of an HTTPS request. So the record is
 * checked against the §3 grammar byte by byte (through policy/txt_record.h,
 * the grammar it shares with MTA-STS), each URI against RFC 3986's
 * character set, and a URI is kept only when its target has the one plain
 * form we are willing to send to (tlsrpt.h, struct policy_tlsrpt_uri).
 * Nothing is read at or past a record's `len`; every copy is bounded by
 * POLICY_TLSRPT_URI_MAX.
 *
 * Two kinds of "no": text that breaks the grammar makes the record invalid
 * (POSTERN_EPROTO: §3, the domain does not do TLSRPT), while a well-formed
 * URI we will not use (another scheme, user info, a quoted local part, too
 * long, one too many) is skipped and counted, because §3 wants
 * syntactically valid records accepted and the domain's other URIs still
 * deserve their reports.
 *
 * No state, no allocation; the output is a plain struct the caller owns.
 */
#include "policy/tlsrpt.h"

#include <stdio.h>
#include <string.h>

#include "base/postern_domain.h"
#include "base/postern_err.h"
#include "net/smtp_syntax.h"
#include "policy/tlsrpt_internal.h"
#include "policy/txt_record.h"

#define TLSRPT_VERSION "v=TLSRPTv1"

static bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

static char lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* The value of a hexadecimal digit in either case, or -1. */
static int hex_val(char c) {
  static const char digits[] = "0123456789abcdef";
  const char *d = c != '\0' ? strchr(digits, lower(c)) : NULL;
  return d != NULL ? (int)(d - digits) : -1;
}

/* Whether the n bytes at s are `lit` (lower-case) in any case. */
static bool iequals(const char *s, size_t n, const char *lit) {
  if (strlen(lit) != n)
    return false;
  for (size_t i = 0; i < n; i++)
    if (lower(s[i]) != lit[i])
      return false;
  return true;
}

/* ---- Addresses and host names (shared through tlsrpt_internal.h) ------ */

bool policy__tlsrpt_dot_atom_ok(const char *s, size_t n) {
  if (n == 0 || s[0] == '.' || s[n - 1] == '.')
    return false;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '.' ? s[i + 1] == '.' : !smtp_syntax_is_atext(s[i]))
      return false;
  }
  return true;
}

bool policy__tlsrpt_host_ok(const char *s, size_t n) {
  /* The base rule, and URL_HOST's ban on an all-digit last label: an IPv4
   * address is no host name (RFC 3696 §2). */
  return postern_domain_check(s, n, 0, NULL, NULL) == 0 &&
         postern_domain_check(s, n, POSTERN_DOMAIN_URL_HOST, NULL, NULL) == 0 &&
         memchr(s, '.', n) != NULL;
}

/* Splits at the first '@': the length before it in *ln; false without
 * one. Neither a dot-atom nor a host name holds an '@'. */
static bool at_split(const char *s, size_t n, size_t *ln) {
  const char *at = memchr(s, '@', n);
  *ln = at != NULL ? (size_t)(at - s) : 0;
  return at != NULL;
}

bool policy__tlsrpt_addr_ok(const char *s, size_t n) {
  size_t ln;
  return n <= POLICY__TLSRPT_ADDR_MAX && at_split(s, n, &ln) &&
         ln <= POLICY__TLSRPT_LOCAL_MAX && policy__tlsrpt_dot_atom_ok(s, ln) &&
         policy__tlsrpt_host_ok(s + ln + 1, n - ln - 1);
}

bool policy__tlsrpt_msgid_ok(const char *s, size_t n) {
  size_t ln;
  return n <= POLICY__TLSRPT_MSGID_MAX && at_split(s, n, &ln) &&
         policy__tlsrpt_dot_atom_ok(s, ln) &&
         policy__tlsrpt_dot_atom_ok(s + ln + 1, n - ln - 1);
}

/* ---- One URI ------------------------------------------------------------ */

/*
 * The characters a tlsrpt-uri may hold as they are: RFC 3986's unreserved,
 * gen-delims and sub-delims, and '%' (checked apart), but not ',', '!' and
 * ';', which RFC 8460 §3 says MUST be percent-encoded (',' separates the
 * URIs, ';' the fields).
 */
static bool uri_char(char c) {
  return is_alpha(c) || is_digit(c) ||
         (c != '\0' && strchr("-._~:/?#[]@$&'()*+=%", c) != NULL);
}

/* mailto: (RFC 6068): the part before '?' percent-decoded must be exactly
 * one address (a decoded ',' would make it a list). The hfields are
 * dropped: a report is our message, and a record must not add recipients
 * (to=), nor choose a subject or body. */
static bool mailto_target(const char *s, size_t n, char *target) {
  const char *q = memchr(s, '?', n);
  size_t to_len = q != NULL ? (size_t)(q - s) : n;
  char addr[POLICY_TLSRPT_URI_MAX] = "";
  size_t an = 0;
  for (size_t i = 0; i < to_len; i++) {
    char c = s[i];
    if (c == '%') { /* two hex digits follow: uri_take checked */
      c = (char)(hex_val(s[i + 1]) * 16 + hex_val(s[i + 2]));
      i += 2;
    }
    addr[an++] = c; /* an <= i < n < POLICY_TLSRPT_URI_MAX */
  }
  if (!policy__tlsrpt_addr_ok(addr, an))
    return false;
  /* Domains compare without case (RFC 5321 §2.4); local parts do not. */
  for (char *d = memchr(addr, '@', an); d < addr + an; d++)
    *d = lower(*d);
  memcpy(target, addr, an);
  target[an] = '\0';
  return true;
}

/*
 * https: "//" host [":" port] then a path and query of RFC 3986 pchars.
 * Refused: user info (credentials would go to whoever answers), an IP
 * literal or a host without a dot, an empty or out-of-range port, a
 * fragment (it names nothing on the server), and a percent-encoded control
 * character (an HTTP request line carries the path).
 */
static bool https_target(const char *s, size_t n, char *target) {
  if (n < 2 || s[0] != '/' || s[1] != '/' || memchr(s, '#', n) != NULL)
    return false;
  size_t a = 2, e = a;
  while (e < n && s[e] != '/' && s[e] != '?')
    e++;
  const char *colon = memchr(s + a, ':', e - a);
  size_t host_end = colon != NULL ? (size_t)(colon - s) : e;
  char host[POLICY_TLSRPT_URI_MAX] = "";
  size_t hn = host_end - a;
  for (size_t i = 0; i < hn; i++)
    host[i] = lower(s[a + i]);
  /* '@' and '[' cannot pass the host check: no user info, no literal. */
  if (!policy__tlsrpt_host_ok(host, hn))
    return false;
  host[hn] = '\0';
  unsigned long port = 0;
  if (colon != NULL) {
    size_t p = host_end + 1;
    if (p == e || e - p > 5)
      return false;
    for (; p < e; p++) {
      if (!is_digit(s[p]))
        return false;
      port = port * 10 + (unsigned long)(s[p] - '0');
    }
    if (port == 0 || port > 65535)
      return false;
  }
  for (size_t i = e; i < n; i++) {
    if (s[i] == '[' || s[i] == ']')
      return false;
    if (s[i] == '%') {
      int v = hex_val(s[i + 1]) * 16 + hex_val(s[i + 2]);
      if (v < 0x20 || v == 0x7f)
        return false;
    }
  }
  char port_s[8] = "";
  if (port != 0)
    snprintf(port_s, sizeof port_s, ":%lu", port);
  const char *slash = e < n && s[e] == '/' ? "" : "/";
  int w = snprintf(target, POLICY_TLSRPT_URI_MAX, "https://%s%s%s%.*s", host,
                   port_s, slash, (int)(n - e), s + e);
  return w > 0 && w < POLICY_TLSRPT_URI_MAX;
}

/*
 * Checks one tlsrpt-uri (the n bytes at u, all uri_char) and keeps it in
 * *out when it is usable. Returns 0 (kept or skipped) or POSTERN_EPROTO
 * when it is not a URI at all.
 */
static int uri_take(const char *u, size_t n, struct policy_tlsrpt_record *out) {
  /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" (RFC 3986
   * §3.1); without one it is a relative reference, not a URI. */
  size_t sl = 0;
  while (sl < n &&
         (is_alpha(u[sl]) || (sl > 0 && (is_digit(u[sl]) || u[sl] == '+' ||
                                         u[sl] == '-' || u[sl] == '.'))))
    sl++;
  if (sl == 0 || sl == n || u[sl] != ':')
    return POSTERN_EPROTO;
  for (size_t i = sl; i < n; i++)
    if (u[i] == '%' &&
        (i + 2 >= n || hex_val(u[i + 1]) < 0 || hex_val(u[i + 2]) < 0))
      return POSTERN_EPROTO;

  if (out->nrua == POLICY_TLSRPT_RUA_MAX || n >= POLICY_TLSRPT_URI_MAX) {
    out->nskipped++;
    return 0;
  }
  /* The next free slot; it counts only once nrua includes it. */
  struct policy_tlsrpt_uri *r = &out->rua[out->nrua];
  bool ok = false;
  /* Schemes compare without case (RFC 3986 §3.1). */
  if (iequals(u, sl, "mailto")) {
    r->kind = POLICY_TLSRPT_URI_MAILTO;
    ok = mailto_target(u + sl + 1, n - sl - 1, r->target);
  } else if (iequals(u, sl, "https")) {
    r->kind = POLICY_TLSRPT_URI_HTTPS;
    ok = https_target(u + sl + 1, n - sl - 1, r->target);
  }
  /* The same target twice would get the same report twice. */
  for (size_t k = 0; ok && k < out->nrua; k++)
    if (out->rua[k].kind == r->kind &&
        strcmp(out->rua[k].target, r->target) == 0)
      ok = false;
  if (!ok) {
    out->nskipped++;
    return 0;
  }
  memcpy(r->uri, u, n);
  r->uri[n] = '\0';
  out->nrua++;
  return 0;
}

/* tlsrpt-rua = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri), from *i
 * (just after "rua="); leaves *i after the last URI. */
static int rua_parse(const char *s, size_t n, size_t *i,
                     struct policy_tlsrpt_record *out) {
  size_t k = *i;
  for (;;) {
    size_t start = k;
    while (k < n && uri_char(s[k]))
      k++;
    if (k == start)
      return POSTERN_EPROTO;
    int rc = uri_take(s + start, k - start, out);
    if (rc != 0)
      return rc;
    size_t j = k;
    while (j < n && policy__txt_is_wsp(s[j]))
      j++;
    if (j == n || s[j] != ',')
      break;
    k = j + 1;
    while (k < n && policy__txt_is_wsp(s[k]))
      k++;
  }
  *i = k;
  return 0;
}

struct rua_fields {
  struct policy_tlsrpt_record *out;
  bool have_rua;
};

static int rua_field(void *ctx, const char *name, size_t name_len,
                     const char *s, size_t n, size_t *i) {
  struct rua_fields *st = ctx;
  size_t value_len;
  /* Field names are case-sensitive (%s"rua="): "RUA" is an extension. */
  if (name_len != 3 || memcmp(name, "rua", 3) != 0)
    return policy__txt_ext_value(s, n, i, &value_len); /* ignored (§3) */
  /* One rua field; a second would leave us to guess which counts. */
  if (st->have_rua)
    return POSTERN_EPROTO;
  st->have_rua = true;
  return rua_parse(s, n, i, st->out);
}

int policy_tlsrpt_txt_parse(const struct policy_txt *recs, size_t nrecs,
                            struct policy_tlsrpt_record *out) {
  if (out == NULL)
    return POSTERN_EINVAL;
  /* §3: records not beginning with "v=TLSRPTv1;" are discarded, and if
   * the number left is not one, the domain does not implement TLSRPT. */
  const struct policy_txt *rec;
  int rc = policy__txt_select(recs, nrecs, TLSRPT_VERSION, &rec);
  if (rc != 0)
    return rc;
  struct policy_tlsrpt_record tmp;
  tmp.nrua = 0;
  tmp.nskipped = 0;
  struct rua_fields st = {&tmp, false};
  rc = policy__txt_fields(rec->data, rec->len, sizeof TLSRPT_VERSION - 1,
                          rua_field, &st);
  if (rc == 0 && (!st.have_rua || tmp.nrua == 0))
    rc = POSTERN_EPROTO;
  if (rc == 0)
    *out = tmp;
  return rc;
}
