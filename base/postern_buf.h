/*
 * base/postern_buf.h - a growing, NUL-terminated byte buffer for building
 * text (messages, reports, metrics pages). Out of memory is sticky: the
 * first failed growth sets `oom` and every later call does nothing, so a
 * builder checks once at the end.
 *
 * Ownership: `p` is malloc'd by the buffer; postern_buf_free releases it,
 * or the caller takes it (and frees it with free()).
 */
#ifndef POSTERN_BASE_BUF_H
#define POSTERN_BASE_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct postern_buf {
  char *p;    /* NULL until the first byte; NUL-terminated after */
  size_t len; /* bytes, without the NUL */
  size_t cap;
  bool oom;
};

/* Appends n bytes (any bytes: a NUL among them is kept). */
void postern_buf_put(struct postern_buf *b, const void *s, size_t n);
/* Appends a C string. */
void postern_buf_puts(struct postern_buf *b, const char *s);
/* Appends printf-style text, whatever its length. */
void postern_buf_printf(struct postern_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Frees the bytes and empties the buffer. */
void postern_buf_free(struct postern_buf *b);

#endif
