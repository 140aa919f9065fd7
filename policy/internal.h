/*
 * policy/internal.h - helpers shared by the files of the policy module only.
 * Not part of the public interface (policy/chain.h); names use `policy__`.
 */
#ifndef POSTERN_POLICY_INTERNAL_H
#define POSTERN_POLICY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Copies the `len` bytes of domain name `in` into `out` (capacity `cap`,
 * NUL-terminated) lower-cased (ASCII only) and without one trailing dot, so
 * names compare with strcmp. Returns the length written, or -1 when the name
 * is empty (after dropping the dot), holds a NUL byte, or does not fit.
 */
int policy__name_norm(const char *in, size_t len, char *out, size_t cap);

#endif
