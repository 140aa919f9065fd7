/*
 * mtasts_shared.c - the text form of an MTA-STS policy shared by a fleet
 * (policy/mtasts_shared.h): encoding what a node fetched, and reading back
 * what another node wrote.
 *
 * Invariants: the reader treats the entry as hostile input - bounded size,
 * bounded numbers, the exact header, and the policy itself through the
 * same RFC 8461 §3.2 parser as a fetched body - so that a corrupt or
 * forged entry is refused as a whole (the caller then fetches), never half
 * used. Pure functions: no I/O, no allocation.
 */
#include "policy/mtasts_shared.h"

#include "base/postern_log.h"
#include "policy/internal.h"
#include "policy/mtasts_cache.h"

#include "base/postern_err.h"

#include <stdio.h>
#include <string.h>

static bool id_ok(const char *id, size_t n) {
  if (n == 0 || n > POLICY_MTASTS_ID_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9')))
      return false;
  }
  return true;
}

size_t policy_mtasts_shared_encode(const struct policy_mtasts_rec *rec,
                                   char *buf, size_t cap) {
  const struct policy_mtasts_policy *p = &rec->policy;
  if (!id_ok(rec->id, strlen(rec->id)) || p->mode >= POLICY_MTASTS_MODE_COUNT ||
      p->n_mx > POLICY_MTASTS_MX_MAX)
    return 0;
  size_t off = 0;
  int n = snprintf(buf, cap,
                   POLICY_MTASTS_SHARED_MAGIC "id: %s\nfetched: %llu\n\n"
                                              "version: STSv1\nmode: %s\n",
                   rec->id, (unsigned long long)rec->fetched,
                   policy_mtasts_mode_name(p->mode));
  if (n < 0 || (size_t)n >= cap)
    return 0;
  off = (size_t)n;
  for (size_t i = 0; i < p->n_mx; i++) {
    n = snprintf(buf + off, cap - off, "mx: %s\n", p->mx[i]);
    if (n < 0 || (size_t)n >= cap - off)
      return 0;
    off += (size_t)n;
  }
  n = snprintf(buf + off, cap - off, "max_age: %u\n", (unsigned)p->max_age);
  if (n < 0 || (size_t)n >= cap - off)
    return 0;
  return off + (size_t)n;
}

/* Reads "<name>: <value>\n" at *pos; the value must be non-empty and hold
 * no control character. */
static int header_line(const char *data, size_t len, size_t *pos,
                       const char *name, const char **val, size_t *vlen) {
  size_t nl = strlen(name);
  size_t i = *pos;
  if (len - i < nl + 2 || memcmp(data + i, name, nl) != 0 ||
      data[i + nl] != ':' || data[i + nl + 1] != ' ')
    return POSTERN_EPROTO;
  i += nl + 2;
  size_t start = i;
  while (i < len && data[i] != '\n') {
    if ((unsigned char)data[i] < 0x20 || data[i] == 0x7f)
      return POSTERN_EPROTO;
    i++;
  }
  if (i == len || i == start)
    return POSTERN_EPROTO;
  *val = data + start;
  *vlen = i - start;
  *pos = i + 1;
  return 0;
}

/* A decimal number of at most 12 digits (unix seconds until year 33658). */
static int seconds(const char *s, size_t n, uint64_t *out) {
  if (n == 0 || n > 12)
    return POSTERN_EPROTO;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return POSTERN_EPROTO;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  *out = v;
  return 0;
}

int policy_mtasts_shared_decode(const char *data, size_t len,
                                struct policy_mtasts_rec *out) {
  if (data == NULL || out == NULL)
    return POSTERN_EINVAL;
  if (len > POLICY_MTASTS_SHARED_MAX)
    return POSTERN_ETOOBIG;
  memset(out, 0, sizeof *out);
  size_t ml = strlen(POLICY_MTASTS_SHARED_MAGIC);
  /* The writer ends every line: an entry cut short (max_age: 8640 of
   * 86400) is refused rather than read as a shorter policy. */
  if (len < ml || memcmp(data, POLICY_MTASTS_SHARED_MAGIC, ml) != 0 ||
      data[len - 1] != '\n')
    return POSTERN_EPROTO;
  size_t pos = ml;
  const char *v;
  size_t vl;
  if (header_line(data, len, &pos, "id", &v, &vl) != 0 || !id_ok(v, vl))
    return POSTERN_EPROTO;
  memcpy(out->id, v, vl);
  out->id[vl] = '\0';
  if (header_line(data, len, &pos, "fetched", &v, &vl) != 0 ||
      seconds(v, vl, &out->fetched) != 0)
    return POSTERN_EPROTO;
  if (pos >= len || data[pos] != '\n')
    return POSTERN_EPROTO;
  pos++;
  int rc = policy_mtasts_policy_parse(data + pos, len - pos, &out->policy);
  if (rc != 0)
    return POSTERN_EPROTO;
  out->expires = out->fetched + out->policy.max_age;
  return 0;
}

/* Another node's clock may be ahead of ours by this much. */
#define SHARED_SKEW_S 300

bool policy__mts_shared_fresh(const struct policy_mtasts_rec *rec,
                              const char *id, uint64_t now) {
  return strcmp(rec->id, id) == 0 && rec->expires > now &&
         rec->fetched <= now + SHARED_SKEW_S;
}

void policy__mts_cache_store(struct policy_mtasts_cache *c, const char *domain,
                             const struct policy_mtasts_rec *rec,
                             uint64_t now) {
  int rc = c ? policy_mtasts_cache_put(c, domain, rec, now) : 0;
  if (rc != 0)
    postern_log(POSTERN_LOG_WARN, "mtasts_cache_write_failed", "domain", domain,
                "error", postern_strerror(rc), NULL);
}
