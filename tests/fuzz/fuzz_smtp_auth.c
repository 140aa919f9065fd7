/*
 * fuzz_smtp_auth.c - libFuzzer target for SMTP AUTH's hostile-input parsers
 * (net/smtp_auth.h): the PLAIN and LOGIN exchanges and the users file.
 *
 * Input: one control byte, then the rest.
 *  - control bit 0x80 clear: an AUTH exchange. Bit 0 picks the mechanism
 *    (PLAIN, LOGIN); bit 1 says the first line is the AUTH command's
 *    initial response. The rest is split at LF (a CR before it is
 *    dropped, as the session does) into the client's lines, fed one by one
 *    until the exchange ends.
 *  - bit 0x80 set: the rest is a users file.
 * Beyond "no crash" it checks:
 *  - every step is a known result; CONTINUE only with a challenge of the
 *    mechanism (PLAIN: "", LOGIN: "Username:", "Password:" in base64),
 *    and no exchange asks more than twice;
 *  - DONE gives a user name and password of 1..255 bytes without NUL (the
 *    buffers stay terminated), and for PLAIN the same credentials come
 *    back from a fresh exchange with their own re-encoding;
 *  - a line of SMTP_AUTH_LINE_MAX - 1 bytes or more is TOO_LONG, "*" is
 *    CANCEL while the exchange runs;
 *  - base64 that decodes re-encodes to itself and decodes again the same;
 *  - the users file: an error has a line within the input's and a column
 *    of at least 1 and a message; on success every name in the table is
 *    found again by lookup, with an accepted hash.
 */
#include "base/postern_err.h"
#include "net/smtp_auth.h"
#include "tests/fuzz/fuzz_util.h"

#include <openssl/base64.h>

static void check_b64(const char *p, size_t n) {
  char out[SMTP_AUTH_LINE_MAX];
  size_t got = 0;
  if (smtp_auth_b64_decode(p, n, out, sizeof out, &got) != 0)
    return;
  FUZZ_CHECK(got <= n);
  if (n == 1 && p[0] == '=') {
    FUZZ_CHECK(got == 0);
    return;
  }
  uint8_t enc[2 * SMTP_AUTH_LINE_MAX];
  size_t en = EVP_EncodeBlock(enc, (const uint8_t *)out, got);
  char again[SMTP_AUTH_LINE_MAX];
  size_t got2 = 0;
  FUZZ_CHECK(smtp_auth_b64_decode((const char *)enc, en, again, sizeof again,
                                  &got2) == 0);
  FUZZ_CHECK(got2 == got && memcmp(again, out, got) == 0);
}

static void check_creds(const struct smtp_auth_exchange *x) {
  size_t un = strnlen(x->user, sizeof x->user);
  size_t pn = strnlen(x->pass, sizeof x->pass);
  FUZZ_CHECK(un >= 1 && un <= SMTP_AUTH_NAME_MAX);
  FUZZ_CHECK(pn >= 1 && pn <= SMTP_AUTH_PASS_MAX);
  if (x->mech != SMTP_AUTH_MECH_PLAIN)
    return;
  char raw[2 + 2 * 256];
  raw[0] = '\0';
  memcpy(raw + 1, x->user, un);
  raw[1 + un] = '\0';
  memcpy(raw + 2 + un, x->pass, pn);
  uint8_t enc[1100];
  size_t en = EVP_EncodeBlock(enc, (const uint8_t *)raw, 2 + un + pn);
  struct smtp_auth_exchange y;
  const char *ch;
  FUZZ_CHECK(smtp_auth_exchange_begin(&y, SMTP_AUTH_MECH_PLAIN,
                                      (const char *)enc, en,
                                      &ch) == SMTP_AUTH_STEP_DONE);
  FUZZ_CHECK(strcmp(y.user, x->user) == 0 && strcmp(y.pass, x->pass) == 0);
}

static void check_challenge(enum smtp_auth_mech m, const char *ch) {
  FUZZ_CHECK(ch != NULL);
  if (m == SMTP_AUTH_MECH_PLAIN)
    FUZZ_CHECK(ch[0] == '\0');
  else
    FUZZ_CHECK(strcmp(ch, "VXNlcm5hbWU6") == 0 ||
               strcmp(ch, "UGFzc3dvcmQ6") == 0);
}

static void exchange(uint8_t ctl, const char *p, size_t n) {
  enum smtp_auth_mech m =
      (ctl & 1) ? SMTP_AUTH_MECH_LOGIN : SMTP_AUTH_MECH_PLAIN;
  struct smtp_auth_exchange x;
  const char *ch = NULL;
  enum smtp_auth_step r;
  size_t off = 0;
  /* The lines, LF-terminated; the last may lack it. */
  const char *line = NULL;
  size_t ln = 0;
#define NEXT_LINE()                                                            \
  do {                                                                         \
    const char *lf = off < n ? memchr(p + off, '\n', n - off) : NULL;          \
    line = p + off;                                                            \
    ln = lf ? (size_t)(lf - line) : n - off;                                   \
    off += ln + (lf ? 1 : 0);                                                  \
    if (ln > 0 && line[ln - 1] == '\r')                                        \
      ln--;                                                                    \
  } while (0)
  if (ctl & 2) {
    NEXT_LINE();
    check_b64(line, ln);
    r = smtp_auth_exchange_begin(&x, m, line, ln, &ch);
  } else {
    r = smtp_auth_exchange_begin(&x, m, NULL, 0, &ch);
  }
  unsigned asks = 0;
  while (r == SMTP_AUTH_STEP_CONTINUE) {
    check_challenge(m, ch);
    FUZZ_CHECK(++asks <= 2);
    if (off >= n)
      return; /* the client went away */
    NEXT_LINE();
    check_b64(line, ln);
    r = smtp_auth_exchange_line(&x, line, ln, &ch);
    if (ln >= SMTP_AUTH_LINE_MAX - 1)
      FUZZ_CHECK(r == SMTP_AUTH_STEP_TOO_LONG);
    if (ln == 1 && line[0] == '*')
      FUZZ_CHECK(r == SMTP_AUTH_STEP_CANCEL);
  }
#undef NEXT_LINE
  FUZZ_CHECK(strcmp(smtp_auth_step_name(r), "?") != 0);
  if (r == SMTP_AUTH_STEP_DONE)
    check_creds(&x);
  smtp_auth_wipe(&x, sizeof x);
}

static void users(const char *p, size_t n) {
  struct smtp_auth_users *u = NULL;
  struct smtp_auth_error err;
  int rc = smtp_auth_users_parse(p, n, &u, &err);
  if (rc != 0) {
    FUZZ_CHECK(u == NULL);
    if (rc == POSTERN_ENOMEM)
      return;
    size_t lines = 1;
    for (size_t i = 0; i < n; i++)
      lines += p[i] == '\n';
    FUZZ_CHECK(err.line >= 1 && err.line <= lines && err.col >= 1);
    FUZZ_CHECK(err.msg[0] != '\0' &&
               strnlen(err.msg, sizeof err.msg) < sizeof err.msg);
    return;
  }
  /* Every name line is found again, with an accepted hash. */
  size_t off = 0, found = 0;
  while (off < n) {
    const char *l = p + off;
    const char *lf = memchr(l, '\n', n - off);
    size_t ln = lf ? (size_t)(lf - l) : n - off;
    off += ln + (lf ? 1 : 0);
    const char *colon = memchr(l, ':', ln);
    if (ln == 0 || l[0] == '#' || l[0] == ' ' || l[0] == '\t' || l[0] == '\r' ||
        colon == NULL)
      continue;
    char name[SMTP_AUTH_NAME_MAX + 1];
    size_t nn = (size_t)(colon - l);
    FUZZ_CHECK(nn >= 1 && nn <= SMTP_AUTH_NAME_MAX);
    memcpy(name, l, nn);
    name[nn] = '\0';
    const char *h = smtp_auth_users_hash(u, name);
    FUZZ_CHECK(h != NULL);
    FUZZ_CHECK(smtp_auth_hash_refusal(h, strlen(h)) == NULL);
    found++;
  }
  FUZZ_CHECK(found == smtp_auth_users_count(u));
  FUZZ_CHECK(smtp_auth_users_dummy(u) != NULL);
  smtp_auth_users_free(u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  uint8_t ctl = data[0];
  const char *p = (const char *)data + 1;
  size_t n = size - 1;
  if (ctl & 0x80)
    users(p, n);
  else
    exchange(ctl, p, n);
  return 0;
}
