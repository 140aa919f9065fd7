/*
 * base/postern_json.h - JSON for everything Postern writes or reads as JSON
 * (JSON log lines, `qtool --json`, `postern-probe --json`, the test
 * drivers): one library, Debian's jansson, and one rule for text that is
 * not UTF-8.
 *
 * Why jansson (over json-c): it validates UTF-8 on every string it is given
 * and on every document it parses, so a document it writes is always valid
 * JSON; its objects keep insertion order (readable output, stable tests);
 * and its pack/unpack formats keep building and reading objects short. Both
 * are in Debian 12; jansson's API is the smaller one to get right.
 *
 * The rule: valid UTF-8 passes through as it is (an SMTPUTF8 address stays
 * readable), C0 control characters are escaped by JSON itself (\n,
 * \u0000), and each byte that is not part of a valid UTF-8 sequence - and
 * each byte of DEL and of the C1 controls U+0080..U+009F, which terminals
 * may obey - becomes the four characters \xHH (so the JSON string shows
 * `\xff`): visible, never dropped, never producing invalid JSON, never a
 * raw control character in a log line.
 */
#ifndef POSTERN_JSON_H
#define POSTERN_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/*
 * A JSON string for `n` bytes at `s` under the rule above (NULL s means
 * ""). Returns a new reference, or NULL when out of memory.
 */
json_t *postern_json_str(const char *s, size_t n);

/* The same for a NUL-terminated string (NULL means ""). */
json_t *postern_json_cstr(const char *s);

/* An unsigned number: a JSON integer when it fits jansson's json_int_t,
 * else a decimal string (JSON numbers beyond 2^63 lose precision in most
 * readers anyway). New reference or NULL. */
json_t *postern_json_u64(uint64_t v);

/*
 * Sets `key` of `obj` to `value`, taking the reference (as
 * json_object_set_new; a NULL value is an error). Returns 0 or -1 (out of
 * memory); on -1 the value is released.
 */
int postern_json_set(json_t *obj, const char *key, json_t *value);

/* Writes `v` compactly to `f` followed by a newline when `nl`. Returns 0 or
 * -1 (write error). Does not release `v`. */
int postern_json_print(json_t *v, FILE *f, int nl);

#endif
