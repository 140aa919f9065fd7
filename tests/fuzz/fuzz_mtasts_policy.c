/*
 * fuzz_mtasts_policy.c - libFuzzer target for policy_mtasts_policy_parse()
 * (policy/chain.h): the policy body fetched from
 * https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 §3.2).
 *
 * The input is the body. Beyond "no crash" it checks:
 *  - the answer is 0, EPROTO or ETOOBIG (the latter for bodies over
 *    POLICY_MTASTS_BODY_MAX or more than POLICY_MTASTS_MX_MAX mx lines);
 *  - a parsed policy is in range: a known mode, max_age <= 31557600,
 *    n_mx <= POLICY_MTASTS_MX_MAX, mx patterns required unless mode is
 *    none, each pattern NUL-terminated, lower case, without a trailing dot,
 *    and a domain name optionally after "*.";
 *  - parser and matcher agree: every stored pattern matches a host built
 *    from it (the pattern itself, or "a." + suffix for "*." patterns), so
 *    the parser never accepts an mx line that can never match;
 *  - line endings do not matter: the same body with every CRLF turned into
 *    LF gives the same answer and the same policy (when that leaves no
 *    CRLF behind, as "\r\r\n" would).
 */
#include "policy/chain.h"
#include "base/postern_err.h"
#include "tests/fuzz/fuzz_util.h"

static void check_policy(const struct policy_mtasts_policy *p) {
  FUZZ_CHECK((unsigned)p->mode < POLICY_MTASTS_MODE_COUNT);
  FUZZ_CHECK(strcmp(policy_mtasts_mode_name(p->mode), "unknown") != 0);
  FUZZ_CHECK(p->max_age <= POLICY_MTASTS_MAX_AGE_MAX);
  FUZZ_CHECK(p->n_mx <= POLICY_MTASTS_MX_MAX);
  if (p->mode != POLICY_MTASTS_MODE_NONE)
    FUZZ_CHECK(p->n_mx >= 1);
  for (size_t i = 0; i < p->n_mx; i++) {
    const char *m = p->mx[i];
    size_t n = strnlen(m, POLICY_MTASTS_MX_LEN);
    FUZZ_CHECK(n >= 1 && n < POLICY_MTASTS_MX_LEN);
    FUZZ_CHECK(m[n - 1] != '.');
    const char *dom = m;
    if (n >= 2 && m[0] == '*' && m[1] == '.')
      dom = m + 2;
    FUZZ_CHECK(*dom != '\0');
    for (const char *c = dom; *c; c++)
      FUZZ_CHECK((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
                 *c == '-' || *c == '.');
    /* The parser accepted it, so some host must match it. */
    char host[POLICY_MTASTS_MX_LEN + 4];
    if (dom != m) {
      if (strlen(dom) + 2 <= 253) {
        snprintf(host, sizeof host, "a.%s", dom);
        FUZZ_CHECK(policy_mtasts_mx_match(m, host));
        FUZZ_CHECK(policy_mtasts_policy_match(p, host));
      }
    } else {
      FUZZ_CHECK(policy_mtasts_mx_match(m, m));
      FUZZ_CHECK(policy_mtasts_policy_match(p, m));
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size private copy: reads past `len` are caught. */
  char *body = malloc(size ? size : 1);
  body[0] = '\0';
  if (size)
    memcpy(body, data, size);
  struct policy_mtasts_policy *p = malloc(sizeof *p);
  struct policy_mtasts_policy *q = malloc(sizeof *q);
  int rc = policy_mtasts_policy_parse(body, size, p);
  FUZZ_CHECK(rc == 0 || rc == POSTERN_EPROTO || rc == POSTERN_ETOOBIG);
  if (size > POLICY_MTASTS_BODY_MAX)
    FUZZ_CHECK(rc == POSTERN_ETOOBIG);
  if (rc == 0)
    check_policy(p);

  /* CRLF -> LF must not change anything. */
  char *lf = malloc(size ? size : 1);
  size_t n = 0;
  for (size_t i = 0; i < size; i++) {
    if (body[i] == '\r' && i + 1 < size && body[i + 1] == '\n')
      continue;
    lf[n++] = body[i];
  }
  /* "x\r\r\n" becomes "x\r\n": a line that ended in a stray CR would
   * turn valid, so compare only when no CRLF is left. */
  if (n != size && size <= POLICY_MTASTS_BODY_MAX &&
      memmem(lf, n, "\r\n", 2) == NULL) {
    int rc2 = policy_mtasts_policy_parse(lf, n, q);
    FUZZ_CHECK(rc2 == rc);
    if (rc == 0) {
      FUZZ_CHECK(q->mode == p->mode && q->max_age == p->max_age &&
                 q->n_mx == p->n_mx);
      for (size_t i = 0; i < p->n_mx; i++)
        FUZZ_CHECK(strcmp(p->mx[i], q->mx[i]) == 0);
    }
  }
  free(lf);
  free(p);
  free(q);
  free(body);
  return 0;
}
