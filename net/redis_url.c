/*
 * net/redis_url.c - the Redis URL parser (redis.h): pure, no I/O.
 *
 * The URL comes from the operator's config, but it carries a secret and
 * ends up in error messages, so it is parsed strictly: every part bounded,
 * numbers parsed digit by digit with range checks, control characters and
 * bad %-escapes refused. Nothing is logged here.
 */
#include "net/redis.h"

#include "base/postern_err.h"

#include <string.h>

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* Copies s[0..n) into out (cap bytes) %XX-decoded; refuses control bytes. */
static int decode(const char *s, size_t n, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '%') {
      int h, l;
      if (i + 2 >= n)
        return POSTERN_EINVAL;
      h = hexval(s[i + 1]);
      l = hexval(s[i + 2]);
      if (h < 0 || l < 0)
        return POSTERN_EINVAL;
      ch = (unsigned char)(h * 16 + l);
      i += 2;
    }
    if (ch < 0x20 || ch == 0x7f)
      return POSTERN_EINVAL;
    if (o + 1 >= cap)
      return POSTERN_EINVAL;
    out[o++] = (char)ch;
  }
  out[o] = '\0';
  return 0;
}

/* Decimal s[0..n) into *out, 0..max, no sign, at most 10 digits. */
static int number(const char *s, size_t n, unsigned long max,
                  unsigned long *out) {
  unsigned long v = 0;
  if (n == 0 || n > 10)
    return POSTERN_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return POSTERN_EINVAL;
    v = v * 10 + (unsigned long)(s[i] - '0');
    if (v > max)
      return POSTERN_EINVAL;
  }
  *out = v;
  return 0;
}

static bool host_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_';
}

static int parse_unix(const char *p, struct redis_url *out) {
  const char *q = strchr(p, '?');
  size_t n = q ? (size_t)(q - p) : strlen(p);
  if (n == 0 || p[0] != '/' || n > REDIS_PATH_MAX)
    return POSTERN_EINVAL;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
      return POSTERN_EINVAL;
  memcpy(out->path, p, n);
  out->path[n] = '\0';
  out->transport = REDIS_UNIX;
  if (q != NULL) {
    unsigned long db;
    if (strncmp(q, "?db=", 4) != 0 ||
        number(q + 4, strlen(q + 4), REDIS_DB_MAX, &db) != 0)
      return POSTERN_EINVAL;
    out->db = (unsigned)db;
  }
  return 0;
}

static int parse_tcp(const char *p, struct redis_url *out) {
  const char *at = strrchr(p, '@');
  const char *h, *hend, *rest;
  unsigned long v;
  out->transport = REDIS_TCP;
  out->port = 6379;
  if (at != NULL) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon == NULL)
      return POSTERN_EINVAL; /* "user@" alone: say ":password@" */
    if (decode(p, (size_t)(colon - p), out->user, sizeof out->user) != 0 ||
        decode(colon + 1, (size_t)(at - colon - 1), out->password,
               sizeof out->password) != 0)
      return POSTERN_EINVAL;
    if (out->password[0] == '\0')
      return POSTERN_EINVAL;
    p = at + 1;
  }
  if (p[0] == '[') {
    h = p + 1;
    hend = strchr(h, ']');
    if (hend == NULL)
      return POSTERN_EINVAL;
    for (const char *x = h; x < hend; x++)
      if (!((*x >= '0' && *x <= '9') || (*x >= 'a' && *x <= 'f') ||
            (*x >= 'A' && *x <= 'F') || *x == ':' || *x == '.'))
        return POSTERN_EINVAL;
    rest = hend + 1;
  } else {
    h = p;
    hend = p;
    while (host_char(*hend))
      hend++;
    rest = hend;
  }
  if (hend == h || (size_t)(hend - h) > REDIS_HOST_MAX)
    return POSTERN_EINVAL;
  memcpy(out->host, h, (size_t)(hend - h));
  out->host[hend - h] = '\0';
  if (*rest == ':') {
    const char *e = rest + 1;
    while (*e >= '0' && *e <= '9')
      e++;
    if (number(rest + 1, (size_t)(e - rest - 1), 65535, &v) != 0 || v == 0)
      return POSTERN_EINVAL;
    out->port = (uint16_t)v;
    rest = e;
  }
  if (*rest == '/') {
    rest++;
    if (*rest != '\0') {
      if (number(rest, strlen(rest), REDIS_DB_MAX, &v) != 0)
        return POSTERN_EINVAL;
      out->db = (unsigned)v;
    }
    return 0;
  }
  return *rest == '\0' ? 0 : POSTERN_EINVAL;
}

int redis_url_parse(const char *s, struct redis_url *out) {
  int rc;
  if (out == NULL)
    return POSTERN_EINVAL;
  memset(out, 0, sizeof *out);
  if (s == NULL || strnlen(s, REDIS_URL_MAX + 1) > REDIS_URL_MAX)
    return POSTERN_EINVAL;
  if (strncmp(s, "redis://", 8) == 0)
    rc = parse_tcp(s + 8, out);
  else if (strncmp(s, "rediss://", 9) == 0) {
    rc = parse_tcp(s + 9, out);
    out->tls = true;
  }
  else if (strncmp(s, "unix://", 7) == 0)
    rc = parse_unix(s + 7, out);
  else
    rc = POSTERN_EINVAL;
  if (rc != 0)
    memset(out, 0, sizeof *out);
  return rc;
}
