/*
 * postern_log.h - structured event logging shared by every module.
 *
 * One event is one line: `ts=... level=info event=delivery id=... rcpt=...`
 * (logfmt) or the same keys as one JSON object per line. Values are always
 * escaped by this module, so text from a hostile peer can never forge a
 * second log line or a key: in logfmt a value holding spaces, quotes, '='
 * or any byte outside printable ASCII is quoted and its bytes escaped (\n,
 * \r, \t, \xHH); in JSON (written by jansson, base/postern_json.h) valid
 * UTF-8 stays as it is, so an SMTPUTF8 address is readable, and a byte that
 * is not valid UTF-8 shows as \xHH.
 *
 * A record is built on the caller's stack and written with one write(2), so
 * lines from several threads never interleave. A record longer than
 * POSTERN_LOG_LINE_MAX is cut and ends with `truncated=yes` (JSON: its
 * longest values are shortened and `"truncated":true` is added).
 */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POSTERN_LOG_LEVEL_MAP(X)                                               \
  X(ERROR, "error")                                                            \
  X(WARN, "warn")                                                              \
  X(INFO, "info")                                                              \
  X(DEBUG, "debug")

enum postern_log_level {
#define POSTERN__LOG_LEVEL(name, str) POSTERN_LOG_##name,
  POSTERN_LOG_LEVEL_MAP(POSTERN__LOG_LEVEL)
#undef POSTERN__LOG_LEVEL
};

#define POSTERN_LOG_FORMAT_MAP(X)                                              \
  X(LOGFMT, "logfmt")                                                          \
  X(JSON, "json")

enum postern_log_format {
#define POSTERN__LOG_FORMAT(name, str) POSTERN_LOG_##name,
  POSTERN_LOG_FORMAT_MAP(POSTERN__LOG_FORMAT)
#undef POSTERN__LOG_FORMAT
};

#define POSTERN_LOG_LINE_MAX 8192

struct postern_log_rec {
  size_t len;
  enum postern_log_level level;
  bool json;
  bool truncated;
  void *obj; /* JSON: the event's json_t object until end() */
  char buf[POSTERN_LOG_LINE_MAX];
};

/*
 * Sets the level below which events are dropped, the format, and where lines
 * go. `path` NULL or "-" means standard error; otherwise the file is opened
 * for appending (created 0640). Returns 0, or a negative code from
 * postern_err.h when the file cannot be opened (the previous destination then
 * stays in use). Safe to call again at runtime (SIGHUP reload).
 */
int postern_log_configure(enum postern_log_level level,
                          enum postern_log_format format, const char *path);

/* Changes only the level. */
void postern_log_set_level(enum postern_log_level level);

/* Sends lines to `fd` (not closed by the logger); for tests. */
void postern_log_set_fd(int fd);

/* Whether events of `level` are currently written. */
bool postern_log_enabled(enum postern_log_level level);

/* "error", "warn", ...; static strings. */
const char *postern_log_level_name(enum postern_log_level level);

/* Parses "error".."debug" into *out. Returns 0 or POSTERN_EINVAL. */
int postern_log_level_parse(const char *s, enum postern_log_level *out);

/*
 * Building one event. begin() stamps ts, level and event; the add functions
 * append one key each (keys are trusted identifiers, values are escaped);
 * end() writes the line. `value` pointers are only read during the call.
 */
void postern_log_begin(struct postern_log_rec *r, enum postern_log_level level,
                       const char *event);
void postern_log_str(struct postern_log_rec *r, const char *key,
                     const char *value);
void postern_log_strn(struct postern_log_rec *r, const char *key,
                      const char *value, size_t n);
void postern_log_int(struct postern_log_rec *r, const char *key, long long v);
void postern_log_uint(struct postern_log_rec *r, const char *key,
                      unsigned long long v);
void postern_log_fmt(struct postern_log_rec *r, const char *key,
                     const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void postern_log_end(struct postern_log_rec *r);

/*
 * Shorthand for an event whose values are all strings: pairs of key and
 * value, ending with NULL.
 *   postern_log(POSTERN_LOG_INFO, "startup", "version", V, NULL);
 */
void postern_log(enum postern_log_level level, const char *event, ...);

/*
 * Escapes `n` bytes of `src` for logfmt into `dst` (capacity `cap`, always
 * NUL-terminated), quoting when needed. Returns the length written. Exposed
 * for the unit tests and for modules that print untrusted text elsewhere.
 */
size_t postern_log_escape(char *dst, size_t cap, const char *src, size_t n);

#endif
