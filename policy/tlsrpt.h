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

/* ---- The report (RFC 8460 §4.4) --------------------------------------- */

/*
 * One "failure-details" entry: `count` sessions failed with `result` (not
 * POLICY_TLSRPT_SUCCESS) between the same endpoints. String fields are
 * borrowed for the call; NULL or "" leaves the field out of the report.
 * The IP fields must be IPv4 or IPv6 addresses in text form.
 */
struct policy_tlsrpt_failure {
  enum policy_tlsrpt_result result;
  const char *sending_mta_ip;        /* "sending-mta-ip" */
  const char *receiving_mx_hostname; /* "receiving-mx-hostname" */
  const char *receiving_ip;          /* "receiving-ip" */
  uint64_t count;                    /* "failed-session-count" */
  const char *receiving_mx_helo;     /* "receiving-mx-helo" */
  const char *failure_reason_code;   /* "failure-reason-code" */
};

/* One entry of "policies": the policy applied, its summary, its failures.
 * Everything is borrowed for the call. */
struct policy_tlsrpt_policy {
  enum policy_tlsrpt_policy_type type; /* "policy-type" */
  const char *domain;                  /* "policy-domain": required */
  /* "policy-string": the MTA-STS policy lines or the TLSA records as
   * text; left out when nstrings is 0. */
  const char *const *strings;
  size_t nstrings;
  /* "mx-host": the MTA-STS mx patterns; left out when nmx_hosts is 0. */
  const char *const *mx_hosts;
  size_t nmx_hosts;
  uint64_t successful, failed; /* "summary" */
  /* "failure-details": entries with count 0 are left out, and the array
   * too when no entry is left. */
  const struct policy_tlsrpt_failure *failures;
  size_t nfailures;
};

struct policy_tlsrpt_report {
  const char *organization; /* "organization-name": required */
  const char *contact;      /* "contact-info": required (an address) */
  const char *report_id;    /* "report-id": required */
  time_t start, end;        /* "date-range", UTC; 0 <= start <= end */
  const struct policy_tlsrpt_policy *policies; /* at least one */
  size_t npolicies;
};

/*
 * Writes the report as RFC 8460 §4.4 JSON (compact, fields in the RFC's
 * order, date-times as "YYYY-MM-DDTHH:MM:SSZ", counts as numbers; text that
 * is not UTF-8 is escaped as base/postern_json.h says). On 0, *out is a
 * NUL-terminated malloc'd string the caller frees with free(), *len its
 * length without the NUL. Returns POSTERN_EINVAL (NULL or empty required
 * field, no policy, a policy domain that is not a host name, a NULL string
 * in a list, an unknown type, a failure with result SUCCESS or an IP field
 * that is not an address, start > end or before 1970), POSTERN_ERANGE (a
 * time past year 9999, a count above INT64_MAX) or POSTERN_ENOMEM; *out is
 * then untouched.
 */
int policy_tlsrpt_report_json(const struct policy_tlsrpt_report *r, char **out,
                              size_t *len);

/* One "policies" entry of a report ({"policy", "summary",
 * "failure-details"} as policy_tlsrpt_report_json writes it), unchecked,
 * as a new jansson value (caller's reference), or NULL without memory. For
 * tools that show the entries outside a report (qtool tlsrpt list). */
typedef struct json_t json_t;
json_t *policy_tlsrpt_policy_json(const struct policy_tlsrpt_policy *p);

/*
 * Compresses `len` bytes at `in` into a gzip file (RFC 1952: zlib's
 * deflate with the gzip wrapper, no file name, mtime 0, so equal inputs
 * give equal outputs). On 0, *out is malloc'd (caller frees) and *outlen
 * its size. Returns POSTERN_EINVAL (NULL arguments), POSTERN_ETOOBIG
 * (more than 4 GiB - 1), POSTERN_ENOMEM or POSTERN_EINTERNAL (zlib
 * failed).
 */
int policy_tlsrpt_gzip(const void *in, size_t len, uint8_t **out,
                       size_t *outlen);

/*
 * The report's file name (RFC 8460 §5.3, no unique-id):
 * "<submitter>!<policy-domain>!<start>!<end>.json.gz", times in seconds
 * since the epoch. Both names must be host names (postern_domain_check,
 * no trailing dot), so the name is safe in a MIME parameter. Writes it
 * NUL-terminated into buf (cap bytes). Returns 0, POSTERN_EINVAL (NULL,
 * a bad name, start > end or negative) or POSTERN_ETOOBIG (cap too
 * small; buf is then "" when cap > 0).
 */
int policy_tlsrpt_filename(const char *submitter, const char *policy_domain,
                           time_t start, time_t end, char *buf, size_t cap);

/* Room for any file name policy_tlsrpt_filename() writes, NUL included:
 * two names of 253 bytes, two times of at most 19 digits (a non-negative
 * 64-bit time_t), three '!', ".json.gz". */
#define POLICY_TLSRPT_FILENAME_MAX (253 + 1 + 253 + 1 + 19 + 1 + 19 + 8 + 1)

/*
 * The mailed report (RFC 8460 §5.3). All borrowed for the call.
 *  - from, to[]: addr-specs of the form policy_tlsrpt_txt_parse() writes
 *    a mailto: target in (a dot-atom local part of at most 64 bytes "@"
 *    an ASCII host name with at least one dot, at most 254 bytes); 1 to
 *    POLICY_TLSRPT_RUA_MAX recipients;
 *  - submitter, policy_domain: host names (as for the file name);
 *  - report_id: the report's "report-id", which must have the form
 *    id-left "@" id-right (dot-atom-text each side, at most 200 bytes): §5.3
 *    puts it in the Subject as a msg-id, "<report_id>";
 *  - message_id: the Message-ID without its angle brackets, same form;
 *  - start, end: the report's date range (for the file name and the text);
 *    date: the Date: field.
 */
struct policy_tlsrpt_mail {
  const char *from;
  const char *const *to;
  size_t nto;
  const char *submitter;
  const char *policy_domain;
  const char *report_id;
  time_t start, end, date;
  const char *message_id;
};

/*
 * Builds the whole RFC 5322 message, CRLF line ends, 7-bit: From, To, Date,
 * Message-ID, Subject ("Report Domain: ... Submitter: ... Report-ID:
 * <...>", folded), TLS-Report-Domain, TLS-Report-Submitter,
 * Auto-Submitted: auto-generated (RFC 3834), TLS-Required: No (RFC 8689
 * §5: RFC 8460 §3 says reports MUST be delivered despite TLS failures; the
 * relay sending the report must honour that itself), MIME-Version, and a
 * multipart/report; report-type="tlsrpt" body (RFC 6522) with a text/plain
 * part for people and the `gzlen` bytes at `gz` (policy_tlsrpt_gzip's
 * output) as an application/tlsrpt+gzip attachment, base64 in 76-column
 * lines (RFC 2045 §6.8), named by policy_tlsrpt_filename(). The message is
 * not DKIM-signed, but RFC 8460 §3 has receivers ignore reports without a
 * DKIM signature of the reporting domain: the sending path must add one
 * (no "l=" tag). On 0, *out is a NUL-terminated
 * malloc'd string (caller frees), *len its length. Returns POSTERN_EINVAL
 * for any field outside the forms above - in particular a CR, LF or other
 * control character in any value, so no header can be injected - or NULL
 * gz with gzlen > 0; POSTERN_ERANGE for a time that cannot be written;
 * POSTERN_ENOMEM.
 */
int policy_tlsrpt_mail_build(const struct policy_tlsrpt_mail *m, const void *gz,
                             size_t gzlen, char **out, size_t *len);

#endif
