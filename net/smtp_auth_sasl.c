/*
 * smtp_auth_sasl.c - the SASL exchanges of SMTP AUTH (smtp_auth.h): PLAIN
 * (RFC 4616) and LOGIN, from the client's base64 lines to a user name and
 * a password. Pure: no I/O, no allocation, bounded by the sizes in
 * smtp_auth.h; the caller verifies and wipes (smtp_auth_wipe).
 *
 * Base64 is BoringSSL's strict decoder (EVP_DecodeBase64): RFC 4954 §4
 * wants a 501 for anything that is not base64, so no lenient decoding.
 */
#include "net/smtp_auth.h"

#include "base/postern_err.h"

#include <openssl/base64.h>
#include <string.h>
#include <strings.h>

static const char *const mech_names[] = {
#define MECH_NAME(name, str) str,
    SMTP_AUTH_MECH_MAP(MECH_NAME)
#undef MECH_NAME
};

static const char *const step_names[] = {
#define STEP_NAME(name, str) str,
    SMTP_AUTH_STEP_MAP(STEP_NAME)
#undef STEP_NAME
};

const char *smtp_auth_mech_name(enum smtp_auth_mech m) {
  if ((unsigned)m < sizeof mech_names / sizeof mech_names[0])
    return mech_names[m];
  return "?";
}

const char *smtp_auth_step_name(enum smtp_auth_step s) {
  if ((unsigned)s < sizeof step_names / sizeof step_names[0])
    return step_names[s];
  return "?";
}

enum smtp_auth_mech smtp_auth_mech_parse(const char *p, size_t n) {
  for (unsigned m = 1; m < sizeof mech_names / sizeof mech_names[0]; m++) {
    const char *name = mech_names[m];
    if (strlen(name) == n && strncasecmp(p, name, n) == 0)
      return (enum smtp_auth_mech)m;
  }
  return SMTP_AUTH_MECH_NONE;
}

void smtp_auth_wipe(void *p, size_t n) {
  explicit_bzero(p, n);
}

int smtp_auth_b64_decode(const char *p, size_t n, char *out, size_t cap,
                         size_t *outlen) {
  if (n == 1 && p[0] == '=') {
    *outlen = 0;
    return 0;
  }
  size_t need;
  if (!EVP_DecodedLength(&need, n))
    return POSTERN_ESYNTAX; /* not a multiple of 4 */
  /* EVP_DecodedLength is the bound before padding is removed. */
  if (need > cap + 2)
    return POSTERN_ETOOBIG;
  uint8_t tmp[SMTP_AUTH_LINE_MAX];
  if (need > sizeof tmp)
    return POSTERN_ETOOBIG;
  size_t got = 0;
  if (!EVP_DecodeBase64(tmp, &got, sizeof tmp, (const uint8_t *)p, n))
    return POSTERN_ESYNTAX;
  if (got > cap) {
    smtp_auth_wipe(tmp, got);
    return POSTERN_ETOOBIG;
  }
  memcpy(out, tmp, got);
  smtp_auth_wipe(tmp, got);
  *outlen = got;
  return 0;
}

/* RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd, each
 * part free of NUL, authcid and passwd not empty. We act for the authcid
 * only: an authzid is accepted when it is empty or names the authcid
 * itself (§2: "the client ... is requesting to act as the identity the
 * credentials are associated with"); any other identity is refused like
 * bad credentials (535), not as a syntax error. */
static enum smtp_auth_step plain_message(struct smtp_auth_exchange *x,
                                         const char *m, size_t n) {
  const char *z1 = memchr(m, '\0', n);
  if (z1 == NULL)
    return SMTP_AUTH_STEP_MALFORMED;
  const char *cid = z1 + 1;
  size_t rest = n - (size_t)(cid - m);
  const char *z2 = memchr(cid, '\0', rest);
  if (z2 == NULL)
    return SMTP_AUTH_STEP_MALFORMED;
  size_t zn = (size_t)(z1 - m), cn = (size_t)(z2 - cid);
  const char *pw = z2 + 1;
  size_t pn = n - (size_t)(pw - m);
  if (cn == 0 || pn == 0 || memchr(pw, '\0', pn) != NULL ||
      cn > SMTP_AUTH_NAME_MAX || pn > SMTP_AUTH_PASS_MAX ||
      zn > SMTP_AUTH_NAME_MAX)
    return SMTP_AUTH_STEP_MALFORMED;
  if (zn != 0 && (zn != cn || memcmp(m, cid, cn) != 0)) {
    memcpy(x->user, cid, cn); /* for the log: who asked */
    x->user[cn] = '\0';
    return SMTP_AUTH_STEP_AUTHZID;
  }
  memcpy(x->user, cid, cn);
  x->user[cn] = '\0';
  memcpy(x->pass, pw, pn);
  x->pass[pn] = '\0';
  return SMTP_AUTH_STEP_DONE;
}

/* Decodes one response into buf; returns CONTINUE when it decoded. */
static enum smtp_auth_step decode(const char *p, size_t n, char *buf,
                                  size_t cap, size_t *len) {
  if (n > SMTP_AUTH_LINE_MAX - 2)
    return SMTP_AUTH_STEP_TOO_LONG;
  if (n == 1 && p[0] == '*')
    return SMTP_AUTH_STEP_CANCEL;
  if (n == 0) {
    *len = 0; /* an empty response (RFC 4954 §4) */
    return SMTP_AUTH_STEP_CONTINUE;
  }
  int r = smtp_auth_b64_decode(p, n, buf, cap, len);
  if (r == POSTERN_ETOOBIG)
    return SMTP_AUTH_STEP_MALFORMED; /* valid base64, too long a value */
  if (r < 0)
    return SMTP_AUTH_STEP_BAD_B64;
  return SMTP_AUTH_STEP_CONTINUE;
}

/* "Username:" and "Password:", what every LOGIN server sends. */
static const char login_user[] = "VXNlcm5hbWU6";
static const char login_pass[] = "UGFzc3dvcmQ6";

/* A LOGIN response: the user name (step 0) or the password (step 1). */
static enum smtp_auth_step login_response(struct smtp_auth_exchange *x,
                                          const char *p, size_t n,
                                          const char **challenge) {
  char buf[SMTP_AUTH_NAME_MAX + 1];
  size_t len = 0;
  enum smtp_auth_step r = decode(p, n, buf, sizeof buf - 1, &len);
  if (r != SMTP_AUTH_STEP_CONTINUE)
    return r;
  if (len == 0 || memchr(buf, '\0', len) != NULL) {
    smtp_auth_wipe(buf, sizeof buf);
    return SMTP_AUTH_STEP_MALFORMED;
  }
  if (x->step == 0) {
    memcpy(x->user, buf, len);
    x->user[len] = '\0';
    x->step = 1;
    *challenge = login_pass;
    return SMTP_AUTH_STEP_CONTINUE;
  }
  memcpy(x->pass, buf, len);
  x->pass[len] = '\0';
  smtp_auth_wipe(buf, sizeof buf);
  return SMTP_AUTH_STEP_DONE;
}

static enum smtp_auth_step plain_response(struct smtp_auth_exchange *x,
                                          const char *p, size_t n) {
  /* authzid NUL authcid NUL passwd, each at most 255 */
  char buf[3 * 256];
  size_t len = 0;
  enum smtp_auth_step r = decode(p, n, buf, sizeof buf, &len);
  if (r == SMTP_AUTH_STEP_CONTINUE)
    r = plain_message(x, buf, len);
  smtp_auth_wipe(buf, sizeof buf);
  return r;
}

enum smtp_auth_step smtp_auth_exchange_begin(struct smtp_auth_exchange *x,
                                             enum smtp_auth_mech mech,
                                             const char *ir, size_t irn,
                                             const char **challenge) {
  memset(x, 0, sizeof *x);
  x->mech = mech;
  *challenge = NULL;
  if (mech == SMTP_AUTH_MECH_PLAIN) {
    if (ir == NULL) {
      *challenge = ""; /* RFC 4616 §2: the initial challenge is empty */
      return SMTP_AUTH_STEP_CONTINUE;
    }
    /* RFC 4954 §4: "=" is an empty initial response; "*" is no response
     * here, only base64 is. An empty PLAIN message is malformed. */
    if (irn == 1 && ir[0] == '=')
      return SMTP_AUTH_STEP_MALFORMED;
    if (irn == 1 && ir[0] == '*')
      return SMTP_AUTH_STEP_BAD_B64;
    return plain_response(x, ir, irn);
  }
  if (mech == SMTP_AUTH_MECH_LOGIN) {
    if (ir == NULL || (irn == 1 && ir[0] == '=')) {
      *challenge = login_user;
      return SMTP_AUTH_STEP_CONTINUE;
    }
    if (irn == 1 && ir[0] == '*')
      return SMTP_AUTH_STEP_BAD_B64;
    return login_response(x, ir, irn, challenge);
  }
  return SMTP_AUTH_STEP_MALFORMED; /* the caller answers 504 before */
}

enum smtp_auth_step smtp_auth_exchange_line(struct smtp_auth_exchange *x,
                                            const char *line, size_t n,
                                            const char **challenge) {
  *challenge = NULL;
  if (x->mech == SMTP_AUTH_MECH_PLAIN)
    return plain_response(x, line, n);
  if (x->mech == SMTP_AUTH_MECH_LOGIN)
    return login_response(x, line, n, challenge);
  return SMTP_AUTH_STEP_MALFORMED;
}
