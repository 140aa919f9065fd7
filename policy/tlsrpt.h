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

/* ---- The `_smtp._tls.<domain>` TXT record (RFC 8460 §3) ---------------- */

/*
 * Reporting URIs kept from one record. RFC 8460 §3 sets no limit and a
 * syntactically valid record must be accepted, so a record with more URIs
 * is not an error: the first POLICY_TLSRPT_RUA_MAX usable ones are kept
 * and the rest are counted in `nskipped` - as DMARC (RFC 7489 §6.2) lets a
 * reporter limit the URIs it sends to. Refusing the record would cost the
 * domain all its reports; sending to every URI would let one hostile record
 * multiply our outbound mail and requests.
 */
#define POLICY_TLSRPT_RUA_MAX 8
/* Longest URI kept, with its NUL. A longer one is skipped (counted in
 * `nskipped`), for the same reason. */
#define POLICY_TLSRPT_URI_MAX 512

enum policy_tlsrpt_uri_kind {
  POLICY_TLSRPT_URI_MAILTO,
  POLICY_TLSRPT_URI_HTTPS,
};

struct policy_tlsrpt_uri {
  enum policy_tlsrpt_uri_kind kind;
  /* The URI as published (NUL-terminated). For logs: escape before
   * printing like any remote text (it holds no control characters). */
  char uri[POLICY_TLSRPT_URI_MAX];
  /* Where to send, NUL-terminated and normalised:
   *  - mailto: the one addr-spec, percent-decoded, the domain lower-cased,
   *    without the URI's ?hfields: a dot-atom local part (at most 64
   *    bytes) "@" an ASCII host name with at least one dot;
   *  - https: "https://" host [":" port] path ["?" query], scheme and host
   *    lower-cased, "/" for an empty path; never user info, an IP literal,
   *    a fragment, or a control character (even percent-encoded). */
  char target[POLICY_TLSRPT_URI_MAX];
};

struct policy_tlsrpt_record {
  size_t nrua; /* 1..POLICY_TLSRPT_RUA_MAX after a successful parse */
  /* URIs published but not kept: another scheme than mailto: or https:
   * (§3: those two are the ones defined), a target refused above, a
   * duplicate of a kept target, too long, or past POLICY_TLSRPT_RUA_MAX. */
  size_t nskipped;
  struct policy_tlsrpt_uri rua[POLICY_TLSRPT_RUA_MAX]; /* in record order */
};

/*
 * Evaluates the TXT records found at `_smtp._tls.<policy domain>` (RFC
 * 8460 §3), each with its strings concatenated without spaces (§3). Records
 * that do not start with "v=TLSRPTv1" followed by ';', a blank or the end
 * are ignored (§3 discards those not beginning with "v=TLSRPTv1;"; the
 * blank and the end are counted too so that a malformed TLSRPT record is
 * reported as malformed rather than as absent). Exactly one must remain,
 * and it must follow the §3 grammar: the version first; fields separated
 * by `;` with optional blanks around; an optional trailing `;`; exactly one
 * `rua=` holding one or more URIs separated by `,` with optional blanks
 * around; extension fields `name=value` with §3's character sets,
 * tolerated and ignored. Each URI must be an RFC 3986 URI in which `,`,
 * `!` and `;` are percent-encoded (§3): a scheme, then only URI
 * characters, every '%' followed by two hex digits.
 *
 * Returns 0 and fills *out; POSTERN_ENOENT when no record is a TLSRPT
 * record; POSTERN_EPROTO when two or more are, when the one record is
 * malformed, or when none of its URIs is kept (see `nskipped`) - in every
 * EPROTO case §3 says the domain is to be taken as not implementing
 * TLSRPT: send no report; POSTERN_EINVAL for NULL arguments (a record with
 * data NULL and len 0 is an empty record). *out is written only on 0.
 * out->rua holds copies: nothing points into `recs`, which is borrowed for
 * the call and need not be NUL-terminated.
 */
int policy_tlsrpt_txt_parse(const struct policy_txt *recs, size_t nrecs,
                            struct policy_tlsrpt_record *out);

#endif
