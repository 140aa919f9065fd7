/*
 * policy/tlsrpt.h - SMTP TLS Reporting (RFC 8460): the result types a TLS
 * session attempt is counted under, the `_smtp._tls` TXT record, and the
 * aggregate report (JSON, gzip, the mailed form).
 *
 * Everything here is pure: no I/O, no event loop, no clock (times are
 * passed in), so any thread may call any function at once. Counting
 * sessions durably and sending reports is the engine's job; this header is
 * what it counts and what it sends.
 */
#ifndef POSTERN_POLICY_TLSRPT_H
#define POSTERN_POLICY_TLSRPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "policy/chain.h"

/* ---- What a session attempt is counted as ------------------------------ */

/*
 * The failure result types of RFC 8460 §4.3, X(NAME, "result-type"): the
 * negotiation failures (§4.3.1), then the policy failures (§4.3.2).
 * docs/security-levels.md maps every way the policy chain can fail to one
 * of them.
 */
#define POLICY_TLSRPT_RESULT_MAP(X)                                            \
  X(STARTTLS_NOT_SUPPORTED, "starttls-not-supported")                          \
  X(CERTIFICATE_HOST_MISMATCH, "certificate-host-mismatch")                    \
  X(CERTIFICATE_EXPIRED, "certificate-expired")                                \
  X(CERTIFICATE_NOT_TRUSTED, "certificate-not-trusted")                        \
  X(VALIDATION_FAILURE, "validation-failure")                                  \
  X(TLSA_INVALID, "tlsa-invalid")                                              \
  X(DNSSEC_INVALID, "dnssec-invalid")                                          \
  X(DANE_REQUIRED, "dane-required")                                            \
  X(STS_POLICY_FETCH_ERROR, "sts-policy-fetch-error")                          \
  X(STS_POLICY_INVALID, "sts-policy-invalid")                                  \
  X(STS_WEBPKI_INVALID, "sts-webpki-invalid")

/* POLICY_TLSRPT_SUCCESS (0) is a successful session, not an RFC type. */
enum policy_tlsrpt_result {
  POLICY_TLSRPT_SUCCESS = 0,
#define POLICY__TLSRPT_RESULT_DEF(name, s) POLICY_TLSRPT_##name,
  POLICY_TLSRPT_RESULT_MAP(POLICY__TLSRPT_RESULT_DEF)
#undef POLICY__TLSRPT_RESULT_DEF
      POLICY_TLSRPT_RESULT_COUNT
};

/* "starttls-not-supported", ...; "success" for POLICY_TLSRPT_SUCCESS;
 * "unknown" out of range. Static strings. */
const char *policy_tlsrpt_result_name(enum policy_tlsrpt_result r);
/* The inverse, for stored counts; -1 when `s` names no result. */
int policy_tlsrpt_result_parse(const char *s);

/* The policy applied to a session (RFC 8460 §4.4 "policy-type"). */
#define POLICY_TLSRPT_POLICY_MAP(X)                                            \
  X(STS, "sts")                                                                \
  X(TLSA, "tlsa")                                                              \
  X(NO_POLICY_FOUND, "no-policy-found")

enum policy_tlsrpt_policy_type {
#define POLICY__TLSRPT_POLICY_DEF(name, s) POLICY_TLSRPT_POLICY_##name,
  POLICY_TLSRPT_POLICY_MAP(POLICY__TLSRPT_POLICY_DEF)
#undef POLICY__TLSRPT_POLICY_DEF
      POLICY_TLSRPT_POLICY_COUNT
};

/* "sts", "tlsa", "no-policy-found"; "unknown" out of range. Static. */
const char *policy_tlsrpt_policy_name(enum policy_tlsrpt_policy_type t);
/* The inverse; -1 when `s` names no policy type. */
int policy_tlsrpt_policy_parse(const char *s);

#endif
