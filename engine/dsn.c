/*
 * dsn.c - builds RFC 3464 delivery status notifications (see dsn.h).
 *
 * Invariants: the output is 7-bit ASCII in CRLF lines, at most 998 bytes a
 * line in every part we write ourselves (long values are folded onto a new
 * line, see db_safe); control bytes in hostile text become spaces; the MIME
 * boundary never occurs in the returned original content.
 */
#include "engine/dsn.h"

#include "base/postern_buf.h"
#include "base/postern_err.h"
#include "base/postern_utf8.h"
#include "net/rfc5322.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Field values we write are cut here so a line never exceeds RFC 5322's
 * 998-byte limit, whatever the remote server sent. */
#define DSN_FIELD_MAX 900
/* A hostile value that would carry its line past this column is folded
 * onto a new line. One value alone never gets there (the longest field name
 * plus DSN_FIELD_MAX is under it), so only the human-readable lines that
 * hold several values (address, remote MTA and diagnostic) fold, and what
 * follows a value on its line (at most a few bytes) stays under 998. */
#define DSN_FOLD_COL 960

struct dbuf {
  struct postern_buf b;
  size_t col; /* bytes since the last LF: the current line's length */
  /* A global report (RFC 6533): well-formed UTF-8 in values is kept. */
  bool utf8;
};

static void db_put(struct dbuf *b, const void *s, size_t n) {
  postern_buf_put(&b->b, s, n);
  size_t i = n;
  while (i > 0 && ((const char *)s)[i - 1] != '\n')
    i--;
  b->col = i > 0 ? n - i : b->col + n;
}

static void db_str(struct dbuf *b, const char *s) {
  db_put(b, s, strlen(s));
}

static void db_fmt(struct dbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void db_fmt(struct dbuf *b, const char *fmt, ...) {
  char tmp[1200];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n >= sizeof tmp)
    n = sizeof tmp - 1;
  db_put(b, tmp, (size_t)n);
}

/* Copies hostile text as one safe header-field value: control bytes and
 * line breaks become spaces, 8-bit bytes become '?' (in a global report,
 * RFC 6533, well-formed UTF-8 stays; C1 controls become spaces), and the value
 * is cut at DSN_FIELD_MAX bytes. A value that would pass DSN_FOLD_COL is
 * folded (CRLF and a space, RFC 5322 §2.2.3), never inside a UTF-8
 * sequence, so a line holding several long values still stays under RFC
 * 5322's 998 bytes. */
static void db_safe(struct dbuf *b, const char *s) {
  char tmp[DSN_FIELD_MAX + 4];
  size_t n = 0, left = s ? strlen(s) : 0;
  while (left > 0 && n < DSN_FIELD_MAX) {
    unsigned char c = (unsigned char)*s;
    size_t k = c >= 0x80 && b->utf8
                   ? postern_utf8_len((const unsigned char *)s, left)
                   : 0;
    if (k > 0) {
      /* A C1 control (U+0080..U+009F) is a control like the others. */
      bool c1 = c == 0xc2 && (unsigned char)s[1] < 0xa0;
      if (c1)
        tmp[n++] = ' ';
      else {
        memcpy(tmp + n, s, k);
        n += k;
      }
      s += k;
      left -= k;
      continue;
    }
    tmp[n++] = c < 0x20 || c == 0x7f ? ' ' : c >= 0x80 ? '?' : (char)c;
    s++;
    left--;
  }
  size_t done = 0;
  while (done < n && !b->b.oom) {
    if (b->col >= DSN_FOLD_COL)
      db_put(b, "\r\n ", 3);
    size_t room = DSN_FOLD_COL - b->col;
    size_t k = n - done < room ? n - done : room;
    /* Not in the middle of a UTF-8 sequence: back to its first byte. */
    while (k > 0 && done + k < n &&
           ((unsigned char)tmp[done + k] & 0xc0) == 0x80)
      k--;
    if (k == 0) /* a sequence longer than the room left: a new line */
      k = n - done < 4 ? n - done : 4;
    db_put(b, tmp + done, k);
    done += k;
  }
}

static bool contains(const uint8_t *hay, size_t n, const char *needle) {
  size_t k = strlen(needle);
  if (k == 0 || k > n)
    return false;
  return memmem(hay, n, needle, k) != NULL;
}

/* Appends the returned content with every line ending normalized to CRLF,
 * so a message with bare LFs cannot produce a malformed report. */
static void db_lines(struct dbuf *b, const uint8_t *m, size_t n) {
  size_t start = 0;
  for (size_t i = 0; i < n; i++) {
    if (m[i] == '\n') {
      size_t end = i;
      if (end > start && m[end - 1] == '\r')
        end--;
      db_put(b, m + start, end - start);
      db_put(b, "\r\n", 2);
      start = i + 1;
    }
  }
  if (start < n) {
    db_put(b, m + start, n - start);
    db_put(b, "\r\n", 2);
  }
}

int dsn_ret_parse(const char *s, enum dsn_ret *out) {
  if (strcasecmp(s, "FULL") == 0)
    *out = DSN_RET_FULL;
  else if (strcasecmp(s, "HDRS") == 0)
    *out = DSN_RET_HDRS;
  else
    return POSTERN_EINVAL;
  return 0;
}

int dsn_build(const struct dsn_input *in, char **out, size_t *outlen) {
  if (in == NULL || in->sender == NULL || in->sender[0] == '\0' ||
      in->nrcpts == 0 || in->rcpts == NULL || in->reporting_mta == NULL)
    return POSTERN_EINVAL;
  const char *host = in->reporting_mta;
  const char *qid = in->queue_id ? in->queue_id : "unknown";
  const uint8_t *orig = in->original;
  size_t olen = orig ? in->original_len : 0;
  size_t hlen = rfc5322_header_len(orig, olen);
  bool full = in->ret == DSN_RET_FULL && olen <= in->full_limit;
  size_t rlen = full ? olen : hlen;

  /* Pick a boundary that does not occur in what we return (RFC 2046 §5.1.1). */
  char boundary[160];
  for (unsigned k = 0;; k++) {
    snprintf(boundary, sizeof boundary, "%.60s.%u/%.60s",
             in->boundary_seed ? in->boundary_seed : qid, k, host);
    for (char *c = boundary; *c; c++)
      if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e || *c == '"')
        *c = '_';
    if (!contains(orig, rlen, boundary))
      break;
  }

  char date[RFC5322_DATE_MAX], arrival[RFC5322_DATE_MAX];
  rfc5322_date_format(in->now, date, sizeof date);
  rfc5322_date_format(in->arrival, arrival, sizeof arrival);
  bool failure = in->kind == DSN_FAILURE;

  /* An internationalized message (RFC 6530: UTF-8 in an address of the
   * report or in the returned header section) gets a global report (RFC
   * 6533): its addresses as they are, the utf-8 address type, and the
   * message/global* types, which a non-SMTPUTF8 path would mangle anyway. */
  bool global = postern_has_8bit_str(in->sender);
  for (size_t i = 0; i < in->nrcpts && !global; i++)
    global = postern_has_8bit_str(in->rcpts[i].addr) ||
             postern_has_8bit_str(in->rcpts[i].orcpt);
  global = global || postern_has_8bit(orig, hlen);

  struct dbuf b = {.utf8 = global};
  db_str(&b, "From: Mail Delivery System <MAILER-DAEMON@");
  db_safe(&b, host);
  db_str(&b, ">\r\nTo: <");
  db_safe(&b, in->sender);
  db_str(&b, ">\r\nSubject: ");
  db_str(&b, failure ? "Undelivered Mail Returned to Sender"
                     : "Delayed Mail (still being retried)");
  db_fmt(&b, "\r\nDate: %s\r\nMessage-ID: <", date);
  db_safe(&b, in->boundary_seed ? in->boundary_seed : qid);
  db_str(&b, ".dsn@");
  db_safe(&b, host);
  db_str(&b, ">\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
             "Content-Type: multipart/report; report-type=");
  db_str(&b, global ? "global-delivery-status" : "delivery-status");
  db_str(&b, ";\r\n\tboundary=\"");
  db_str(&b, boundary);
  /* What we write is 7-bit; the returned original may not be (it came as
   * 8BITMIME). Say so, so that the report is relayed with BODY=8BITMIME
   * (RFC 6152) instead of pretending to be 7-bit. */
  bool eight = global || postern_has_8bit(orig, rlen);
  db_str(&b, eight ? "\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                   : "\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n");
  db_str(&b, "This is a MIME-encapsulated message.\r\n\r\n");

  /* Part 1: the human-readable explanation (RFC 6522 §3). */
  db_fmt(&b,
         "--%s\r\nContent-Description: Notification\r\n"
         "Content-Type: text/plain; charset=%s\r\n\r\n",
         boundary, global ? "utf-8" : "us-ascii");
  db_str(&b, "This is the mail system at host ");
  db_safe(&b, host);
  db_str(&b, ".\r\n\r\n");
  if (failure)
    db_str(&b, "Your message could not be delivered to one or more\r\n"
               "recipients. It is attached below.\r\n\r\n");
  else
    db_str(&b, "Your message could not be delivered yet to one or more\r\n"
               "recipients. Delivery is still being retried; you do not\r\n"
               "need to send it again.\r\n\r\n");
  for (size_t i = 0; i < in->nrcpts; i++) {
    const struct dsn_rcpt *r = &in->rcpts[i];
    db_str(&b, "<");
    db_safe(&b, r->addr);
    db_str(&b, ">: ");
    if (r->remote_mta && r->diagnostic) {
      db_str(&b, "host ");
      db_safe(&b, r->remote_mta);
      db_str(&b, " said: ");
      db_safe(&b, r->diagnostic);
    } else if (r->diagnostic) {
      db_safe(&b, r->diagnostic);
    } else {
      db_str(&b, "status ");
      db_safe(&b, r->status ? r->status : (failure ? "5.0.0" : "4.0.0"));
    }
    db_str(&b, "\r\n\r\n");
  }

  /* Part 2: the machine-readable report (RFC 3464 §2). */
  db_fmt(&b,
         "--%s\r\nContent-Description: Delivery report\r\n"
         "Content-Type: message/%sdelivery-status\r\n\r\n",
         boundary, global ? "global-" : "");
  db_str(&b, "Reporting-MTA: dns; ");
  db_safe(&b, host);
  db_str(&b, "\r\nX-Postern-Queue-ID: ");
  db_safe(&b, qid);
  db_str(&b, "\r\n");
  if (in->envid) {
    db_str(&b, "Original-Envelope-Id: ");
    db_safe(&b, in->envid);
    db_str(&b, "\r\n");
  }
  db_fmt(&b, "Arrival-Date: %s\r\n", arrival);
  for (size_t i = 0; i < in->nrcpts; i++) {
    const struct dsn_rcpt *r = &in->rcpts[i];
    /* RFC 6533 §3: a UTF-8 address is of the utf-8 type. */
    db_str(&b, postern_has_8bit_str(r->addr) ? "\r\nFinal-Recipient: utf-8; "
                                             : "\r\nFinal-Recipient: rfc822; ");
    db_safe(&b, r->addr);
    db_str(&b, "\r\n");
    if (r->orcpt) {
      db_str(&b, "Original-Recipient: ");
      db_safe(&b, r->orcpt);
      db_str(&b, "\r\n");
    }
    db_str(&b, failure ? "Action: failed\r\n" : "Action: delayed\r\n");
    db_str(&b, "Status: ");
    db_safe(&b, r->status ? r->status : (failure ? "5.0.0" : "4.0.0"));
    db_str(&b, "\r\n");
    if (r->remote_mta) {
      db_str(&b, "Remote-MTA: dns; ");
      db_safe(&b, r->remote_mta);
      db_str(&b, "\r\n");
    }
    if (r->diagnostic) {
      db_str(&b, "Diagnostic-Code: smtp; ");
      db_safe(&b, r->diagnostic);
      db_str(&b, "\r\n");
    }
    if (r->last_attempt) {
      char la[RFC5322_DATE_MAX];
      rfc5322_date_format(r->last_attempt, la, sizeof la);
      db_fmt(&b, "Last-Attempt-Date: %s\r\n", la);
    }
  }
  db_str(&b, "\r\n");

  /* Part 3: what the sender gets back (RFC 3461 §4.3 RET, RFC 6522 §3);
   * empty when there is nothing to return (a REQUIRETLS message, whose
   * content must not travel where TLS is not assured: RFC 8689 §5). */
  if (full)
    db_fmt(&b,
           "--%s\r\nContent-Description: Undelivered Message\r\n"
           "Content-Type: %s\r\n\r\n",
           boundary, global ? "message/global" : "message/rfc822");
  else
    db_fmt(&b,
           "--%s\r\nContent-Description: Undelivered Message Headers\r\n"
           "Content-Type: %s\r\n\r\n",
           boundary, global ? "message/global-headers" : "text/rfc822-headers");
  db_lines(&b, orig, rlen);
  db_fmt(&b, "\r\n--%s--\r\n", boundary);

  if (b.b.oom) {
    free(b.b.p);
    return POSTERN_ENOMEM;
  }
  *out = b.b.p;
  *outlen = b.b.len;
  return 0;
}
