/*
 * net/smtp_reply.h - parsing SMTP server replies (RFC 5321 §4.2), a pure
 * function with no I/O and no allocation, shared by the SMTP client, its
 * unit tests and a fuzz target.
 *
 * A reply is one or more lines "CODE-text" ending with "CODE text" (or a
 * bare "CODE"). Every line must carry the same code. RFC 3463 enhanced
 * status codes ("5.1.1") at the start of the text are recognised (RFC 2034)
 * when their class matches the reply code's first digit.
 *
 * Remote input is hostile, so everything is bounded: a line may not exceed
 * SMTP_REPLY_LINE_MAX bytes, a reply SMTP_REPLY_LINES_MAX lines or
 * SMTP_REPLY_BYTES_MAX bytes. Exceeding any bound is a protocol error, as is
 * a malformed code or a continuation line with another code. Lines end in
 * CRLF; a bare LF is tolerated (many servers send it).
 */
#ifndef POSTERN_NET_SMTP_REPLY_H
#define POSTERN_NET_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 §4.5.3.1.5 says 512 octets per reply line; we accept four times
 * that, since long lines are common in the wild. Includes the CRLF. */
#define SMTP_REPLY_LINE_MAX 2048
#define SMTP_REPLY_LINES_MAX 200
#define SMTP_REPLY_BYTES_MAX 65536
/* Reply text kept for logs and DSNs; longer text is cut (text_truncated). */
#define SMTP_REPLY_TEXT_MAX 512

enum smtp_reply_status {
  SMTP_REPLY_NEED_MORE,  /* no complete reply yet: read more, call again */
  SMTP_REPLY_OK,         /* one reply parsed; *consumed bytes used */
  SMTP_REPLY_PROTO_ERROR /* malformed or over a bound: end the session */
};

struct smtp_reply {
  int code;     /* 200..559 */
  bool has_enh; /* an enhanced status code was present */
  char enh[12]; /* "5.1.1" when has_enh, else "" */
  unsigned lines;
  bool text_truncated;
  size_t text_len;
  /* The lines' texts without code, separator and (repeated) enhanced code,
   * joined by single spaces; NUL bytes replaced by '?'. NUL-terminated. */
  char text[SMTP_REPLY_TEXT_MAX + 1];
};

/*
 * Parses the reply at the start of buf[0..len). On SMTP_REPLY_OK fills
 * *out and sets *consumed to the bytes it used (the next reply starts
 * there). On SMTP_REPLY_NEED_MORE the caller keeps the bytes, appends what
 * it reads next and calls again from the same start; *out is unspecified.
 * On SMTP_REPLY_PROTO_ERROR `*why` (if `why` is not NULL) points to a static
 * reason. Never reads outside buf[0..len).
 */
enum smtp_reply_status smtp_reply_parse(const char *buf, size_t len,
                                        struct smtp_reply *out,
                                        size_t *consumed, const char **why);

/* "NEED_MORE", "OK", "PROTO_ERROR"; static strings. */
const char *smtp_reply_status_name(enum smtp_reply_status s);

/*
 * Formats "550 5.1.1 text" (enhanced code only when present) into dst
 * (capacity cap > 0, always NUL-terminated). Returns the length written.
 */
size_t smtp_reply_format(const struct smtp_reply *r, char *dst, size_t cap);

/* 2, 3, 4 or 5: the first digit of the code. */
static inline int smtp_reply_class(const struct smtp_reply *r) {
  return r->code / 100;
}

#endif
