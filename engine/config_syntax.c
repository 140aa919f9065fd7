/*
 * config_syntax.c - pass 1 of config loading: bytes to a statement tree, and
 * the value parsers (durations, sizes, numbers, addresses) used by pass 2.
 *
 * The lexical rules (docs/postern.conf.5, SYNTAX):
 *   - a statement is `name arg...`, ended by a newline, ';' or a block;
 *   - a block is `{ statement... }` after a statement's arguments;
 *   - '#' at the start of a word begins a comment to the end of the line;
 *   - "quoted strings" allow \" \\ \n \t \r \xHH (not \x00) and stay on one
 *     line; bytes >= 0x80 are allowed only inside quoted strings;
 *   - {env:NAME} inside a word or a quoted string is replaced by the value
 *     of environment variable NAME; an unset variable is an error.
 *
 * Invariants: every byte is read through a bounds check against `len`, so
 * the input needs no terminator and may hold anything. Each limit in
 * config.h yields an error naming the position, never a truncation. On
 * every return the tree is consistent (counts match allocated elements), so
 * the caller frees it the same way after success and after failure.
 */
#include "engine/config_internal.h"

#include "base/postern_err.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void config__error_set(struct config_error *err, const char *file,
                       unsigned line, unsigned col, const char *fmt, ...) {
  snprintf(err->file, sizeof err->file, "%s", file ? file : "");
  err->line = line;
  err->col = col;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
}

const char *config__quote_user(const char *s, size_t n, char *buf, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  size_t shown = n > 60 ? 60 : n;
  for (size_t i = 0; i < shown && o + 8 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      buf[o++] = (char)c;
    } else {
      buf[o++] = '\\';
      buf[o++] = 'x';
      buf[o++] = hex[c >> 4];
      buf[o++] = hex[c & 15];
    }
  }
  if (shown < n && o + 4 < cap) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o] = 0;
  return buf;
}

/* ------------------------------------------------------------------ lexer */

enum tok_kind { TOK_WORD, TOK_LBRACE, TOK_RBRACE, TOK_SEMI, TOK_NL, TOK_EOF };

struct tok {
  enum tok_kind kind;
  unsigned line, col;
  struct config__word w; /* TOK_WORD only; ownership passes to the caller */
};

struct lexer {
  const char *file;
  const char *buf;
  size_t len, pos;
  unsigned line;
  size_t line_start;
  struct config_error *err;
  bool has_peek;
  struct tok peek;
  size_t words; /* produced so far, against CONFIG_WORDS_MAX */
  /* the word being built */
  char *tb;
  size_t tlen, tcap;
};

static unsigned lx_col(const struct lexer *lx, size_t pos) {
  return (unsigned)(pos - lx->line_start + 1);
}

static int lx_fail(struct lexer *lx, size_t pos, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int lx_fail(struct lexer *lx, size_t pos, int code, const char *fmt,
                   ...) {
  char msg[sizeof lx->err->message];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  config__error_set(lx->err, lx->file, lx->line, lx_col(lx, pos), "%s", msg);
  return code;
}

/* Whole-file checks made before tokenizing, so that the tokenizer can rely
 * on them: no NUL byte, no line longer than CONFIG_LINE_MAX. */
static int lx_prescan(struct lexer *lx) {
  unsigned line = 1;
  size_t start = 0;
  for (size_t i = 0; i < lx->len; i++) {
    unsigned char c = (unsigned char)lx->buf[i];
    if (c == 0) {
      config__error_set(lx->err, lx->file, line, (unsigned)(i - start + 1),
                        "NUL byte in the file");
      return POSTERN_ESYNTAX;
    }
    if (c == '\n') {
      line++;
      start = i + 1;
    } else if (i - start >= CONFIG_LINE_MAX) {
      config__error_set(lx->err, lx->file, line, (unsigned)(i - start + 1),
                        "line longer than %u bytes", CONFIG_LINE_MAX);
      return POSTERN_ETOOBIG;
    }
  }
  return 0;
}

static int tb_put(struct lexer *lx, size_t tok_pos, const char *s, size_t n) {
  if (lx->tlen + n > CONFIG_TOKEN_MAX)
    return lx_fail(lx, tok_pos, POSTERN_ETOOBIG, "word longer than %u bytes",
                   CONFIG_TOKEN_MAX);
  if (lx->tlen + n + 1 > lx->tcap) {
    size_t cap = lx->tcap ? lx->tcap : 64;
    while (cap < lx->tlen + n + 1)
      cap *= 2;
    char *nb = realloc(lx->tb, cap);
    if (nb == NULL)
      return lx_fail(lx, tok_pos, POSTERN_ENOMEM, "out of memory");
    lx->tb = nb;
    lx->tcap = cap;
  }
  memcpy(lx->tb + lx->tlen, s, n);
  lx->tlen += n;
  lx->tb[lx->tlen] = 0;
  return 0;
}

static bool lx_at_env(const struct lexer *lx, size_t pos) {
  return lx->len - pos >= 5 && memcmp(lx->buf + pos, "{env:", 5) == 0;
}

/* Expands {env:NAME} at lx->pos into the word being built. */
static int lx_env(struct lexer *lx, size_t tok_pos) {
  size_t at = lx->pos;
  size_t p = at + 5;
  size_t name_start = p;
  while (p < lx->len && p - name_start < 256) {
    char c = lx->buf[p];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
          (c >= '0' && c <= '9' && p > name_start)))
      break;
    p++;
  }
  if (p == name_start || p >= lx->len || lx->buf[p] != '}')
    return lx_fail(lx, at, POSTERN_ESYNTAX,
                   "malformed {env:NAME} (NAME is letters, digits and _, "
                   "not starting with a digit)");
  char name[257];
  memcpy(name, lx->buf + name_start, p - name_start);
  name[p - name_start] = 0;
  const char *v = getenv(name);
  if (v == NULL)
    return lx_fail(lx, at, POSTERN_ECONFIG,
                   "environment variable %s is not set", name);
  lx->pos = p + 1;
  return tb_put(lx, tok_pos, v, strlen(v));
}

static bool is_word_end(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ';' ||
         c == '}' || c == '{';
}

static int lx_word(struct lexer *lx, struct tok *t) {
  size_t start = lx->pos;
  lx->tlen = 0;
  while (lx->pos < lx->len) {
    unsigned char c = (unsigned char)lx->buf[lx->pos];
    if (c == '{' && lx_at_env(lx, lx->pos)) {
      int rc = lx_env(lx, start);
      if (rc)
        return rc;
      continue;
    }
    if (is_word_end((char)c))
      break;
    if (c == '"')
      return lx_fail(lx, lx->pos, POSTERN_ESYNTAX,
                     "unexpected '\"' inside a word (quote the whole word)");
    if (c < 0x20 || c == 0x7f)
      return lx_fail(lx, lx->pos, POSTERN_ESYNTAX,
                     "control character 0x%02x outside a quoted string", c);
    if (c >= 0x80)
      return lx_fail(lx, lx->pos, POSTERN_ESYNTAX,
                     "non-ASCII byte 0x%02x outside a quoted string", c);
    int rc = tb_put(lx, start, (const char *)&lx->buf[lx->pos], 1);
    if (rc)
      return rc;
    lx->pos++;
  }
  t->w.quoted = false;
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static int lx_string(struct lexer *lx, struct tok *t) {
  size_t start = lx->pos;
  lx->tlen = 0;
  lx->pos++; /* the opening quote */
  for (;;) {
    if (lx->pos >= lx->len || lx->buf[lx->pos] == '\n' ||
        (lx->buf[lx->pos] == '\r' && lx->pos + 1 < lx->len &&
         lx->buf[lx->pos + 1] == '\n'))
      return lx_fail(lx, start, POSTERN_ESYNTAX,
                     "unterminated string (strings end on the same line)");
    unsigned char c = (unsigned char)lx->buf[lx->pos];
    if (c == '"') {
      lx->pos++;
      break;
    }
    if (c == '{' && lx_at_env(lx, lx->pos)) {
      int rc = lx_env(lx, start);
      if (rc)
        return rc;
      continue;
    }
    char out;
    size_t adv = 1;
    if (c == '\\') {
      char e = lx->pos + 1 < lx->len ? lx->buf[lx->pos + 1] : 0;
      adv = 2;
      switch (e) {
      case '"':
      case '\\':
        out = e;
        break;
      case 'n':
        out = '\n';
        break;
      case 't':
        out = '\t';
        break;
      case 'r':
        out = '\r';
        break;
      case 'x': {
        int h = lx->pos + 2 < lx->len ? hexval(lx->buf[lx->pos + 2]) : -1;
        int l = lx->pos + 3 < lx->len ? hexval(lx->buf[lx->pos + 3]) : -1;
        if (h < 0 || l < 0)
          return lx_fail(lx, lx->pos, POSTERN_ESYNTAX,
                         "\\x needs two hexadecimal digits");
        if (h == 0 && l == 0)
          return lx_fail(lx, lx->pos, POSTERN_ESYNTAX,
                         "\\x00 is not allowed (no NUL bytes in values)");
        out = (char)(h * 16 + l);
        adv = 4;
        break;
      }
      case '\n':
      case '\r':
      case 0:
        return lx_fail(lx, start, POSTERN_ESYNTAX,
                       "unterminated string (strings end on the same line)");
      default: {
        char q[16];
        return lx_fail(
            lx, lx->pos, POSTERN_ESYNTAX,
            "unknown escape '\\%s' (use \\\" \\\\ \\n \\t \\r \\xHH)",
            config__quote_user(&e, 1, q, sizeof q));
      }
      }
    } else if (c < 0x20 && c != '\t') {
      return lx_fail(lx, lx->pos, POSTERN_ESYNTAX,
                     "control character 0x%02x in a string (write it as "
                     "\\x%02x)",
                     c, c);
    } else if (c == 0x7f) {
      return lx_fail(lx, lx->pos, POSTERN_ESYNTAX,
                     "control character 0x7f in a string (write it as \\x7f)");
    } else {
      out = (char)c;
    }
    int rc = tb_put(lx, start, &out, 1);
    if (rc)
      return rc;
    lx->pos += adv;
  }
  /* A closing quote must end the word: `"a"b` is almost surely a typo. */
  if (lx->pos < lx->len &&
      ((!is_word_end(lx->buf[lx->pos]) && lx->buf[lx->pos] != '#') ||
       lx_at_env(lx, lx->pos)))
    return lx_fail(lx, lx->pos, POSTERN_ESYNTAX,
                   "unexpected character after a closing quote");
  t->w.quoted = true;
  return 0;
}

/* Produces the next token; after the end it keeps returning TOK_EOF. */
static int lx_next(struct lexer *lx, struct tok *t) {
  if (lx->has_peek) {
    *t = lx->peek;
    lx->has_peek = false;
    return 0;
  }
  memset(t, 0, sizeof *t);
  for (;;) {
    while (lx->pos < lx->len &&
           (lx->buf[lx->pos] == ' ' || lx->buf[lx->pos] == '\t'))
      lx->pos++;
    t->line = lx->line;
    t->col = lx_col(lx, lx->pos);
    if (lx->pos >= lx->len) {
      t->kind = TOK_EOF;
      return 0;
    }
    char c = lx->buf[lx->pos];
    if (c == '#') {
      while (lx->pos < lx->len && lx->buf[lx->pos] != '\n')
        lx->pos++;
      continue;
    }
    if (c == '\r' && lx->pos + 1 < lx->len && lx->buf[lx->pos + 1] == '\n') {
      lx->pos++;
      continue;
    }
    if (c == '\r')
      return lx_fail(lx, lx->pos, POSTERN_ESYNTAX,
                     "control character 0x0d outside a quoted string");
    if (c == '\n') {
      t->kind = TOK_NL;
      lx->pos++;
      lx->line++;
      lx->line_start = lx->pos;
      return 0;
    }
    if (c == ';' || c == '}' || (c == '{' && !lx_at_env(lx, lx->pos))) {
      t->kind = c == ';' ? TOK_SEMI : c == '}' ? TOK_RBRACE : TOK_LBRACE;
      lx->pos++;
      return 0;
    }
    /* Bounding the words bounds the tree's memory, whatever the file. */
    if (++lx->words > CONFIG_WORDS_MAX)
      return lx_fail(lx, lx->pos, POSTERN_ETOOBIG,
                     "more than %u words in the file", CONFIG_WORDS_MAX);
    int rc = c == '"' ? lx_string(lx, t) : lx_word(lx, t);
    if (rc)
      return rc;
    t->kind = TOK_WORD;
    t->w.line = t->line;
    t->w.col = t->col;
    t->w.len = lx->tlen;
    t->w.s = malloc(lx->tlen + 1);
    if (t->w.s == NULL)
      return lx_fail(lx, lx->pos, POSTERN_ENOMEM, "out of memory");
    memcpy(t->w.s, lx->tb ? lx->tb : "", lx->tlen);
    t->w.s[lx->tlen] = 0;
    return 0;
  }
}

/* ----------------------------------------------------------------- parser */

void config__node_free(struct config__node *n) {
  free(n->name.s);
  for (size_t i = 0; i < n->nargs; i++)
    free(n->args[i].s);
  free(n->args);
  for (size_t i = 0; i < n->nchildren; i++)
    config__node_free(&n->children[i]);
  free(n->children);
  memset(n, 0, sizeof *n);
}

/* Grows an array of `elem`-byte items so that one more fits. */
static int grow(void **arr, size_t count, size_t elem) {
  /* Capacity is the next power of two, so growing is amortized O(1). */
  if (count & (count - 1)) {
    return 0;
  }
  size_t cap = count ? count * 2 : 1;
  void *na = realloc(*arr, cap * elem);
  if (na == NULL)
    return POSTERN_ENOMEM;
  *arr = na;
  return 0;
}

static int parse_block(struct lexer *lx, struct config__node *parent,
                       unsigned depth) {
  struct tok t;
  for (;;) {
    int rc = lx_next(lx, &t);
    if (rc)
      return rc;
    switch (t.kind) {
    case TOK_NL:
    case TOK_SEMI:
      continue;
    case TOK_EOF:
      if (depth == 0)
        return 0;
      config__error_set(lx->err, lx->file, parent->bline, parent->bcol,
                        "block opened here is never closed (missing '}')");
      return POSTERN_ESYNTAX;
    case TOK_RBRACE:
      if (depth > 0)
        return 0;
      config__error_set(lx->err, lx->file, t.line, t.col,
                        "unexpected '}' (no block is open)");
      return POSTERN_ESYNTAX;
    case TOK_LBRACE:
      config__error_set(lx->err, lx->file, t.line, t.col,
                        "'{' must follow a directive name");
      return POSTERN_ESYNTAX;
    case TOK_WORD:
      break;
    }
    if (grow((void **)&parent->children, parent->nchildren,
             sizeof *parent->children)) {
      free(t.w.s);
      return lx_fail(lx, lx->pos, POSTERN_ENOMEM, "out of memory");
    }
    struct config__node *st = &parent->children[parent->nchildren++];
    memset(st, 0, sizeof *st);
    st->name = t.w;
    for (bool done = false; !done;) {
      rc = lx_next(lx, &t);
      if (rc)
        return rc;
      switch (t.kind) {
      case TOK_WORD:
        if (st->nargs >= CONFIG_ARGS_MAX) {
          free(t.w.s);
          config__error_set(lx->err, lx->file, t.line, t.col,
                            "more than %u arguments", CONFIG_ARGS_MAX);
          return POSTERN_ETOOBIG;
        }
        if (grow((void **)&st->args, st->nargs, sizeof *st->args)) {
          free(t.w.s);
          return lx_fail(lx, lx->pos, POSTERN_ENOMEM, "out of memory");
        }
        st->args[st->nargs++] = t.w;
        break;
      case TOK_NL:
      case TOK_SEMI:
        done = true;
        break;
      case TOK_EOF:
      case TOK_RBRACE:
        /* Ends this statement; the enclosing loop sees it again. */
        lx->peek = t;
        lx->has_peek = true;
        done = true;
        break;
      case TOK_LBRACE:
        if (depth + 1 > CONFIG_DEPTH_MAX) {
          config__error_set(lx->err, lx->file, t.line, t.col,
                            "blocks nested more than %u deep",
                            CONFIG_DEPTH_MAX);
          return POSTERN_ETOOBIG;
        }
        st->has_block = true;
        st->bline = t.line;
        st->bcol = t.col;
        rc = parse_block(lx, st, depth + 1);
        if (rc)
          return rc;
        done = true;
        break;
      }
    }
  }
}

int config__syntax_parse(const char *file, const char *buf, size_t len,
                         struct config__node *root, unsigned *eof_line,
                         unsigned *eof_col, struct config_error *err) {
  memset(root, 0, sizeof *root);
  struct lexer lx = {.file = file,
                     .buf = buf,
                     .len = len,
                     .line = 1,
                     .line_start = 0,
                     .err = err};
  if (len > CONFIG_FILE_MAX) {
    config__error_set(err, file, 0, 0, "file larger than %u bytes",
                      CONFIG_FILE_MAX);
    return POSTERN_ETOOBIG;
  }
  int rc = lx_prescan(&lx);
  if (rc == 0)
    rc = parse_block(&lx, root, 0);
  free(lx.tb);
  *eof_line = lx.line;
  *eof_col = lx_col(&lx, lx.pos);
  return rc;
}

/* ----------------------------------------------------------- value parsers */

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* Reads decimal digits at s[*i..n); fails on overflow of uint64. */
static int read_digits(const char *s, size_t n, size_t *i, uint64_t *v,
                       const char **why) {
  uint64_t x = 0;
  size_t start = *i;
  while (*i < n && is_digit(s[*i])) {
    unsigned d = (unsigned)(s[*i] - '0');
    if (x > (UINT64_MAX - d) / 10) {
      *why = "number too large";
      return POSTERN_ERANGE;
    }
    x = x * 10 + d;
    (*i)++;
  }
  if (*i == start) {
    *why = "expected a number";
    return POSTERN_ECONFIG;
  }
  *v = x;
  return 0;
}

int config__uint_parse(const char *s, size_t n, uint64_t *v, const char **why) {
  size_t i = 0;
  int rc = read_digits(s, n, &i, v, why);
  if (rc == POSTERN_ECONFIG || (rc == 0 && i != n)) {
    *why = "expected a whole number (digits only)";
    return POSTERN_ECONFIG;
  }
  return rc;
}

static const struct {
  const char *name;
  uint64_t ms;
} dur_units[] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
#define N_DUR_UNITS (sizeof dur_units / sizeof dur_units[0])

int config__duration_parse(const char *s, size_t n, uint64_t *ms,
                           const char **why) {
  if (n == 0) {
    *why = "empty duration";
    return POSTERN_ECONFIG;
  }
  uint64_t total = 0;
  int last = -1;
  size_t i = 0;
  while (i < n) {
    uint64_t v;
    int rc = read_digits(s, n, &i, &v, why);
    if (rc)
      return rc;
    size_t u = i;
    while (i < n && s[i] >= 'a' && s[i] <= 'z')
      i++;
    if (u == i) {
      if (u == n && last < 0 && v == 0) {
        total = 0; /* a bare 0 needs no unit */
        break;
      }
      *why = "missing unit (use ms, s, m, h or d)";
      return POSTERN_ECONFIG;
    }
    int idx = -1;
    for (size_t k = 0; k < N_DUR_UNITS; k++)
      if (strlen(dur_units[k].name) == i - u &&
          memcmp(dur_units[k].name, s + u, i - u) == 0)
        idx = (int)k;
    if (idx < 0) {
      *why = "unknown unit (use ms, s, m, h or d)";
      return POSTERN_ECONFIG;
    }
    if (idx <= last) {
      *why = "units must go from the largest to the smallest, each once";
      return POSTERN_ECONFIG;
    }
    last = idx;
    if (v > UINT64_MAX / dur_units[idx].ms ||
        total > UINT64_MAX - v * dur_units[idx].ms) {
      *why = "duration too large";
      return POSTERN_ERANGE;
    }
    total += v * dur_units[idx].ms;
  }
  *ms = total;
  return 0;
}

void config__duration_format(uint64_t ms, char *buf, size_t cap) {
  if (ms == 0) {
    snprintf(buf, cap, "0");
    return;
  }
  size_t o = 0;
  buf[0] = 0;
  for (size_t k = 0; k < N_DUR_UNITS && o < cap; k++) {
    uint64_t v = ms / dur_units[k].ms;
    ms %= dur_units[k].ms;
    if (v)
      o += (size_t)snprintf(buf + o, cap - o, "%llu%s", (unsigned long long)v,
                            dur_units[k].name);
  }
}

static const char size_units[] = "KMGT";

int config__size_parse(const char *s, size_t n, uint64_t *bytes,
                       const char **why) {
  size_t i = 0;
  uint64_t v;
  int rc = read_digits(s, n, &i, &v, why);
  if (rc)
    return rc;
  if (i == n) {
    *bytes = v;
    return 0;
  }
  const char *u = i + 1 == n ? strchr(size_units, s[i] & ~0x20) : NULL;
  if (u == NULL || *u == 0 || !(s[i] >= 'A' && s[i] <= 'z')) {
    *why = "unknown unit (use K, M, G or T, or none for bytes)";
    return POSTERN_ECONFIG;
  }
  unsigned shift = 10 * (unsigned)(u - size_units + 1);
  if (v > (UINT64_MAX >> shift)) {
    *why = "size too large";
    return POSTERN_ERANGE;
  }
  *bytes = v << shift;
  return 0;
}

void config__size_format(uint64_t bytes, char *buf, size_t cap) {
  for (int k = 3; k >= 0 && bytes; k--) {
    unsigned shift = 10 * (unsigned)(k + 1);
    if ((bytes & ((UINT64_C(1) << shift) - 1)) == 0) {
      snprintf(buf, cap, "%llu%c", (unsigned long long)(bytes >> shift),
               size_units[k]);
      return;
    }
  }
  snprintf(buf, cap, "%llu", (unsigned long long)bytes);
}

int config__decimal_parse(const char *s, size_t n, uint64_t *micro,
                          const char **why) {
  size_t i = 0;
  uint64_t ip;
  int rc = read_digits(s, n, &i, &ip, why);
  if (rc == POSTERN_ECONFIG)
    *why = "expected a decimal number like 2 or 1.5";
  if (rc)
    return rc;
  uint64_t frac = 0;
  unsigned nfrac = 0;
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && is_digit(s[i])) {
      if (++nfrac > 6) {
        *why = "at most 6 decimals";
        return POSTERN_ECONFIG;
      }
      frac = frac * 10 + (uint64_t)(s[i] - '0');
      i++;
    }
    if (nfrac == 0) {
      *why = "expected digits after '.'";
      return POSTERN_ECONFIG;
    }
  }
  if (i != n) {
    *why = "expected a decimal number like 2 or 1.5";
    return POSTERN_ECONFIG;
  }
  for (; nfrac < 6; nfrac++)
    frac *= 10;
  if (ip > (UINT64_MAX - frac) / 1000000) {
    *why = "number too large";
    return POSTERN_ERANGE;
  }
  *micro = ip * 1000000 + frac;
  return 0;
}

void config__decimal_format(uint64_t micro, char *buf, size_t cap) {
  uint64_t ip = micro / 1000000, frac = micro % 1000000;
  if (frac == 0) {
    snprintf(buf, cap, "%llu", (unsigned long long)ip);
    return;
  }
  char f[8];
  snprintf(f, sizeof f, "%06llu", (unsigned long long)frac);
  for (int k = 5; k > 0 && f[k] == '0'; k--)
    f[k] = 0;
  snprintf(buf, cap, "%llu.%s", (unsigned long long)ip, f);
}

int config__ip_parse(const char *s, size_t n, struct sockaddr_storage *sa,
                     socklen_t *salen, const char **why) {
  char tmp[INET6_ADDRSTRLEN + 1];
  memset(sa, 0, sizeof *sa);
  if (n == 0 || n >= sizeof tmp) {
    *why = "not an IP address";
    return POSTERN_ECONFIG;
  }
  memcpy(tmp, s, n);
  tmp[n] = 0;
  struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
  if (inet_pton(AF_INET, tmp, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    *salen = sizeof *v4;
    return 0;
  }
  if (inet_pton(AF_INET6, tmp, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    *salen = sizeof *v6;
    return 0;
  }
  *why = "not an IP address";
  return POSTERN_ECONFIG;
}

static int port_parse(const char *s, size_t n, uint16_t *port,
                      const char **why) {
  uint64_t v;
  if (n == 0 || n > 5 || config__uint_parse(s, n, &v, why) != 0 || v > 65535) {
    *why = "port must be a number from 0 to 65535";
    return POSTERN_ECONFIG;
  }
  *port = (uint16_t)v;
  return 0;
}

static void set_port(struct sockaddr_storage *sa, uint16_t port) {
  if (sa->ss_family == AF_INET)
    ((struct sockaddr_in *)sa)->sin_port = htons(port);
  else
    ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

int config__addr_parse(const char *s, size_t n, int default_port,
                       struct sockaddr_storage *sa, socklen_t *salen,
                       const char **why) {
  const char *host = s, *port = NULL;
  size_t hn = n, pn = 0;
  if (n > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', n);
    if (close == NULL) {
      *why = "missing ']'";
      return POSTERN_ECONFIG;
    }
    host = s + 1;
    hn = (size_t)(close - host);
    size_t rest = n - (size_t)(close + 1 - s);
    if (rest > 0) {
      if (close[1] != ':') {
        *why = "expected ':PORT' after ']'";
        return POSTERN_ECONFIG;
      }
      port = close + 2;
      pn = rest - 1;
    }
  } else {
    const char *colon = memchr(s, ':', n);
    if (colon != NULL && memchr(colon + 1, ':', n - (size_t)(colon + 1 - s))) {
      /* Two colons: a bare IPv6 address, which cannot carry a port. */
      if (default_port < 0) {
        *why = "write an IPv6 address with its port as [ADDR]:PORT";
        return POSTERN_ECONFIG;
      }
    } else if (colon != NULL) {
      hn = (size_t)(colon - s);
      port = colon + 1;
      pn = n - hn - 1;
    }
  }
  if (config__ip_parse(host, hn, sa, salen, why) != 0) {
    *why = "not an IP address (host names are not allowed here)";
    return POSTERN_ECONFIG;
  }
  uint16_t p;
  if (port != NULL) {
    if (port_parse(port, pn, &p, why))
      return POSTERN_ECONFIG;
  } else if (default_port >= 0) {
    p = (uint16_t)default_port;
  } else {
    *why = "missing ':PORT'";
    return POSTERN_ECONFIG;
  }
  set_port(sa, p);
  return 0;
}

void config__addr_format(const struct sockaddr_storage *sa, char *buf,
                         size_t cap) {
  char ip[INET6_ADDRSTRLEN];
  if (sa->ss_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
    snprintf(buf, cap, "%s:%u", ip, (unsigned)ntohs(v4->sin_port));
  } else {
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
    snprintf(buf, cap, "[%s]:%u", ip, (unsigned)ntohs(v6->sin6_port));
  }
}

int config__cidr_parse(const char *s, size_t n, struct config_cidr *out,
                       const char **why) {
  const char *slash = memchr(s, '/', n);
  size_t hn = slash ? (size_t)(slash - s) : n;
  struct sockaddr_storage sa;
  socklen_t salen;
  memset(out, 0, sizeof *out);
  if (config__ip_parse(s, hn, &sa, &salen, why) != 0) {
    *why = "not an address or network (like 192.0.2.0/24 or 2001:db8::/32)";
    return POSTERN_ECONFIG;
  }
  out->family = sa.ss_family;
  unsigned bits = sa.ss_family == AF_INET ? 32 : 128;
  if (sa.ss_family == AF_INET)
    memcpy(out->addr, &((struct sockaddr_in *)&sa)->sin_addr, 4);
  else
    memcpy(out->addr, &((struct sockaddr_in6 *)&sa)->sin6_addr, 16);
  out->prefix = bits;
  if (slash != NULL) {
    uint64_t p;
    size_t pn = n - hn - 1;
    if (pn == 0 || pn > 3 || config__uint_parse(slash + 1, pn, &p, why) ||
        p > bits) {
      *why = sa.ss_family == AF_INET ? "prefix length must be 0 to 32"
                                     : "prefix length must be 0 to 128";
      out->family = 0; /* only a host-bits error leaves a network */
      return POSTERN_ECONFIG;
    }
    out->prefix = (unsigned)p;
  }
  /* Host bits must be zero: 10.1.2.3/8 is more likely a typo than a wish
   * for 10.0.0.0/8. The masked network is left in *out for the message. */
  bool host_bits = false;
  for (unsigned b = out->prefix; b < bits; b++) {
    uint8_t mask = (uint8_t)(0x80u >> (b % 8));
    if (out->addr[b / 8] & mask) {
      host_bits = true;
      out->addr[b / 8] &= (uint8_t)~mask;
    }
  }
  if (host_bits) {
    *why = "host bits are set";
    return POSTERN_ECONFIG;
  }
  return 0;
}

int config__hostname_check(const char *s, size_t n, const char **why) {
  if (n > 0 && s[n - 1] == '.')
    n--;
  if (n == 0) {
    *why = "empty host name";
    return POSTERN_ECONFIG;
  }
  if (n > 253) {
    *why = "host name longer than 253 bytes";
    return POSTERN_ECONFIG;
  }
  size_t label = 0;
  for (size_t i = 0; i <= n; i++) {
    char c = i < n ? s[i] : '.';
    if (c == '.') {
      if (label == 0 || label > 63) {
        *why = "each dot-separated label must have 1 to 63 characters";
        return POSTERN_ECONFIG;
      }
      if (s[i - 1] == '-' || s[i - label] == '-') {
        *why = "a label must not start or end with '-'";
        return POSTERN_ECONFIG;
      }
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               (c >= '0' && c <= '9') || c == '-') {
      label++;
    } else {
      *why = "a host name has only letters, digits, '-' and '.'";
      return POSTERN_ECONFIG;
    }
  }
  return 0;
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
