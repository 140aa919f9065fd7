/*
 * levels.c - names and ordering of the security levels (MX level, TLS level)
 * and the protection a pair of them gives, as tabled in DESIGN.md and
 * docs/security-levels.md.
 *
 * The name tables are generated from the X-macros in levels.h, so a level
 * can never lack a name. No state; safe from any thread.
 */
#include "policy/levels.h"

#include <string.h>

#include "base/postern_err.h"

static const char *const mx_names[] = {
#define POLICY__NAME(name, str) str,
    POLICY_MX_LEVEL_MAP(POLICY__NAME)
#undef POLICY__NAME
};

static const char *const tls_names[] = {
#define POLICY__NAME(name, str) str,
    POLICY_TLS_LEVEL_MAP(POLICY__NAME)
#undef POLICY__NAME
};

static const char *const protection_names[] = {
#define POLICY__NAME(name, str) str,
    POLICY_PROTECTION_MAP(POLICY__NAME)
#undef POLICY__NAME
};

const char *policy_mx_level_name(enum policy_mx_level level) {
  if ((unsigned)level >= POLICY_MX_LEVEL_COUNT)
    return "unknown";
  return mx_names[level];
}

const char *policy_tls_level_name(enum policy_tls_level level) {
  if ((unsigned)level >= POLICY_TLS_LEVEL_COUNT)
    return "unknown";
  return tls_names[level];
}

const char *policy_protection_name(enum policy_protection p) {
  if ((unsigned)p >= POLICY_PROTECTION_COUNT)
    return "unknown";
  return protection_names[p];
}

/* Finds `s` in a name table; -1 when absent. */
static int lookup(const char *const *names, int count, const char *s) {
  if (s == NULL)
    return -1;
  for (int i = 0; i < count; i++)
    if (strcmp(names[i], s) == 0)
      return i;
  return -1;
}

int policy_mx_level_parse(const char *s, enum policy_mx_level *out) {
  int i = lookup(mx_names, POLICY_MX_LEVEL_COUNT, s);
  if (i < 0 || out == NULL)
    return POSTERN_EINVAL;
  *out = (enum policy_mx_level)i;
  return 0;
}

int policy_tls_level_parse(const char *s, enum policy_tls_level *out) {
  int i = lookup(tls_names, POLICY_TLS_LEVEL_COUNT, s);
  if (i < 0 || out == NULL)
    return POSTERN_EINVAL;
  *out = (enum policy_tls_level)i;
  return 0;
}

/*
 * Without TLS nothing is protected. Encryption without authentication stops
 * only passive listeners: an active attacker can present any certificate.
 * An authenticated session stops active attackers only when the MX name was
 * itself authenticated (MTA-STS enforce or DNSSEC); otherwise the attacker
 * can forge the MX answer and present a valid certificate for their own
 * host.
 */
enum policy_protection policy_protection_of(enum policy_mx_level mx,
                                            enum policy_tls_level tls) {
  if (tls <= POLICY_TLS_LEVEL_NONE)
    return POLICY_PROTECTION_NONE;
  if (tls >= POLICY_TLS_LEVEL_AUTHENTICATED && mx >= POLICY_MX_LEVEL_MTASTS)
    return POLICY_PROTECTION_ACTIVE;
  return POLICY_PROTECTION_PASSIVE;
}
