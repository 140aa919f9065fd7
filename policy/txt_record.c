/*
 * policy/txt_record.c - the tag-value grammar shared by the `_mta-sts` and
 * `_smtp._tls` TXT records (see txt_record.h).
 *
 * The input is a DNS answer and hostile: every byte is checked against the
 * grammar and nothing is read at or past `n`. No state, no allocation.
 */
#include "policy/txt_record.h"

#include <string.h>

#include "base/postern_err.h"

static bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

bool policy__txt_name_ok(const char *s, size_t n) {
  if (n == 0 || n > 32 || !is_alnum(s[0]))
    return false;
  for (size_t i = 1; i < n; i++)
    if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
      return false;
  return true;
}

static bool is_version(const char *s, size_t n, const char *v) {
  size_t k = strlen(v);
  return n >= k && memcmp(s, v, k) == 0 &&
         (n == k || s[k] == ';' || policy__txt_is_wsp(s[k]));
}

int policy__txt_select(const struct policy_txt *recs, size_t nrecs,
                       const char *version, const struct policy_txt **rec) {
  if (recs == NULL && nrecs > 0)
    return POSTERN_EINVAL;
  size_t found = 0;
  for (size_t r = 0; r < nrecs; r++) {
    if (recs[r].data == NULL) {
      if (recs[r].len > 0)
        return POSTERN_EINVAL;
      continue;
    }
    if (is_version(recs[r].data, recs[r].len, version)) {
      found++;
      *rec = &recs[r];
    }
  }
  return found == 1 ? 0 : found == 0 ? POSTERN_ENOENT : POSTERN_EPROTO;
}

/* Steps from *i over the delimiter to the next field's name and its "=":
 * 1 with *i after the "=", 0 at the end of the record, or EPROTO. */
static int next_field(const char *s, size_t n, size_t *i, const char **name,
                      size_t *name_len) {
  size_t k = *i;
  /* field-delim = *WSP ";" *WSP; a trailing delimiter (and, leniently,
   * trailing blanks) may end the record. */
  while (k < n && policy__txt_is_wsp(s[k]))
    k++;
  if (k == n)
    return 0;
  if (s[k] != ';')
    return POSTERN_EPROTO;
  k++;
  while (k < n && policy__txt_is_wsp(s[k]))
    k++;
  if (k == n)
    return 0;
  size_t start = k;
  while (k < n && s[k] != '=' && s[k] != ';' && !policy__txt_is_wsp(s[k]))
    k++;
  if (!policy__txt_name_ok(s + start, k - start) || k == n || s[k] != '=')
    return POSTERN_EPROTO;
  *name = s + start;
  *name_len = k - start;
  *i = k + 1;
  return 1;
}

int policy__txt_fields(const char *s, size_t n, size_t start,
                       policy__txt_field_fn *field, void *ctx) {
  size_t i = start;
  for (;;) {
    const char *name;
    size_t name_len;
    int rc = next_field(s, n, &i, &name, &name_len);
    if (rc <= 0)
      return rc;
    if (field(ctx, name, name_len, s, n, &i) != 0)
      return POSTERN_EPROTO;
    /* The next byte must end the field: a blank, ';' or the end. */
    if (i < n && s[i] != ';' && !policy__txt_is_wsp(s[i]))
      return POSTERN_EPROTO;
  }
}

/* ext-value = 1*(%x21-3A / %x3C / %x3E-7E): no ';', '=', blanks, CTLs. */
static bool ext_value_char(char c) {
  unsigned char u = (unsigned char)c;
  return u >= 0x21 && u <= 0x7e && c != ';' && c != '=';
}

int policy__txt_ext_value(const char *s, size_t n, size_t *i, size_t *len) {
  size_t k = *i;
  while (k < n && ext_value_char(s[k]))
    k++;
  /* The next byte must end the field: a blank, ';' or the end. */
  if (k == *i || (k < n && s[k] != ';' && !policy__txt_is_wsp(s[k])))
    return POSTERN_EPROTO;
  *len = k - *i;
  *i = k;
  return 0;
}
