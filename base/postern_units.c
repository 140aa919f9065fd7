/*
 * postern_units.c - durations and sizes, parsed and formatted (see
 * postern_units.h for the forms).
 *
 * Invariants: every byte is read through a bounds check against `n`;
 * every multiplication and addition is checked for overflow before it is
 * made, so a value either fits in uint64_t exactly or is POSTERN_ERANGE.
 * The unit tables below are shared by parsing and formatting, so the two
 * cannot disagree on a unit.
 */
#include "base/postern_units.h"

#include "base/postern_err.h"

#include <stdio.h>
#include <string.h>

int postern_digits_read(const char *s, size_t n, size_t *i, uint64_t *v,
                        const char **why) {
  uint64_t x = 0;
  size_t start = *i;
  while (*i < n && s[*i] >= '0' && s[*i] <= '9') {
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
    return POSTERN_EINVAL;
  }
  *v = x;
  return 0;
}

/* ------------------------------------------------------------- durations */

/* From the largest to the smallest: compound durations go in this order. */
static const struct {
  const char *name;
  uint64_t ms;
} dur_units[] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
#define N_DUR_UNITS (sizeof dur_units / sizeof dur_units[0])
#define DUR_SECONDS 3 /* index of "s" */

int postern_duration_parse(const char *s, size_t n, unsigned flags,
                           uint64_t *ms, const char **why) {
  if (n == 0) {
    *why = "empty duration";
    return POSTERN_EINVAL;
  }
  uint64_t total = 0;
  int last = -1;
  size_t i = 0;
  while (i < n) {
    uint64_t v;
    int rc = postern_digits_read(s, n, &i, &v, why);
    if (rc)
      return rc;
    size_t u = i;
    while (i < n && s[i] >= 'a' && s[i] <= 'z')
      i++;
    int idx = -1;
    if (u == i) {
      /* A number alone, the whole word: 0, or seconds when allowed. */
      if (u == n && last < 0 && (flags & POSTERN_DURATION_BARE_SECONDS))
        idx = DUR_SECONDS;
      else if (u == n && last < 0 && v == 0)
        break;
      else {
        *why = "missing unit (use ms, s, m, h or d)";
        return POSTERN_EINVAL;
      }
    }
    for (size_t k = 0; k < N_DUR_UNITS && idx < 0; k++)
      if (strlen(dur_units[k].name) == i - u &&
          memcmp(dur_units[k].name, s + u, i - u) == 0)
        idx = (int)k;
    if (idx < 0) {
      *why = "unknown unit (use ms, s, m, h or d)";
      return POSTERN_EINVAL;
    }
    if (idx <= last) {
      *why = "units must go from the largest to the smallest, each once";
      return POSTERN_EINVAL;
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

void postern_duration_format(uint64_t ms, unsigned flags, char *buf,
                             size_t cap) {
  if (flags & POSTERN_DURATION_COARSE) {
    /* The largest unit of at least one, then the next one even when it is
     * zero ("2h0m"): an age reads the same width whatever its value. */
    ms -= ms % 1000;
    size_t k = 0;
    while (k < DUR_SECONDS && ms < dur_units[k].ms)
      k++;
    if (k == DUR_SECONDS) {
      snprintf(buf, cap, "%llus", (unsigned long long)(ms / 1000));
      return;
    }
    snprintf(buf, cap, "%llu%s%llu%s",
             (unsigned long long)(ms / dur_units[k].ms), dur_units[k].name,
             (unsigned long long)(ms % dur_units[k].ms / dur_units[k + 1].ms),
             dur_units[k + 1].name);
    return;
  }
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

/* ----------------------------------------------------------------- sizes */

/* Unit k multiplies by 2^(10 * (k + 1)). */
static const char size_units[] = "KMGT";

int postern_size_parse(const char *s, size_t n, uint64_t *bytes,
                       const char **why) {
  size_t i = 0;
  uint64_t v;
  int rc = postern_digits_read(s, n, &i, &v, why);
  if (rc)
    return rc;
  if (i == n) {
    *bytes = v;
    return 0;
  }
  const char *u = i + 1 == n ? strchr(size_units, s[i] & ~0x20) : NULL;
  if (u == NULL || *u == 0 || !(s[i] >= 'A' && s[i] <= 'z')) {
    *why = "unknown unit (use K, M, G or T, or none for bytes)";
    return POSTERN_EINVAL;
  }
  unsigned shift = 10 * (unsigned)(u - size_units + 1);
  if (v > (UINT64_MAX >> shift)) {
    *why = "size too large";
    return POSTERN_ERANGE;
  }
  *bytes = v << shift;
  return 0;
}

void postern_size_format(uint64_t bytes, char *buf, size_t cap) {
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
