/*
 * tests/fuzz/fuzz_util.h - helpers shared by the libFuzzer targets in this
 * directory (built by tools/fuzz, not by Bazel).
 *
 * FUZZ_CHECK states an invariant: when it does not hold the target prints
 * the failed condition with its place and aborts, which libFuzzer records as
 * a crash with a reproducer, exactly like a sanitizer finding.
 */
#ifndef POSTERN_TESTS_FUZZ_UTIL_H
#define POSTERN_TESTS_FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* A cursor over the fuzz input, for targets that carve several values out
 * of it. Reading past the end yields zeros and empty slices, never UB. */
struct fuzz_in {
  const uint8_t *p;
  size_t n;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in) {
  if (in->n == 0)
    return 0;
  uint8_t v = in->p[0];
  in->p++;
  in->n--;
  return v;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in) {
  uint16_t hi = fuzz_u8(in);
  return (uint16_t)((hi << 8) | fuzz_u8(in));
}

static inline uint32_t fuzz_u32(struct fuzz_in *in) {
  uint32_t hi = fuzz_u16(in);
  return (hi << 16) | fuzz_u16(in);
}

/* The next `want` bytes (fewer when the input ends first). */
static inline const uint8_t *fuzz_bytes(struct fuzz_in *in, size_t want,
                                        size_t *got) {
  const uint8_t *p = in->p;
  *got = want < in->n ? want : in->n;
  in->p += *got;
  in->n -= *got;
  return p;
}

/* A chunk with a 16-bit big-endian length prefix (cut at the input's end). */
static inline const uint8_t *fuzz_chunk16(struct fuzz_in *in, size_t *got) {
  size_t want = fuzz_u16(in);
  return fuzz_bytes(in, want, got);
}

/*
 * One DNS TXT record for the TXT targets: a length (one byte, or two
 * big-endian when `wide`), then that many bytes (cut at the input's end),
 * copied into an allocation of their own and not NUL-terminated, so that
 * reading past *len is caught. The all-ones length stands for a NULL
 * record: returns NULL with *len 0. The caller frees the copy.
 */
static inline char *fuzz_txt_record(struct fuzz_in *in, bool wide,
                                    size_t *len) {
  size_t want = wide ? fuzz_u16(in) : fuzz_u8(in);
  *len = 0;
  if (want == (wide ? 0xffffu : 0xffu))
    return NULL;
  const uint8_t *p = fuzz_bytes(in, want, len);
  char *copy = malloc(*len ? *len : 1);
  if (copy == NULL)
    abort();
  memcpy(copy, p, *len);
  return copy;
}

/* The bytes up to the next NUL (which is consumed) or the end, as a new
 * NUL-terminated string; the caller frees it. */
static inline char *fuzz_cstr(struct fuzz_in *in) {
  const uint8_t *z = memchr(in->p, 0, in->n);
  size_t len = z ? (size_t)(z - in->p) : in->n;
  char *s = malloc(len + 1);
  if (s == NULL)
    abort();
  memcpy(s, in->p, len);
  s[len] = '\0';
  size_t used = z ? len + 1 : len;
  in->p += used;
  in->n -= used;
  return s;
}

/* A NUL-terminated copy of p[0..n). The caller frees it. */
static inline char *fuzz_strndup(const void *p, size_t n) {
  char *s = malloc(n + 1);
  if (s == NULL)
    abort();
  if (n > 0)
    memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

#endif
