/*
 * net/rfc5322.c - RFC 5322 date-times (see rfc5322.h).
 *
 * The names come from tables, not strftime(), whose %a and %b follow the
 * locale: RFC 5322 §3.3 day-name and month are English only. Always UTC
 * with the zone "+0000" (§3.3: the local offset is allowed, UTC is
 * simplest to compare in logs and traces).
 */
#include "net/rfc5322.h"

#include "base/postern_err.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int rfc5322_date_format(time_t t, char *out, size_t cap) {
  static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
                                     "Thu", "Fri", "Sat"};
  static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
                                       "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"};
  struct tm tm;
  if (cap == 0)
    return POSTERN_ERANGE;
  if (gmtime_r(&t, &tm) == NULL) {
    out[0] = '\0';
    return POSTERN_ERANGE;
  }
  int n = snprintf(out, cap, "%s, %02d %s %04d %02d:%02d:%02d +0000",
                   days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
                   tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return n < 0 || (size_t)n >= cap ? POSTERN_ERANGE : 0;
}

static bool blank(char c) {
  return c == ' ' || c == '\t';
}

int rfc5322_header_value(const char *msg, size_t len, const char *name,
                         char *out, size_t cap) {
  if (msg == NULL || name == NULL || out == NULL || cap == 0)
    return POSTERN_EINVAL;
  size_t nl = strlen(name);
  size_t i = 0;
  while (i < len) {
    /* An empty line ends the header section. */
    if (msg[i] == '\n' || (msg[i] == '\r' && i + 1 < len && msg[i + 1] == '\n'))
      break;
    size_t start = i;
    while (i < len && msg[i] != '\n')
      i++;
    /* The field [start, i); its continuation lines start with a blank. */
    bool match = i - start > nl && msg[start + nl] == ':' &&
                 strncasecmp(msg + start, name, nl) == 0;
    if (!match) {
      i++;
      while (i < len && blank(msg[i])) { /* skip continuations */
        while (i < len && msg[i] != '\n')
          i++;
        i++;
      }
      continue;
    }
    size_t o = 0;
    bool space = false;
    size_t k = start + nl + 1;
    for (;;) {
      for (; k < len && msg[k] != '\n'; k++) {
        char c = msg[k];
        if (c == '\r')
          continue;
        if (blank(c)) {
          space = o > 0;
          continue;
        }
        if (space && o + 1 < cap)
          out[o++] = ' ';
        space = false;
        if (o + 1 < cap)
          out[o++] = c;
      }
      if (k + 1 < len && blank(msg[k + 1])) {
        k++;
        space = o > 0;
        continue;
      }
      break;
    }
    out[o] = '\0';
    return 0;
  }
  return POSTERN_ENOENT;
}

size_t rfc5322_header_len(const void *msg, size_t n) {
  const unsigned char *m = msg;
  size_t start = 0;
  while (start < n) {
    if (m[start] == '\n')
      return start + 1;
    if (m[start] == '\r' && start + 1 < n && m[start + 1] == '\n')
      return start + 2;
    const unsigned char *lf = memchr(m + start, '\n', n - start);
    if (lf == NULL)
      break;
    start = (size_t)(lf - m) + 1;
  }
  return n;
}
