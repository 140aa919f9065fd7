/*
 * fuzz_mtasts_mx.c - libFuzzer target for policy_mtasts_mx_match()
 * (policy/chain.h): an MTA-STS mx pattern against an MX host name
 * (RFC 8461 §4.1).
 *
 * Input layout: the pattern, a NUL byte, the host (no NUL: the host is the
 * pattern itself). Beyond "no crash" it checks the properties the header
 * states, each against an independent computation:
 *  - ASCII case never matters (both sides upper-cased: same answer) and one
 *    trailing dot on either side is ignored;
 *  - a host holding '*' or anything but letters, digits, '-' and '.'
 *    never matches;
 *  - a match without a wildcard means the names are equal (ignoring case
 *    and one trailing dot); a "*.rest" match means host is exactly one
 *    non-empty label followed by ".rest";
 *  - a plain pattern that is a valid host name matches itself.
 */
#include "policy/chain.h"
#include "tests/fuzz/fuzz_util.h"

#include <ctype.h>

/* Lower-cased copy without one trailing dot. */
static char *norm(const char *s) {
  size_t n = strlen(s);
  if (n > 0 && s[n - 1] == '.')
    n--;
  char *o = fuzz_strndup(s, n);
  for (size_t i = 0; i < n; i++)
    o[i] = (char)tolower((unsigned char)o[i]);
  return o;
}

static char *upper(const char *s) {
  char *o = fuzz_strndup(s, strlen(s));
  for (char *c = o; *c; c++)
    *c = (char)toupper((unsigned char)*c);
  return o;
}

static char *with_dot(const char *s) {
  size_t n = strlen(s);
  char *o = malloc(n + 2);
  memcpy(o, s, n);
  o[n] = '.';
  o[n + 1] = '\0';
  return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fuzz_in in = {data, size};
  char *pattern = fuzz_cstr(&in);
  char *host = in.n > 0 || (size > 0 && memchr(data, 0, size))
                   ? fuzz_cstr(&in)
                   : fuzz_strndup(pattern, strlen(pattern));
  bool m = policy_mtasts_mx_match(pattern, host);

  char *up = upper(pattern), *uh = upper(host);
  FUZZ_CHECK(policy_mtasts_mx_match(up, host) == m);
  FUZZ_CHECK(policy_mtasts_mx_match(pattern, uh) == m);
  size_t pl = strlen(pattern), hl = strlen(host);
  /* One trailing dot is ignored, unless adding it makes the name one the
   * matcher's buffers refuse, or the name already ends in a dot. */
  if (pl > 0 && pl < 200 && pattern[pl - 1] != '.') {
    char *d = with_dot(pattern);
    FUZZ_CHECK(policy_mtasts_mx_match(d, host) == m);
    free(d);
  }
  if (hl > 0 && hl < 200 && host[hl - 1] != '.') {
    char *d = with_dot(host);
    FUZZ_CHECK(policy_mtasts_mx_match(pattern, d) == m);
    free(d);
  }

  char *np = norm(pattern), *nh = norm(host);
  if (m) {
    for (const char *c = nh; *c; c++)
      FUZZ_CHECK((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
                 *c == '-' || *c == '.');
    if (np[0] == '*' && np[1] == '.') {
      const char *dot = strchr(nh, '.');
      FUZZ_CHECK(dot != NULL && dot != nh && strcmp(dot + 1, np + 2) == 0);
    } else {
      FUZZ_CHECK(strcmp(np, nh) == 0);
    }
  }
  /* A plain, valid host name matches itself. */
  size_t nhl = strlen(nh);
  bool valid = nhl > 0 && nhl <= 253 && nh[0] != '-' && nh[0] != '.' &&
               nh[nhl - 1] != '.';
  for (const char *c = nh; valid && *c; c++) {
    bool ok = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '.';
    size_t lab = strcspn(c, ".");
    if (c == nh || c[-1] == '.')
      valid =
          valid && lab >= 1 && lab <= 63 && c[lab - 1] != '-' && c[0] != '-';
    valid = valid && ok;
  }
  if (valid && strcmp(np, nh) == 0)
    FUZZ_CHECK(m);
  free(np);
  free(nh);
  free(up);
  free(uh);
  free(pattern);
  free(host);
  return 0;
}
