/*
 * names.c - domain name helpers shared by the DANE matcher and the MTA-STS
 * parsers: normalisation for comparison and RFC 5321 syntax checks.
 * Pure functions; no state.
 */
#include "policy/internal.h"

#include <string.h>

int policy__name_norm(const char *in, size_t len, char *out, size_t cap) {
  if (in == NULL || out == NULL || cap == 0)
    return -1;
  if (len > 0 && in[len - 1] == '.')
    len--;
  if (len == 0 || len + 1 > cap || memchr(in, '\0', len) != NULL)
    return -1;
  for (size_t i = 0; i < len; i++) {
    char c = in[i];
    out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  out[len] = '\0';
  return (int)len;
}

static bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

bool policy__domain_valid(const char *s, size_t len) {
  if (s == NULL)
    return false;
  if (len > 0 && s[len - 1] == '.')
    len--;
  if (len == 0 || len > 253)
    return false;
  size_t label = 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c == '.') {
      /* A label may not be empty nor end with a hyphen. */
      if (label == 0 || s[i - 1] == '-')
        return false;
      label = 0;
      continue;
    }
    if (!is_alnum(c) && c != '-')
      return false;
    if (label == 0 && c == '-')
      return false;
    if (++label > 63)
      return false;
  }
  return label > 0 && s[len - 1] != '-';
}
