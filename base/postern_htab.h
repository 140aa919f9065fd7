/*
 * base/postern_htab.h - Postern's one hash table: open addressing with
 * linear probing, growing as it fills, keyed by a NUL-terminated string or
 * by a fixed number of bytes (a queue id), with a keyed hash.
 *
 * Keys are borrowed, not copied: the key an entry was put with must stay
 * valid and unchanged while the entry is in the table. Usually it lives
 * inside the value ("struct dest { char key[300]; ... }", put with
 * d->key), so an entry costs one slot and no allocation.
 *
 * The hash is SipHash-1-3 under a key drawn from getrandom() once per
 * process: remote parties choose our keys (recipient domains), so a fixed
 * hash would let them pile every key into one chain. postern_hash() gives
 * the same function to code that spreads keys over other things (workers).
 *
 * Not thread-safe: one table belongs to one thread (or its owner locks).
 * Deletion shifts the following entries back (no tombstones), so lookups
 * stay short after many deletions.
 */
#ifndef POSTERN_HTAB_H
#define POSTERN_HTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct postern_htab;

/* The keyed hash of `len` bytes at `p` (same key for the whole process). */
uint64_t postern_hash(const void *p, size_t len);

/*
 * A new, empty table. key_len 0: keys are NUL-terminated strings, compared
 * bytewise (callers fold case first if they want to). key_len > 0: keys
 * are exactly that many bytes. Errors: POSTERN_ENOMEM.
 */
int postern_htab_new(size_t key_len, struct postern_htab **out);

/* Frees the table (not the keys or values). NULL is fine. */
void postern_htab_free(struct postern_htab *t);

/* The value stored under `key`, or NULL. */
void *postern_htab_get(const struct postern_htab *t, const void *key);

/*
 * Stores `value` (not NULL) under `key`, replacing an existing entry's key
 * and value. Returns 0 or POSTERN_ENOMEM (the table is unchanged then).
 */
int postern_htab_put(struct postern_htab *t, const void *key, void *value);

/* Removes `key`; returns its value, or NULL when it was absent. */
void *postern_htab_del(struct postern_htab *t, const void *key);

size_t postern_htab_count(const struct postern_htab *t);

/*
 * Iteration: `*pos` starts at 0; each call returns the next entry's value
 * (and its key in *key when key is not NULL), or NULL at the end. The
 * table must not change during a walk (a deletion moves entries back, so
 * the walk could see one twice or miss one): collect first, then delete.
 */
void *postern_htab_next(const struct postern_htab *t, size_t *pos,
                        const void **key);

#endif
