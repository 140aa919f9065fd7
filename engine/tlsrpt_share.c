/*
 * engine/tlsrpt_share.c - the TLS report counts a fleet node shares
 * (tlsrpt_store.h, "Fleet mode"): a day's records for one policy domain
 * written as text, and the sum of several nodes' texts read back into the
 * form the report builder takes.
 *
 * Invariants: a shared text is another node's, read from Redis: hostile
 * input, bounded in size, parsed strictly and taken whole or not at all.
 * Records with equal key tails count the same thing (their ids are hashes
 * of their notes, tlsrpt.c), so the sum adds their values; the sum is then
 * fed, in key order, to the same loader as the node's own counts.
 *
 * Ownership: the export's text is the caller's (free); the sum's entries
 * are the caller's (tlsrpt_store_free). Pure but for the queue scan.
 */
#include "engine/tlsrpt_store.h"

#include "base/postern_buf.h"
#include "base/postern_err.h"
#include "queue/queue.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHARE_MAGIC "postern-tlsrpt 1\n"
#define TAIL_MAX 35        /* 16 + 1 + 1 + 1 + 16 */
#define COUNT_MAX 1e15     /* far above a day's sessions */
#define NOTE_MAX 65536     /* a note as tlsrpt.c bounds it, with room */
#define LINES_MAX 1000000u /* records in one text */

/* ---- Writing ---- */

struct exp {
  struct postern_buf b;
  size_t plen; /* the scan prefix's length: the tail follows */
  int err;
};

static bool hex16(const char *s, size_t n) {
  if (n != 16)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return true;
}

/* Whether `t` is a key tail tlsrpt.c writes: pid \t kind [\t fid]. */
static bool tail_ok(const char *t, size_t n) {
  if (n < 18 || !hex16(t, 16) || t[16] != '\t')
    return false;
  char kind = t[17];
  if (kind == 'P' || kind == 'S')
    return n == 18;
  return kind == 'F' && n == 35 && t[18] == '\t' && hex16(t + 19, 16);
}

static bool note_ok(const char *s, size_t n) {
  if (n > NOTE_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return false;
  return true;
}

static int exp_put(struct exp *e, const char *s, size_t n) {
  if (e->b.len + n > TLSRPT_SHARE_MAX)
    return e->err = POSTERN_ETOOBIG;
  postern_buf_put(&e->b, s, n);
  return e->b.oom ? (e->err = POSTERN_ENOMEM) : 0;
}

static int on_export(void *arg, const void *key, size_t klen, uint64_t value,
                     const void *note, size_t nlen) {
  struct exp *e = arg;
  const char *tail = (const char *)key + e->plen;
  size_t tl = klen - e->plen;
  /* Only what the reader will take (a record it would refuse would make
   * the whole text unreadable). */
  if (!tail_ok(tail, tl) || !note_ok(note, nlen))
    return 0;
  char num[32];
  int nn = snprintf(num, sizeof num, "\t%llu\t", (unsigned long long)value);
  if (exp_put(e, tail, tl) || exp_put(e, num, (size_t)nn) ||
      exp_put(e, note, nlen) || exp_put(e, "\n", 1))
    return e->err;
  return 0;
}

int tlsrpt_store_export(struct queue *q, const char *day, const char *domain,
                        char **text, size_t *len) {
  *text = NULL;
  *len = 0;
  if (tlsrpt_store_day_start(day) < 0 || domain == NULL ||
      strchr(domain, '\t') != NULL || strlen(domain) > 255)
    return POSTERN_EINVAL;
  char prefix[300];
  int plen = snprintf(prefix, sizeof prefix, "T%s\t%s\t", day, domain);
  struct exp e = {.plen = (size_t)plen};
  if (exp_put(&e, SHARE_MAGIC, strlen(SHARE_MAGIC)) != 0) {
    free(e.b.p);
    return e.err;
  }
  size_t empty = e.b.len;
  int rc = queue_counters_scan(q, prefix, (size_t)plen, on_export, &e);
  if (rc == 0)
    rc = e.err;
  if (rc == 0 && e.b.len == empty)
    rc = POSTERN_ENOENT;
  if (rc != 0) {
    free(e.b.p);
    return rc;
  }
  *text = e.b.p;
  *len = e.b.len;
  return 0;
}

/* ---- Reading and summing ---- */

struct rec {
  char tail[TAIL_MAX + 1];
  uint64_t value;
  const char *note; /* into the text */
  size_t nlen;
};

struct recs {
  struct rec *r;
  size_t n, cap;
};

/* Parses one text into rs (appending). On a malformed text rs is left as
 * it was and POSTERN_EPROTO is returned. */
static int parse_text(const char *s, size_t len, struct recs *rs) {
  size_t ml = strlen(SHARE_MAGIC);
  if (len > TLSRPT_SHARE_MAX)
    return POSTERN_ETOOBIG;
  if (len < ml || memcmp(s, SHARE_MAGIC, ml) != 0)
    return POSTERN_EPROTO;
  size_t start_n = rs->n, pos = ml, lines = 0;
  while (pos < len) {
    const char *nl = memchr(s + pos, '\n', len - pos);
    if (nl == NULL || ++lines > LINES_MAX)
      goto bad;
    const char *line = s + pos;
    size_t ll = (size_t)(nl - line);
    pos += ll + 1;
    /* The tail is 18 or 35 bytes; then \t count \t note. */
    size_t tl = ll >= 18 && line[17] == 'F' ? 35 : 18;
    if (ll < tl + 3 || !tail_ok(line, tl) || line[tl] != '\t')
      goto bad;
    size_t i = tl + 1;
    uint64_t v = 0;
    size_t digits = 0;
    while (i < ll && line[i] >= '0' && line[i] <= '9' && digits < 16) {
      v = v * 10 + (uint64_t)(line[i] - '0');
      i++;
      digits++;
    }
    if (digits == 0 || (double)v > COUNT_MAX || i >= ll || line[i] != '\t')
      goto bad;
    i++;
    if (!note_ok(line + i, ll - i))
      goto bad;
    if (rs->n == rs->cap) {
      size_t nc = rs->cap ? 2 * rs->cap : 64;
      struct rec *nr = realloc(rs->r, nc * sizeof *nr);
      if (nr == NULL) {
        rs->n = start_n;
        return POSTERN_ENOMEM;
      }
      rs->r = nr;
      rs->cap = nc;
    }
    struct rec *r = &rs->r[rs->n++];
    memcpy(r->tail, line, tl);
    r->tail[tl] = '\0';
    r->value = v;
    r->note = line + i;
    r->nlen = ll - i;
  }
  return 0;
bad:
  rs->n = start_n;
  return POSTERN_EPROTO;
}

static int rec_cmp(const void *a, const void *b) {
  return strcmp(((const struct rec *)a)->tail, ((const struct rec *)b)->tail);
}

int tlsrpt_store_sum(const char *day, const char *domain,
                     const struct tlsrpt_share_text *texts, size_t n,
                     struct tlsrpt_store_domain **out, size_t *nout,
                     size_t *bad) {
  *out = NULL;
  *nout = 0;
  *bad = 0;
  if (tlsrpt_store_day_start(day) < 0 || domain == NULL ||
      strchr(domain, '\t') != NULL || strlen(domain) > 255)
    return POSTERN_EINVAL;
  struct recs rs = {0};
  for (size_t i = 0; i < n; i++) {
    int rc = parse_text(texts[i].data, texts[i].len, &rs);
    if (rc == POSTERN_ENOMEM) {
      free(rs.r);
      return rc;
    }
    if (rc != 0)
      (*bad)++;
  }
  if (rs.n == 0) {
    free(rs.r);
    return 0;
  }
  /* Key order, as the queue's scan gives it; equal tails add up. */
  qsort(rs.r, rs.n, sizeof *rs.r, rec_cmp);
  size_t m = 0;
  for (size_t i = 0; i < rs.n; i++) {
    if (m > 0 && strcmp(rs.r[m - 1].tail, rs.r[i].tail) == 0) {
      rs.r[m - 1].value += rs.r[i].value;
      continue;
    }
    rs.r[m++] = rs.r[i];
  }
  char prefix[300];
  int plen = snprintf(prefix, sizeof prefix, "T%s\t%s\t", day, domain);
  char *keys = malloc(m * ((size_t)plen + TAIL_MAX + 1));
  struct tlsrpt_store_rec *sr = calloc(m, sizeof *sr);
  int rc = POSTERN_ENOMEM;
  if (keys != NULL && sr != NULL) {
    for (size_t i = 0; i < m; i++) {
      char *k = keys + i * ((size_t)plen + TAIL_MAX + 1);
      size_t tl = strlen(rs.r[i].tail);
      memcpy(k, prefix, (size_t)plen);
      memcpy(k + plen, rs.r[i].tail, tl);
      sr[i] = (struct tlsrpt_store_rec){.key = k,
                                        .klen = (size_t)plen + tl,
                                        .value = rs.r[i].value,
                                        .note = rs.r[i].note,
                                        .nlen = rs.r[i].nlen};
    }
    rc = tlsrpt_store_from_records(sr, m, out, nout);
  }
  free(sr);
  free(keys);
  free(rs.r);
  return rc;
}
