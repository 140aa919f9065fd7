/*
 * config_syntax.c - pass 1 of config loading: bytes to a statement tree,
 * and the error helpers every config file uses (positions, quoting).
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
                     "non-ASCII byte 0x%02x outside a quoted string (quote "
                     "a word with UTF-8 in it)",
                     c);
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
