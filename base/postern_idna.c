/*
 * postern_idna.c - U-labels to A-labels with libidn2 (postern_idna.h). The
 * result is checked once more as a plain host name (base/postern_domain.h):
 * libidn2 passes empty labels and over-long names through.
 */
#include "base/postern_idna.h"

#include "base/postern_domain.h"
#include "base/postern_err.h"

#include <idn2.h>
#include <stdlib.h>
#include <string.h>

int postern_idna_to_ascii(const char *in, char *out, size_t cap,
                          const char **why) {
  const char *dummy;
  if (why == NULL)
    why = &dummy;
  *why = "";
  if (in == NULL || out == NULL || cap == 0)
    return POSTERN_EINVAL;
  size_t n = strlen(in);
  if (n > 1 && in[n - 1] == '.')
    n--;
  char tmp[1024];
  if (n == 0 || n >= sizeof tmp) {
    *why = "the name is empty or too long";
    return n == 0 ? POSTERN_EINVAL : POSTERN_ETOOBIG;
  }
  memcpy(tmp, in, n);
  tmp[n] = '\0';
  char *a = NULL;
  int rc = idn2_to_ascii_8z(tmp, &a, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
  if (rc != IDN2_OK) {
    *why = idn2_strerror(rc);
    return POSTERN_EINVAL;
  }
  size_t an = strlen(a);
  int ret = 0;
  if (postern_domain_check(a, an, 0, NULL, why) != 0)
    ret = POSTERN_EINVAL;
  else if (an + 1 > cap)
    ret = POSTERN_ETOOBIG;
  if (ret == 0) {
    for (size_t i = 0; i <= an; i++)
      out[i] = (a[i] >= 'A' && a[i] <= 'Z') ? (char)(a[i] - 'A' + 'a') : a[i];
  }
  idn2_free(a);
  return ret;
}
