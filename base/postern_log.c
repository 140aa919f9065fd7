/*
 * postern_log.c - structured logging (see postern_log.h).
 *
 * Invariants: every byte of a value passes through an escaper; a line is
 * written with one write(2) call; the global settings are atomics so a
 * reload on one thread never tears a line being written on another.
 */
#include "base/postern_log.h"
#include "base/postern_utf8.h"

#include "base/postern_err.h"
#include "base/postern_json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = POSTERN_LOG_INFO;
static _Atomic int log_json = 0;
static _Atomic int log_fd = 2;
static _Atomic int log_owned_fd = -1;

static const char *const level_names[] = {
#define POSTERN__LOG_NAME(name, str) str,
    POSTERN_LOG_LEVEL_MAP(POSTERN__LOG_NAME)
#undef POSTERN__LOG_NAME
};

const char *postern_log_level_name(enum postern_log_level level) {
  if ((unsigned)level < sizeof level_names / sizeof level_names[0])
    return level_names[level];
  return "unknown";
}

int postern_log_level_parse(const char *s, enum postern_log_level *out) {
  for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
    if (strcmp(s, level_names[i]) == 0) {
      *out = (enum postern_log_level)i;
      return 0;
    }
  }
  return POSTERN_EINVAL;
}

int postern_log_configure(enum postern_log_level level,
                          enum postern_log_format format, const char *path) {
  int fd = 2;
  if (path != NULL && strcmp(path, "-") != 0) {
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
      return postern_err_from_errno(errno);
  }
  atomic_store(&log_level, (int)level);
  atomic_store(&log_json, format == POSTERN_LOG_JSON);
  atomic_store(&log_fd, fd);
  /* The previous file stays open: a thread may be writing to it right now.
   * Reloads are rare, so one descriptor per reload is an acceptable cost. */
  atomic_store(&log_owned_fd, fd == 2 ? -1 : fd);
  return 0;
}

void postern_log_set_level(enum postern_log_level level) {
  atomic_store(&log_level, (int)level);
}

void postern_log_set_fd(int fd) {
  atomic_store(&log_fd, fd);
}

bool postern_log_enabled(enum postern_log_level level) {
  return (int)level <= atomic_load(&log_level);
}

/* Appends raw bytes, marking the record truncated when it no longer fits.
 * Room for the closing "}\n" or "\n" and the truncation marker is kept. */
#define LOG_RESERVE 32

static void rec_raw(struct postern_log_rec *r, const char *s, size_t n) {
  if (r->truncated)
    return;
  if (r->len + n + LOG_RESERVE > sizeof r->buf) {
    r->truncated = true;
    return;
  }
  memcpy(r->buf + r->len, s, n);
  r->len += n;
}

static bool needs_quotes(const unsigned char *s, size_t n) {
  if (n == 0)
    return true;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = s[i];
    if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\')
      return true;
  }
  return false;
}

/* Escapes into dst for logfmt; returns bytes written (without the NUL).
 * Stops early, without cutting an escape sequence, when dst is full. */
static size_t escape_logfmt(char *dst, size_t cap, const unsigned char *s,
                            size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  if (cap == 0)
    return 0;
  bool q = needs_quotes(s, n);
  if (q) {
    if (o + 2 > cap - 1)
      goto done;
    dst[o++] = '"';
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = s[i];
    char tmp[4];
    size_t k = 0;
    /* Well-formed UTF-8 (an SMTPUTF8 address, a U-label) is written as it
     * is, so that logs show it intact; C1 controls (U+0080-U+009F) and
     * bytes that are not UTF-8 are escaped like any control byte. */
    size_t ul = c >= 0x80 ? postern_utf8_len(s + i, n - i) : 0;
    if (ul > 0 && !(c == 0xc2 && s[i + 1] < 0xa0)) {
      if (o + ul + (q ? 1 : 0) > cap - 1)
        break;
      memcpy(dst + o, s + i, ul);
      o += ul;
      i += ul - 1;
      continue;
    }
    if (c == '"' || c == '\\') {
      tmp[k++] = '\\';
      tmp[k++] = (char)c;
    } else if (c == '\n') {
      tmp[k++] = '\\';
      tmp[k++] = 'n';
    } else if (c == '\r') {
      tmp[k++] = '\\';
      tmp[k++] = 'r';
    } else if (c == '\t') {
      tmp[k++] = '\\';
      tmp[k++] = 't';
    } else if (c < 0x20 || c >= 0x7f) {
      tmp[k++] = '\\';
      tmp[k++] = 'x';
      tmp[k++] = hex[c >> 4];
      tmp[k++] = hex[c & 15];
    } else {
      tmp[k++] = (char)c;
    }
    /* keep one byte for the closing quote and one for the NUL */
    if (o + k + (q ? 1 : 0) > cap - 1)
      break;
    memcpy(dst + o, tmp, k);
    o += k;
  }
  if (q)
    dst[o++] = '"';
done:
  dst[o] = '\0';
  return o;
}

size_t postern_log_escape(char *dst, size_t cap, const char *src, size_t n) {
  return escape_logfmt(dst, cap, (const unsigned char *)src, n);
}

static void rec_key(struct postern_log_rec *r, const char *key) {
  rec_raw(r, " ", 1);
  rec_raw(r, key, strlen(key));
  rec_raw(r, "=", 1);
}

/* JSON: one member of the event's object. Out of memory drops the member
 * and marks the line truncated (the line itself still gets out). */
static void rec_json(struct postern_log_rec *r, const char *key, json_t *v) {
  if (r->obj == NULL || postern_json_set(r->obj, key, v) != 0)
    r->truncated = true;
}

void postern_log_strn(struct postern_log_rec *r, const char *key,
                      const char *value, size_t n) {
  if (r->truncated)
    return;
  if (value == NULL) {
    value = "";
    n = 0;
  }
  if (r->json) {
    rec_json(r, key, postern_json_str(value, n));
    return;
  }
  size_t mark = r->len;
  rec_key(r, key);
  if (r->truncated) {
    r->len = mark;
    return;
  }
  size_t room = sizeof r->buf - r->len;
  if (room <= LOG_RESERVE) {
    r->len = mark;
    r->truncated = true;
    return;
  }
  room -= LOG_RESERVE;
  const unsigned char *v = (const unsigned char *)value;
  size_t w = escape_logfmt(r->buf + r->len, room, v, n);
  r->len += w;
  /* A value cut to fit still ends with its closing quote; say it was cut. */
  if (w + 1 >= room)
    r->truncated = true;
}

void postern_log_str(struct postern_log_rec *r, const char *key,
                     const char *value) {
  postern_log_strn(r, key, value, value ? strlen(value) : 0);
}

void postern_log_int(struct postern_log_rec *r, const char *key, long long v) {
  if (r->json) {
    rec_json(r, key, json_integer(v));
    return;
  }
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%lld", v);
  rec_key(r, key);
  rec_raw(r, tmp, (size_t)n);
}

void postern_log_uint(struct postern_log_rec *r, const char *key,
                      unsigned long long v) {
  if (r->json) {
    rec_json(r, key, postern_json_u64(v));
    return;
  }
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%llu", v);
  rec_key(r, key);
  rec_raw(r, tmp, (size_t)n);
}

void postern_log_fmt(struct postern_log_rec *r, const char *key,
                     const char *fmt, ...) {
  char tmp[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0)
    n = 0;
  if ((size_t)n >= sizeof tmp)
    n = sizeof tmp - 1;
  postern_log_strn(r, key, tmp, (size_t)n);
}

void postern_log_begin(struct postern_log_rec *r, enum postern_log_level level,
                       const char *event) {
  struct timespec ts;
  struct tm tm;
  char stamp[40];
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);

  r->len = 0;
  r->level = level;
  r->truncated = false;
  r->json = atomic_load(&log_json) != 0;
  r->obj = NULL;
  if (r->json) {
    r->obj = json_object();
    rec_json(r, "ts", json_string(stamp));
    rec_json(r, "level", json_string(postern_log_level_name(level)));
  } else {
    rec_raw(r, "ts=", 3);
    rec_raw(r, stamp, strlen(stamp));
    rec_raw(r, " level=", 7);
    const char *ln = postern_log_level_name(level);
    rec_raw(r, ln, strlen(ln));
  }
  postern_log_str(r, "event", event);
}

/* The longest string member of the event, or NULL. */
static json_t *longest_str(json_t *obj, const char **key) {
  json_t *best = NULL, *v;
  const char *k;
  json_object_foreach(obj, k, v) {
    if (json_is_string(v) &&
        (best == NULL || json_string_length(v) > json_string_length(best))) {
      best = v;
      *key = k;
    }
  }
  return best;
}

/* Dumps the event into r->buf, shortening its longest values until the
 * line fits (a value is cut on a UTF-8 character boundary, so it stays a
 * valid JSON string). */
static void json_finish(struct postern_log_rec *r) {
  json_t *obj = r->obj;
  size_t cap = sizeof r->buf - 1; /* the newline */
  r->len = 0;
  if (obj == NULL)
    return;
  if (r->truncated)
    json_object_set_new(obj, "truncated", json_true());
  for (int round = 0; round < 64; round++) {
    size_t need = json_dumpb(obj, r->buf, cap, JSON_COMPACT);
    if (need > 0 && need <= cap) {
      r->len = need;
      return;
    }
    const char *key = NULL;
    json_t *v = longest_str(obj, &key);
    if (v == NULL || need == 0)
      break;
    size_t len = json_string_length(v);
    /* Cutting a value by `over` bytes shortens the line by at least as
     * much (escapes only make a value longer on the line). */
    size_t over = need - cap + 32;
    size_t keep = len > over ? len - over : 0;
    const char *txt = json_string_value(v);
    while (keep > 0 && ((unsigned char)txt[keep] & 0xc0) == 0x80)
      keep--;
    json_string_setn_nocheck(v, txt, keep);
    json_object_set_new(obj, "truncated", json_true());
  }
  /* Nothing more can be cut: a minimal, valid line. */
  r->len = (size_t)snprintf(r->buf, cap, "{\"truncated\":true}");
}

void postern_log_end(struct postern_log_rec *r) {
  if (!postern_log_enabled(r->level)) {
    json_decref(r->obj);
    r->obj = NULL;
    return;
  }
  if (r->json) {
    json_finish(r);
    json_decref(r->obj);
    r->obj = NULL;
  } else if (r->truncated) {
    /* LOG_RESERVE guarantees room for the marker and the line end. */
    const char *m = " truncated=yes";
    memcpy(r->buf + r->len, m, strlen(m));
    r->len += strlen(m);
  }
  r->buf[r->len++] = '\n';
  int fd = atomic_load(&log_fd);
  const char *p = r->buf;
  size_t left = r->len;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return; /* Nowhere left to report a logging failure. */
    }
    p += w;
    left -= (size_t)w;
  }
}

void postern_log(enum postern_log_level level, const char *event, ...) {
  if (!postern_log_enabled(level))
    return;
  struct postern_log_rec r;
  postern_log_begin(&r, level, event);
  va_list ap;
  va_start(ap, event);
  for (;;) {
    const char *k = va_arg(ap, const char *);
    if (k == NULL)
      break;
    const char *v = va_arg(ap, const char *);
    postern_log_str(&r, k, v);
  }
  va_end(ap);
  postern_log_end(&r);
}
