/*
 * names.c - domain name normalisation for comparison, shared by the DANE
 * matcher and the MTA-STS parsers (the syntax check is base/postern_domain.h).
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
