/*
 * base/postern_json.c - see postern_json.h. The only code of its own is the
 * choice of what is passed through and what becomes \xHH (on the UTF-8
 * check of postern_utf8.h); everything else is jansson.
 */
#include "base/postern_json.h"

#include "base/postern_utf8.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence starting at p (RFC 3629 §4: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0 - also for
 * DEL and the C1 controls U+0080..U+009F: valid, but a terminal showing
 * the log may obey them (U+009B is CSI), so they are shown as bytes too.
 * C0 controls are left to JSON's own escapes (\n, \u001b). */
static size_t utf8_seq(const unsigned char *p, size_t left) {
  unsigned char c = p[0];
  if (c == 0x7f)
    return 0;
  if (c < 0x80)
    return 1;
  if (c == 0xc2 && left >= 2 && p[1] >= 0x80 && p[1] <= 0x9f)
    return 0; /* C1 control */
  return postern_utf8_len(p, left);
}

json_t *postern_json_str(const char *s, size_t n) {
  if (s == NULL)
    return json_string("");
  const unsigned char *p = (const unsigned char *)s;
  size_t bad = 0;
  for (size_t i = 0; i < n;) {
    size_t k = utf8_seq(p + i, n - i);
    if (k == 0) {
      bad++;
      i++;
    } else {
      i += k;
    }
  }
  if (bad == 0)
    return json_stringn(s, n);
  char *t = malloc(n + bad * 3 + 1);
  if (t == NULL)
    return NULL;
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    size_t k = utf8_seq(p + i, n - i);
    if (k == 0) {
      t[o++] = '\\';
      t[o++] = 'x';
      t[o++] = hex[p[i] >> 4];
      t[o++] = hex[p[i] & 15];
      i++;
    } else {
      memcpy(t + o, p + i, k);
      o += k;
      i += k;
    }
  }
  json_t *v = json_stringn(t, o);
  free(t);
  return v;
}

json_t *postern_json_cstr(const char *s) {
  return postern_json_str(s, s ? strlen(s) : 0);
}

json_t *postern_json_u64(uint64_t v) {
  if (v <= (uint64_t)LLONG_MAX)
    return json_integer((json_int_t)v);
  char buf[32];
  snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
  return json_string(buf);
}

int postern_json_set(json_t *obj, const char *key, json_t *value) {
  if (value == NULL)
    return -1;
  return json_object_set_new(obj, key, value) == 0 ? 0 : -1;
}

int postern_json_print(json_t *v, FILE *f, int nl) {
  if (json_dumpf(v, f, JSON_COMPACT | JSON_ENCODE_ANY) != 0)
    return -1;
  if (nl && fputc('\n', f) == EOF)
    return -1;
  return 0;
}
