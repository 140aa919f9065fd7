/*
 * net/rfc5322.h - pieces of the Internet Message Format (RFC 5322) that
 * Postern writes into mail: the date-time of a Received: trace field (the
 * SMTP server) and of a DSN's Date: and Arrival-Date: fields (engine/dsn).
 *
 * Pure: no allocation, no global state, no locale.
 */
#ifndef POSTERN_NET_RFC5322_H
#define POSTERN_NET_RFC5322_H

#include <stddef.h>
#include <time.h>

/* Room for a date-time from rfc5322_date_format(), NUL included:
 * "Sun, 06 Dec 2026 07:28:42 +0000" is 31 bytes. */
#define RFC5322_DATE_MAX 32

/*
 * Writes `t` as an RFC 5322 §3.3 date-time in UTC ("Sun, 06 Dec 2026
 * 07:28:42 +0000") into out (`cap` bytes, NUL-terminated, cut to fit).
 * English day and month names whatever the locale (§3.3 allows no
 * other). Returns 0, or POSTERN_ERANGE when `t` is not representable or
 * `cap` is too small (out is then "" or the cut text).
 */
int rfc5322_date_format(time_t t, char *out, size_t cap);

/*
 * Length of msg's header section (`n` bytes): up to and including the empty
 * line that ends it (§2.1), or all n bytes when there is none. Lines end at
 * LF with or without CR, so an empty line is "\n" or "\r\n" at the start
 * of a line: "\n\r\n" and a leading "\n" end the header too (a DSN's
 * headers-only return never leaks the body).
 */
size_t rfc5322_header_len(const void *msg, size_t n);

/*
 * Finds the first header field named `name` (case-insensitive, RFC 5322
 * §2.2) in the header section of msg (`len` bytes, up to the first empty
 * line, CRLF or LF line ends), and writes its unstructured value into out:
 * unfolded (§2.2.3), runs of blanks as one space, without blanks at either
 * end, cut to cap - 1 bytes. Returns 0, POSTERN_ENOENT (no such field) or
 * POSTERN_EINVAL (NULL arguments, cap 0).
 */
int rfc5322_header_value(const char *msg, size_t len, const char *name,
                         char *out, size_t cap);

#endif
