/*
 * fuzz_dsn.c - libFuzzer target for dsn_build() (engine/dsn.h) with hostile
 * inputs: the original message, addresses, ORCPT, diagnostics, remote MTA
 * names and ENVID come from the input; our own host name and queue ids are
 * well-formed (they come from the configuration and the queue).
 *
 * Input layout (tests/fuzz/make_seeds.py writes seeds in it):
 *   byte 0      bit 0: DSN_DELAY instead of DSN_FAILURE; bits 1-2: RET
 *               (0 default, 1 HDRS, 2 and 3 FULL); bits 3-4: full_limit
 *               (0, 100, 65536, SIZE_MAX); bit 5: a 253-byte host name
 *   byte 1      number of recipients - 1 (mod 4)
 *   bytes 2-13  arrival, now, last_attempt (big-endian u32; 0 = never)
 *   2 bytes     length of the original message, then the message
 *   then        NUL-separated strings: sender, envid, and per recipient
 *               addr, orcpt, status, remote_mta, diagnostic (empty
 *               optional strings are passed as NULL)
 * Beyond "no crash, no leak" it checks what dsn.h and dsn.c promise:
 *  - EINVAL exactly for an empty sender, else 0;
 *  - every LF in the output is part of a CRLF;
 *  - outside the returned original: every CR is part of a CRLF, only
 *    printable 7-bit ASCII and TAB (in a global report, RFC 6533, also
 *    well-formed UTF-8 other than C1 controls), no line over 998 bytes
 *    (RFC 5322 §2.1.1), so hostile text can never exceed a line or break
 *    one;
 *  - the report is global exactly when the sender, a recipient's address
 *    or ORCPT, or the original's header section has a byte >= 0x80;
 *  - the MIME structure cannot be forged: the boundary never occurs in
 *    the returned original, there are exactly three "--B" delimiter lines
 *    and one closing "--B--" line, the last one;
 *  - no header can be added: the top-level header holds exactly the nine
 *    fields the builder writes, once each, and the delivery-status part
 *    holds only RFC 3464 fields, one Final-Recipient and one Action per
 *    recipient and exactly nrcpts + 1 blank lines;
 *  - the returned original is the original with line ends made CRLF: all
 *    of it for RET=FULL within full_limit, otherwise only its header
 *    section, which ends at its first empty line (nothing of the body).
 */
#include "engine/dsn.h"
#include "base/postern_err.h"
#include "base/postern_utf8.h"
#include "tests/fuzz/fuzz_util.h"

#define MAX_RCPTS 4
#define LINE_MAX_RFC5322 998

static const char long_host[] =
    "a123456789012345678901234567890123456789012345678901234567890ab."
    "b123456789012345678901234567890123456789012345678901234567890ab."
    "c123456789012345678901234567890123456789012345678901234567890ab."
    "d1234567890123456789012345678901234567890123456789012345678.net";

/* The original with every line end made CRLF (as dsn.h promises). */
static char *crlf_lines(const uint8_t *m, size_t n, size_t *outlen) {
  char *o = malloc(2 * n + 3);
  size_t k = 0, start = 0;
  for (size_t i = 0; i < n; i++) {
    if (m[i] != '\n')
      continue;
    size_t end = i;
    if (end > start && m[end - 1] == '\r')
      end--;
    memcpy(o + k, m + start, end - start);
    k += end - start;
    o[k++] = '\r';
    o[k++] = '\n';
    start = i + 1;
  }
  if (start < n) {
    memcpy(o + k, m + start, n - start);
    k += n - start;
    o[k++] = '\r';
    o[k++] = '\n';
  }
  *outlen = k;
  return o;
}

/* Checks [from, to) of the output: text we wrote ourselves. */
static void check_own_text(const char *o, size_t from, size_t to,
                           bool global) {
  size_t col = 0;
  for (size_t i = from; i < to; i++) {
    unsigned char c = (unsigned char)o[i];
    if (c >= 0x80) {
      size_t k = postern_utf8_len((const unsigned char *)o + i, to - i);
      FUZZ_CHECK(global && k > 0 &&
                 !(c == 0xc2 && (unsigned char)o[i + 1] < 0xa0));
      col += k;
      i += k - 1;
      FUZZ_CHECK(col <= LINE_MAX_RFC5322);
      continue;
    }
    if (c == '\r') {
      FUZZ_CHECK(i + 1 < to && o[i + 1] == '\n');
      continue;
    }
    if (c == '\n') {
      col = 0;
      continue;
    }
    FUZZ_CHECK((c >= 0x20 && c <= 0x7e) || c == '\t');
    if (++col > LINE_MAX_RFC5322) {
      fprintf(stderr, "line over 998 bytes at offset %zu: %.80s...\n",
              i - col + 1, o + i - col + 1);
      FUZZ_CHECK(col <= LINE_MAX_RFC5322);
    }
  }
}

static bool starts(const char *line, size_t n, const char *lit) {
  size_t k = strlen(lit);
  return n >= k && memcmp(line, lit, k) == 0;
}

static void check_report(const char *o, size_t olen, size_t nrcpts,
                         const uint8_t *orig, size_t origlen, bool want_full,
                         bool want_global) {
  /* Every LF is part of a CRLF, everywhere. */
  for (size_t i = 0; i < olen; i++)
    if (o[i] == '\n')
      FUZZ_CHECK(i > 0 && o[i - 1] == '\r');
  FUZZ_CHECK(olen >= 2 && o[olen - 2] == '\r' && o[olen - 1] == '\n');

  /* The boundary, from the top-level Content-Type. */
  const char *bp = memmem(o, olen, "\tboundary=\"", 11);
  FUZZ_CHECK(bp != NULL);
  bp += 11;
  const char *be = memchr(bp, '"', olen - (size_t)(bp - o));
  FUZZ_CHECK(be != NULL && be > bp);
  size_t bl = (size_t)(be - bp);
  char *b = fuzz_strndup(bp, bl);
  /* At a line start: hostile text never holds a CRLF. */
  static const char gct[] =
      "\r\nContent-Type: multipart/report; report-type=global-delivery-status;";
  bool global = memmem(o, (size_t)(bp - o), gct, sizeof gct - 1) != NULL;
  FUZZ_CHECK(global == want_global);

  /* The returned original: after part 3's header, before the closing
   * delimiter. */
  char *p3 = malloc(bl + 64);
  snprintf(p3, bl + 64, "\r\n--%s\r\nContent-Description: Undelivered ", b);
  const char *h3 = memmem(o, olen, p3, strlen(p3));
  FUZZ_CHECK(h3 != NULL);
  const char *sec = memmem(h3 + 2, olen - (size_t)(h3 + 2 - o), "\r\n\r\n", 4);
  FUZZ_CHECK(sec != NULL);
  bool full = starts(h3 + strlen(p3), olen - (size_t)(h3 + strlen(p3) - o),
                     global ? "Message\r\nContent-Type: message/global\r\n\r\n"
                            : "Message\r\nContent-Type: message/rfc822\r\n\r\n");
  FUZZ_CHECK(full == want_full);
  sec += 4;
  size_t from = (size_t)(sec - o);
  char *close = malloc(bl + 16);
  snprintf(close, bl + 16, "\r\n--%s--\r\n", b);
  size_t cl = strlen(close);
  FUZZ_CHECK(olen >= from + cl && memcmp(o + olen - cl, close, cl) == 0);
  size_t to = olen - cl;

  check_own_text(o, 0, from, global);
  check_own_text(o, to, olen, global);

  /* The returned original versus the original. */
  size_t nlen;
  char *norm = crlf_lines(orig, origlen, &nlen);
  size_t slen = to - from;
  FUZZ_CHECK(slen <= nlen && memcmp(o + from, norm, slen) == 0);
  if (want_full) {
    FUZZ_CHECK(slen == nlen);
  } else {
    /* Headers only: the first empty line, if any, is the section's end. */
    const char *blank = memmem(o + from, slen, "\r\n\r\n", 4);
    if (slen >= 2 && o[from] == '\r' && o[from + 1] == '\n')
      FUZZ_CHECK(slen == 2);
    else if (blank != NULL)
      FUZZ_CHECK(blank + 4 == o + to);
  }
  FUZZ_CHECK(memmem(o + from, slen, b, bl) == NULL);
  free(norm);

  /* Delimiter lines, and the two headers we know line by line. */
  size_t delims = 0, closes = 0, line_no = 0, in_top = 1;
  size_t final_rcpt = 0, actions = 0, ds_blank = 0;
  int ds = 0; /* 0 before part 2, 1 its header, 2 its body, 3 after */
  static const char *const top_fields[] = {
      "From: ",         "To: ",           "Subject: ",
      "Date: ",         "Message-ID: ",   "Auto-Submitted: ",
      "MIME-Version: ", "Content-Type: ", "Content-Transfer-Encoding: "};
  unsigned top_seen[9] = {0};
  static const char *const ds_fields[] = {"Reporting-MTA: dns; ",
                                          "X-Postern-Queue-ID: ",
                                          "Original-Envelope-Id: ",
                                          "Arrival-Date: ",
                                          "Final-Recipient: rfc822; ",
                                          "Final-Recipient: utf-8; ",
                                          "Original-Recipient: ",
                                          "Action: ",
                                          "Status: ",
                                          "Remote-MTA: dns; ",
                                          "Diagnostic-Code: smtp; ",
                                          "Last-Attempt-Date: "};
  size_t pos = 0;
  while (pos < olen) {
    const char *line = o + pos;
    const char *lf = memchr(line, '\n', olen - pos);
    size_t n = (size_t)(lf - line) - 1; /* without CRLF */
    bool in_orig = pos >= from && pos < to;
    if (!in_orig) {
      bool is_delim = n == bl + 2 && line[0] == '-' && line[1] == '-' &&
                      memcmp(line + 2, b, bl) == 0;
      bool is_close = n == bl + 4 && line[0] == '-' && line[1] == '-' &&
                      memcmp(line + 2, b, bl) == 0 && line[n - 2] == '-' &&
                      line[n - 1] == '-';
      delims += is_delim;
      closes += is_close;
      if (is_close)
        FUZZ_CHECK(pos + n + 2 == olen);
      if (in_top) {
        if (n == 0) {
          in_top = 0;
        } else if (line[0] == '\t') {
          FUZZ_CHECK(starts(line, n, "\tboundary=\""));
        } else {
          bool known = false;
          for (size_t k = 0; k < 9; k++)
            if (starts(line, n, top_fields[k])) {
              top_seen[k]++;
              known = true;
            }
          FUZZ_CHECK(known);
        }
      }
      if (ds == 2) {
        if (is_delim) {
          ds = 3;
        } else if (n == 0) {
          ds_blank++;
        } else {
          bool known = false;
          for (size_t k = 0; k < sizeof ds_fields / sizeof ds_fields[0]; k++)
            known = known || starts(line, n, ds_fields[k]);
          FUZZ_CHECK(known);
          final_rcpt += starts(line, n, "Final-Recipient: ");
          actions += starts(line, n, "Action: ");
        }
      } else if (ds == 1 && n == 0) {
        ds = 2;
      } else if (ds == 0 &&
                 starts(line, n,
                        global ? "Content-Type: message/global-delivery-"
                               : "Content-Type: message/delivery-")) {
        ds = 1;
      }
    }
    pos += n + 2;
    line_no++;
  }
  FUZZ_CHECK(delims == 3 && closes == 1);
  for (size_t k = 0; k < 9; k++)
    FUZZ_CHECK(top_seen[k] == 1);
  FUZZ_CHECK(ds == 3);
  FUZZ_CHECK(final_rcpt == nrcpts && actions == nrcpts);
  FUZZ_CHECK(ds_blank == nrcpts + 1);
  free(close);
  free(p3);
  free(b);
}

static bool eight(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] >= 0x80)
      return true;
  return false;
}

static const char *opt(const char *s) {
  return s[0] == '\0' ? NULL : s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fuzz_in in = {data, size};
  uint8_t mode = fuzz_u8(&in);
  size_t nrcpts = 1 + fuzz_u8(&in) % MAX_RCPTS;
  struct dsn_input d;
  memset(&d, 0, sizeof d);
  d.kind = (mode & 1) ? DSN_DELAY : DSN_FAILURE;
  static const enum dsn_ret rets[4] = {DSN_RET_DEFAULT, DSN_RET_HDRS,
                                       DSN_RET_FULL, DSN_RET_FULL};
  d.ret = rets[(mode >> 1) & 3];
  static const size_t limits[4] = {0, 100, 65536, SIZE_MAX};
  d.full_limit = limits[(mode >> 3) & 3];
  d.reporting_mta = (mode & 32) ? long_host : "mail.example.net";
  d.queue_id = "01HZX3K4Q9";
  d.boundary_seed = "01HZX3K5AB";
  d.arrival = (time_t)fuzz_u32(&in);
  d.now = (time_t)fuzz_u32(&in);
  time_t last = (time_t)fuzz_u32(&in);

  size_t olen;
  const uint8_t *op = fuzz_chunk16(&in, &olen);
  uint8_t *orig = malloc(olen ? olen : 1);
  if (olen)
    memcpy(orig, op, olen);
  d.original = orig;
  d.original_len = olen;

  char *strs[2 + 5 * MAX_RCPTS];
  size_t ns = 0;
  strs[ns++] = fuzz_cstr(&in);
  strs[ns++] = fuzz_cstr(&in);
  d.sender = strs[0];
  d.envid = opt(strs[1]);
  struct dsn_rcpt rcpts[MAX_RCPTS];
  for (size_t i = 0; i < nrcpts; i++) {
    for (int k = 0; k < 5; k++)
      strs[ns++] = fuzz_cstr(&in);
    rcpts[i].addr = strs[ns - 5];
    rcpts[i].orcpt = opt(strs[ns - 4]);
    rcpts[i].status = opt(strs[ns - 3]);
    rcpts[i].remote_mta = opt(strs[ns - 2]);
    rcpts[i].diagnostic = opt(strs[ns - 1]);
    rcpts[i].last_attempt = last;
  }
  d.rcpts = rcpts;
  d.nrcpts = nrcpts;

  char *out = NULL;
  size_t outlen = 0;
  int rc = dsn_build(&d, &out, &outlen);
  if (d.sender[0] == '\0') {
    FUZZ_CHECK(rc == POSTERN_EINVAL && out == NULL);
  } else {
    FUZZ_CHECK(rc == 0 && out != NULL && outlen > 0);
    bool want_full = d.ret == DSN_RET_FULL && olen <= d.full_limit;
    bool want_global = eight(d.sender, strlen(d.sender));
    for (size_t i = 0; i < nrcpts; i++)
      want_global = want_global ||
                    eight(rcpts[i].addr, strlen(rcpts[i].addr)) ||
                    (rcpts[i].orcpt &&
                     eight(rcpts[i].orcpt, strlen(rcpts[i].orcpt)));
    /* The header section: up to the first empty line. */
    size_t hl = 0;
    while (hl < olen) {
      const uint8_t *nl = memchr(orig + hl, '\n', olen - hl);
      size_t next = nl ? (size_t)(nl - orig) + 1 : olen;
      bool empty = next - hl == 1 || (next - hl == 2 && orig[hl] == '\r');
      if (empty && nl)
        break;
      hl = next;
    }
    want_global = want_global || eight((const char *)orig, hl);
    check_report(out, outlen, nrcpts, orig, olen, want_full, want_global);
  }
  free(out);
  for (size_t i = 0; i < ns; i++)
    free(strs[i]);
  free(orig);
  return 0;
}
