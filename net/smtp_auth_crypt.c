/*
 * smtp_auth_crypt.c - verifying and making password hashes for SMTP AUTH
 * (smtp_auth.h) with libxcrypt: crypt_rn to verify, crypt_gensalt_rn and
 * crypt_rn to hash. No hashing of our own.
 *
 * Both are slow on purpose (yescrypt takes tens of milliseconds and
 * megabytes): the server runs verification on libuv's thread pool, never on
 * its loops. struct crypt_data is 32 KiB, so it is allocated, not put on a
 * thread pool stack.
 */
#include "net/smtp_auth.h"

#include "base/postern_err.h"

#include <crypt.h>
#include <stdlib.h>
#include <string.h>

bool smtp_auth_verify(const char *pass, const char *hash) {
  struct crypt_data *cd = calloc(1, sizeof *cd);
  if (cd == NULL)
    return false;
  const char *r = crypt_rn(pass, hash, cd, (int)sizeof *cd);
  bool ok = false;
  if (r != NULL && r[0] != '*') {
    /* Constant time over the stored hash's length: the comparison must not
     * tell how much of a guess matched. */
    size_t hn = strlen(hash), rn = strlen(r);
    unsigned char diff = (unsigned char)(hn != rn);
    for (size_t i = 0; i < hn; i++)
      diff |= (unsigned char)(hash[i] ^ (i < rn ? r[i] : 0));
    ok = diff == 0;
  }
  smtp_auth_wipe(cd, sizeof *cd);
  free(cd);
  return ok;
}

int smtp_auth_hash_password(const char *pass, const char *prefix, char *out,
                            size_t cap) {
  if (prefix == NULL)
    prefix = "$y$";
  if (!smtp_auth_method_makes(prefix))
    return POSTERN_EINVAL;
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  /* count 0 and no random bytes: libxcrypt's default cost and its own
   * randomness (getrandom). */
  if (crypt_gensalt_rn(prefix, 0, NULL, 0, salt, sizeof salt) == NULL)
    return POSTERN_EIO;
  struct crypt_data *cd = calloc(1, sizeof *cd);
  if (cd == NULL)
    return POSTERN_ENOMEM;
  const char *r = crypt_rn(pass, salt, cd, (int)sizeof *cd);
  int rc = 0;
  if (r == NULL || r[0] == '*' || strlen(r) >= cap)
    rc = POSTERN_EIO;
  else
    strcpy(out, r);
  smtp_auth_wipe(cd, sizeof *cd);
  free(cd);
  return rc;
}
