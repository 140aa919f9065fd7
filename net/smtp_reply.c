/*
 * net/smtp_reply.c - the SMTP reply parser (see smtp_reply.h).
 *
 * The parser is restartable by re-parsing: it keeps no state between calls,
 * the caller hands it the whole unconsumed input again. Re-parsing costs at
 * most SMTP_REPLY_BYTES_MAX per call and keeps the function pure, which is
 * what the unit tests and the fuzz target want.
 */
#include "net/smtp_reply.h"

#include <stdio.h>
#include <string.h>

const char *smtp_reply_status_name(enum smtp_reply_status s) {
  switch (s) {
  case SMTP_REPLY_NEED_MORE:
    return "NEED_MORE";
  case SMTP_REPLY_OK:
    return "OK";
  case SMTP_REPLY_PROTO_ERROR:
    return "PROTO_ERROR";
  }
  return "UNKNOWN";
}

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* Parses 1 to 3 digits at p[0..n); returns how many were used, 0 if none. */
static size_t digits(const char *p, size_t n, size_t max) {
  size_t i = 0;
  while (i < n && i < max && is_digit(p[i])) {
    i++;
  }
  return i;
}

/*
 * Recognises "C.SSS.DDD" (RFC 3463 §2: class 2/4/5, subject and detail of
 * one to three digits) at the start of text[0..n), followed by a space or
 * the end. Returns its length, 0 when there is none.
 */
static size_t enh_len(const char *text, size_t n, int code_class) {
  if (n < 5 || text[0] != '0' + code_class ||
      (code_class != 2 && code_class != 4 && code_class != 5) ||
      text[1] != '.') {
    return 0;
  }
  size_t i = 2;
  size_t d = digits(text + i, n - i, 3);
  if (d == 0 || i + d >= n || text[i + d] != '.') {
    return 0;
  }
  i += d + 1;
  d = digits(text + i, n - i, 3);
  if (d == 0) {
    return 0;
  }
  i += d;
  if (i < n && text[i] != ' ') {
    return 0;
  }
  return i;
}

static void append_text(struct smtp_reply *out, const char *p, size_t n) {
  if (out->text_len > 0 && n > 0) {
    if (out->text_len < SMTP_REPLY_TEXT_MAX) {
      out->text[out->text_len++] = ' ';
    } else {
      out->text_truncated = true;
    }
  }
  size_t room = SMTP_REPLY_TEXT_MAX - out->text_len;
  if (n > room) {
    n = room;
    out->text_truncated = true;
  }
  for (size_t i = 0; i < n; i++) {
    out->text[out->text_len++] = p[i] == '\0' ? '?' : p[i];
  }
  out->text[out->text_len] = '\0';
}

static enum smtp_reply_status fail(const char **why, const char *reason) {
  if (why) {
    *why = reason;
  }
  return SMTP_REPLY_PROTO_ERROR;
}

enum smtp_reply_status smtp_reply_parse(const char *buf, size_t len,
                                        struct smtp_reply *out,
                                        size_t *consumed, const char **why) {
  memset(out, 0, sizeof *out);
  size_t pos = 0;
  for (;;) {
    size_t avail = len - pos;
    size_t scan = avail < SMTP_REPLY_LINE_MAX ? avail : SMTP_REPLY_LINE_MAX;
    const char *nl = memchr(buf + pos, '\n', scan);
    if (!nl) {
      if (avail >= SMTP_REPLY_LINE_MAX) {
        return fail(why, "reply line too long");
      }
      if (len >= SMTP_REPLY_BYTES_MAX) {
        return fail(why, "reply too long");
      }
      /* Reject a garbage start early rather than waiting for a newline. */
      for (size_t i = 0; i < avail && i < 3; i++) {
        if (!is_digit(buf[pos + i])) {
          return fail(why, "malformed reply code");
        }
      }
      return SMTP_REPLY_NEED_MORE;
    }
    const char *line = buf + pos;
    size_t end = (size_t)(nl - line) + 1; /* bytes including LF */
    size_t n = end - 1;
    if (n > 0 && line[n - 1] == '\r') {
      n--;
    }
    if (pos + end > SMTP_REPLY_BYTES_MAX) {
      return fail(why, "reply too long");
    }
    if (++out->lines > SMTP_REPLY_LINES_MAX) {
      return fail(why, "too many reply lines");
    }
    /* RFC 5321 §4.2: the code is three digits, the first 2-5, the second
     * 0-5 (§4.2.1); 1yz replies are never used by SMTP. */
    if (n < 3 || !is_digit(line[0]) || !is_digit(line[1]) ||
        !is_digit(line[2]) || line[0] < '2' || line[0] > '5' || line[1] > '5') {
      return fail(why, "malformed reply code");
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (out->lines == 1) {
      out->code = code;
    } else if (code != out->code) {
      return fail(why, "reply code changes in a multi-line reply");
    }
    char sep = n > 3 ? line[3] : ' ';
    if (sep != ' ' && sep != '-') {
      return fail(why, "malformed reply separator");
    }
    const char *text = n > 4 ? line + 4 : line + n;
    size_t tn = n > 4 ? n - 4 : 0;
    size_t el = enh_len(text, tn, code / 100);
    if (el > 0) {
      if (out->lines == 1) {
        memcpy(out->enh, text, el);
        out->enh[el] = '\0';
        out->has_enh = true;
      }
      /* Drop the code repeated on every line (RFC 2034 §4) when it is the
       * same as the first; keep a different one as text. */
      if (out->has_enh && el == strlen(out->enh) &&
          memcmp(text, out->enh, el) == 0) {
        text += el;
        tn -= el;
        while (tn > 0 && *text == ' ') {
          text++;
          tn--;
        }
      }
    }
    append_text(out, text, tn);
    pos += end;
    if (sep == ' ') {
      *consumed = pos;
      return SMTP_REPLY_OK;
    }
  }
}

size_t smtp_reply_format(const struct smtp_reply *r, char *dst, size_t cap) {
  int n;
  if (r->has_enh) {
    n = snprintf(dst, cap, "%03d %s %s", r->code, r->enh, r->text);
  } else {
    n = snprintf(dst, cap, "%03d %s", r->code, r->text);
  }
  if (n < 0) {
    dst[0] = '\0';
    return 0;
  }
  return (size_t)n < cap ? (size_t)n : cap - 1;
}
