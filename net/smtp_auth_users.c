/*
 * smtp_auth_users.c - the users file of SMTP AUTH (smtp_auth.h): parsing
 * `name:hash` lines into an immutable table, and which crypt(3) methods
 * are acceptable.
 *
 * Ownership: a table is one block of strings (a copy of the names and
 * hashes) plus the hash table of base/postern_htab.h whose keys point into
 * it; smtp_auth_users_free frees both. Tables are never changed after
 * parsing, so readers on any thread need no lock (a reload parses a new
 * table and its owner swaps the pointer).
 */
#include "net/smtp_auth.h"

#include "base/postern_err.h"
#include "base/postern_htab.h"
#include "base/postern_utf8.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define USERS_FILE_MAX (16u << 20)

struct user {
  const char *name, *hash;
};

struct smtp_auth_users {
  struct postern_htab *by_name;
  struct user *v;
  size_t n;
  char *strings;
  const char *dummy;
};

/* A yescrypt hash at libxcrypt's default cost of a random string nobody
 * knows: the stand-in for an empty table. */
static const char fallback_dummy[] =
    "$y$j9T$2NyaAYR2BUlCkqZv1mtuM1$aZ8wVZ.nIgZ6xGE.HeMnrhp/xeh3B5RcDj70aGzqpSA";

/* The methods accepted: libxcrypt's strong ones on Debian 12. DES, MD5
 * ($1$), sha256-crypt ($5$) and the rest are refused: too cheap to brute
 * force (the point of a slow hash) or legacy. */
static const struct {
  const char *prefix;
  const char *name;
  bool makes; /* smtp_auth_hash_password makes it ($2y$: checked only) */
} methods[] = {
    {"$y$", "yescrypt", true},
    {"$2b$", "bcrypt", true},
    {"$2y$", "bcrypt", false},
    {"$6$", "sha512-crypt", true},
};

const char *smtp_auth_method_prefix(const char *name) {
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
    if (methods[i].makes && strcmp(name, methods[i].name) == 0)
      return methods[i].prefix;
  return NULL;
}

bool smtp_auth_method_makes(const char *prefix) {
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
    if (methods[i].makes && strcmp(prefix, methods[i].prefix) == 0)
      return true;
  return false;
}

const char *smtp_auth_hash_refusal(const char *hash, size_t n) {
  bool known = false;
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
    size_t k = strlen(methods[i].prefix);
    if (n >= k && memcmp(hash, methods[i].prefix, k) == 0)
      known = true;
  }
  if (!known)
    return "unknown or weak hash method (use yescrypt $y$, bcrypt $2b$ or "
           "sha512-crypt $6$; make one with `postern --hash-password`)";
  if (n > SMTP_AUTH_HASH_MAX)
    return "hash too long";
  /* crypt(3) output is [./0-9A-Za-z$] plus sha512-crypt's "rounds=" */
  for (size_t i = 0; i < n; i++) {
    char c = hash[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '/' || c == '$' ||
          c == '='))
      return "hash holds a byte crypt(3) never writes";
  }
  char h[SMTP_AUTH_HASH_MAX + 1];
  memcpy(h, hash, n);
  h[n] = '\0';
  /* libxcrypt's own judgement of the method (enabled, not legacy); the
   * parameters and the hash part are not checked before a crypt_rn, so a
   * truncated hash is ours to see. One that still does not parse never
   * verifies (crypt_rn fails): closed, not open. */
  if (crypt_checksalt(h) != CRYPT_SALT_OK)
    return "invalid hash setting for its method (crypt_checksalt)";
  const char *last = strrchr(h, '$');
  if (h[0] != '$' || last == NULL || strlen(last + 1) < 22)
    return "hash is truncated";
  return NULL;
}

static int fail(struct smtp_auth_error *err, unsigned line, unsigned col,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(struct smtp_auth_error *err, unsigned line, unsigned col,
                const char *fmt, ...) {
  err->line = line;
  err->col = col;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  return POSTERN_ECONFIG;
}

/* The length of a valid name at p[0..n) up to ':' or the first bad byte;
 * *bad is set when a byte is not allowed. */
static size_t name_len(const char *p, size_t n, bool *bad) {
  size_t i = 0;
  *bad = false;
  while (i < n && p[i] != ':') {
    unsigned char c = (unsigned char)p[i];
    if (c >= 0x80) {
      size_t k = postern_utf8_len((const unsigned char *)p + i, n - i);
      if (k == 0) {
        *bad = true;
        return i;
      }
      i += k;
      continue;
    }
    if (c <= 0x20 || c == 0x7f) {
      *bad = true;
      return i;
    }
    i++;
  }
  return i;
}

void smtp_auth_users_free(struct smtp_auth_users *u) {
  if (u == NULL)
    return;
  postern_htab_free(u->by_name);
  free(u->v);
  free(u->strings);
  free(u);
}

int smtp_auth_users_parse(const char *buf, size_t len,
                          struct smtp_auth_users **out,
                          struct smtp_auth_error *err) {
  memset(err, 0, sizeof *err);
  *out = NULL;
  size_t lines = 1;
  for (size_t i = 0; i < len; i++)
    lines += buf[i] == '\n';
  struct smtp_auth_users *u = calloc(1, sizeof *u);
  if (u == NULL)
    return POSTERN_ENOMEM;
  u->v = calloc(lines, sizeof *u->v);
  u->strings = malloc(len + 1);
  int rc = postern_htab_new(0, &u->by_name);
  if (u->v == NULL || u->strings == NULL || rc != 0) {
    smtp_auth_users_free(u);
    return POSTERN_ENOMEM;
  }
  memcpy(u->strings, buf, len);
  u->strings[len] = '\0';
  char *p = u->strings;
  unsigned line = 0;
  size_t off = 0;
  while (off < len) {
    line++;
    char *ln = p + off;
    char *lf = memchr(ln, '\n', len - off);
    size_t n = lf ? (size_t)(lf - ln) : len - off;
    off += n + (lf ? 1 : 0);
    if (n > 0 && ln[n - 1] == '\r')
      n--; /* a file edited on Windows */
    ln[n] = '\0';
    if (memchr(ln, '\0', n) != NULL) {
      rc = fail(err, line, (unsigned)strlen(ln) + 1, "NUL byte");
      goto out;
    }
    size_t s = 0;
    while (s < n && (ln[s] == ' ' || ln[s] == '\t'))
      s++;
    if (s == n || ln[s] == '#')
      continue;
    if (s > 0) {
      rc = fail(err, line, 1, "a user line starts with its name, no blanks");
      goto out;
    }
    bool bad;
    size_t nn = name_len(ln, n, &bad);
    if (bad) {
      rc = fail(err, line, (unsigned)nn + 1,
                "user names are printable ASCII or UTF-8, without blanks, "
                "controls or ':'");
      goto out;
    }
    if (nn == n) {
      rc = fail(err, line, (unsigned)n + 1, "expected 'name:hash'");
      goto out;
    }
    if (nn == 0) {
      rc = fail(err, line, 1, "empty user name");
      goto out;
    }
    if (nn > SMTP_AUTH_NAME_MAX) {
      rc = fail(err, line, SMTP_AUTH_NAME_MAX + 1,
                "user name longer than %d bytes", SMTP_AUTH_NAME_MAX);
      goto out;
    }
    char *hash = ln + nn + 1;
    size_t hn = n - nn - 1;
    if (hn == 0) {
      rc = fail(err, line, (unsigned)nn + 2, "missing hash after ':'");
      goto out;
    }
    const char *why = smtp_auth_hash_refusal(hash, hn);
    if (why != NULL) {
      rc = fail(err, line, (unsigned)nn + 2, "%s", why);
      goto out;
    }
    ln[nn] = '\0';
    if (postern_htab_get(u->by_name, ln) != NULL) {
      rc = fail(err, line, 1, "user '%s' appears twice", ln);
      goto out;
    }
    struct user *e = &u->v[u->n];
    e->name = ln;
    e->hash = hash;
    rc = postern_htab_put(u->by_name, e->name, e);
    if (rc != 0)
      goto out;
    u->n++;
  }
  /* The first user's hash: same method and cost as a real entry. */
  u->dummy = u->n > 0 ? u->v[0].hash : fallback_dummy;
  *out = u;
  return 0;
out:
  smtp_auth_users_free(u);
  return rc;
}

int smtp_auth_users_load(const char *path, struct smtp_auth_users **out,
                         struct smtp_auth_error *err) {
  memset(err, 0, sizeof *err);
  /* O_NONBLOCK: a FIFO in its place must not hang a reload; only a
   * regular file is read. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    snprintf(err->msg, sizeof err->msg, "cannot read users file: %s",
             strerror(e));
    return e == ENOENT   ? POSTERN_ENOENT
           : e == EACCES ? POSTERN_EPERM
                         : POSTERN_EIO;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > USERS_FILE_MAX) {
    close(fd);
    snprintf(err->msg, sizeof err->msg,
             "users file is not a regular file of at most 16M");
    return POSTERN_EIO;
  }
  size_t len = (size_t)st.st_size, got = 0;
  char *buf = malloc(len + 1);
  if (buf == NULL) {
    close(fd);
    return POSTERN_ENOMEM;
  }
  while (got < len) {
    ssize_t r = read(fd, buf + got, len - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  close(fd);
  int rc = smtp_auth_users_parse(buf, got, out, err);
  smtp_auth_wipe(buf, got); /* hashes are not passwords, but still */
  free(buf);
  return rc;
}

size_t smtp_auth_users_count(const struct smtp_auth_users *u) {
  return u ? u->n : 0;
}

const char *smtp_auth_users_hash(const struct smtp_auth_users *u,
                                 const char *name) {
  if (u == NULL)
    return NULL;
  const struct user *e = postern_htab_get(u->by_name, name);
  return e ? e->hash : NULL;
}

const char *smtp_auth_users_dummy(const struct smtp_auth_users *u) {
  return u && u->dummy ? u->dummy : fallback_dummy;
}
