/*
 * config.c - pass 2 of config loading: the schema, and the walk that turns
 * the statement tree from config_syntax.c into a `struct postern_config`.
 *
 * One table per block (listen, queue, ...) lists each directive with its
 * type, arity, range, default and field offset. The same tables
 *   - check statements (unknown names, duplicates, arity, block or not),
 *   - convert and range-check values (the type's parse function),
 *   - fill defaults (the default is text in file syntax, parsed by the same
 *     function, so a default can never be out of range unnoticed),
 *   - print the effective configuration (the type's print function), and
 *   - free it (the type's free function).
 * Adding a directive is one table row plus its struct field.
 *
 * Ownership: the configuration owns every string and array it points to;
 * config_free releases them through the schema. Arrays are stored as
 * `T *items; size_t count;` pairs, which the array helpers below treat
 * generically (the layout is checked with static assertions).
 */
#include "engine/config_internal.h"

#include "base/postern_err.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct config__walk {
  const char *file;
  struct config_error *err;
  struct postern_config *cfg;
  unsigned eof_line, eof_col;
};

static int wfail(struct config__walk *w, unsigned line, unsigned col, int code,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int wfail(struct config__walk *w, unsigned line, unsigned col, int code,
                 const char *fmt, ...) {
  char msg[sizeof w->err->message];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  config__error_set(w->err, w->file, line, col, "%s", msg);
  return code;
}

#define FIELD(obj, d) ((void *)((char *)(obj) + (d)->off))
#define CFIELD(obj, d) ((const void *)((const char *)(obj) + (d)->off))
#define QUOTE(word, buf)                                                       \
  config__quote_user((word)->s, (word)->len, buf, sizeof buf)

/* ------------------------------------------------------------- enum names */

static const char *const log_level_names[] = {"error", "warn", "info", "debug",
                                              NULL};
static const char *const log_format_names[] = {"logfmt", "json", NULL};
static const char *const tls_level_names[] = {"none", "encrypted",
                                              "authenticated", NULL};
static const char *const mx_level_names[] = {"none", "mtasts", "dnssec", NULL};
static const char *const tls_version_names[] = {"1.2", "1.3", NULL};
static const char *const policy_kind_names[] = {"local", "mtasts", "dnssec",
                                                "dane", NULL};

static const char *name_of(const char *const *names, size_t n, unsigned v) {
  return v < n ? names[v] : "?";
}
#define NAME_OF(arr, v)                                                        \
  name_of(arr, sizeof arr / sizeof arr[0] - 1, (unsigned)(v))

const char *config_policy_kind_name(enum config_policy_kind k) {
  return NAME_OF(policy_kind_names, k);
}
const char *config_tls_level_name(enum config_tls_level l) {
  return NAME_OF(tls_level_names, l);
}
const char *config_mx_level_name(enum config_mx_level l) {
  return NAME_OF(mx_level_names, l);
}
const char *config_log_level_name(enum config_log_level l) {
  return NAME_OF(log_level_names, l);
}
const char *config_log_format_name(enum config_log_format f) {
  return NAME_OF(log_format_names, f);
}
const char *config_tls_version_name(enum config_tls_version v) {
  return NAME_OF(tls_version_names, v);
}

/* ---------------------------------------------------------------- arrays */

/* `T *items; size_t count;` handled through memcpy so no object is read
 * through a pointer type it was not stored with. */
static size_t arr_count(const void *field) {
  size_t n;
  memcpy(&n, (const char *)field + sizeof(void *), sizeof n);
  return n;
}

static void *arr_items(const void *field) {
  void *p;
  memcpy(&p, field, sizeof p);
  return p;
}

static void *arr_push(void *field, size_t elem) {
  size_t n = arr_count(field);
  char *items = arr_items(field);
  char *ni = realloc(items, (n + 1) * elem);
  if (ni == NULL)
    return NULL;
  memset(ni + n * elem, 0, elem);
  n++;
  memcpy(field, &ni, sizeof ni);
  memcpy((char *)field + sizeof(void *), &n, sizeof n);
  return ni + (n - 1) * elem;
}

static void arr_reset(void *field) {
  void *p = NULL;
  size_t n = 0;
  free(arr_items(field));
  memcpy(field, &p, sizeof p);
  memcpy((char *)field + sizeof(void *), &n, sizeof n);
}

#define ARRAY_LAYOUT(type, items, count)                                       \
  _Static_assert(offsetof(type, count) ==                                      \
                     offsetof(type, items) + sizeof(void *),                   \
                 #type "." #items " must be followed by its count")
ARRAY_LAYOUT(struct postern_config, listens, listen_count);
ARRAY_LAYOUT(struct postern_config, policy, policy_count);
ARRAY_LAYOUT(struct config_listen, accept_from, accept_from_count);
ARRAY_LAYOUT(struct config_delivery, routes, route_count);
ARRAY_LAYOUT(struct config_dns, servers, server_count);

/* --------------------------------------------------------------- printing */

static void put_indent(FILE *f, int indent) {
  for (int i = 0; i < indent; i++)
    fputs("  ", f);
}

/* Characters that print bare and re-read as themselves. */
static bool bare_ok(const char *s) {
  if (*s == 0)
    return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || strchr("-._/:@+,%*[]=~", c)))
      return false;
  }
  return true;
}

/* Writes a value so the lexer reads it back unchanged; '{' is escaped so a
 * value can never turn into an {env:} reference on the way back. */
static void put_value(FILE *f, const char *s) {
  if (bare_ok(s)) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"':
      fputs("\\\"", f);
      break;
    case '\\':
      fputs("\\\\", f);
      break;
    case '\n':
      fputs("\\n", f);
      break;
    case '\t':
      fputs("\\t", f);
      break;
    case '\r':
      fputs("\\r", f);
      break;
    default:
      if (*p < 0x20 || *p == 0x7f || *p == '{')
        fprintf(f, "\\x%02x", *p);
      else
        fputc(*p, f);
    }
  }
  fputc('"', f);
}

static void put_line(FILE *f, int indent, const char *name, const char *v) {
  put_indent(f, indent);
  fputs(name, f);
  fputc(' ', f);
  put_value(f, v);
  fputc('\n', f);
}

static void put_unset(FILE *f, int indent, const struct config__dir *d) {
  put_indent(f, indent);
  fprintf(f, "# %s %s  (unset: %s)\n", d->name, d->synopsis,
          d->unset ? d->unset : "no value");
}

static void print_block(FILE *f, const struct config__block *blk,
                        const void *obj, int indent);
static void free_block(const struct config__block *blk, void *obj);
static int walk_block(struct config__walk *w, const struct config__block *blk,
                      void *obj, const struct config__node *parent);
static int apply_defaults(struct config__walk *w,
                          const struct config__block *blk, void *obj);

/* ------------------------------------------------------------ range text */

static void range_text(const struct config__dir *d, uint64_t v, char *buf,
                       size_t cap);

static int range_check(struct config__walk *w, const struct config__dir *d,
                       const struct config__word *a, uint64_t v) {
  if (v >= d->min && v <= d->max)
    return 0;
  char lo[64], hi[64], got[64];
  range_text(d, d->min, lo, sizeof lo);
  range_text(d, d->max, hi, sizeof hi);
  range_text(d, v, got, sizeof got);
  return wfail(w, a->line, a->col, POSTERN_ECONFIG,
               "'%s' must be between %s and %s, got %s", d->name, lo, hi, got);
}

static int bad_value(struct config__walk *w, const struct config__dir *d,
                     const struct config__word *a, const char *what,
                     const char *why) {
  char q[256];
  return wfail(w, a->line, a->col, POSTERN_ECONFIG, "'%s': invalid %s '%s': %s",
               d->name, what, QUOTE(a, q), why);
}

/* ------------------------------------------------------------ the types */

/* Strings: one parse per kind of check, shared print and free. */
typedef int (*str_check_fn)(const char *s, size_t n, const char **why);

static int check_path(const char *s, size_t n, const char **why) {
  if (n == 0) {
    *why = "empty path";
    return POSTERN_ECONFIG;
  }
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
      *why = "control characters are not allowed in a path";
      return POSTERN_ECONFIG;
    }
  return 0;
}

static int check_user(const char *s, size_t n, const char **why) {
  if (n == 0 || n > 32 || s[0] == '-') {
    *why = "a user name has 1 to 32 characters and does not start with '-'";
    return POSTERN_ECONFIG;
  }
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.')) {
      *why = "a user name has only letters, digits, '_', '-' and '.'";
      return POSTERN_ECONFIG;
    }
  }
  return 0;
}

static int str_set(struct config__walk *w, const struct config__dir *d,
                   void *obj, const struct config__node *st, str_check_fn check,
                   const char *what, bool strip_dot) {
  const struct config__word *a = &st->args[0];
  const char *why;
  if (check(a->s, a->len, &why))
    return bad_value(w, d, a, what, why);
  size_t n = a->len;
  if (strip_dot && n > 1 && a->s[n - 1] == '.')
    n--;
  char *v = strndup(a->s, n);
  if (v == NULL)
    return wfail(w, a->line, a->col, POSTERN_ENOMEM, "out of memory");
  char **field = FIELD(obj, d);
  free(*field);
  *field = v;
  return 0;
}

static int parse_hostname(struct config__walk *w, const struct config__dir *d,
                          void *obj, const struct config__node *st) {
  return str_set(w, d, obj, st, config__hostname_check, "host name", true);
}
static int parse_user(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  return str_set(w, d, obj, st, check_user, "user name", false);
}
static int parse_path(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  return str_set(w, d, obj, st, check_path, "path", false);
}

static void print_str(FILE *f, const struct config__dir *d, const void *obj,
                      int indent) {
  char *const *field = CFIELD(obj, d);
  if (*field == NULL)
    put_unset(f, indent, d);
  else
    put_line(f, indent, d->name, *field);
}

static void free_str(const struct config__dir *d, void *obj) {
  char **field = FIELD(obj, d);
  free(*field);
  *field = NULL;
}

static const struct config__type t_hostname = {"host name", parse_hostname,
                                               print_str, free_str};
static const struct config__type t_user = {"user name", parse_user, print_str,
                                           free_str};
static const struct config__type t_path = {"path", parse_path, print_str,
                                           free_str};

static void free_nothing(const struct config__dir *d, void *obj) {}

/* Numbers. */
typedef int (*num_parse_fn)(const char *s, size_t n, uint64_t *v,
                            const char **why);

static int num_get(struct config__walk *w, const struct config__dir *d,
                   const struct config__node *st, num_parse_fn parse,
                   uint64_t *v) {
  const struct config__word *a = &st->args[0];
  const char *why;
  if (parse(a->s, a->len, v, &why))
    return bad_value(w, d, a, d->type->name, why);
  return range_check(w, d, a, *v);
}

static int parse_duration(struct config__walk *w, const struct config__dir *d,
                          void *obj, const struct config__node *st) {
  uint64_t v;
  int rc = num_get(w, d, st, config__duration_parse, &v);
  if (rc == 0)
    memcpy(FIELD(obj, d), &v, sizeof v);
  return rc;
}

static void print_duration(FILE *f, const struct config__dir *d,
                           const void *obj, int indent) {
  uint64_t v;
  char buf[64];
  memcpy(&v, CFIELD(obj, d), sizeof v);
  config__duration_format(v, buf, sizeof buf);
  put_line(f, indent, d->name, buf);
}

static int parse_size(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  uint64_t v;
  int rc = num_get(w, d, st, config__size_parse, &v);
  if (rc == 0)
    memcpy(FIELD(obj, d), &v, sizeof v);
  return rc;
}

static void print_size(FILE *f, const struct config__dir *d, const void *obj,
                       int indent) {
  uint64_t v;
  char buf[64];
  memcpy(&v, CFIELD(obj, d), sizeof v);
  config__size_format(v, buf, sizeof buf);
  put_line(f, indent, d->name, buf);
}

static int parse_u32(struct config__walk *w, const struct config__dir *d,
                     void *obj, const struct config__node *st) {
  uint64_t v;
  int rc = num_get(w, d, st, config__uint_parse, &v);
  if (rc == 0)
    *(uint32_t *)FIELD(obj, d) = (uint32_t)v;
  return rc;
}

static void print_u32(FILE *f, const struct config__dir *d, const void *obj,
                      int indent) {
  char buf[32];
  snprintf(buf, sizeof buf, "%u", (unsigned)*(const uint32_t *)CFIELD(obj, d));
  put_line(f, indent, d->name, buf);
}

static int parse_u16(struct config__walk *w, const struct config__dir *d,
                     void *obj, const struct config__node *st) {
  uint64_t v;
  int rc = num_get(w, d, st, config__uint_parse, &v);
  if (rc == 0)
    *(uint16_t *)FIELD(obj, d) = (uint16_t)v;
  return rc;
}

static void print_u16(FILE *f, const struct config__dir *d, const void *obj,
                      int indent) {
  char buf[32];
  snprintf(buf, sizeof buf, "%u", (unsigned)*(const uint16_t *)CFIELD(obj, d));
  put_line(f, indent, d->name, buf);
}

/* Decimals are parsed exactly in millionths and stored as double; printing
 * rounds back to millionths, so the round trip is exact. */
static int parse_decimal(struct config__walk *w, const struct config__dir *d,
                         void *obj, const struct config__node *st) {
  uint64_t v;
  int rc = num_get(w, d, st, config__decimal_parse, &v);
  if (rc == 0)
    *(double *)FIELD(obj, d) = (double)v / 1e6;
  return rc;
}

static void print_decimal(FILE *f, const struct config__dir *d, const void *obj,
                          int indent) {
  double v = *(const double *)CFIELD(obj, d);
  char buf[64];
  config__decimal_format((uint64_t)(v * 1e6 + 0.5), buf, sizeof buf);
  put_line(f, indent, d->name, buf);
}

static const struct config__type t_duration = {"duration", parse_duration,
                                               print_duration, free_nothing};
static const struct config__type t_size = {"size", parse_size, print_size,
                                           free_nothing};
static const struct config__type t_u32 = {"number", parse_u32, print_u32,
                                          free_nothing};
static const struct config__type t_u16 = {"number", parse_u16, print_u16,
                                          free_nothing};
static const struct config__type t_decimal = {"decimal number", parse_decimal,
                                              print_decimal, free_nothing};

static void range_text(const struct config__dir *d, uint64_t v, char *buf,
                       size_t cap) {
  if (d->type == &t_duration)
    config__duration_format(v, buf, cap);
  else if (d->type == &t_size)
    config__size_format(v, buf, cap);
  else if (d->type == &t_decimal)
    config__decimal_format(v, buf, cap);
  else
    snprintf(buf, cap, "%llu", (unsigned long long)v);
}

/* Enumerations and booleans. */
static int parse_enum(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  const struct config__word *a = &st->args[0];
  for (int i = 0; d->names[i]; i++) {
    if (strcmp(a->s, d->names[i]) == 0) {
      *(int *)FIELD(obj, d) = i;
      return 0;
    }
  }
  char list[256] = "", q[256];
  size_t o = 0;
  for (int i = 0; d->names[i] && o < sizeof list; i++)
    o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "",
                          d->names[i]);
  return wfail(w, a->line, a->col, POSTERN_ECONFIG,
               "'%s' must be one of %s; got '%s'", d->name, list, QUOTE(a, q));
}

static void print_enum(FILE *f, const struct config__dir *d, const void *obj,
                       int indent) {
  int v = *(const int *)CFIELD(obj, d);
  put_line(f, indent, d->name, d->names[v]);
}

static const char *const bool_names[] = {"no",    "yes",  "off", "on",
                                         "false", "true", NULL};

static int parse_bool(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  const struct config__word *a = &st->args[0];
  for (int i = 0; bool_names[i]; i++) {
    if (strcmp(a->s, bool_names[i]) == 0) {
      *(bool *)FIELD(obj, d) = (i & 1) != 0;
      return 0;
    }
  }
  char q[256];
  return wfail(w, a->line, a->col, POSTERN_ECONFIG,
               "'%s' must be yes or no (or on/off, true/false); got '%s'",
               d->name, QUOTE(a, q));
}

static void print_bool(FILE *f, const struct config__dir *d, const void *obj,
                       int indent) {
  put_line(f, indent, d->name, *(const bool *)CFIELD(obj, d) ? "yes" : "no");
}

static const struct config__type t_enum = {"value", parse_enum, print_enum,
                                           free_nothing};
static const struct config__type t_bool = {"boolean", parse_bool, print_bool,
                                           free_nothing};

/* Addresses. */
static int addr_set(struct config__walk *w, const struct config__dir *d,
                    const struct config__word *a, struct config_addr *out,
                    int default_port, bool port_zero_ok) {
  const char *why;
  struct sockaddr_storage sa;
  socklen_t salen;
  if (config__addr_parse(a->s, a->len, default_port, &sa, &salen, &why))
    return bad_value(w, d, a, "address", why);
  uint16_t port =
      ntohs(sa.ss_family == AF_INET ? ((struct sockaddr_in *)&sa)->sin_port
                                    : ((struct sockaddr_in6 *)&sa)->sin6_port);
  if (port == 0 && !port_zero_ok)
    return bad_value(w, d, a, "address", "port must be from 1 to 65535");
  char buf[64];
  config__addr_format(&sa, buf, sizeof buf);
  char *text = strdup(buf);
  if (text == NULL)
    return wfail(w, a->line, a->col, POSTERN_ENOMEM, "out of memory");
  free(out->text);
  out->text = text;
  out->sa = sa;
  out->salen = salen;
  return 0;
}

/* ADDR:PORT for listening; port 0 asks the kernel for a free port. */
static int parse_addr(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  return addr_set(w, d, &st->args[0], FIELD(obj, d), -1, true);
}

static void print_addr(FILE *f, const struct config__dir *d, const void *obj,
                       int indent) {
  const struct config_addr *a = CFIELD(obj, d);
  if (a->text == NULL)
    put_unset(f, indent, d);
  else
    put_line(f, indent, d->name, a->text);
}

static void free_addr(const struct config__dir *d, void *obj) {
  struct config_addr *a = FIELD(obj, d);
  free(a->text);
  a->text = NULL;
}

static const struct config__type t_addr = {"address", parse_addr, print_addr,
                                           free_addr};

static int parse_ip(struct config__walk *w, const struct config__dir *d,
                    void *obj, const struct config__node *st) {
  const struct config__word *a = &st->args[0];
  struct config_ip *ip = FIELD(obj, d);
  const char *why;
  struct sockaddr_storage sa;
  socklen_t salen;
  if (config__ip_parse(a->s, a->len, &sa, &salen, &why))
    return bad_value(w, d, a, "IP address", why);
  char buf[64];
  config__addr_format(&sa, buf, sizeof buf);
  /* Drop the ":0" port and IPv6 brackets from the canonical form. */
  char *colon = strrchr(buf, ':');
  *colon = 0;
  char *text = strdup(buf[0] == '[' ? buf + 1 : buf);
  if (text == NULL)
    return wfail(w, a->line, a->col, POSTERN_ENOMEM, "out of memory");
  if (text[0] && text[strlen(text) - 1] == ']')
    text[strlen(text) - 1] = 0;
  free(ip->text);
  ip->text = text;
  ip->sa = sa;
  ip->salen = salen;
  return 0;
}

static void print_ip(FILE *f, const struct config__dir *d, const void *obj,
                     int indent) {
  const struct config_ip *ip = CFIELD(obj, d);
  if (ip->text == NULL)
    put_unset(f, indent, d);
  else
    put_line(f, indent, d->name, ip->text);
}

static void free_ip(const struct config__dir *d, void *obj) {
  struct config_ip *ip = FIELD(obj, d);
  free(ip->text);
  ip->text = NULL;
}

static const struct config__type t_ip = {"IP address", parse_ip, print_ip,
                                         free_ip};

/* A list of CIDR networks, replacing the default as a whole. */
static void free_cidrs(const struct config__dir *d, void *obj) {
  void *field = FIELD(obj, d);
  struct config_cidr *c = arr_items(field);
  for (size_t i = 0; i < arr_count(field); i++)
    free(c[i].text);
  arr_reset(field);
}

static int parse_cidrs(struct config__walk *w, const struct config__dir *d,
                       void *obj, const struct config__node *st) {
  free_cidrs(d, obj);
  void *field = FIELD(obj, d);
  for (size_t i = 0; i < st->nargs; i++) {
    const struct config__word *a = &st->args[i];
    struct config_cidr c;
    const char *why;
    if (config__cidr_parse(a->s, a->len, &c, &why)) {
      if (c.family == 0)
        return bad_value(w, d, a, "network", why);
      char q[256], net[INET6_ADDRSTRLEN];
      inet_ntop(c.family, c.addr, net, sizeof net);
      return wfail(w, a->line, a->col, POSTERN_ECONFIG,
                   "'%s': invalid network '%s': host bits are set (did you "
                   "mean %s/%u?)",
                   d->name, QUOTE(a, q), net, c.prefix);
    }
    char net[INET6_ADDRSTRLEN], buf[INET6_ADDRSTRLEN + 8];
    inet_ntop(c.family, c.addr, net, sizeof net);
    snprintf(buf, sizeof buf, "%s/%u", net, c.prefix);
    c.text = strdup(buf);
    struct config_cidr *slot = c.text ? arr_push(field, sizeof c) : NULL;
    if (slot == NULL) {
      free(c.text);
      return wfail(w, a->line, a->col, POSTERN_ENOMEM, "out of memory");
    }
    *slot = c;
  }
  return 0;
}

static void print_words(FILE *f, int indent, const char *name,
                        const char *const *words, size_t n) {
  put_indent(f, indent);
  fputs(name, f);
  for (size_t i = 0; i < n; i++) {
    fputc(' ', f);
    put_value(f, words[i]);
  }
  fputc('\n', f);
}

static void print_cidrs(FILE *f, const struct config__dir *d, const void *obj,
                        int indent) {
  const void *field = CFIELD(obj, d);
  const struct config_cidr *c = arr_items(field);
  size_t n = arr_count(field);
  if (n == 0) {
    put_unset(f, indent, d);
    return;
  }
  put_indent(f, indent);
  fputs(d->name, f);
  for (size_t i = 0; i < n; i++) {
    fputc(' ', f);
    put_value(f, c[i].text);
  }
  fputc('\n', f);
}

static const struct config__type t_cidrs = {"network", parse_cidrs, print_cidrs,
                                            free_cidrs};

/* DNS servers: ADDR[:PORT], port 53 when left out. */
static void free_servers(const struct config__dir *d, void *obj) {
  void *field = FIELD(obj, d);
  struct config_addr *a = arr_items(field);
  for (size_t i = 0; i < arr_count(field); i++)
    free(a[i].text);
  arr_reset(field);
}

static int parse_servers(struct config__walk *w, const struct config__dir *d,
                         void *obj, const struct config__node *st) {
  free_servers(d, obj);
  void *field = FIELD(obj, d);
  for (size_t i = 0; i < st->nargs; i++) {
    struct config_addr *slot = arr_push(field, sizeof *slot);
    if (slot == NULL)
      return wfail(w, st->args[i].line, st->args[i].col, POSTERN_ENOMEM,
                   "out of memory");
    int rc = addr_set(w, d, &st->args[i], slot, 53, false);
    if (rc)
      return rc;
  }
  return 0;
}

static void print_servers(FILE *f, const struct config__dir *d, const void *obj,
                          int indent) {
  const void *field = CFIELD(obj, d);
  const struct config_addr *a = arr_items(field);
  size_t n = arr_count(field);
  if (n == 0) {
    put_unset(f, indent, d);
    return;
  }
  put_indent(f, indent);
  fputs(d->name, f);
  for (size_t i = 0; i < n; i++)
    fprintf(f, " %s", a[i].text);
  fputc('\n', f);
}

static const struct config__type t_servers = {"server", parse_servers,
                                              print_servers, free_servers};

/* route DOMAIN TARGET, repeatable, kept in order. */
static void free_routes(const struct config__dir *d, void *obj) {
  void *field = FIELD(obj, d);
  struct config_route *r = arr_items(field);
  for (size_t i = 0; i < arr_count(field); i++) {
    free(r[i].domain);
    free(r[i].host);
  }
  arr_reset(field);
}

static char *lower_dup(const char *s, size_t n) {
  char *v = strndup(s, n);
  for (char *p = v; p && *p; p++)
    if (*p >= 'A' && *p <= 'Z')
      *p = (char)(*p - 'A' + 'a');
  return v;
}

static int parse_route(struct config__walk *w, const struct config__dir *d,
                       void *obj, const struct config__node *st) {
  const struct config__word *dom = &st->args[0], *tgt = &st->args[1];
  const char *why;
  size_t dn = dom->len;
  if (!(dn == 1 && dom->s[0] == '*')) {
    if (config__hostname_check(dom->s, dn, &why))
      return bad_value(w, d, dom, "domain", why);
    if (dom->s[dn - 1] == '.')
      dn--;
  }
  /* TARGET: [HOST]:PORT, [IPv6]:PORT, HOST:PORT or IPv4:PORT. */
  const char *host = tgt->s, *port;
  size_t hn;
  bool bracket = tgt->len > 0 && tgt->s[0] == '[';
  if (bracket) {
    const char *close = memchr(tgt->s, ']', tgt->len);
    if (close == NULL || close[1] != ':')
      return bad_value(w, d, tgt, "target",
                       "expected [HOST]:PORT, HOST:PORT or IP:PORT");
    host = tgt->s + 1;
    hn = (size_t)(close - host);
    port = close + 2;
  } else {
    const char *colon = strrchr(tgt->s, ':');
    if (colon == NULL)
      return bad_value(w, d, tgt, "target", "missing ':PORT'");
    if (memchr(tgt->s, ':', (size_t)(colon - tgt->s)))
      return bad_value(w, d, tgt, "target",
                       "write an IPv6 address as [ADDR]:PORT");
    hn = (size_t)(colon - tgt->s);
    port = colon + 1;
  }
  uint64_t p;
  size_t pn = tgt->len - (size_t)(port - tgt->s);
  if (pn == 0 || pn > 5 || config__uint_parse(port, pn, &p, &why) || p == 0 ||
      p > 65535)
    return bad_value(w, d, tgt, "target", "port must be from 1 to 65535");
  struct config_route r = {.port = (uint16_t)p,
                           .no_mx = bracket,
                           .line = st->name.line,
                           .col = st->name.col};
  if (config__ip_parse(host, hn, &r.sa, &r.salen, &why) == 0) {
    r.is_ip = true;
    r.no_mx = true;
    if (r.sa.ss_family == AF_INET)
      ((struct sockaddr_in *)&r.sa)->sin_port = htons(r.port);
    else
      ((struct sockaddr_in6 *)&r.sa)->sin6_port = htons(r.port);
  } else if (config__hostname_check(host, hn, &why)) {
    return bad_value(w, d, tgt, "target", "not a host name or IP address");
  } else if (host[hn - 1] == '.') {
    hn--;
  }
  void *field = FIELD(obj, d);
  if (arr_count(field) >= CONFIG_ROUTE_MAX)
    return wfail(w, st->name.line, st->name.col, POSTERN_ETOOBIG,
                 "more than %u routes", CONFIG_ROUTE_MAX);
  struct config_route *old = arr_items(field);
  for (size_t i = 0; i < arr_count(field); i++) {
    if (strlen(old[i].domain) == dn &&
        strncasecmp(old[i].domain, dom->s, dn) == 0) {
      char q[256];
      return wfail(w, dom->line, dom->col, POSTERN_ECONFIG,
                   "duplicate route for '%s' (first at line %u)", QUOTE(dom, q),
                   old[i].line);
    }
  }
  r.domain = lower_dup(dom->s, dn);
  r.host = lower_dup(host, hn);
  struct config_route *slot =
      r.domain && r.host ? arr_push(field, sizeof r) : NULL;
  if (slot == NULL) {
    free(r.domain);
    free(r.host);
    return wfail(w, dom->line, dom->col, POSTERN_ENOMEM, "out of memory");
  }
  *slot = r;
  return 0;
}

static void print_routes(FILE *f, const struct config__dir *d, const void *obj,
                         int indent) {
  const void *field = CFIELD(obj, d);
  const struct config_route *r = arr_items(field);
  size_t n = arr_count(field);
  if (n == 0)
    put_unset(f, indent, d);
  for (size_t i = 0; i < n; i++) {
    char target[600];
    bool v6 = r[i].is_ip && r[i].sa.ss_family == AF_INET6;
    if ((r[i].no_mx && !r[i].is_ip) || v6)
      snprintf(target, sizeof target, "[%s]:%u", r[i].host, r[i].port);
    else
      snprintf(target, sizeof target, "%s:%u", r[i].host, r[i].port);
    const char *words[2] = {r[i].domain, target};
    print_words(f, indent, d->name, words, 2);
  }
}

static const struct config__type t_route = {"route", parse_route, print_routes,
                                            free_routes};

/* Sections: a block of directives filling an embedded struct. */
static int parse_section(struct config__walk *w, const struct config__dir *d,
                         void *obj, const struct config__node *st) {
  return walk_block(w, d->sub, FIELD(obj, d), st);
}

static void print_section(FILE *f, const struct config__dir *d, const void *obj,
                          int indent) {
  put_indent(f, indent);
  fprintf(f, "%s {\n", d->name);
  print_block(f, d->sub, CFIELD(obj, d), indent + 1);
  put_indent(f, indent);
  fputs("}\n", f);
}

static void free_section(const struct config__dir *d, void *obj) {
  free_block(d->sub, FIELD(obj, d));
}

static const struct config__type t_section = {"block", parse_section,
                                              print_section, free_section};

/* metrics { listen ADDR:PORT }: a section that is off when absent. */
static int parse_metrics(struct config__walk *w, const struct config__dir *d,
                         void *obj, const struct config__node *st) {
  struct config_metrics *m = FIELD(obj, d);
  int rc = walk_block(w, d->sub, m, st);
  if (rc)
    return rc;
  if (m->listen.text == NULL)
    return wfail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                 "'metrics' needs 'listen ADDR:PORT' in its block");
  m->enabled = true;
  return 0;
}

static void print_metrics(FILE *f, const struct config__dir *d, const void *obj,
                          int indent) {
  const struct config_metrics *m = CFIELD(obj, d);
  if (!m->enabled)
    put_unset(f, indent, d);
  else
    print_section(f, d, obj, indent);
}

static const struct config__type t_metrics = {"block", parse_metrics,
                                              print_metrics, free_section};

/* listen ADDR:PORT [{ ... }], repeatable. */
static const struct config__block listen_block;

static void free_listens(const struct config__dir *d, void *obj) {
  void *field = FIELD(obj, d);
  struct config_listen *l = arr_items(field);
  for (size_t i = 0; i < arr_count(field); i++) {
    free(l[i].addr.text);
    free_block(d->sub, &l[i]);
  }
  arr_reset(field);
}

static int parse_listen(struct config__walk *w, const struct config__dir *d,
                        void *obj, const struct config__node *st) {
  void *field = FIELD(obj, d);
  if (arr_count(field) >= CONFIG_LISTEN_MAX)
    return wfail(w, st->name.line, st->name.col, POSTERN_ETOOBIG,
                 "more than %u listen directives", CONFIG_LISTEN_MAX);
  struct config_listen *l = arr_push(field, sizeof *l);
  if (l == NULL)
    return wfail(w, st->name.line, st->name.col, POSTERN_ENOMEM,
                 "out of memory");
  l->line = st->name.line;
  l->col = st->name.col;
  int rc = addr_set(w, d, &st->args[0], &l->addr, -1, true);
  if (rc == 0)
    rc = apply_defaults(w, d->sub, l);
  if (rc == 0 && st->has_block)
    rc = walk_block(w, d->sub, l, st);
  if (rc)
    return rc;
  const struct config_listen *all = arr_items(field);
  size_t n = arr_count(field);
  for (size_t i = 0; i + 1 < n; i++) {
    if (strcmp(all[i].addr.text, l->addr.text) == 0 &&
        ntohs(((const struct sockaddr_in *)&l->addr.sa)->sin_port) != 0)
      return wfail(w, st->args[0].line, st->args[0].col, POSTERN_ECONFIG,
                   "duplicate listen address %s (first at line %u)",
                   l->addr.text, all[i].line);
  }
  return 0;
}

static void print_listens(FILE *f, const struct config__dir *d, const void *obj,
                          int indent) {
  const void *field = CFIELD(obj, d);
  const struct config_listen *l = arr_items(field);
  for (size_t i = 0; i < arr_count(field); i++) {
    put_indent(f, indent);
    fprintf(f, "%s %s {\n", d->name, l[i].addr.text);
    print_block(f, d->sub, &l[i], indent + 1);
    put_indent(f, indent);
    fputs("}\n", f);
  }
}

static const struct config__type t_listen = {"block", parse_listen,
                                             print_listens, free_listens};

/* policy { module... }: the chain. The modules are directives of the policy
 * block whose `min` is their kind; each appends itself in file order. */
static int parse_module(struct config__walk *w, const struct config__dir *d,
                        void *obj, const struct config__node *st) {
  struct config_policy_module *m = arr_push(obj, sizeof *m);
  if (m == NULL)
    return wfail(w, st->name.line, st->name.col, POSTERN_ENOMEM,
                 "out of memory");
  m->kind = (enum config_policy_kind)d->min;
  m->line = st->name.line;
  m->col = st->name.col;
  /* The options live in the union member named after the module; every
   * member starts at the union's address. */
  int rc = apply_defaults(w, d->sub, &m->local);
  if (rc == 0 && st->has_block)
    rc = walk_block(w, d->sub, &m->local, st);
  return rc;
}

static const struct config__type t_module = {"policy module", parse_module,
                                             NULL, NULL};

static const struct config__block policy_block;

static int parse_policy(struct config__walk *w, const struct config__dir *d,
                        void *obj, const struct config__node *st) {
  return walk_block(w, d->sub, FIELD(obj, d), st);
}

static void print_policy(FILE *f, const struct config__dir *d, const void *obj,
                         int indent) {
  const void *field = CFIELD(obj, d);
  const struct config_policy_module *m = arr_items(field);
  put_indent(f, indent);
  fprintf(f, "%s {\n", d->name);
  for (size_t i = 0; i < arr_count(field); i++) {
    const struct config__dir *md = &d->sub->dirs[m[i].kind];
    put_indent(f, indent + 1);
    if (md->sub->ndirs == 0) {
      fprintf(f, "%s\n", md->name);
      continue;
    }
    fprintf(f, "%s {\n", md->name);
    print_block(f, md->sub, &m[i].local, indent + 2);
    put_indent(f, indent + 1);
    fputs("}\n", f);
  }
  put_indent(f, indent);
  fputs("}\n", f);
}

static void free_policy(const struct config__dir *d, void *obj) {
  arr_reset(FIELD(obj, d));
}

static const struct config__type t_policy = {"block", parse_policy,
                                             print_policy, free_policy};

/* ------------------------------------------------------------ the schema */

#define ONE .min_args = 1, .max_args = 1
#define SEC(ms) ((uint64_t)(ms)*1000)
#define MIN(m) ((uint64_t)(m)*60000)
#define HOUR(h) ((uint64_t)(h)*3600000)
#define DAY(d) ((uint64_t)(d)*86400000)
#define KIB(k) ((uint64_t)(k) << 10)
#define MIB(m) ((uint64_t)(m) << 20)
#define GIB(g) ((uint64_t)(g) << 30)
#define TIB(t) ((uint64_t)(t) << 40)
#define NDIRS(a) (sizeof a / sizeof a[0])

#define L(f) offsetof(struct config_listen, f)
static const struct config__dir listen_dirs[] = {
    {.name = "accept_from",
     .type = &t_cidrs,
     .min_args = 1,
     .max_args = CONFIG_ARGS_MAX,
     .def = "127.0.0.1/32 ::1/128",
     .off = L(accept_from),
     .synopsis = "CIDR...",
     .help = "clients allowed to relay through this listener"},
    {.name = "max_message_size",
     .type = &t_size,
     ONE,
     .min = KIB(1),
     .max = GIB(1),
     .def = "32M",
     .off = L(max_message_size),
     .synopsis = "SIZE",
     .help = "largest message accepted"},
    {.name = "max_recipients",
     .type = &t_u32,
     ONE,
     .min = 1,
     .max = 100000,
     .def = "1000",
     .off = L(max_recipients),
     .synopsis = "NUMBER",
     .help = "recipients per message"},
    {.name = "max_sessions",
     .type = &t_u32,
     ONE,
     .min = 1,
     .max = 1000000,
     .def = "2000",
     .off = L(max_sessions),
     .synopsis = "NUMBER",
     .help = "concurrent SMTP sessions on this listener"},
    {.name = "tls_cert",
     .type = &t_path,
     ONE,
     .off = L(tls_cert),
     .synopsis = "FILE",
     .help = "PEM certificate chain for STARTTLS",
     .unset = "no STARTTLS"},
    {.name = "tls_key",
     .type = &t_path,
     ONE,
     .off = L(tls_key),
     .synopsis = "FILE",
     .help = "PEM private key for STARTTLS",
     .unset = "no STARTTLS"},
    {.name = "timeout",
     .type = &t_duration,
     ONE,
     .min = 1,
     .max = DAY(1),
     .def = "5m",
     .off = L(timeout_ms),
     .synopsis = "DURATION",
     .help = "idle time allowed for each command or data"},
};
#undef L

static int check_listen(struct config__walk *w, void *obj,
                        const struct config__node *st) {
  struct config_listen *l = obj;
  if ((l->tls_cert == NULL) != (l->tls_key == NULL)) {
    const char *have = l->tls_cert ? "tls_cert" : "tls_key";
    const char *miss = l->tls_cert ? "tls_key" : "tls_cert";
    for (size_t i = st->nchildren; i-- > 0;)
      if (strcmp(st->children[i].name.s, have) == 0)
        return wfail(w, st->children[i].name.line, st->children[i].name.col,
                     POSTERN_ECONFIG,
                     "'%s' needs '%s' in the same listen block", have, miss);
  }
  return 0;
}

static const struct config__block listen_block = {
    "listen", listen_dirs, NDIRS(listen_dirs), check_listen};

#define Q(f) offsetof(struct config_queue, f)
static const struct config__dir queue_dirs[] = {
    {.name = "map_size",
     .type = &t_size,
     ONE,
     .min = KIB(64),
     .max = TIB(64),
     .def = "16G",
     .off = Q(map_size),
     .synopsis = "SIZE",
     .help = "largest size of the queue database"},
    {.name = "retry_initial",
     .type = &t_duration,
     ONE,
     .min = 1,
     .max = DAY(30),
     .def = "5m",
     .off = Q(retry_initial_ms),
     .synopsis = "DURATION",
     .help = "wait before the first retry"},
    {.name = "retry_factor",
     .type = &t_decimal,
     ONE,
     .min = 1000000,
     .max = 10000000,
     .def = "2",
     .off = Q(retry_factor),
     .synopsis = "DECIMAL",
     .help = "each wait is this many times the previous one"},
    {.name = "retry_max",
     .type = &t_duration,
     ONE,
     .min = 1,
     .max = DAY(30),
     .def = "1h",
     .off = Q(retry_max_ms),
     .synopsis = "DURATION",
     .help = "longest wait between two attempts"},
    {.name = "max_age",
     .type = &t_duration,
     ONE,
     .min = 1,
     .max = DAY(365),
     .def = "5d",
     .off = Q(max_age_ms),
     .synopsis = "DURATION",
     .help = "undelivered recipients bounce at this age"},
    {.name = "delay_warning",
     .type = &t_duration,
     ONE,
     .min = 0,
     .max = DAY(365),
     .def = "0",
     .off = Q(delay_warning_ms),
     .synopsis = "DURATION",
     .help = "warn the sender after this delay; 0 is never"},
    {.name = "commit_interval",
     .type = &t_duration,
     ONE,
     .min = 0,
     .max = 100,
     .def = "1ms",
     .off = Q(commit_interval_ms),
     .synopsis = "DURATION",
     .help = "under load, shortest time between two queue commits; 0 is "
             "none"},
};
#undef Q

static int check_queue(struct config__walk *w, void *obj,
                       const struct config__node *st) {
  struct config_queue *q = obj;
  if (q->retry_initial_ms > q->retry_max_ms) {
    char a[64], b[64];
    config__duration_format(q->retry_initial_ms, a, sizeof a);
    config__duration_format(q->retry_max_ms, b, sizeof b);
    unsigned line = st->name.line, col = st->name.col;
    for (size_t i = 0; i < st->nchildren; i++)
      if (strcmp(st->children[i].name.s, "retry_initial") == 0 ||
          strcmp(st->children[i].name.s, "retry_max") == 0) {
        line = st->children[i].name.line;
        col = st->children[i].name.col;
      }
    return wfail(w, line, col, POSTERN_ECONFIG,
                 "retry_initial (%s) is longer than retry_max (%s)", a, b);
  }
  return 0;
}

static const struct config__block queue_block = {
    "queue", queue_dirs, NDIRS(queue_dirs), check_queue};

#define D(f) offsetof(struct config_delivery, f)
static const struct config__dir delivery_dirs[] = {
    {.name = "workers",
     .type = &t_u32,
     ONE,
     .min = 0,
     .max = 256,
     .def = "0",
     .off = D(workers),
     .synopsis = "NUMBER",
     .help = "worker threads; 0 is one per CPU core"},
    {.name = "max_connections",
     .type = &t_u32,
     ONE,
     .min = 1,
     .max = 1000000,
     .def = "2000",
     .off = D(max_connections),
     .synopsis = "NUMBER",
     .help = "outgoing SMTP connections in total"},
    {.name = "per_domain_connections",
     .type = &t_u32,
     ONE,
     .min = 1,
     .max = 100000,
     .def = "20",
     .off = D(per_domain_connections),
     .synopsis = "NUMBER",
     .help = "outgoing connections per destination domain"},
    {.name = "max_inflight",
     .type = &t_u32,
     ONE,
     .min = 1,
     .max = 10000000,
     .def = "50000",
     .off = D(max_inflight),
     .synopsis = "NUMBER",
     .help = "messages being delivered at once; the rest wait in the "
             "queue"},
    {.name = "max_inflight_bytes",
     .type = &t_size,
     ONE,
     .min = KIB(1),
     .max = GIB(64),
     .def = "64M",
     .off = D(max_inflight_bytes),
     .synopsis = "SIZE",
     .help = "bodies of the messages being delivered, in total"},
    {.name = "per_domain_rate",
     .type = &t_u32,
     ONE,
     .min = 0,
     .max = 1000000,
     .def = "0",
     .off = D(per_domain_rate),
     .synopsis = "NUMBER",
     .help = "deliveries per second per domain; 0 is no limit"},
    {.name = "reuse_limit",
     .type = &t_u32,
     ONE,
     .min = 1,
     .max = 1000000,
     .def = "100",
     .off = D(reuse_limit),
     .synopsis = "NUMBER",
     .help = "messages sent over one connection"},
    {.name = "chain_threshold",
     .type = &t_duration,
     ONE,
     .min = 0,
     .max = MIN(1),
     .def = "20ms",
     .off = D(chain_threshold_ms),
     .synopsis = "DURATION",
     .help = "chain messages on connections whose last message took at "
             "most this long; 0 is never"},
    {.name = "idle_timeout",
     .type = &t_duration,
     ONE,
     .min = 0,
     .max = HOUR(1),
     .def = "30s",
     .off = D(idle_timeout_ms),
     .synopsis = "DURATION",
     .help = "how long an idle connection is kept for reuse"},
    {.name = "connect_timeout",
     .type = &t_duration,
     ONE,
     .min = 1,
     .max = HOUR(1),
     .def = "30s",
     .off = D(connect_timeout_ms),
     .synopsis = "DURATION",
     .help = "time to connect and receive the greeting"},
    {.name = "command_timeout",
     .type = &t_duration,
     ONE,
     .min = 1,
     .max = HOUR(1),
     .def = "5m",
     .off = D(command_timeout_ms),
     .synopsis = "DURATION",
     .help = "time for the reply to each SMTP command"},
    {.name = "data_timeout",
     .type = &t_duration,
     ONE,
     .min = 1,
     .max = HOUR(2),
     .def = "10m",
     .off = D(data_timeout_ms),
     .synopsis = "DURATION",
     .help = "time to send the message and get the final reply"},
    {.name = "port",
     .type = &t_u16,
     ONE,
     .min = 1,
     .max = 65535,
     .def = "25",
     .off = D(port),
     .synopsis = "PORT",
     .help = "TCP port of MX hosts"},
    {.name = "local_ip",
     .type = &t_ip,
     ONE,
     .off = D(local_ip),
     .synopsis = "IP",
     .help = "source address of outgoing connections",
     .unset = "the kernel chooses the source address"},
    {.name = "shutdown_timeout",
     .type = &t_duration,
     ONE,
     .min = 0,
     .max = HOUR(1),
     .def = "30s",
     .off = D(shutdown_timeout_ms),
     .synopsis = "DURATION",
     .help = "time allowed for attempts in flight at shutdown"},
    {.name = "route",
     .type = &t_route,
     .min_args = 2,
     .max_args = 2,
     .off = D(routes),
     .flags = CONFIG__REPEAT,
     .synopsis = "DOMAIN TARGET",
     .help = "send DOMAIN's mail to TARGET instead of its MX hosts",
     .unset = "every domain goes to its MX hosts"},
};
#undef D

static const struct config__block delivery_block = {"delivery", delivery_dirs,
                                                    NDIRS(delivery_dirs), NULL};

#define N(f) offsetof(struct config_dns, f)
static const struct config__dir dns_dirs[] = {
    {.name = "servers",
     .type = &t_servers,
     .min_args = 1,
     .max_args = CONFIG_ARGS_MAX,
     .off = N(servers),
     .synopsis = "ADDR[:PORT]...",
     .help = "resolvers to ask",
     .unset = "the nameservers in /etc/resolv.conf"},
    {.name = "timeout",
     .type = &t_duration,
     ONE,
     .min = 1,
     .max = SEC(60),
     .def = "5s",
     .off = N(timeout_ms),
     .synopsis = "DURATION",
     .help = "time to wait for one answer"},
    {.name = "attempts",
     .type = &t_u32,
     ONE,
     .min = 1,
     .max = 10,
     .def = "2",
     .off = N(attempts),
     .synopsis = "NUMBER",
     .help = "tries per query"},
    {.name = "trust_ad",
     .type = &t_bool,
     ONE,
     .def = "no",
     .off = N(trust_ad),
     .synopsis = "yes|no",
     .help = "trust the AD bit from non-loopback servers"},
};
#undef N

static const struct config__block dns_block = {"dns", dns_dirs, NDIRS(dns_dirs),
                                               NULL};

static const struct config__dir tls_dirs[] = {
    {.name = "ca_file",
     .type = &t_path,
     ONE,
     .def = "/etc/ssl/certs/ca-certificates.crt",
     .off = offsetof(struct config_tls, ca_file),
     .synopsis = "FILE",
     .help = "trusted root certificates for outgoing TLS"},
    {.name = "min_version",
     .type = &t_enum,
     ONE,
     .def = "1.2",
     .off = offsetof(struct config_tls, min_version),
     .names = tls_version_names,
     .synopsis = "1.2|1.3",
     .help = "oldest TLS version spoken"},
};

static const struct config__block tls_block = {"tls", tls_dirs, NDIRS(tls_dirs),
                                               NULL};

static const struct config__dir local_dirs[] = {
    {.name = "min_tls_level",
     .type = &t_enum,
     ONE,
     .def = "none",
     .off = offsetof(struct config_policy_local, min_tls_level),
     .names = tls_level_names,
     .synopsis = "none|encrypted|authenticated",
     .help = "lowest TLS level accepted for any connection"},
    {.name = "min_mx_level",
     .type = &t_enum,
     ONE,
     .def = "none",
     .off = offsetof(struct config_policy_local, min_mx_level),
     .names = mx_level_names,
     .synopsis = "none|mtasts|dnssec",
     .help = "lowest MX level accepted for any MX host"},
};

static const struct config__block local_block = {"local", local_dirs,
                                                 NDIRS(local_dirs), NULL};

#define M(f) offsetof(struct config_policy_mtasts, f)
static const struct config__dir mtasts_dirs[] = {
    {.name = "fetch_timeout",
     .type = &t_duration,
     ONE,
     .min = 1,
     .max = MIN(10),
     .def = "60s",
     .off = M(fetch_timeout_ms),
     .synopsis = "DURATION",
     .help = "time allowed to fetch a policy"},
    {.name = "https_port",
     .type = &t_u16,
     ONE,
     .min = 1,
     .max = 65535,
     .def = "443",
     .off = M(https_port),
     .synopsis = "PORT",
     .help = "port of the policy web server"},
    {.name = "max_policy_size",
     .type = &t_size,
     ONE,
     .min = KIB(1),
     .max = MIB(1),
     .def = "64K",
     .off = M(max_policy_size),
     .synopsis = "SIZE",
     .help = "largest policy body accepted"},
    {.name = "cache_size",
     .type = &t_size,
     ONE,
     .min = MIB(1),
     .max = GIB(64),
     .def = "64M",
     .off = M(cache_size),
     .synopsis = "SIZE",
     .help = "largest size of the policy cache (<state_dir>/mtasts)"},
    {.name = "refresh_interval",
     .type = &t_duration,
     ONE,
     .min = SEC(1),
     .max = DAY(30),
     .def = "1d",
     .off = M(refresh_interval_ms),
     .synopsis = "DURATION",
     .help = "age at which a policy in use is fetched again"},
};
#undef M

static const struct config__block mtasts_block = {"mtasts", mtasts_dirs,
                                                  NDIRS(mtasts_dirs), NULL};
static const struct config__block dnssec_block = {"dnssec", NULL, 0, NULL};
static const struct config__block dane_block = {"dane", NULL, 0, NULL};

/* Indexed by enum config_policy_kind (print_policy relies on it). */
static const struct config__dir policy_dirs[] = {
    {.name = "local",
     .type = &t_module,
     .min = CONFIG_POLICY_LOCAL,
     .sub = &local_block,
     .flags = CONFIG__BLOCK_OPT,
     .synopsis = "",
     .help = "the operator's minimum levels"},
    {.name = "mtasts",
     .type = &t_module,
     .min = CONFIG_POLICY_MTASTS,
     .sub = &mtasts_block,
     .flags = CONFIG__BLOCK_OPT,
     .synopsis = "",
     .help = "MTA-STS, RFC 8461"},
    {.name = "dnssec",
     .type = &t_module,
     .min = CONFIG_POLICY_DNSSEC,
     .sub = &dnssec_block,
     .flags = CONFIG__BLOCK_OPT,
     .synopsis = "",
     .help = "MX level dnssec for authenticated MX answers"},
    {.name = "dane",
     .type = &t_module,
     .min = CONFIG_POLICY_DANE,
     .sub = &dane_block,
     .flags = CONFIG__BLOCK_OPT,
     .synopsis = "",
     .help = "DANE for SMTP, RFC 7672"},
};

/* A minimum MX level that no module of the chain can grant would defer
 * every message without a word: `mtasts` is granted by the mtasts module
 * (an enforce policy the MX matches) and, being below `dnssec`, by the
 * dnssec module too; `dnssec` only by the dnssec module. */
static int check_policy(struct config__walk *w, void *obj,
                        const struct config__node *st) {
  const struct config_policy_module *m = arr_items(obj);
  size_t n = arr_count(obj);
  bool have[CONFIG_POLICY_DANE + 1] = {false};
  for (size_t i = 0; i < n; i++)
    have[m[i].kind] = true;
  for (size_t i = 0; i < n; i++) {
    if (m[i].kind != CONFIG_POLICY_LOCAL)
      continue;
    enum config_mx_level min = m[i].local.min_mx_level;
    const char *needs = NULL;
    if (min == CONFIG_MX_LEVEL_DNSSEC && !have[CONFIG_POLICY_DNSSEC])
      needs = "the dnssec module";
    else if (min == CONFIG_MX_LEVEL_MTASTS && !have[CONFIG_POLICY_MTASTS] &&
             !have[CONFIG_POLICY_DNSSEC])
      needs = "the mtasts or the dnssec module";
    if (needs == NULL)
      continue;
    /* Point at the level itself: policy -> local -> min_mx_level. */
    unsigned line = m[i].line, col = m[i].col;
    for (size_t c = 0; c < st->nchildren; c++) {
      const struct config__node *lm = &st->children[c];
      if (strcmp(lm->name.s, "local") != 0)
        continue;
      for (size_t k = 0; k < lm->nchildren; k++)
        if (strcmp(lm->children[k].name.s, "min_mx_level") == 0 &&
            lm->children[k].nargs > 0) {
          line = lm->children[k].args[0].line;
          col = lm->children[k].args[0].col;
        }
    }
    return wfail(w, line, col, POSTERN_ECONFIG,
                 "min_mx_level %s needs %s in the policy chain: no other "
                 "module can raise an MX host to that level, so every "
                 "message would be deferred",
                 config_mx_level_name(min), needs);
  }
  return 0;
}

static const struct config__block policy_block = {
    "policy", policy_dirs, NDIRS(policy_dirs), check_policy};

static const struct config__dir log_dirs[] = {
    {.name = "level",
     .type = &t_enum,
     ONE,
     .def = "info",
     .off = offsetof(struct config_log, level),
     .names = log_level_names,
     .synopsis = "error|warn|info|debug",
     .help = "least important events written"},
    {.name = "format",
     .type = &t_enum,
     ONE,
     .def = "logfmt",
     .off = offsetof(struct config_log, format),
     .names = log_format_names,
     .synopsis = "logfmt|json",
     .help = "line format"},
    {.name = "file",
     .type = &t_path,
     ONE,
     .def = "-",
     .off = offsetof(struct config_log, file),
     .synopsis = "PATH|-",
     .help = "file the log is appended to; - is standard error"},
};

static const struct config__block log_block = {"log", log_dirs, NDIRS(log_dirs),
                                               NULL};

static const struct config__dir metrics_dirs[] = {
    {.name = "listen",
     .type = &t_addr,
     ONE,
     .off = offsetof(struct config_metrics, listen),
     .synopsis = "ADDR:PORT",
     .help = "address of the Prometheus HTTP endpoint",
     .unset = "required"},
};

static const struct config__block metrics_block = {"metrics", metrics_dirs,
                                                   NDIRS(metrics_dirs), NULL};

#define R(f) offsetof(struct postern_config, f)
static const struct config__dir root_dirs[] = {
    {.name = "hostname",
     .type = &t_hostname,
     ONE,
     .off = R(hostname),
     .synopsis = "NAME",
     .unset = "the system host name",
     .help = "name used in the greeting, EHLO and Received: headers"},
    {.name = "state_dir",
     .type = &t_path,
     ONE,
     .def = "/var/lib/postern",
     .off = R(state_dir),
     .synopsis = "PATH",
     .help = "directory of the queue and caches"},
    {.name = "user",
     .type = &t_user,
     ONE,
     .off = R(user),
     .synopsis = "NAME",
     .help = "user to switch to after binding, when started as root",
     .unset = "privileges are not dropped"},
    {.name = "listen",
     .type = &t_listen,
     ONE,
     .off = R(listens),
     .sub = &listen_block,
     .flags = CONFIG__REPEAT | CONFIG__BLOCK_OPT,
     .synopsis = "ADDR:PORT",
     .help = "accept mail over SMTP on this address"},
    {.name = "queue",
     .type = &t_section,
     .off = R(queue),
     .sub = &queue_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "queue and retry schedule"},
    {.name = "delivery",
     .type = &t_section,
     .off = R(delivery),
     .sub = &delivery_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "outgoing delivery"},
    {.name = "dns",
     .type = &t_section,
     .off = R(dns),
     .sub = &dns_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "resolvers"},
    {.name = "tls",
     .type = &t_section,
     .off = R(tls),
     .sub = &tls_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "outgoing TLS"},
    {.name = "policy",
     .type = &t_policy,
     .off = R(policy),
     .sub = &policy_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "the policy chain, in order"},
    {.name = "log",
     .type = &t_section,
     .off = R(log),
     .sub = &log_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "logging"},
    {.name = "metrics",
     .type = &t_metrics,
     .off = R(metrics),
     .sub = &metrics_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "{ listen ADDR:PORT }",
     .help = "metrics endpoint",
     .unset = "no metrics endpoint"},
};
#undef R

static int check_root(struct config__walk *w, void *obj,
                      const struct config__node *st);

static const struct config__block root_block = {"", root_dirs, NDIRS(root_dirs),
                                                check_root};

const struct config__block *const config__blocks[] = {
    &root_block,    &listen_block, &queue_block,  &delivery_block,
    &dns_block,     &tls_block,    &policy_block, &local_block,
    &mtasts_block,  &dnssec_block, &dane_block,   &log_block,
    &metrics_block, NULL};

/* The longest block; walk_block keeps one position per directive. */
#define MAX_DIRS 16
_Static_assert(NDIRS(delivery_dirs) <= MAX_DIRS, "raise MAX_DIRS");
_Static_assert(NDIRS(root_dirs) <= MAX_DIRS, "raise MAX_DIRS");

static int check_root(struct config__walk *w, void *obj,
                      const struct config__node *st) {
  struct postern_config *cfg = obj;
  if (cfg->listen_count == 0)
    return wfail(w, w->eof_line, w->eof_col, POSTERN_ECONFIG,
                 "no 'listen' directive: at least one listener is required");
  if (cfg->hostname == NULL) {
    char name[256] = "";
    const char *why = "gethostname failed";
    if (gethostname(name, sizeof name - 1) != 0 ||
        config__hostname_check(name, strlen(name), &why) != 0) {
      char q[256];
      return wfail(w, 0, 0, POSTERN_ECONFIG,
                   "the system host name '%s' is unusable (%s); set "
                   "'hostname'",
                   config__quote_user(name, strlen(name), q, sizeof q), why);
    }
    cfg->hostname = strdup(name);
    if (cfg->hostname == NULL)
      return wfail(w, 0, 0, POSTERN_ENOMEM, "out of memory");
  }
  if (cfg->delivery.workers == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->delivery.workers = n < 1 ? 1 : n > 256 ? 256 : (uint32_t)n;
  }
  if (cfg->policy_count == 0) {
    bool seen = false;
    for (size_t i = 0; i < st->nchildren; i++)
      seen |= strcmp(st->children[i].name.s, "policy") == 0;
    if (!seen) {
      /* No policy block at all: security on by default, the chain
       * `local, mtasts, dnssec, dane` with every default. dnssec and dane
       * only ever raise levels on answers a trusted validating resolver
       * vouched for (AD), so they are safe on any resolver. */
      static const enum config_policy_kind chain[] = {
          CONFIG_POLICY_LOCAL, CONFIG_POLICY_MTASTS, CONFIG_POLICY_DNSSEC,
          CONFIG_POLICY_DANE};
      for (size_t i = 0; i < sizeof chain / sizeof chain[0]; i++) {
        struct config_policy_module *m = arr_push(&cfg->policy, sizeof *m);
        if (m == NULL)
          return wfail(w, 0, 0, POSTERN_ENOMEM, "out of memory");
        m->kind = chain[i];
        int rc = apply_defaults(w, policy_dirs[chain[i]].sub, &m->local);
        if (rc != 0)
          return rc;
      }
    }
  }
  return 0;
}

/* --------------------------------------------------------------- the walk */

static const char *block_where(const struct config__block *blk, char *buf,
                               size_t cap) {
  if (blk->name[0] == 0)
    snprintf(buf, cap, "at the top level");
  else
    snprintf(buf, cap, "in the %s block", blk->name);
  return buf;
}

static int unknown_directive(struct config__walk *w,
                             const struct config__block *blk,
                             const struct config__node *st) {
  char q[256], where[64];
  const char *name = st->name.s;
  QUOTE(&st->name, q);
  block_where(blk, where, sizeof where);
  const char *best = NULL;
  unsigned bestd = 3;
  for (size_t i = 0; i < blk->ndirs; i++) {
    unsigned dist = config__edit_distance(name, blk->dirs[i].name, 2);
    if (dist < bestd && dist < strlen(blk->dirs[i].name) / 2) {
      bestd = dist;
      best = blk->dirs[i].name;
    }
  }
  if (best)
    return wfail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                 "unknown directive '%s' %s; did you mean '%s'?", q, where,
                 best);
  char homes[128] = "";
  size_t o = 0;
  for (size_t b = 0; config__blocks[b]; b++)
    for (size_t i = 0; i < config__blocks[b]->ndirs; i++)
      if (strcmp(config__blocks[b]->dirs[i].name, name) == 0 &&
          o < sizeof homes) {
        char wb[64];
        o += (size_t)snprintf(homes + o, sizeof homes - o, "%s%s",
                              o ? " or " : "",
                              block_where(config__blocks[b], wb, sizeof wb));
      }
  if (o)
    return wfail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                 "'%s' is not allowed %s; it belongs %s", q, where, homes);
  return wfail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
               "unknown directive '%s' %s", q, where);
}

static int usage_error(struct config__walk *w, const struct config__dir *d,
                       unsigned line, unsigned col, const char *what) {
  return wfail(w, line, col, POSTERN_ECONFIG, "%s (usage: %s%s%s%s)", what,
               d->name, d->synopsis[0] ? " " : "", d->synopsis,
               d->flags & CONFIG__BLOCK       ? " { ... }"
               : d->flags & CONFIG__BLOCK_OPT ? " [{ ... }]"
                                              : "");
}

static int walk_block(struct config__walk *w, const struct config__block *blk,
                      void *obj, const struct config__node *parent) {
  unsigned first_line[MAX_DIRS] = {0};
  for (size_t c = 0; c < parent->nchildren; c++) {
    const struct config__node *st = &parent->children[c];
    const struct config__dir *d = NULL;
    for (size_t i = 0; i < blk->ndirs && d == NULL; i++)
      if (strcmp(blk->dirs[i].name, st->name.s) == 0 &&
          strlen(st->name.s) == st->name.len)
        d = &blk->dirs[i];
    if (d == NULL)
      return unknown_directive(w, blk, st);
    size_t idx = (size_t)(d - blk->dirs);
    if (first_line[idx] && !(d->flags & CONFIG__REPEAT))
      return wfail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                   "duplicate '%s' (first at line %u)", d->name,
                   first_line[idx]);
    first_line[idx] = st->name.line;
    if (st->nargs < d->min_args)
      return usage_error(w, d, st->name.line, st->name.col, "missing argument");
    if (st->nargs > d->max_args)
      return usage_error(w, d, st->args[d->max_args].line,
                         st->args[d->max_args].col, "too many arguments");
    if (st->has_block && !(d->flags & (CONFIG__BLOCK | CONFIG__BLOCK_OPT)))
      return usage_error(w, d, st->bline, st->bcol, "unexpected block");
    if (!st->has_block && (d->flags & CONFIG__BLOCK))
      return usage_error(w, d, st->name.line, st->name.col, "missing block");
    int rc = d->type->parse(w, d, obj, st);
    if (rc)
      return rc;
  }
  return blk->check ? blk->check(w, obj, parent) : 0;
}

/* Fills every directive of `blk` that has a default, and the defaults of
 * the sections it contains, by parsing the default text. */
static int apply_defaults(struct config__walk *w,
                          const struct config__block *blk, void *obj) {
  for (size_t i = 0; i < blk->ndirs; i++) {
    const struct config__dir *d = &blk->dirs[i];
    if (d->type == &t_section || d->type == &t_metrics) {
      int rc = apply_defaults(w, d->sub, FIELD(obj, d));
      if (rc)
        return rc;
      continue;
    }
    if (d->def == NULL)
      continue;
    struct config__word words[8];
    struct config__node st = {
        .name = {.s = (char *)d->name, .len = strlen(d->name)}, .args = words};
    char buf[128];
    snprintf(buf, sizeof buf, "%s", d->def);
    for (char *save = NULL, *t = strtok_r(buf, " ", &save); t && st.nargs < 8;
         t = strtok_r(NULL, " ", &save))
      words[st.nargs++] = (struct config__word){.s = t, .len = strlen(t)};
    int rc = d->type->parse(w, d, obj, &st);
    if (rc)
      return rc;
  }
  return 0;
}

/* ------------------------------------------------------------ print, free */

static void print_block(FILE *f, const struct config__block *blk,
                        const void *obj, int indent) {
  for (size_t i = 0; i < blk->ndirs; i++)
    blk->dirs[i].type->print(f, &blk->dirs[i], obj, indent);
}

static void free_block(const struct config__block *blk, void *obj) {
  for (size_t i = 0; i < blk->ndirs; i++)
    if (blk->dirs[i].type->free)
      blk->dirs[i].type->free(&blk->dirs[i], obj);
}

/* One line per directive, depth first; see config_schema_print. */
static void schema_print(FILE *f, const struct config__block *blk,
                         const char *prefix) {
  for (size_t i = 0; i < blk->ndirs; i++) {
    const struct config__dir *d = &blk->dirs[i];
    char name[128], def[160], range[160];
    snprintf(name, sizeof name, "%s%s", prefix, d->name);
    if (d->def)
      snprintf(def, sizeof def, "%s", d->def);
    else if (d->unset)
      snprintf(def, sizeof def, "unset: %s", d->unset);
    else
      def[0] = 0;
    if (d->type == &t_duration || d->type == &t_size || d->type == &t_u32 ||
        d->type == &t_u16 || d->type == &t_decimal) {
      char lo[64], hi[64];
      range_text(d, d->min, lo, sizeof lo);
      range_text(d, d->max, hi, sizeof hi);
      snprintf(range, sizeof range, "%s..%s", lo, hi);
    } else {
      range[0] = 0;
    }
    fprintf(f, "%s\t%s\t%s\t%s\t%s\n", name, d->synopsis, def, range, d->help);
    if (d->sub != NULL) {
      char sub[sizeof name + 2];
      snprintf(sub, sizeof sub, "%s.", name);
      schema_print(f, d->sub, sub);
    }
  }
}

int config_schema_print(FILE *f) {
  schema_print(f, &root_block, "");
  fflush(f);
  return ferror(f) ? POSTERN_EIO : 0;
}

int config_print(FILE *f, const struct postern_config *cfg) {
  fprintf(f, "# Effective configuration");
  if (cfg->path) {
    fputs(" of ", f);
    for (const char *p = cfg->path; *p; p++)
      fputc((unsigned char)*p < 0x20 ? '?' : *p, f);
  }
  fputs(", defaults filled in.\n", f);
  print_block(f, &root_block, cfg, 0);
  fflush(f);
  return ferror(f) ? POSTERN_EIO : 0;
}

void config_free(struct postern_config *cfg) {
  if (cfg == NULL)
    return;
  free_block(&root_block, cfg);
  free(cfg->path);
  free(cfg);
}

size_t config_error_format(const struct config_error *err, char *buf,
                           size_t cap) {
  int n;
  if (err->line == 0)
    n = snprintf(buf, cap, "%s: %s", err->file, err->message);
  else
    n = snprintf(buf, cap, "%s:%u:%u: %s", err->file, err->line, err->col,
                 err->message);
  return n < 0 ? 0 : (size_t)n;
}

/* ---------------------------------------------------------------- loading */

int config_parse(const char *name, const char *text, size_t len,
                 struct postern_config **out, struct config_error *err) {
  *out = NULL;
  memset(err, 0, sizeof *err);
  struct config__node root;
  struct config__walk w = {.file = name, .err = err};
  int rc = config__syntax_parse(name, text, len, &root, &w.eof_line, &w.eof_col,
                                err);
  if (rc) {
    config__node_free(&root);
    return rc;
  }
  struct postern_config *cfg = calloc(1, sizeof *cfg);
  if (cfg == NULL || (cfg->path = strdup(name)) == NULL) {
    free(cfg);
    config__node_free(&root);
    config__error_set(err, name, 0, 0, "out of memory");
    return POSTERN_ENOMEM;
  }
  w.cfg = cfg;
  rc = apply_defaults(&w, &root_block, cfg);
  if (rc == 0)
    rc = walk_block(&w, &root_block, cfg, &root);
  config__node_free(&root);
  if (rc) {
    config_free(cfg);
    return rc;
  }
  *out = cfg;
  return 0;
}

int config_load(const char *path, struct postern_config **out,
                struct config_error *err) {
  *out = NULL;
  memset(err, 0, sizeof *err);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    int e = errno;
    config__error_set(err, path, 0, 0, "cannot open: %s", strerror(e));
    return e == ENOENT ? POSTERN_ENOENT : POSTERN_EIO;
  }
  /* Read one byte past the limit to tell "at the limit" from "over it". */
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap);
  int rc = 0;
  while (buf != NULL) {
    if (len == cap) {
      if (cap > CONFIG_FILE_MAX)
        break;
      cap *= 2;
      char *nb = realloc(buf, cap);
      if (nb == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
    }
    size_t n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0)
      break;
  }
  if (buf == NULL) {
    config__error_set(err, path, 0, 0, "out of memory");
    rc = POSTERN_ENOMEM;
  } else if (ferror(f)) {
    config__error_set(err, path, 0, 0, "cannot read: %s", strerror(errno));
    rc = POSTERN_EIO;
  }
  fclose(f);
  if (rc == 0)
    rc = config_parse(path, buf, len, out, err);
  free(buf);
  return rc;
}
