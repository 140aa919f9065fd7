/*
 * net/smtp_syntax.c - character-level SMTP syntax shared by the client and
 * the server (see smtp_syntax.h).
 *
 * Invariants: no allocation, no global state, no reads outside p[0..n).
 */
#include "net/smtp_syntax.h"

#include "base/postern_utf8.h"

static bool is_hex_upper(int c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

bool smtp_syntax_xtext_ok(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '+') {
      if (i + 2 >= n || !is_hex_upper(p[i + 1]) || !is_hex_upper(p[i + 2]))
        return false;
      i += 2;
    } else if (p[i] < 33 || p[i] > 126 || p[i] == '=') {
      return false;
    }
  }
  return true;
}

/* Whether p[0..n) is "utf-8" in any case. */
static bool is_utf8_type(const char *p, size_t n) {
  static const char lit[] = "utf-8";
  if (n != sizeof lit - 1)
    return false;
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)p[i];
    if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != lit[i])
      return false;
  }
  return true;
}

bool smtp_syntax_orcpt_ok(const char *p, size_t n) {
  const char *semi = memchr(p, ';', n);
  if (semi == NULL || semi == p)
    return false;
  size_t tn = (size_t)(semi - p);
  for (size_t i = 0; i < tn; i++)
    if (!smtp_syntax_is_atext((unsigned char)p[i]))
      return false;
  const char *v = semi + 1;
  size_t vn = n - tn - 1;
  if (vn == 0)
    return false;
  if (!is_utf8_type(p, tn))
    return smtp_syntax_xtext_ok(v, vn);
  for (size_t i = 0; i < vn;) {
    unsigned char c = (unsigned char)v[i];
    if (c >= 0x80) {
      size_t k = postern_utf8_len((const unsigned char *)v + i, vn - i);
      if (k == 0)
        return false;
      i += k;
    } else if (c < 33 || c > 126 || c == '=') {
      return false;
    } else {
      i++;
    }
  }
  return true;
}
