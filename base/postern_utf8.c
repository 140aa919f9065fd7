/*
 * postern_utf8.c - the UTF-8 sequence check (postern_utf8.h).
 *
 * Invariant: never reads p[n] or beyond; the code point is rebuilt only to
 * refuse overlong forms, surrogates and values above U+10FFFF.
 */
#include "base/postern_utf8.h"

#include <string.h>

#include <stdint.h>

size_t postern_utf8_len(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  size_t len;
  unsigned min;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
    min = 0x80;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  unsigned cp = c & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

bool postern_has_8bit(const void *data, size_t len) {
  const unsigned char *p = data;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, sizeof w);
    if (w & 0x8080808080808080ull)
      return true;
  }
  for (; i < len; i++)
    if (p[i] >= 0x80)
      return true;
  return false;
}

bool postern_has_8bit_str(const char *s) {
  return s != NULL && postern_has_8bit(s, strlen(s));
}
