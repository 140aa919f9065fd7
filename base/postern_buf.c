/*
 * base/postern_buf.c - the growing text buffer (postern_buf.h). Capacity
 * doubles from 256 bytes; `p` always has room for the terminating NUL.
 */
#include "base/postern_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Makes room for n more bytes and the NUL; false (oom set) when it cannot. */
static bool reserve(struct postern_buf *b, size_t n) {
  if (b->oom)
    return false;
  if (n >= (size_t)-1 / 2 - b->len) {
    b->oom = true;
    return false;
  }
  if (b->len + n + 1 <= b->cap)
    return true;
  size_t nc = b->cap ? b->cap : 256;
  while (nc < b->len + n + 1)
    nc *= 2;
  char *np = realloc(b->p, nc);
  if (np == NULL) {
    b->oom = true;
    return false;
  }
  b->p = np;
  b->cap = nc;
  return true;
}

void postern_buf_put(struct postern_buf *b, const void *s, size_t n) {
  if (!reserve(b, n))
    return;
  if (n > 0)
    memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void postern_buf_puts(struct postern_buf *b, const char *s) {
  postern_buf_put(b, s, strlen(s));
}

void postern_buf_printf(struct postern_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = true;
    return;
  }
  if (!reserve(b, (size_t)n))
    return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void postern_buf_free(struct postern_buf *b) {
  free(b->p);
  *b = (struct postern_buf){0};
}
