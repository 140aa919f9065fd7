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

#include <stdio.h>

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
