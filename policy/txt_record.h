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

/* WSP (RFC 5234): a space or a tab. */
static inline bool policy__txt_is_wsp(char c) {
  return c == ' ' || c == '\t';
}

/* Whether the n bytes at s are a field or extension name (see above); the
 * MTA-STS policy body's field names have the same shape (RFC 8461 §3.2
 * sts-policy-ext-name). */
bool policy__txt_name_ok(const char *s, size_t n);

/*
 * Whether the record s[0..n) starts with the version `v` (e.g. "v=STSv1")
 * followed by ';', a blank or the end: the records a parser counts as its
 * own. Both RFCs discard records not beginning with the version and ";";
 * the blank and the end are counted too, so that a malformed record of the
 * right version is reported as malformed rather than as absent.
 */
bool policy__txt_is_version(const char *s, size_t n, const char *v);

/*
 * Steps from *i (just after the version, or just after a field's value)
 * over the delimiter to the next field's name and its "=". Returns 1 with
 * *name, *name_len set and *i just after the "="; 0 when the record ends
 * instead (blanks, an optional trailing ";", blanks); POSTERN_EPROTO when
 * what follows is neither (no ";", an empty field, a bad name, no "=").
 */
int policy__txt_next_field(const char *s, size_t n, size_t *i,
                           const char **name, size_t *name_len);

/*
 * Reads an extension value at *i. Returns 0 with *len its length and *i
 * after it; POSTERN_EPROTO when it is empty or not followed by ';', a
 * blank or the end.
 */
int policy__txt_ext_value(const char *s, size_t n, size_t *i, size_t *len);

#endif
