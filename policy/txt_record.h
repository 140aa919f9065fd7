/*
 * policy/txt_record.h - the tag-value grammar that the MTA-STS record
 * (`_mta-sts`, RFC 8461 §3.1) and the TLS reporting record (`_smtp._tls`,
 * RFC 8460 §3) share: a version, then fields separated by
 * `*WSP ";" *WSP`, an optional trailing delimiter, each field
 * `name "=" value`, names `(ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" /
 * ".")`, extension values `1*(%x21-3A / %x3C / %x3E-7E)`.
 *
 * Internal to policy/ (names use `policy__`). Pure: reads only s[0..n),
 * which need not be NUL-terminated; no state, no allocation.
 */
#ifndef POSTERN_POLICY_TXT_RECORD_H
#define POSTERN_POLICY_TXT_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#include "policy/chain.h"

/* WSP (RFC 5234): a space or a tab. */
static inline bool policy__txt_is_wsp(char c) {
  return c == ' ' || c == '\t';
}

/* Whether the n bytes at s are a field or extension name (see above); the
 * MTA-STS policy body's field names have the same shape (RFC 8461 §3.2
 * sts-policy-ext-name). */
bool policy__txt_name_ok(const char *s, size_t n);

/*
 * Picks the record of `version` (e.g. "v=STSv1") among the TXT records
 * found at one name: those not starting with it followed by ';', a blank
 * or the end are ignored. Both RFCs discard records not beginning with the
 * version and ";"; the blank and the end are counted too, so that a
 * malformed record of the right version is reported as malformed rather
 * than as absent. Returns 0 with *rec pointing into recs; POSTERN_ENOENT
 * when none is left; POSTERN_EPROTO when two or more are (both RFCs: then
 * the domain has no usable record); POSTERN_EINVAL when recs is NULL but
 * nrecs is not 0, or a record has data NULL and len > 0 (NULL and 0 is an
 * empty record).
 */
int policy__txt_select(const struct policy_txt *recs, size_t nrecs,
                       const char *version, const struct policy_txt **rec);

/*
 * What a parser does with one field: the field `name` (name_len bytes) has
 * its value at s[*i..n); read it, leave *i just after it and return 0, or
 * return POSTERN_EPROTO.
 */
typedef int policy__txt_field_fn(void *ctx, const char *name, size_t name_len,
                                 const char *s, size_t n, size_t *i);

/*
 * Walks the fields of the record s[0..n) from `start` (just after the
 * version), calling `field` for each. Returns 0 at the end of the record
 * (blanks, an optional trailing ";", blanks), or POSTERN_EPROTO when the
 * text breaks the grammar (no ";", an empty field, a bad name, no "=", a
 * value not followed by ';', a blank or the end) or `field` refuses.
 */
int policy__txt_fields(const char *s, size_t n, size_t start,
                       policy__txt_field_fn *field, void *ctx);

/*
 * Reads an extension value at *i. Returns 0 with *len its length and *i
 * after it; POSTERN_EPROTO when it is empty or not followed by ';', a
 * blank or the end.
 */
int policy__txt_ext_value(const char *s, size_t n, size_t *i, size_t *len);

#endif
