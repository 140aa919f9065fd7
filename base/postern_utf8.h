/*
 * postern_utf8.h - recognising well-formed UTF-8 in hostile input: SMTPUTF8
 * addresses (RFC 6531) and U-labels of domain names.
 *
 * Pure; no state, no allocation, safe from any thread.
 */
#ifndef POSTERN_UTF8_H
#define POSTERN_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Length of the well-formed UTF-8 sequence of 2 to 4 bytes that starts at
 * p (RFC 3629 §4: no overlong forms, no surrogates, nothing above
 * U+10FFFF), reading at most n bytes (n >= 1); 0 when p does not start one
 * (an ASCII byte included).
 */
size_t postern_utf8_len(const unsigned char *p, size_t n);

/*
 * Whether any of the n bytes at p is 8-bit (>= 0x80): not ASCII. Reads
 * eight bytes at a time, so it is fit for a message body (p may be NULL
 * when n is 0).
 */
bool postern_has_8bit(const void *p, size_t n);

/* The same for a NUL-terminated string (NULL: false). */
bool postern_has_8bit_str(const char *s);

#endif
