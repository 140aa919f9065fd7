/*
 * policy/levels.h - the security levels (DESIGN.md, docs/security-levels.md):
 * how an MX host name was authenticated (MX level), what protects the SMTP
 * session (TLS level), and what a pair of them protects against.
 *
 * The one definition for the whole relay: the policy chain ranks with these
 * enums, the configuration stores the operator's minimums in them
 * (engine/config.h), logs and reports print their names. Values and names
 * come from the same X-macro, so a level can never lack a name.
 *
 * Pure: no state, no I/O, safe from any thread. Depends on nothing but the
 * error table (base/postern_err.h).
 */
#ifndef POSTERN_POLICY_LEVELS_H
#define POSTERN_POLICY_LEVELS_H

/* Each enum is ordered: a higher value is strictly stronger, so levels can
 * be compared with < and >. */

/* How the MX host name was authenticated. X(NAME, "string") */
#define POLICY_MX_LEVEL_MAP(X)                                                 \
  X(NONE, "none")                                                              \
  X(MTASTS, "mtasts")                                                          \
  X(DNSSEC, "dnssec")

enum policy_mx_level {
#define POLICY__MX_LEVEL_DEF(name, str) POLICY_MX_LEVEL_##name,
  POLICY_MX_LEVEL_MAP(POLICY__MX_LEVEL_DEF)
#undef POLICY__MX_LEVEL_DEF
      POLICY_MX_LEVEL_COUNT
};

/* What protects the SMTP session. X(NAME, "string") */
#define POLICY_TLS_LEVEL_MAP(X)                                                \
  X(NONE, "none")                                                              \
  X(ENCRYPTED, "encrypted")                                                    \
  X(AUTHENTICATED, "authenticated")

enum policy_tls_level {
#define POLICY__TLS_LEVEL_DEF(name, str) POLICY_TLS_LEVEL_##name,
  POLICY_TLS_LEVEL_MAP(POLICY__TLS_LEVEL_DEF)
#undef POLICY__TLS_LEVEL_DEF
      POLICY_TLS_LEVEL_COUNT
};

/*
 * What a delivery with a given pair of levels protects against (the table in
 * DESIGN.md): nothing, passive attackers only, or passive and active ones.
 */
#define POLICY_PROTECTION_MAP(X)                                               \
  X(NONE, "none")                                                              \
  X(PASSIVE, "passive")                                                        \
  X(ACTIVE, "active")

enum policy_protection {
#define POLICY__PROTECTION_DEF(name, str) POLICY_PROTECTION_##name,
  POLICY_PROTECTION_MAP(POLICY__PROTECTION_DEF)
#undef POLICY__PROTECTION_DEF
      POLICY_PROTECTION_COUNT
};

/*
 * Names: "none", "mtasts", ... Static strings; "unknown" for values outside
 * the enum.
 */
const char *policy_mx_level_name(enum policy_mx_level level);
const char *policy_tls_level_name(enum policy_tls_level level);
const char *policy_protection_name(enum policy_protection p);

/*
 * Parse a level name (exact, lower case, as printed by the _name functions;
 * as used by `local { min_tls_level ... }`) into *out. Returns 0, or
 * POSTERN_EINVAL for an unknown name or NULL argument (*out untouched).
 */
int policy_mx_level_parse(const char *s, enum policy_mx_level *out);
int policy_tls_level_parse(const char *s, enum policy_tls_level *out);

/*
 * The protection a delivery ranked (mx, tls) gives: NONE without TLS,
 * ACTIVE with an authenticated session to an MX authenticated by MTA-STS or
 * DNSSEC, PASSIVE otherwise.
 */
enum policy_protection policy_protection_of(enum policy_mx_level mx,
                                            enum policy_tls_level tls);

#endif
