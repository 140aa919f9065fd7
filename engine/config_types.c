/*
 * config_types.c - the value types of directives: how one statement's
 * arguments become a field of the configuration, how the field prints back
 * in file syntax, and how it is freed.
 *
 * Each `struct config__type` (config_internal.h) is one kind of value: host
 * names, user names, paths, durations, sizes, whole and decimal numbers,
 * enumerations, booleans, addresses, networks, DNS servers and routes. The
 * schema (config_schema.c) says which directive has which type; the walk
 * (config.c) calls it. Values are parsed by config_value.c and checked here
 * against the directive's range, with messages in the directive's unit.
 *
 * Ownership: the strings and arrays a type stores belong to the
 * configuration and are released by the type's free function. Arrays are
 * `T *items; size_t count;` pairs, handled generically by the config__arr_
 * functions below (the layout is checked with static assertions).
 */
#include "engine/config_internal.h"

#include "base/postern_err.h"
#include "base/postern_utf8.h"
#include "net/redis.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- arrays */

/* `T *items; size_t count;` handled through memcpy so no object is read
 * through a pointer type it was not stored with. */
size_t config__arr_count(const void *field) {
  size_t n;
  memcpy(&n, (const char *)field + sizeof(void *), sizeof n);
  return n;
}

void *config__arr_items(const void *field) {
  void *p;
  memcpy(&p, field, sizeof p);
  return p;
}

void *config__arr_push(void *field, size_t elem) {
  size_t n = config__arr_count(field);
  char *items = config__arr_items(field);
  char *ni = realloc(items, (n + 1) * elem);
  if (ni == NULL)
    return NULL;
  memset(ni + n * elem, 0, elem);
  n++;
  memcpy(field, &ni, sizeof ni);
  memcpy((char *)field + sizeof(void *), &n, sizeof n);
  return ni + (n - 1) * elem;
}

void config__arr_reset(void *field) {
  void *p = NULL;
  size_t n = 0;
  free(config__arr_items(field));
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

void config__put_indent(FILE *f, int indent) {
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

void config__put_line(FILE *f, int indent, const char *name, const char *v) {
  config__put_indent(f, indent);
  fputs(name, f);
  fputc(' ', f);
  put_value(f, v);
  fputc('\n', f);
}

void config__put_unset(FILE *f, int indent, const struct config__dir *d) {
  config__put_indent(f, indent);
  fprintf(f, "# %s %s  (unset: %s)\n", d->name, d->synopsis,
          d->unset ? d->unset : "no value");
}

/* ------------------------------------------------------ ranges and errors */

static int range_check(struct config__walk *w, const struct config__dir *d,
                       const struct config__word *a, uint64_t v) {
  if (v >= d->min && v <= d->max)
    return 0;
  char lo[64], hi[64], got[64];
  config__range_text(d, d->min, lo, sizeof lo);
  config__range_text(d, d->max, hi, sizeof hi);
  config__range_text(d, v, got, sizeof got);
  return config__fail(w, a->line, a->col, POSTERN_ECONFIG,
                      "'%s' must be between %s and %s, got %s", d->name, lo, hi,
                      got);
}

static int bad_value(struct config__walk *w, const struct config__dir *d,
                     const struct config__word *a, const char *what,
                     const char *why) {
  char q[256];
  return config__fail(w, a->line, a->col, POSTERN_ECONFIG,
                      "'%s': invalid %s '%s': %s", d->name, what,
                      CONFIG__QUOTE(a, q), why);
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
    return config__fail(w, a->line, a->col, POSTERN_ENOMEM, "out of memory");
  char **field = CONFIG__FIELD(obj, d);
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

/* Free text (an organization's name): printable ASCII, 1 to 256 bytes. */
static int check_text(const char *s, size_t n, const char **why) {
  if (n == 0 || n > 256) {
    *why = "the text must have 1 to 256 characters";
    return POSTERN_ECONFIG;
  }
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f) {
      *why = "only printable ASCII characters are allowed";
      return POSTERN_ECONFIG;
    }
  return 0;
}

/* A mailbox local@domain (RFC 5321 §4.1.2, dot-atom local parts only): it
 * becomes an envelope sender and a header field, so nothing that could
 * break either. */
static int check_mailbox(const char *s, size_t n, const char **why) {
  const char *at = memchr(s, '@', n);
  *why = "expected a mailbox local@domain";
  if (n == 0 || n > 254 || at == NULL || at == s ||
      memchr(at + 1, '@', n - (size_t)(at - s) - 1))
    return POSTERN_ECONFIG;
  for (const char *p = s; p < at; p++) {
    unsigned char c = (unsigned char)*p;
    if (c <= 0x20 || c >= 0x7f || strchr("()<>[]:;@\\,\"", c) != NULL)
      return POSTERN_ECONFIG;
  }
  const char *dom_why;
  if (config__hostname_check(at + 1, n - (size_t)(at - s) - 1, &dom_why))
    return POSTERN_ECONFIG;
  return 0;
}

static int parse_text(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  return str_set(w, d, obj, st, check_text, "text", false);
}
static int parse_mailbox(struct config__walk *w, const struct config__dir *d,
                         void *obj, const struct config__node *st) {
  return str_set(w, d, obj, st, check_mailbox, "mailbox", false);
}

/* A Redis URL (cluster { redis }): what net/redis will connect to, so a
 * typo fails at load time with its position, not at the first lease. */
static int check_redis_url(const char *s, size_t n, const char **why) {
  char buf[REDIS_URL_MAX + 1];
  struct redis_url u;
  *why = "expected redis[s]://[[user]:password@]host[:port][/db] or "
         "unix:///path[?db=N]";
  if (n == 0 || n > REDIS_URL_MAX || memchr(s, 0, n) != NULL)
    return POSTERN_ECONFIG;
  memcpy(buf, s, n);
  buf[n] = 0;
  int rc = redis_url_parse(buf, &u);
  explicit_bzero(&u, sizeof u); /* it may hold a password */
  explicit_bzero(buf, sizeof buf);
  return rc == 0 ? 0 : POSTERN_ECONFIG;
}

/* A name that goes into Redis keys and lease holders (node, key_prefix):
 * 1..64 letters, digits and "._-:", no spaces or control characters. */
static int check_token(const char *s, size_t n, const char **why) {
  *why = "1 to 64 letters, digits, '.', '_', '-' or ':'";
  if (n == 0 || n > 64)
    return POSTERN_ECONFIG;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
          c == ':'))
      return POSTERN_ECONFIG;
  }
  return 0;
}

static int parse_redis_url(struct config__walk *w, const struct config__dir *d,
                           void *obj, const struct config__node *st) {
  return str_set(w, d, obj, st, check_redis_url, "Redis URL", false);
}
static int parse_token(struct config__walk *w, const struct config__dir *d,
                       void *obj, const struct config__node *st) {
  return str_set(w, d, obj, st, check_token, "name", false);
}

/* tls_fingerprint sha256:HEX...: up to CONFIG_DEST_PINS digests, into the
 * struct config_destination the block fills. */
static int parse_pins(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  struct config_destination *x = obj;
  (void)d;
  for (size_t i = 0; i < st->nargs; i++) {
    const struct config__word *a = &st->args[i];
    char q[256];
    if (x->npins == CONFIG_DEST_PINS)
      return config__fail(w, a->line, a->col, POSTERN_ETOOBIG,
                          "at most %u tls_fingerprint digests",
                          CONFIG_DEST_PINS);
    bool ok = a->len == 7 + 64 && strncasecmp(a->s, "sha256:", 7) == 0;
    uint8_t *out = x->pins[x->npins];
    for (size_t k = 0; ok && k < 32; k++) {
      unsigned v = 0;
      char hx[3] = {a->s[7 + 2 * k], a->s[8 + 2 * k], 0};
      ok = isxdigit((unsigned char)hx[0]) && isxdigit((unsigned char)hx[1]) &&
           sscanf(hx, "%2x", &v) == 1;
      out[k] = (uint8_t)v;
    }
    if (!ok)
      return config__fail(w, a->line, a->col, POSTERN_ECONFIG,
                          "'tls_fingerprint' wants sha256: and 64 hex digits "
                          "(of a certificate or its public key); got '%s'",
                          CONFIG__QUOTE(a, q));
    x->npins++;
  }
  return 0;
}

static void print_pins(FILE *f, const struct config__dir *d, const void *obj,
                       int indent) {
  const struct config_destination *x = obj;
  if (x->npins == 0) {
    config__put_unset(f, indent, d);
    return;
  }
  config__put_indent(f, indent);
  fputs(d->name, f);
  for (size_t i = 0; i < x->npins; i++) {
    fputs(" sha256:", f);
    for (size_t k = 0; k < 32; k++)
      fprintf(f, "%02x", x->pins[i][k]);
  }
  fputc('\n', f);
}

/* tls_names NAME...: up to CONFIG_DEST_NAMES host names. */
static int parse_dest_names(struct config__walk *w, const struct config__dir *d,
                            void *obj, const struct config__node *st) {
  struct config_destination *x = obj;
  for (size_t i = 0; i < st->nargs; i++) {
    const struct config__word *a = &st->args[i];
    const char *why;
    if (x->nnames == CONFIG_DEST_NAMES)
      return config__fail(w, a->line, a->col, POSTERN_ETOOBIG,
                          "at most %u tls_names", CONFIG_DEST_NAMES);
    if (config__domain_alabel(a->s, a->len, x->names[x->nnames],
                              sizeof x->names[x->nnames], &why))
      return bad_value(w, d, a, "host name", why);
    x->nnames++;
  }
  return 0;
}

static void print_dest_names(FILE *f, const struct config__dir *d,
                             const void *obj, int indent) {
  const struct config_destination *x = obj;
  if (x->nnames == 0) {
    config__put_unset(f, indent, d);
    return;
  }
  config__put_indent(f, indent);
  fputs(d->name, f);
  for (size_t i = 0; i < x->nnames; i++)
    fprintf(f, " %s", x->names[i]);
  fputc('\n', f);
}

static void print_str(FILE *f, const struct config__dir *d, const void *obj,
                      int indent) {
  char *const *field = CONFIG__CFIELD(obj, d);
  if (*field == NULL)
    config__put_unset(f, indent, d);
  else
    config__put_line(f, indent, d->name, *field);
}

static void free_str(const struct config__dir *d, void *obj) {
  char **field = CONFIG__FIELD(obj, d);
  free(*field);
  *field = NULL;
}

const struct config__type config__t_hostname = {"host name", parse_hostname,
                                                print_str, free_str};
const struct config__type config__t_user = {"user name", parse_user, print_str,
                                            free_str};
const struct config__type config__t_path = {"path", parse_path, print_str,
                                            free_str};
const struct config__type config__t_text = {"text", parse_text, print_str,
                                            free_str};
const struct config__type config__t_mailbox = {"mailbox", parse_mailbox,
                                               print_str, free_str};
/* The URL without its password: --check output lands in terminals, tickets
 * and logs. "redis://user:secret@host" prints as "redis://user:***@host". */
void config_redis_url_shown(const char *u, char *buf, size_t cap) {
  const char *scheme = strstr(u, "://");
  /* The last '@': the parser's, a password may hold more. */
  const char *at = scheme ? strrchr(scheme + 3, '@') : NULL;
  const char *colon =
      at ? memchr(scheme + 3, ':', (size_t)(at - scheme - 3)) : NULL;
  if (colon == NULL)
    snprintf(buf, cap, "%s", u);
  else
    snprintf(buf, cap, "%.*s***%s", (int)(colon + 1 - u), u, at);
}

static void print_redis_url(FILE *f, const struct config__dir *d,
                            const void *obj, int indent) {
  char *const *field = CONFIG__CFIELD(obj, d);
  if (*field == NULL) {
    config__put_unset(f, indent, d);
    return;
  }
  char buf[1100];
  config_redis_url_shown(*field, buf, sizeof buf);
  config__put_line(f, indent, d->name, buf);
}

const struct config__type config__t_redis_url = {"Redis URL", parse_redis_url,
                                                 print_redis_url, free_str};
const struct config__type config__t_token = {"name", parse_token, print_str,
                                             free_str};

static void free_nothing(const struct config__dir *d, void *obj) {}

const struct config__type config__t_pins = {"digest", parse_pins, print_pins,
                                            free_nothing};
const struct config__type config__t_dest_names = {
    "host name", parse_dest_names, print_dest_names, free_nothing};

/*
 * Numbers. Every numeric type is a value in its unit (ms, bytes, millionths
 * for decimals, plain for counts and ports) parsed by its config__*_parse,
 * range-checked in that unit, stored in a field of its width and printed by
 * config__range_text, so one parse and one print serve them all. Decimals
 * are parsed exactly in millionths and stored as double; printing rounds
 * back to millionths, so the round trip is exact.
 */
static int parse_num(struct config__walk *w, const struct config__dir *d,
                     void *obj, const struct config__node *st) {
  const struct config__type *t = d->type;
  int (*parse)(const char *, size_t, uint64_t *, const char **) =
      t == &config__t_duration  ? config__duration_parse
      : t == &config__t_size    ? config__size_parse
      : t == &config__t_decimal ? config__decimal_parse
                                : config__uint_parse;
  const struct config__word *a = &st->args[0];
  const char *why;
  uint64_t v;
  /* A limit may say "local:N": per node, not fleet-wide (cluster { }). */
  static const char local[] = "local:";
  bool is_local = t == &config__t_limit && a->len > sizeof local - 1 &&
                  memcmp(a->s, local, sizeof local - 1) == 0;
  size_t skip = is_local ? sizeof local - 1 : 0;
  if (t == &config__t_share) {
    /* "0.5" or "50%": a percentage is the decimal divided by 100. */
    bool pct = a->len > 1 && a->s[a->len - 1] == '%';
    if (config__decimal_parse(a->s, a->len - pct, &v, &why))
      return bad_value(w, d, a, t->name, why);
    if (pct)
      v /= 100;
  } else if (parse(a->s + skip, a->len - skip, &v, &why))
    return bad_value(w, d, a, t->name,
                     t == &config__t_limit
                         ? "expected a whole number, or local: and one"
                         : why);
  int rc = range_check(w, d, a, v);
  if (rc)
    return rc;
  void *field = CONFIG__FIELD(obj, d);
  if (t == &config__t_u32)
    *(uint32_t *)field = (uint32_t)v;
  else if (t == &config__t_limit)
    *(struct config_limit *)field =
        (struct config_limit){.n = (uint32_t)v, .local = is_local};
  else if (t == &config__t_u16)
    *(uint16_t *)field = (uint16_t)v;
  else if (t == &config__t_decimal || t == &config__t_share)
    *(double *)field = (double)v / 1e6;
  else
    memcpy(field, &v, sizeof v);
  return 0;
}

static void print_num(FILE *f, const struct config__dir *d, const void *obj,
                      int indent) {
  const struct config__type *t = d->type;
  const void *field = CONFIG__CFIELD(obj, d);
  uint64_t v;
  const char *prefix = "";
  if (t == &config__t_u32)
    v = *(const uint32_t *)field;
  else if (t == &config__t_limit) {
    const struct config_limit *l = field;
    v = l->n;
    prefix = l->local ? "local:" : "";
  } else if (t == &config__t_u16)
    v = *(const uint16_t *)field;
  else if (t == &config__t_decimal || t == &config__t_share)
    v = (uint64_t)(*(const double *)field * 1e6 + 0.5);
  else
    memcpy(&v, field, sizeof v);
  char buf[64], out[80];
  config__range_text(d, v, buf, sizeof buf);
  snprintf(out, sizeof out, "%s%s", prefix, buf);
  config__put_line(f, indent, d->name, out);
}

const struct config__type config__t_duration = {"duration", parse_num,
                                                print_num, free_nothing};
const struct config__type config__t_size = {"size", parse_num, print_num,
                                            free_nothing};
const struct config__type config__t_u32 = {"number", parse_num, print_num,
                                           free_nothing};
/* A destination limit: a count, "local:" in front for a per-node one. */
const struct config__type config__t_limit = {"limit", parse_num, print_num,
                                             free_nothing};
const struct config__type config__t_u16 = {"number", parse_num, print_num,
                                           free_nothing};
const struct config__type config__t_decimal = {"decimal number", parse_num,
                                               print_num, free_nothing};
/* A share: a decimal or a percentage ("0.5", "50%"), stored as a double. */
const struct config__type config__t_share = {"share", parse_num, print_num,
                                             free_nothing};

void config__range_text(const struct config__dir *d, uint64_t v, char *buf,
                        size_t cap) {
  if (d->type == &config__t_duration)
    config__duration_format(v, buf, cap);
  else if (d->type == &config__t_size)
    config__size_format(v, buf, cap);
  else if (d->type == &config__t_decimal || d->type == &config__t_share)
    config__decimal_format(v, buf, cap);
  else
    snprintf(buf, cap, "%llu", (unsigned long long)v);
}

bool config__type_ranged(const struct config__type *t) {
  return t == &config__t_duration || t == &config__t_size ||
         t == &config__t_u32 || t == &config__t_limit || t == &config__t_u16 ||
         t == &config__t_decimal || t == &config__t_share;
}

/* Enumerations and booleans. */
static int parse_enum(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  const struct config__word *a = &st->args[0];
  for (int i = 0; d->names[i]; i++) {
    if (strcmp(a->s, d->names[i]) == 0) {
      *(int *)CONFIG__FIELD(obj, d) = i;
      return 0;
    }
  }
  char list[256] = "", q[256];
  size_t o = 0;
  for (int i = 0; d->names[i] && o < sizeof list; i++)
    o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "",
                          d->names[i]);
  return config__fail(w, a->line, a->col, POSTERN_ECONFIG,
                      "'%s' must be one of %s; got '%s'", d->name, list,
                      CONFIG__QUOTE(a, q));
}

static void print_enum(FILE *f, const struct config__dir *d, const void *obj,
                       int indent) {
  int v = *(const int *)CONFIG__CFIELD(obj, d);
  config__put_line(f, indent, d->name, d->names[v]);
}

static const char *const bool_names[] = {"no",    "yes",  "off", "on",
                                         "false", "true", NULL};

static int parse_bool(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  const struct config__word *a = &st->args[0];
  for (int i = 0; bool_names[i]; i++) {
    if (strcmp(a->s, bool_names[i]) == 0) {
      *(bool *)CONFIG__FIELD(obj, d) = (i & 1) != 0;
      return 0;
    }
  }
  char q[256];
  return config__fail(
      w, a->line, a->col, POSTERN_ECONFIG,
      "'%s' must be yes or no (or on/off, true/false); got '%s'", d->name,
      CONFIG__QUOTE(a, q));
}

static void print_bool(FILE *f, const struct config__dir *d, const void *obj,
                       int indent) {
  config__put_line(f, indent, d->name,
                   *(const bool *)CONFIG__CFIELD(obj, d) ? "yes" : "no");
}

const struct config__type config__t_enum = {"value", parse_enum, print_enum,
                                            free_nothing};
const struct config__type config__t_bool = {"boolean", parse_bool, print_bool,
                                            free_nothing};

/* Addresses. */
int config__addr_set(struct config__walk *w, const struct config__dir *d,
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
    return config__fail(w, a->line, a->col, POSTERN_ENOMEM, "out of memory");
  free(out->text);
  out->text = text;
  out->sa = sa;
  out->salen = salen;
  return 0;
}

/* ADDR:PORT for listening; port 0 asks the kernel for a free port. */
static int parse_addr(struct config__walk *w, const struct config__dir *d,
                      void *obj, const struct config__node *st) {
  return config__addr_set(w, d, &st->args[0], CONFIG__FIELD(obj, d), -1, true);
}

/* An address prints and frees as its canonical text, its first member. */
_Static_assert(offsetof(struct config_addr, text) == 0, "text first");
_Static_assert(offsetof(struct config_ip, text) == 0, "text first");

const struct config__type config__t_addr = {"address", parse_addr, print_str,
                                            free_str};

static int parse_ip(struct config__walk *w, const struct config__dir *d,
                    void *obj, const struct config__node *st) {
  const struct config__word *a = &st->args[0];
  struct config_ip *ip = CONFIG__FIELD(obj, d);
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
    return config__fail(w, a->line, a->col, POSTERN_ENOMEM, "out of memory");
  if (text[0] && text[strlen(text) - 1] == ']')
    text[strlen(text) - 1] = 0;
  free(ip->text);
  ip->text = text;
  ip->sa = sa;
  ip->salen = salen;
  return 0;
}

const struct config__type config__t_ip = {"IP address", parse_ip, print_str,
                                          free_str};

/*
 * Lists whose items start with their canonical text (networks, DNS
 * servers): one print and one free. A list given again replaces the
 * default as a whole.
 */
_Static_assert(offsetof(struct config_cidr, text) == 0, "text first");

static size_t text_item_size(const struct config__dir *d) {
  return d->type == &config__t_cidrs ? sizeof(struct config_cidr)
                                     : sizeof(struct config_addr);
}

static void free_texts(const struct config__dir *d, void *obj) {
  void *field = CONFIG__FIELD(obj, d);
  char *items = config__arr_items(field);
  for (size_t i = 0; i < config__arr_count(field); i++)
    free(*(char **)(items + i * text_item_size(d)));
  config__arr_reset(field);
}

static void print_texts(FILE *f, const struct config__dir *d, const void *obj,
                        int indent) {
  const void *field = CONFIG__CFIELD(obj, d);
  const char *items = config__arr_items(field);
  size_t n = config__arr_count(field);
  if (n == 0) {
    config__put_unset(f, indent, d);
    return;
  }
  config__put_indent(f, indent);
  fputs(d->name, f);
  for (size_t i = 0; i < n; i++) {
    fputc(' ', f);
    put_value(f, *(char *const *)(items + i * text_item_size(d)));
  }
  fputc('\n', f);
}

/* Networks in CIDR notation. */
static int parse_cidrs(struct config__walk *w, const struct config__dir *d,
                       void *obj, const struct config__node *st) {
  free_texts(d, obj);
  void *field = CONFIG__FIELD(obj, d);
  for (size_t i = 0; i < st->nargs; i++) {
    const struct config__word *a = &st->args[i];
    struct config_cidr c;
    const char *why;
    if (config__cidr_parse(a->s, a->len, &c, &why)) {
      if (c.family == 0)
        return bad_value(w, d, a, "network", why);
      char q[256], net[INET6_ADDRSTRLEN];
      inet_ntop(c.family, c.addr, net, sizeof net);
      return config__fail(
          w, a->line, a->col, POSTERN_ECONFIG,
          "'%s': invalid network '%s': host bits are set (did you "
          "mean %s/%u?)",
          d->name, CONFIG__QUOTE(a, q), net, c.prefix);
    }
    char net[INET6_ADDRSTRLEN], buf[INET6_ADDRSTRLEN + 8];
    inet_ntop(c.family, c.addr, net, sizeof net);
    snprintf(buf, sizeof buf, "%s/%u", net, c.prefix);
    c.text = strdup(buf);
    struct config_cidr *slot =
        c.text ? config__arr_push(field, sizeof c) : NULL;
    if (slot == NULL) {
      free(c.text);
      return config__fail(w, a->line, a->col, POSTERN_ENOMEM, "out of memory");
    }
    *slot = c;
  }
  return 0;
}

static void print_words(FILE *f, int indent, const char *name,
                        const char *const *words, size_t n) {
  config__put_indent(f, indent);
  fputs(name, f);
  for (size_t i = 0; i < n; i++) {
    fputc(' ', f);
    put_value(f, words[i]);
  }
  fputc('\n', f);
}

const struct config__type config__t_cidrs = {"network", parse_cidrs,
                                             print_texts, free_texts};

/* DNS servers: ADDR[:PORT], port 53 when left out. */
static int parse_servers(struct config__walk *w, const struct config__dir *d,
                         void *obj, const struct config__node *st) {
  free_texts(d, obj);
  void *field = CONFIG__FIELD(obj, d);
  for (size_t i = 0; i < st->nargs; i++) {
    struct config_addr *slot = config__arr_push(field, sizeof *slot);
    if (slot == NULL)
      return config__fail(w, st->args[i].line, st->args[i].col, POSTERN_ENOMEM,
                          "out of memory");
    int rc = config__addr_set(w, d, &st->args[i], slot, 53, false);
    if (rc)
      return rc;
  }
  return 0;
}

const struct config__type config__t_servers = {"server", parse_servers,
                                               print_texts, free_texts};

/* route DOMAIN TARGET, repeatable, kept in order. */
static void free_routes(const struct config__dir *d, void *obj) {
  void *field = CONFIG__FIELD(obj, d);
  struct config_route *r = config__arr_items(field);
  for (size_t i = 0; i < config__arr_count(field); i++) {
    free(r[i].domain);
    free(r[i].host);
  }
  config__arr_reset(field);
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
  /* Domains and hosts in their A-label form: what lookups and
   * certificates carry (U-labels are converted, IDNA2008). */
  char domain[256] = "*", hostbuf[256];
  if (!(dom->len == 1 && dom->s[0] == '*') &&
      config__domain_alabel(dom->s, dom->len, domain, sizeof domain, &why))
    return bad_value(w, d, dom, "domain", why);
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
  } else if (config__domain_alabel(host, hn, hostbuf, sizeof hostbuf, &why)) {
    /* A U-label host says what IDNA2008 found wrong with it. */
    return bad_value(
        w, d, tgt, "target",
        postern_has_8bit(host, hn) ? why : "not a host name or IP address");
  } else {
    host = hostbuf;
    hn = strlen(hostbuf);
  }
  void *field = CONFIG__FIELD(obj, d);
  if (config__arr_count(field) >= CONFIG_ROUTE_MAX)
    return config__fail(w, st->name.line, st->name.col, POSTERN_ETOOBIG,
                        "more than %u routes", CONFIG_ROUTE_MAX);
  struct config_route *old = config__arr_items(field);
  for (size_t i = 0; i < config__arr_count(field); i++) {
    if (strcmp(old[i].domain, domain) == 0) {
      char q[256];
      return config__fail(w, dom->line, dom->col, POSTERN_ECONFIG,
                          "duplicate route for '%s' (first at line %u)",
                          CONFIG__QUOTE(dom, q), old[i].line);
    }
  }
  r.domain = strdup(domain);
  r.host = lower_dup(host, hn);
  struct config_route *slot =
      r.domain && r.host ? config__arr_push(field, sizeof r) : NULL;
  if (slot == NULL) {
    free(r.domain);
    free(r.host);
    return config__fail(w, dom->line, dom->col, POSTERN_ENOMEM,
                        "out of memory");
  }
  *slot = r;
  return 0;
}

static void print_routes(FILE *f, const struct config__dir *d, const void *obj,
                         int indent) {
  const void *field = CONFIG__CFIELD(obj, d);
  const struct config_route *r = config__arr_items(field);
  size_t n = config__arr_count(field);
  if (n == 0)
    config__put_unset(f, indent, d);
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

const struct config__type config__t_route = {"route", parse_route, print_routes,
                                             free_routes};
