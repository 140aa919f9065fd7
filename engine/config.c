/*
 * config.c - pass 2 of config loading, and the module's entry points: the
 * walk that turns the statement tree from config_syntax.c into a `struct
 * postern_config` against the schema (config_schema.c); loading, printing
 * and freeing.
 *
 * The schema's tables drive everything here:
 *   - checking statements (unknown names, with a "did you mean" hint,
 *     duplicates, arity, block or not),
 *   - converting and range-checking values (the type's parse function,
 *     config_types.c),
 *   - filling defaults (the default is text in file syntax, parsed by the
 *     same function, so a default can never be out of range unnoticed),
 *   - printing the effective configuration (the type's print function), and
 *   - freeing it (the type's free function).
 * The types whose value is a block (a plain section, metrics, listen, the
 * policy chain and its modules) are here too: they recurse into the walk.
 *
 * Ownership: the configuration owns every string and array it points to;
 * config_free releases them through the schema. The statement tree is
 * freed before config_parse returns, so nothing in a configuration points
 * into it.
 */
#include "engine/config_internal.h"

#include "base/postern_err.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>

int config__fail(struct config__walk *w, unsigned line, unsigned col, int code,
                 const char *fmt, ...) {
  char msg[sizeof w->err->message];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  config__error_set(w->err, w->file, line, col, "%s", msg);
  return code;
}

/* ------------------------------------------------------- block-valued types */

/* Sections: a block of directives filling an embedded struct. */
static int parse_section(struct config__walk *w, const struct config__dir *d,
                         void *obj, const struct config__node *st) {
  return config__walk_block(w, d->sub, CONFIG__FIELD(obj, d), st);
}

static void print_section(FILE *f, const struct config__dir *d, const void *obj,
                          int indent) {
  config__put_indent(f, indent);
  fprintf(f, "%s {\n", d->name);
  config__print_block(f, d->sub, CONFIG__CFIELD(obj, d), indent + 1);
  config__put_indent(f, indent);
  fputs("}\n", f);
}

static void free_section(const struct config__dir *d, void *obj) {
  config__free_block(d->sub, CONFIG__FIELD(obj, d));
}

const struct config__type config__t_section = {"block", parse_section,
                                               print_section, free_section};

/* A section that is off when absent (metrics { }, tlsrpt { }, cluster { }):
 * its struct starts with `bool enabled`, set when the block is present, even
 * empty; what the block itself requires is its schema's check. */
static int parse_optional(struct config__walk *w, const struct config__dir *d,
                          void *obj, const struct config__node *st) {
  bool *enabled = CONFIG__FIELD(obj, d);
  int rc = config__walk_block(w, d->sub, enabled, st);
  if (rc == 0)
    *enabled = true;
  return rc;
}

static void print_optional(FILE *f, const struct config__dir *d,
                           const void *obj, int indent) {
  const bool *enabled = CONFIG__CFIELD(obj, d);
  if (!*enabled)
    config__put_unset(f, indent, d);
  else
    print_section(f, d, obj, indent);
}

const struct config__type config__t_optional = {"block", parse_optional,
                                                print_optional, free_section};

/* destination PATTERN { ... }, repeatable; first match wins. */

static void free_destinations(const struct config__dir *d, void *obj) {
  void *field = CONFIG__FIELD(obj, d);
  struct config_destination *x = config__arr_items(field);
  for (size_t i = 0; i < config__arr_count(field); i++)
    free(x[i].pattern);
  config__arr_reset(field);
}

/* A domain name, ".domain" (its subdomains) or "*", into its A-label form
 * (U-labels are converted, IDNA2008), lower case, no trailing dot. */
static int dest_pattern_norm(const char *s, size_t n, char *out, size_t cap,
                             const char **why) {
  if (n == 1 && s[0] == '*') {
    snprintf(out, cap, "*");
    return 0;
  }
  bool sub = n > 1 && s[0] == '.';
  if (sub)
    out[0] = '.';
  return config__domain_alabel(s + sub, n - sub, out + sub, cap - sub, why);
}

static int parse_destination(struct config__walk *w,
                             const struct config__dir *d, void *obj,
                             const struct config__node *st) {
  void *field = CONFIG__FIELD(obj, d);
  if (config__arr_count(field) >= CONFIG_DEST_MAX)
    return config__fail(w, st->name.line, st->name.col, POSTERN_ETOOBIG,
                        "more than %u destination blocks", CONFIG_DEST_MAX);
  const struct config__word *a = &st->args[0];
  const char *why;
  char q[256], pat[260];
  if (dest_pattern_norm(a->s, a->len, pat, sizeof pat, &why))
    return config__fail(w, a->line, a->col, POSTERN_ECONFIG,
                        "'destination' wants a domain, .domain or *; '%s': %s",
                        CONFIG__QUOTE(a, q), why);
  const struct config_destination *all = config__arr_items(field);
  for (size_t i = 0; i < config__arr_count(field); i++)
    if (strcmp(all[i].pattern, pat) == 0)
      return config__fail(w, a->line, a->col, POSTERN_ECONFIG,
                          "duplicate destination %s (first at line %u)",
                          all[i].pattern, all[i].line);
  struct config_destination *x = config__arr_push(field, sizeof *x);
  if (x == NULL || (x->pattern = strdup(pat)) == NULL)
    return config__fail(w, st->name.line, st->name.col, POSTERN_ENOMEM,
                        "out of memory");
  x->line = st->name.line;
  x->col = st->name.col;
  int rc = config__apply_defaults(w, d->sub, x);
  if (rc == 0 && st->has_block)
    rc = config__walk_block(w, d->sub, x, st);
  return rc;
}

static void print_destinations(FILE *f, const struct config__dir *d,
                               const void *obj, int indent) {
  const void *field = CONFIG__CFIELD(obj, d);
  const struct config_destination *x = config__arr_items(field);
  if (config__arr_count(field) == 0) {
    config__put_unset(f, indent, d);
    return;
  }
  for (size_t i = 0; i < config__arr_count(field); i++) {
    config__put_indent(f, indent);
    fprintf(f, "%s %s {\n", d->name, x[i].pattern);
    config__print_block(f, d->sub, &x[i], indent + 1);
    config__put_indent(f, indent);
    fputs("}\n", f);
  }
}

const struct config__type config__t_destination = {
    "block", parse_destination, print_destinations, free_destinations};

/* listen ADDR:PORT [{ ... }], repeatable. */

static void free_listens(const struct config__dir *d, void *obj) {
  void *field = CONFIG__FIELD(obj, d);
  struct config_listen *l = config__arr_items(field);
  for (size_t i = 0; i < config__arr_count(field); i++) {
    free(l[i].addr.text);
    config__free_block(d->sub, &l[i]);
  }
  config__arr_reset(field);
}

static int parse_listen(struct config__walk *w, const struct config__dir *d,
                        void *obj, const struct config__node *st) {
  void *field = CONFIG__FIELD(obj, d);
  if (config__arr_count(field) >= CONFIG_LISTEN_MAX)
    return config__fail(w, st->name.line, st->name.col, POSTERN_ETOOBIG,
                        "more than %u listen directives", CONFIG_LISTEN_MAX);
  struct config_listen *l = config__arr_push(field, sizeof *l);
  if (l == NULL)
    return config__fail(w, st->name.line, st->name.col, POSTERN_ENOMEM,
                        "out of memory");
  l->line = st->name.line;
  l->col = st->name.col;
  int rc = config__addr_set(w, d, &st->args[0], &l->addr, -1, true);
  if (rc == 0)
    rc = config__apply_defaults(w, d->sub, l);
  if (rc == 0 && st->has_block)
    rc = config__walk_block(w, d->sub, l, st);
  if (rc)
    return rc;
  const struct config_listen *all = config__arr_items(field);
  size_t n = config__arr_count(field);
  for (size_t i = 0; i + 1 < n; i++) {
    if (strcmp(all[i].addr.text, l->addr.text) == 0 &&
        ntohs(((const struct sockaddr_in *)&l->addr.sa)->sin_port) != 0)
      return config__fail(w, st->args[0].line, st->args[0].col, POSTERN_ECONFIG,
                          "duplicate listen address %s (first at line %u)",
                          l->addr.text, all[i].line);
  }
  return 0;
}

static void print_listens(FILE *f, const struct config__dir *d, const void *obj,
                          int indent) {
  const void *field = CONFIG__CFIELD(obj, d);
  const struct config_listen *l = config__arr_items(field);
  for (size_t i = 0; i < config__arr_count(field); i++) {
    config__put_indent(f, indent);
    fprintf(f, "%s %s {\n", d->name, l[i].addr.text);
    config__print_block(f, d->sub, &l[i], indent + 1);
    config__put_indent(f, indent);
    fputs("}\n", f);
  }
}

const struct config__type config__t_listen = {"block", parse_listen,
                                              print_listens, free_listens};

/* policy { module... }: the chain. The modules are directives of the policy
 * block whose `min` is their kind; each appends itself in file order. */
static int parse_module(struct config__walk *w, const struct config__dir *d,
                        void *obj, const struct config__node *st) {
  struct config_policy_module *m = config__arr_push(obj, sizeof *m);
  if (m == NULL)
    return config__fail(w, st->name.line, st->name.col, POSTERN_ENOMEM,
                        "out of memory");
  m->kind = (enum config_policy_kind)d->min;
  m->line = st->name.line;
  m->col = st->name.col;
  /* The options live in the union member named after the module; every
   * member starts at the union's address. */
  int rc = config__apply_defaults(w, d->sub, &m->local);
  if (rc == 0 && st->has_block)
    rc = config__walk_block(w, d->sub, &m->local, st);
  return rc;
}

const struct config__type config__t_module = {"policy module", parse_module,
                                              NULL, NULL};

static int parse_policy(struct config__walk *w, const struct config__dir *d,
                        void *obj, const struct config__node *st) {
  return config__walk_block(w, d->sub, CONFIG__FIELD(obj, d), st);
}

static void print_policy(FILE *f, const struct config__dir *d, const void *obj,
                         int indent) {
  const void *field = CONFIG__CFIELD(obj, d);
  const struct config_policy_module *m = config__arr_items(field);
  config__put_indent(f, indent);
  fprintf(f, "%s {\n", d->name);
  for (size_t i = 0; i < config__arr_count(field); i++) {
    const struct config__dir *md = &d->sub->dirs[m[i].kind];
    config__put_indent(f, indent + 1);
    if (md->sub->ndirs == 0) {
      fprintf(f, "%s\n", md->name);
      continue;
    }
    fprintf(f, "%s {\n", md->name);
    config__print_block(f, md->sub, &m[i].local, indent + 2);
    config__put_indent(f, indent + 1);
    fputs("}\n", f);
  }
  /* The settings that are not modules: after the chain (none in an empty
   * block, which says "no policy" and nothing else). */
  for (size_t k = CONFIG_POLICY_KIND_COUNT;
       config__arr_count(field) > 0 && k < d->sub->ndirs; k++) {
    const struct config__dir *sd = &d->sub->dirs[k];
    sd->type->print(f, sd, field, indent + 1);
  }
  config__put_indent(f, indent);
  fputs("}\n", f);
}

static void free_policy(const struct config__dir *d, void *obj) {
  config__arr_reset(CONFIG__FIELD(obj, d));
}

const struct config__type config__t_policy = {"block", parse_policy,
                                              print_policy, free_policy};

/* --------------------------------------------------------------- the walk */

static const char *block_where(const struct config__block *blk, char *buf,
                               size_t cap) {
  if (blk->name[0] == 0)
    snprintf(buf, cap, "at the top level");
  else
    snprintf(buf, cap, "in the %s block", blk->name);
  return buf;
}

unsigned config__edit_distance(const char *a, const char *b, unsigned cap) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64)
    return cap + 1;
  unsigned row[65];
  for (size_t j = 0; j <= lb; j++)
    row[j] = (unsigned)j;
  for (size_t i = 1; i <= la; i++) {
    unsigned diag = row[0], best = (unsigned)i;
    row[0] = (unsigned)i;
    for (size_t j = 1; j <= lb; j++) {
      unsigned up = row[j];
      unsigned v = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < v)
        v = up + 1;
      if (row[j - 1] + 1 < v)
        v = row[j - 1] + 1;
      row[j] = v;
      diag = up;
      if (v < best)
        best = v;
    }
    if (best > cap)
      return cap + 1;
  }
  return row[lb] > cap ? cap + 1 : row[lb];
}

static int unknown_directive(struct config__walk *w,
                             const struct config__block *blk,
                             const struct config__node *st) {
  char q[256], where[64];
  const char *name = st->name.s;
  CONFIG__QUOTE(&st->name, q);
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
    return config__fail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                        "unknown directive '%s' %s; did you mean '%s'?", q,
                        where, best);
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
    return config__fail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                        "'%s' is not allowed %s; it belongs %s", q, where,
                        homes);
  return config__fail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                      "unknown directive '%s' %s", q, where);
}

static int usage_error(struct config__walk *w, const struct config__dir *d,
                       unsigned line, unsigned col, const char *what) {
  return config__fail(w, line, col, POSTERN_ECONFIG, "%s (usage: %s%s%s%s)",
                      what, d->name, d->synopsis[0] ? " " : "", d->synopsis,
                      d->flags & CONFIG__BLOCK       ? " { ... }"
                      : d->flags & CONFIG__BLOCK_OPT ? " [{ ... }]"
                                                     : "");
}

int config__walk_block(struct config__walk *w, const struct config__block *blk,
                       void *obj, const struct config__node *parent) {
  unsigned first_line[CONFIG__MAX_DIRS] = {0};
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
      return config__fail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
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
int config__apply_defaults(struct config__walk *w,
                           const struct config__block *blk, void *obj) {
  for (size_t i = 0; i < blk->ndirs; i++) {
    const struct config__dir *d = &blk->dirs[i];
    if (d->type == &config__t_section || d->type == &config__t_optional) {
      int rc = config__apply_defaults(w, d->sub, CONFIG__FIELD(obj, d));
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

void config__print_block(FILE *f, const struct config__block *blk,
                         const void *obj, int indent) {
  for (size_t i = 0; i < blk->ndirs; i++)
    blk->dirs[i].type->print(f, &blk->dirs[i], obj, indent);
}

void config__free_block(const struct config__block *blk, void *obj) {
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
    if (config__type_ranged(d->type)) {
      char lo[64], hi[64];
      config__range_text(d, d->min, lo, sizeof lo);
      config__range_text(d, d->max, hi, sizeof hi);
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
  schema_print(f, &config__root_block, "");
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
  config__print_block(f, &config__root_block, cfg, 0);
  fflush(f);
  return ferror(f) ? POSTERN_EIO : 0;
}

void config_free(struct postern_config *cfg) {
  if (cfg == NULL)
    return;
  config__free_block(&config__root_block, cfg);
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
  /* Every configuration gets its own number: a reload's new one may sit at
   * the address its freed predecessor had, so pointers cannot tell them
   * apart. */
  static _Atomic uint64_t generations;
  if (cfg != NULL)
    cfg->generation = atomic_fetch_add(&generations, 1) + 1;
  if (cfg == NULL || (cfg->path = strdup(name)) == NULL) {
    free(cfg);
    config__node_free(&root);
    config__error_set(err, name, 0, 0, "out of memory");
    return POSTERN_ENOMEM;
  }
  w.cfg = cfg;
  rc = config__apply_defaults(&w, &config__root_block, cfg);
  if (rc == 0)
    rc = config__walk_block(&w, &config__root_block, cfg, &root);
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
