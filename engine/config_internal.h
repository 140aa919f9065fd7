/*
 * config_internal.h - pieces of the config module shared by its source
 * files and its unit tests; nothing outside engine/config* includes this.
 *
 * Loading runs in two passes:
 *   1. config_syntax.c turns bytes into a tree of statements (`name arg...`
 *      with an optional block of child statements), enforcing the lexical
 *      rules and the limits in config.h. It knows no directive.
 *   2. config.c walks that tree against the schema (config_schema.c: one
 *      table per block, and the cross-field rules), converting each
 *      statement with its directive's type (config_types.c), which uses the
 *      value parsers (config_value.c), filling defaults and checking the
 *      cross-field rules.
 */
#ifndef POSTERN_ENGINE_CONFIG_INTERNAL_H
#define POSTERN_ENGINE_CONFIG_INTERNAL_H

#include "engine/config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One argument word after unquoting, escapes and {env:} substitution. It may
 * contain any byte but NUL; `len` excludes the terminating NUL. */
struct config__word {
  char *s;
  size_t len;
  bool quoted;
  unsigned line, col;
};

/* One statement: `name arg... [{ children }]`. */
struct config__node {
  struct config__word name;
  struct config__word *args;
  size_t nargs;
  bool has_block;
  unsigned bline, bcol; /* position of '{' when has_block */
  struct config__node *children;
  size_t nchildren;
};

/*
 * Pass 1. Parses `len` bytes of `buf` into `root` (its children are the
 * top-level statements; root->name is empty). Returns 0, or POSTERN_ESYNTAX /
 * POSTERN_ETOOBIG / POSTERN_ENOMEM with *err filled (`file` names the
 * source). `root` is always left freeable with config__node_free.
 * *eof_line / *eof_col receive the position just past the last byte.
 */
int config__syntax_parse(const char *file, const char *buf, size_t len,
                         struct config__node *root, unsigned *eof_line,
                         unsigned *eof_col, struct config_error *err);

/* Frees what a node owns (not the node itself). */
void config__node_free(struct config__node *n);

/* Fills *err; `fmt` is printf-like. */
void config__error_set(struct config_error *err, const char *file,
                       unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Writes `n` bytes of `s` into `buf` for an error message: printable ASCII
 * as is, other bytes as \xHH, cut to about 60 bytes with "...". */
const char *config__quote_user(const char *s, size_t n, char *buf, size_t cap);

/*
 * Value parsers (config_value.c). Each takes a word (`s`, `n` bytes, not
 * necessarily NUL-terminated), returns 0 and stores the value, or returns
 * POSTERN_ECONFIG (malformed) / POSTERN_ERANGE (overflow) and points *why at
 * a static explanation. They never read outside s[0..n).
 */
/* "0", "250ms", "30s", "5m", "2h", "5d", compound "1h30m" (units from the
 * largest to the smallest, each once). Milliseconds. */
int config__duration_parse(const char *s, size_t n, uint64_t *ms,
                           const char **why);
/* Canonical text of a duration ("1h30m", "0"); buf needs 64 bytes. */
void config__duration_format(uint64_t ms, char *buf, size_t cap);

/* "512", "512K", "32M", "16G", "1T" (binary units, K=1024). Bytes. */
int config__size_parse(const char *s, size_t n, uint64_t *bytes,
                       const char **why);
void config__size_format(uint64_t bytes, char *buf, size_t cap);

/* Plain decimal digits, no sign, no spaces. */
int config__uint_parse(const char *s, size_t n, uint64_t *v, const char **why);

/* "2", "1.5", "1.25": at most 6 decimals; stored in millionths. */
int config__decimal_parse(const char *s, size_t n, uint64_t *micro,
                          const char **why);
void config__decimal_format(uint64_t micro, char *buf, size_t cap);

/* An IP literal without port into sa (port 0). */
int config__ip_parse(const char *s, size_t n, struct sockaddr_storage *sa,
                     socklen_t *salen, const char **why);

/* "IPv4:PORT" or "[IPv6]:PORT"; with default_port >= 0 the port may be left
 * out (then bare IPv6 is accepted too). Port range 0..65535. */
int config__addr_parse(const char *s, size_t n, int default_port,
                       struct sockaddr_storage *sa, socklen_t *salen,
                       const char **why);
/* Canonical "1.2.3.4:25" / "[::1]:25"; buf needs 64 bytes. */
void config__addr_format(const struct sockaddr_storage *sa, char *buf,
                         size_t cap);

/* "10.0.0.0/8", "::1/128", or a bare address (a host prefix). When the
 * only fault is host bits set, *out holds the masked network (family != 0)
 * for a "did you mean" hint; other errors leave out->family 0. */
int config__cidr_parse(const char *s, size_t n, struct config_cidr *out,
                       const char **why);

/* A DNS host name: letters, digits, hyphens, labels of 1..63, at most 253
 * bytes; one trailing dot allowed (the caller strips it). */
int config__hostname_check(const char *s, size_t n, const char **why);
/* A domain or host name as the operator wrote it, ASCII or with U-labels
 * (IDNA2008): its A-label form, lower case, no trailing dot, into out (cap
 * bytes). 0, or POSTERN_ECONFIG with *why. Routes, destination patterns and
 * tls_names are compared with what DNS and certificates carry, which is
 * always the A-label form. */
int config__domain_alabel(const char *s, size_t n, char *out, size_t cap,
                          const char **why);

/* Levenshtein distance, capped: returns cap+1 as soon as it is exceeded.
 * For "did you mean" hints (config.c). */
unsigned config__edit_distance(const char *a, const char *b, unsigned cap);

/*
 * The schema, exposed so the unit tests can walk it (every directive has a
 * default that parses, help text, and appears in the printer's output).
 */
struct config__dir;
struct config__block;
struct config__walk;

struct config__type {
  const char *name; /* "duration", "size", ... */
  int (*parse)(struct config__walk *w, const struct config__dir *d, void *obj,
               const struct config__node *st);
  void (*print)(FILE *f, const struct config__dir *d, const void *obj,
                int indent);
  void (*free)(const struct config__dir *d, void *obj);
};

enum {
  CONFIG__REPEAT = 1u,   /* may appear more than once */
  CONFIG__BLOCK = 2u,    /* takes a { } block (required) */
  CONFIG__BLOCK_OPT = 4u /* may take a { } block */
};

struct config__dir {
  const char *name;
  const struct config__type *type;
  unsigned min_args, max_args;
  uint64_t min, max;        /* range, in the unit the field is stored in */
  const char *def;          /* default, in file syntax; NULL: none */
  size_t off;               /* offset of the field in the block's struct */
  const char *const *names; /* enum values, NULL-terminated */
  const struct config__block *sub; /* the block's schema */
  unsigned flags;
  const char *synopsis; /* arguments, as in the man page: "DURATION" */
  const char *unset;    /* for optional values: what being unset means */
  const char *help;     /* one line: what it is for */
};

struct config__block {
  const char *name; /* "" for the top level */
  const struct config__dir *dirs;
  size_t ndirs;
  /* Cross-field rules, run after the block's statements (st is the block's
   * own statement; NULL for the top level). NULL: none. */
  int (*check)(struct config__walk *w, void *obj,
               const struct config__node *st);
};

/* All blocks, top level first; NULL-terminated (config_schema.c). */
extern const struct config__block *const config__blocks[];

/* The top level, config__blocks[0]. */
extern const struct config__block config__root_block;

/* The most directives in one block: the walk keeps one position per
 * directive (config_schema.c checks every block against it). */
#define CONFIG__MAX_DIRS 24

/* ---- pass 2, shared by config.c, config_schema.c and config_types.c ---- */

/* One walk over the tree: where errors go, and the configuration being
 * filled. eof_line/eof_col point just past the file's last byte. */
struct config__walk {
  const char *file;
  struct config_error *err;
  struct postern_config *cfg;
  unsigned eof_line, eof_col;
};

/* Fills w->err at line:col with a printf-like message; returns `code`. */
int config__fail(struct config__walk *w, unsigned line, unsigned col, int code,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The field directive `d` fills in the block struct at `obj`. */
#define CONFIG__FIELD(obj, d) ((void *)((char *)(obj) + (d)->off))
#define CONFIG__CFIELD(obj, d) ((const void *)((const char *)(obj) + (d)->off))
/* A word made safe for an error message, in the char array `buf`. */
#define CONFIG__QUOTE(word, buf)                                               \
  config__quote_user((word)->s, (word)->len, buf, sizeof buf)

/*
 * The walk (config.c). walk_block converts a block's statements into `obj`
 * and runs the block's cross-field check; apply_defaults parses every
 * default of `blk` (and of the sections it contains) into `obj`;
 * print_block and free_block run each directive's print and free.
 */
int config__walk_block(struct config__walk *w, const struct config__block *blk,
                       void *obj, const struct config__node *parent);
int config__apply_defaults(struct config__walk *w,
                           const struct config__block *blk, void *obj);
void config__print_block(FILE *f, const struct config__block *blk,
                         const void *obj, int indent);
void config__free_block(const struct config__block *blk, void *obj);

/*
 * Arrays stored as `T *items; size_t count;` (config_types.c): `field`
 * points at `items`. arr_push appends one zeroed element of `elem` bytes
 * and returns it, or NULL when out of memory (the array is unchanged);
 * arr_reset frees the items (not what they own) and empties the array.
 */
size_t config__arr_count(const void *field);
void *config__arr_items(const void *field);
void *config__arr_push(void *field, size_t elem);
void config__arr_reset(void *field);

/* Printing in file syntax (config_types.c): two spaces per indent level;
 * put_line writes `name value` with the value quoted when needed so the
 * lexer reads it back unchanged; put_unset writes the commented line of a
 * directive without a value. */
void config__put_indent(FILE *f, int indent);
void config__put_line(FILE *f, int indent, const char *name, const char *v);
void config__put_unset(FILE *f, int indent, const struct config__dir *d);

/* `v` in the unit of d's type ("30s", "64K", "1.5", "25"); whether the type
 * has a range at all (numbers, durations, sizes). */
void config__range_text(const struct config__dir *d, uint64_t v, char *buf,
                        size_t cap);
bool config__type_ranged(const struct config__type *t);

/* Sets *out from an address word (ADDR:PORT; with default_port >= 0 the
 * port may be left out); port 0 only when port_zero_ok. */
int config__addr_set(struct config__walk *w, const struct config__dir *d,
                     const struct config__word *a, struct config_addr *out,
                     int default_port, bool port_zero_ok);

/* The value types (config_types.c). */
extern const struct config__type config__t_hostname, config__t_user,
    config__t_path, config__t_duration, config__t_size, config__t_u32,
    config__t_limit, config__t_u16, config__t_decimal, config__t_enum,
    config__t_bool, config__t_addr, config__t_ip, config__t_cidrs,
    config__t_servers, config__t_route, config__t_text, config__t_mailbox,
    config__t_share, config__t_redis_url, config__t_token;

/* The block-valued types (config.c): a plain section, an optional one (off
 * when absent: metrics, tlsrpt, cluster), repeated `listen` and
 * `destination` blocks, the `policy` chain and one module of it (its kind
 * is the directive's `min`). */
extern const struct config__type config__t_section, config__t_optional,
    config__t_destination, config__t_pins, config__t_dest_names,
    config__t_listen, config__t_policy, config__t_module;

#endif
