/*
 * postern_utf8.h - recognising well-formed UTF-8 in hostile input: SMTPUTF8
 * addresses (RFC 6531) and U-labels of domain names.
 *
 * Pure; no state, no allocation, safe from any thread.
 */
#ifndef POSTERN_UTF8_H
#define POSTERN_UTF8_H

#include <stddef.h>

/*
 * Length of the well-formed UTF-8 sequence of 2 to 4 bytes that starts at
 * p (RFC 3629 §4: no overlong forms, no surrogates, nothing above
 * U+10FFFF), reading at most n bytes (n >= 1); 0 when p does not start one
 * (an ASCII byte included).
 */
size_t postern_utf8_len(const unsigned char *p, size_t n);

#endif
