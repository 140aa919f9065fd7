/*
 * postern_domain.c - the domain name check (postern_domain.h).
 *
 * One pass from left to right; a label's length and its first and last
 * characters are checked when the label ends (at a dot or at the end of
 * the name), any other fault at the byte that shows it. The first fault
 * found is the one reported, so an operator sees the leftmost problem.
 * Never reads outside s[0..n).
 */
#include "base/postern_domain.h"

#include "base/postern_err.h"
#include "base/postern_utf8.h"

static int fail(const char **why, const char *text) {
  if (why != NULL)
    *why = text;
  return POSTERN_EINVAL;
}

static bool is_let_dig(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

int postern_domain_check(const char *s, size_t n, unsigned flags, bool *utf8,
                         const char **why) {
  const unsigned char *p = (const unsigned char *)s;
  if ((flags & POSTERN_DOMAIN_WILDCARD) && n >= 2 && p[0] == '*' &&
      p[1] == '.') {
    p += 2;
    n -= 2;
  }
  if ((flags & POSTERN_DOMAIN_TRAILING_DOT) && n > 0 && p[n - 1] == '.')
    n--;
  if (n == 0)
    return fail(why, "empty host name");
  bool smtp = flags & POSTERN_DOMAIN_SMTP;
  bool url = flags & POSTERN_DOMAIN_URL_HOST;
  if (n > (smtp ? 255u : 253u))
    return fail(why, smtp ? "host name longer than 255 bytes"
                          : "host name longer than 253 bytes");
  size_t label = 0;
  for (size_t i = 0; i <= n;) {
    unsigned char c = i < n ? p[i] : '.';
    if (c == '.') {
      if (label == 0 || label > 63)
        return fail(why,
                    "each dot-separated label must have 1 to 63 characters");
      if (!url && (p[i - 1] == '-' || p[i - label] == '-'))
        return fail(why, "a label must not start or end with '-'");
      if (url && i == n) {
        size_t k = 0;
        while (k < label && p[i - label + k] >= '0' && p[i - label + k] <= '9')
          k++;
        if (k == label)
          return fail(why, "the last label must not be all digits");
      }
      label = 0;
      i++;
      continue;
    }
    size_t len = 1;
    if (c >= 0x80 && smtp) {
      len = postern_utf8_len(p + i, n - i);
      if (len == 0)
        return fail(why, "invalid UTF-8 in a host name");
      if (utf8 != NULL)
        *utf8 = true;
    } else if (!is_let_dig(c) && c != '-' && !(url && c == '_')) {
      return fail(why, url    ? "a host name has only letters, digits, '-', "
                                "'_' and '.'"
                       : smtp ? "a host name has only letters, digits, '-', "
                                "'.' and UTF-8"
                              : "a host name has only letters, digits, '-' "
                                "and '.'");
    }
    label += len;
    i += len;
  }
  return 0;
}
