/*
 * policy/chain.h - the pure building blocks of the policy chain: the DANE
 * TLSA matcher (RFC 7672, RFC 7671) and the MTA-STS parsers (RFC 8461), on
 * top of the security levels (policy/levels.h, included here).
 *
 * Everything in the first half is pure: no I/O, no event loop, no global state,
 * no clock. Time is always passed in (`now`), so results are deterministic
 * and every function may be called from any thread at once.
 *
 * The second half of this header is the chain itself: the module interface
 * (prepare_domain / check_mx / prepare_conn / check_conn) and the functions
 * the engine calls to run the modules in configuration order.
 */
#ifndef POSTERN_POLICY_CHAIN_H
#define POSTERN_POLICY_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "policy/levels.h"

/* ------------------------------------------------------------------------
 * DANE (RFC 7672 for SMTP, RFC 7671 operational rules)
 * ------------------------------------------------------------------------ */

/* TLSA certificate usages, selectors and matching types (RFC 7218 names). */
enum policy_tlsa_usage {
  POLICY_TLSA_PKIX_TA = 0,
  POLICY_TLSA_PKIX_EE = 1,
  POLICY_TLSA_DANE_TA = 2,
  POLICY_TLSA_DANE_EE = 3,
};
enum policy_tlsa_selector {
  POLICY_TLSA_SEL_CERT = 0,
  POLICY_TLSA_SEL_SPKI = 1,
};
enum policy_tlsa_mtype {
  POLICY_TLSA_MT_FULL = 0,
  POLICY_TLSA_MT_SHA256 = 1,
  POLICY_TLSA_MT_SHA512 = 2,
};

/*
 * One TLSA record. `data` is borrowed: it must stay valid while the record is
 * used; nothing here keeps or frees it. Values are kept as published, so
 * unknown ones (usage 4, selector 7, ...) are representable and simply
 * unusable.
 */
struct policy_tlsa {
  uint8_t usage;
  uint8_t selector;
  uint8_t mtype;
  const uint8_t *data;
  size_t len;
};

/*
 * Decodes TLSA RDATA in wire format (RFC 6698 §2.1: usage, selector, mtype,
 * then the association data). out->data points into `rdata`. Returns 0, or
 * POSTERN_EPROTO when the RDATA is shorter than 4 bytes.
 */
int policy_tlsa_from_rdata(const uint8_t *rdata, size_t len,
                           struct policy_tlsa *out);

/*
 * Whether a record can authenticate an SMTP server (RFC 7672 §3.1): usage
 * DANE-TA(2) or DANE-EE(3), selector 0 or 1, matching type 0, 1 or 2, and
 * association data of the right shape: 32 bytes for SHA2-256, 64 for
 * SHA2-512, non-empty for full data, and for a DANE-TA(2) full record
 * (2 0 0 / 2 1 0) a certificate or SubjectPublicKeyInfo that parses.
 * PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP (RFC 7672 §3.1.3).
 */
bool policy_tlsa_usable(const struct policy_tlsa *rec);

/*
 * What DNS said about an MX host, for choosing where its TLSA records are
 * looked up. Strings are borrowed for the call.
 */
struct policy_dane_host {
  const char *host;      /* the MX host name */
  const char *canonical; /* after CNAME expansion; NULL or "": host */
  /* The name is the mail host by DNSSEC or by configuration: from a
   * validated MX RRset, a validated denial of one (implicit MX), or a host
   * a `[host]` route names (RFC 7672 §2.2.1, §2.2.2). */
  bool name_authenticated;
  /* The address RRsets used, and the whole CNAME chain leading to them,
   * validated (dns_host_select). */
  bool addrs_authenticated;
  /* The host's own CNAME RRset - the first link of the chain - validated
   * (asked for explicitly: a CNAME query is answered by the alias itself),
   * while the addresses at the end of the chain did not. */
  bool cname_authenticated;
};

/*
 * Where to look for an MX host's TLSA records (RFC 7672 §2.2.2 as Viktor
 * Dukhovni states it): the host is in a signed zone when its address
 * records are secure, or result from a CNAME chain whose first link is
 * secure.
 *  - whole chain secure (addrs_authenticated): the expanded name first,
 *    then the original name when the two differ;
 *  - only the first link secure (a CNAME into an unsigned zone): the
 *    original name only;
 *  - otherwise, or when the name itself is not authenticated: nowhere (no
 *    DANE).
 * Names compare without regard to case and a trailing dot. Writes the
 * names to try, in order, into out[] (pointers to h->host or
 * h->canonical) and returns how many (0, 1 or 2).
 */
size_t policy_dane_tlsa_bases(const struct policy_dane_host *h,
                              const char *out[2]);

/*
 * SHA-256 over a TLSA RRset and its base domain, independent of the order
 * the records came in (DNS does not keep one) and of the base domain's case
 * and trailing dot: two answers get the same digest exactly when they hold
 * the same records for the same name. It keys cached TLS sessions by the
 * DANE policy that judged them, so that after a TLSA rollover no session
 * made under the old records is offered. Records are borrowed for the
 * call. Returns 0, or POSTERN_EINVAL (NULL arguments, a base domain that
 * is not a name), POSTERN_ENOMEM.
 */
int policy_tlsa_rrset_digest(const struct policy_tlsa *recs, size_t nrecs,
                             const char *base, uint8_t out[32]);

/* A certificate of the peer's chain in DER; `der` is borrowed. */
struct policy_dane_cert {
  const uint8_t *der;
  size_t len;
};

/*
 * Outcome of matching a chain against TLSA records. X(NAME, "short",
 * "sentence"): the short name is for logs and metrics (`dane=name`), the
 * sentence for humans (postern-probe, remote-facing reasons).
 */
#define POLICY_DANE_STATUS_MAP(X)                                              \
  X(OK, "ok", "a usable TLSA record authenticates the certificate chain")      \
  X(NO_USABLE, "no-usable",                                                    \
    "no usable TLSA records (only PKIX or unknown parameters)")                \
  X(MISMATCH, "mismatch", "no TLSA record matches the certificate chain")      \
  X(CHAIN, "chain",                                                            \
    "the certificate does not chain to the matched trust anchor")              \
  X(EXPIRED, "expired", "a certificate is outside its validity period")        \
  X(NAME, "name",                                                              \
    "the certificate does not match the MX host name or TLSA base domain")

enum policy_dane_status {
#define POLICY__DANE_STATUS_DEF(name, s, msg) POLICY_DANE_##name,
  POLICY_DANE_STATUS_MAP(POLICY__DANE_STATUS_DEF)
#undef POLICY__DANE_STATUS_DEF
      POLICY_DANE_STATUS_COUNT
};

struct policy_dane_result {
  enum policy_dane_status status;
  /*
   * With OK: the depth of the certificate that matched, 0 = leaf. For a
   * DANE-TA(2) match it is the trust anchor's position in the verified chain
   * (a full certificate given only in DNS counts as one more link above the
   * presented chain); for a bare public key given only in DNS (2 1 0, no
   * presented certificate carries it) it is the depth of the certificate
   * that key signed, as in OpenSSL's DANE code. When
   * several records match, DANE-EE(3) wins, then the lowest depth. -1
   * otherwise.
   */
  int depth;
  /* With OK: usage of the matching record (2 or 3) and its index. */
  int usage;
  size_t record;
};

/* "ok", "mismatch", ...; and the sentence. Static strings. */
const char *policy_dane_status_name(enum policy_dane_status status);
const char *policy_dane_status_message(enum policy_dane_status status);

/*
 * Checks the peer's certificate chain against TLSA records (RFC 7672 §3.1,
 * RFC 7671 §5):
 *  - records that are not usable (policy_tlsa_usable) are ignored; if none is
 *    usable the status is NO_USABLE;
 *  - DANE-EE(3) matches the leaf's certificate or SPKI; no name, expiry or
 *    chain checks (RFC 7672 §3.1.1). Any EE match wins at once;
 *  - DANE-TA(2) matches a presented certificate (by digest or full data), or
 *    is a full certificate (2 0 0) or bare public key (2 1 0) given only in
 *    DNS. The leaf must then chain to that trust anchor through the
 *    presented certificates (signatures, CA constraints, TLS server purpose,
 *    verified with BoringSSL's X509 verifier in partial-chain mode), every
 *    certificate below the anchor - the leaf always - must be valid at `now`
 *    (the anchor's own dates are not checked: the DNSSEC-signed record is
 *    the statement of trust), and the leaf must match one of `names`
 *    (RFC 7672 §3.2.3: DNS-IDs, CN only when there are none; `*` only as
 *    the whole leftmost label; case and a trailing dot do not matter).
 * When nothing matches, the status is the reason furthest along that path:
 * MISMATCH (no record matched any certificate) < CHAIN < EXPIRED < NAME.
 *
 * chain: the peer's certificates in DER, leaf first, as presented (order of
 * the rest does not matter). names: reference identifiers, usually the MX
 * host name and, when different, the TLSA base domain (RFC 7672 §3.2.2).
 * All inputs are borrowed for the duration of the call only.
 *
 * Returns 0 with *out filled (a failed match is a result, not an error), or
 * POSTERN_EINVAL (NULL arguments, empty chain, a leaf that is not a DER
 * certificate), POSTERN_ENOMEM.
 */
int policy_dane_verify(const struct policy_tlsa *recs, size_t nrecs,
                       const struct policy_dane_cert *chain, size_t nchain,
                       const char *const *names, size_t nnames, time_t now,
                       struct policy_dane_result *out);

/* ------------------------------------------------------------------------
 * MTA-STS parsers (RFC 8461)
 *
 * These parse whole, already-received objects (the TXT RRset, the HTTPS body
 * after the fetch completed), so they answer OK or PROTO_ERROR only: there is
 * no NEED_MORE state. Incremental input is the fetcher's business, which
 * also enforces POLICY_MTASTS_BODY_MAX while receiving.
 * ------------------------------------------------------------------------ */

#define POLICY_MTASTS_ID_MAX 32
#define POLICY_MTASTS_BODY_MAX 65536
#define POLICY_MTASTS_MAX_AGE_MAX 31557600
#define POLICY_MTASTS_MX_MAX 64
/* A domain name is at most 253 characters plus "*." and a trailing dot. */
#define POLICY_MTASTS_MX_LEN 256

/* One TXT record (its character-strings already concatenated, RFC 7208
 * style); `data` is borrowed and need not be NUL-terminated. */
struct policy_txt {
  const char *data;
  size_t len;
};

struct policy_mtasts_txt {
  char id[POLICY_MTASTS_ID_MAX + 1]; /* NUL-terminated */
};

/*
 * Evaluates the TXT records found at `_mta-sts.<domain>` (RFC 8461 §3.1).
 * Records that do not start with "v=STSv1" (followed by ';', a space or the
 * end) are ignored. Exactly one STS record must remain and it must follow
 * the §3.1 grammar: `v=STSv1` first, fields separated by `;` with optional
 * spaces/tabs around, an optional trailing `;`, exactly one `id` of 1-32
 * ASCII letters and digits, extension fields `name=value` with the §3.1
 * character sets (tolerated and ignored).
 *
 * Returns 0 and fills *out; POSTERN_ENOENT when no record is an STS record
 * (the domain publishes no policy); POSTERN_EPROTO when there are two or
 * more STS records or the one record is malformed - RFC 8461 §3.1: the
 * sender MUST then assume the domain has no available policy, so the
 * caller uses a cached unexpired policy if it has one, else no policy;
 * POSTERN_EINVAL for NULL arguments.
 */
int policy_mtasts_txt_parse(const struct policy_txt *recs, size_t nrecs,
                            struct policy_mtasts_txt *out);

#define POLICY_MTASTS_MODE_MAP(X)                                              \
  X(ENFORCE, "enforce")                                                        \
  X(TESTING, "testing")                                                        \
  X(NONE, "none")

enum policy_mtasts_mode {
#define POLICY__MTASTS_MODE_DEF(name, str) POLICY_MTASTS_MODE_##name,
  POLICY_MTASTS_MODE_MAP(POLICY__MTASTS_MODE_DEF)
#undef POLICY__MTASTS_MODE_DEF
      POLICY_MTASTS_MODE_COUNT
};

/* "enforce", "testing", "none"; "unknown" otherwise. Static string. */
const char *policy_mtasts_mode_name(enum policy_mtasts_mode mode);

/*
 * A parsed policy. Self-contained (no pointers), so it can be copied and
 * cached as is. Patterns are stored lower-cased without a trailing dot.
 */
struct policy_mtasts_policy {
  enum policy_mtasts_mode mode;
  uint32_t max_age; /* seconds, 0..POLICY_MTASTS_MAX_AGE_MAX */
  size_t n_mx;
  char mx[POLICY_MTASTS_MX_MAX][POLICY_MTASTS_MX_LEN];
};

/*
 * Parses a policy body (RFC 8461 §3.2): `key: value` lines ended by LF or
 * CRLF (the last line may lack one). Spaces and tabs around keys and values
 * and blank lines are tolerated. Fields come in any order. `version: STSv1`,
 * `mode` (enforce|testing|none) and `max_age` (decimal, 1 to 10 digits;
 * values above 31557600 are capped at 31557600, RFC 8461 §3.2) are
 * required; `mx` patterns (a domain name, optionally prefixed by "*.") are
 * required unless mode is none. Keys are case-sensitive; unknown keys are
 * ignored if they are syntactically valid extension fields. When version,
 * mode or max_age repeat, the first occurrence counts (RFC 8461 §3.2); a
 * version other than STSv1 makes the policy invalid wherever it appears.
 * Anything else - a line without ':', a bad key or value, control
 * characters - makes the whole policy invalid.
 *
 * Returns 0 and fills *out; POSTERN_EPROTO for an invalid policy;
 * POSTERN_ETOOBIG when `len` exceeds POLICY_MTASTS_BODY_MAX or there are
 * more than POLICY_MTASTS_MX_MAX mx lines (also an invalid policy);
 * POSTERN_EINVAL for NULL arguments. On error *out is unspecified.
 */
int policy_mtasts_policy_parse(const char *body, size_t len,
                               struct policy_mtasts_policy *out);

/*
 * Whether MX host `host` matches one pattern (RFC 8461 §4.1): equal names,
 * or "*.rest" where `host` is exactly one non-empty label followed by
 * ".rest". ASCII case-insensitive; one trailing dot on either side ignored.
 */
bool policy_mtasts_mx_match(const char *pattern, const char *host);

/* Whether `host` matches any of the policy's mx patterns. */
bool policy_mtasts_policy_match(const struct policy_mtasts_policy *policy,
                                const char *host);

/* ------------------------------------------------------------------------
 * Policy chain
 *
 * Reserved for the chain interface (modules local, mtasts, dnssec, dane with
 * prepare_domain / check_mx / prepare_conn / check_conn), added with the
 * engine. It builds on the levels and matchers above.
 * ------------------------------------------------------------------------ */

/* ========================================================================
 * Policy chain: the modules and the engine's interface to them.
 * A chain is built once from the configuration and shared by every worker
 * loop. A domain run and its connection runs belong to one loop.
 * ====================================================================== */

#include <uv.h>

struct dns_resolver;
struct https_client;

/* ---- Verdicts ---------------------------------------------------------- */

enum policy_outcome {
  POLICY_OK,       /* go on */
  POLICY_TEMPFAIL, /* cannot decide now, or not acceptable now: 4.x.x */
  POLICY_PERMFAIL, /* never acceptable: 5.x.x */
};

struct policy_result {
  enum policy_outcome outcome;
  char status[16];    /* enhanced status for failures, "4.7.5" */
  char reason[256];   /* for logs and DSNs */
  const char *module; /* the module that decided, static */
  /* For TLS reports: the RFC 8460 §4.3 result type of a failure (enum
   * policy_tlsrpt_result, policy/tlsrpt.h); 0 when none applies. */
  int tlsrpt;
};

/*
 * What the operator set for one destination (a `destination` block), as
 * the chain applies it. Plain data: the chain keeps a copy per domain run.
 * Stricter settings combine with the chain (the strictest wins); the
 * looser ones - dane off, mtasts off, a minimum below local's - are the
 * operator's explicit say and are logged on each delivery they affect.
 */
#define POLICY_DEST_PINS 8
#define POLICY_DEST_NAMES 8
enum policy_dest_switch {
  POLICY_DEST_INHERIT,
  POLICY_DEST_ON,
  POLICY_DEST_OFF,
  POLICY_DEST_REQUIRED /* dane: no usable TLSA records, no delivery */
};
struct policy_dest {
  char pattern[256]; /* the block's pattern, for logs; "" when none */
  bool has_min_tls, has_min_mx;
  enum policy_tls_level min_tls; /* replaces local's minimum */
  enum policy_mx_level min_mx;   /* likewise */
  enum policy_dest_switch dane, mtasts;
  /* SHA-256 digests of a certificate (DER) or its SubjectPublicKeyInfo:
   * a leaf matching one is `authenticated` (pinning). */
  uint8_t pins[POLICY_DEST_PINS][32];
  size_t npins;
  /* Names accepted in a PKIX-valid certificate besides the MX name. */
  char names[POLICY_DEST_NAMES][254];
  size_t nnames;
  /* Floors nothing may lower (a REQUIRETLS message, RFC 8689 §4.2:
   * authenticated MX and TLS): applied after every module; 0 none. */
  enum policy_mx_level floor_mx;
  enum policy_tls_level floor_tls;
};

struct policy_store; /* policy/mtasts_shared.h */

/* What a module can use on the loop it runs on. Borrowed for the call:
 * a module that keeps working asynchronously copies what it needs (the
 * loop and resolver outlive every run). */
struct policy_env {
  uv_loop_t *loop;
  struct dns_resolver *dns;
  /* The loop's HTTPS client (net/https.h), for MTA-STS policy fetches;
   * NULL when the engine has none (fetches then fail). */
  struct https_client *https;
  /* Wall-clock time, milliseconds since the epoch (MTA-STS cache ages). */
  uint64_t now_ms;
  /* Counts a policy outcome for the metrics ("dane", "mismatch"); the
   * strings must be static. NULL when metrics are off. Any thread. */
  void (*count)(const char *module, const char *outcome);
  /* Sets a module's gauge for the metrics ("mtasts", "cache_entries");
   * static strings. NULL when not wanted (deliveries leave it NULL; the
   * engine's maintenance call sets it). Any thread. */
  void (*gauge)(const char *module, const char *name, uint64_t value);
  /* The destination is a static route (a smarthost the operator named),
   * not the recipient domain's MX. prepare_domain is then given the
   * route's host as the domain: MTA-STS takes it as the policy domain
   * (RFC 8461 §3.4), and has no policy for an IP-address route; per-host
   * policies (DANE, local) apply as usual. */
  bool routed;
  /* The destination's overrides, NULL when no block matched. Given to
   * policy_chain_prepare_domain it is copied into the run; modules see
   * the run's copy, valid for the run's lifetime. */
  const struct policy_dest *dest;
  /* Fleet mode: a store shared with the other nodes (MTA-STS policies,
   * policy/mtasts_shared.h), NULL without one. It must outlive every
   * run; modules keep the pointer. */
  const struct policy_store *store;
};

/* An MX candidate as the engine found it. */
struct policy_mx {
  const char *domain; /* the recipient domain */
  const char *host;   /* MX host name (or the domain itself, implicit MX) */
  uint16_t port;
  bool mx_authenticated; /* the MX RRset came with AD from a trusted resolver */
  bool implicit;         /* no MX records: the domain is its own MX */
  /* The configuration names this host directly (a `[host]` or address
   * route, no MX lookup): a non-MX destination (RFC 7672 §2.2.2). False
   * for the hosts of a route whose target is looked up by MX: those are
   * ordinary MX hosts of that target (§2.2.1). */
  bool routed;
};

struct policy_mx_verdict {
  enum policy_mx_level level;    /* what the candidate reached */
  enum policy_mx_level required; /* strictest minimum stated */
  struct policy_result result;
};

/* A candidate whose addresses were looked up, about to be connected. */
struct policy_host {
  const struct policy_mx *mx;
  /* The address RRsets the engine connects to validated, with the CNAME
   * chain leading to them (dns_host_select). */
  bool addrs_authenticated;
  const char *canonical; /* host name after CNAME expansion */
};

/* What must hold before connecting (after prepare_conn). */
struct policy_conn_req {
  /* TLS is mandatory for this host: no plaintext retry when STARTTLS is
   * missing or its handshake fails (DANE, RFC 7672 §2.2). */
  bool tls_required;
  /* A DANE TLSA RRset usable for this host governs certificate checks:
   * other modules then skip PKIX (RFC 8461 §2). */
  bool dane_usable;
  /* The TLS server name to send (SNI): the TLSA base domain where DANE
   * records were found (RFC 7672 §8.1), "" for the MX host name. The
   * certificate name PKIX checks stays the MX host name. */
  char sni[256];
  /* What governs the certificate verdict, for the TLS session cache key
   * (tls_session_id.policy): "dane:<hex policy_tlsa_rrset_digest>" where
   * secure TLSA records were found, "" for PKIX. */
  char tls_policy[80];
  struct policy_result result; /* TEMPFAIL: skip this host (lookup failed) */
};

/* What the SMTP client reached on a connection. Borrowed for the call. */
struct policy_conn {
  const char *host;              /* the MX host name connected to */
  enum policy_tls_level reached; /* none / encrypted / authenticated (PKIX) */
  bool pkix_ok, name_ok;
  bool cert_expired;        /* PKIX failed on an expired certificate */
  const char *verify_error; /* "" when verified */
  size_t chain_len;         /* peer certificates, leaf first */
  const uint8_t *const *chain_der;
  const size_t *chain_der_len;
  bool dane_usable; /* copied from the connection's policy_conn_req */
  /* The candidate's MX level as policy_chain_check_mx ranked it. */
  enum policy_mx_level mx_level;
  /* Not a real session: the engine asks whether a plaintext session would
   * be acceptable (before a plaintext retry). Modules judge as usual but
   * must not log or count failures (the real session will be judged). */
  bool hypothetical;
};

struct policy_conn_verdict {
  enum policy_tls_level level;    /* effective level (DANE may raise it) */
  enum policy_tls_level required; /* strictest requirement stated */
  /* The MX level the connection really had: the chain starts from
   * policy_conn.mx_level; `dane` raises it to `dnssec` when it
   * authenticated the session, since it only runs for hosts whose MX name
   * DNSSEC vouched for (also without the `dnssec` module in the chain).
   * What the engine logs and counts. */
  enum policy_mx_level mx_level;
  struct policy_result result; /* not OK: close and try the next MX */
  /* An MTA-STS policy in testing mode was not met, though the session is
   * accepted: the RFC 8460 result type to count it as; 0 otherwise. */
  int tlsrpt_testing;
};

/* What TLS reports (RFC 8460 §4.4) give as the policy a session was made
 * under: its type, the policy text and the MX patterns, each entry of
 * `strings` and `mx` ended by a newline (cut at the buffer's end). */
#define POLICY_TLSRPT_STRINGS_MAX 4096
#define POLICY_TLSRPT_MX_MAX 1024
struct policy_tlsrpt_applied {
  int type; /* enum policy_tlsrpt_policy_type */
  /* The domain's policy could not be had (an MTA-STS fetch failed, no
   * cached copy): that failure's result type, 0 when none. */
  int failure;
  char strings[POLICY_TLSRPT_STRINGS_MAX];
  char mx[POLICY_TLSRPT_MX_MAX];
};

/* ---- Modules ----------------------------------------------------------- */

typedef void (*policy_done_cb)(void *arg, const struct policy_result *r);

/*
 * A module is a named table of functions; any may be NULL when the module
 * has nothing to do at that step. Asynchronous steps return 0 and call
 * `done` exactly once - later, or already inside the call when the module
 * can decide at once (the chain notices and goes on after the call returns;
 * the engine's callback is still never run inside the engine's call) - or
 * return a negative POSTERN_E* code and never call it. Per-domain (`pd`) and
 * per-connection (`pc`) state is the module's, freed by its
 * free_domain/free_conn.
 */
struct policy_module_ops {
  const char *name;
  void (*free)(void *state);
  int (*prepare_domain)(void *state, const struct policy_env *env,
                        const char *domain, void **pd, policy_done_cb done,
                        void *arg);
  void (*free_domain)(void *state, void *pd);
  /* Optional: one line on what prepare_domain found, for postern-probe
   * ("enforce, id 2026..., mx *.example.org"); "" when nothing. */
  void (*describe_domain)(void *state, void *pd, char *buf, size_t cap);
  void (*check_mx)(void *state, void *pd, const struct policy_mx *mx,
                   struct policy_mx_verdict *v);
  int (*prepare_conn)(void *state, const struct policy_env *env, void *pd,
                      const struct policy_host *h, void **pc,
                      struct policy_conn_req *req, policy_done_cb done,
                      void *arg);
  void (*free_conn)(void *state, void *pc);
  void (*check_conn)(void *state, void *pd, void *pc,
                     const struct policy_conn *c,
                     struct policy_conn_verdict *v);
  /* Optional periodic upkeep (refresh cached policies, evict expired
   * ones), run by the engine on one loop. It may start asynchronous work
   * on env's loop, with env's resolver and HTTPS client, that outlives the
   * call (cancelled like any other when they close). Returns the delay in
   * milliseconds after which it wants to run again, 0 for no preference. */
  uint64_t (*maintain)(void *state, const struct policy_env *env);
  /* Optional: fills *out when this module's policy governed the session
   * (see policy_chain_tlsrpt_policy); pc may be NULL (no connection was
   * prepared). */
  void (*tlsrpt_policy)(void *state, void *pd, void *pc,
                        struct policy_tlsrpt_applied *out);
};

struct policy_module {
  const struct policy_module_ops *ops;
  void *state;
};

/* `local`: the operator's minimums. Never fails. */
void policy_local_new(enum policy_tls_level min_tls,
                      enum policy_mx_level min_mx, struct policy_module *out);

/* `dnssec`: MX level `dnssec` when policy_mx.mx_authenticated (the MX RRset,
 * or for an implicit MX the denial of it, validated). Never fails. */
void policy_dnssec_new(struct policy_module *out);

/*
 * `dane` (RFC 7672): per connection, looks up TLSA `_<port>._tcp.<host>`
 * when the host's address records are authenticated and its MX name is
 * (MX level from an authenticated MX RRset, an implicit MX with an
 * authenticated denial, or a host named directly by a route, mx->routed); with
 * a CNAME-expanded host the expanded name is tried first, then the original
 * (§2.2.2). Secure TLSA records make TLS mandatory (req->tls_required); usable
 * ones set req->dane_usable and check_conn then verifies the chain with
 * policy_dane_verify against the MX host name and the TLSA base domain:
 * a match makes the level `authenticated` and, when the MX name was
 * DNSSEC-authenticated (not for a host a route names), the verdict's
 * mx_level `dnssec`; anything else is TEMPFAIL 4.7.5.
 * A failed or bogus TLSA lookup is TEMPFAIL for that host; an insecure or
 * absent RRset means no DANE. Outcomes are counted through env->count as
 * "dane" + "ok", "mismatch", "unusable", "insecure", "none" (validated
 * absence) or "tempfail". Errors: POSTERN_ENOMEM.
 */
int policy_dane_new(struct policy_module *out);

/* `mtasts` (RFC 8461) options. Strings are copied. */
struct policy_mtasts_opts {
  const char *state_dir; /* the policy cache lives in <state_dir>/mtasts */
  const char *ca_file;   /* PEM CAs for the policy fetch; NULL: system */
  uint16_t https_port;   /* 443; tests use another */
  uint64_t fetch_timeout_ms;
  uint64_t max_policy_size; /* bytes; capped at POLICY_MTASTS_BODY_MAX */
  uint64_t cache_size;      /* bytes of the cache's map; 0: 64 MiB */
  /* A policy in use is fetched again once this old (or at half its
   * max_age if sooner); also the granularity of its last-used time.
   * 0: one day. */
  uint64_t refresh_interval_ms;
};

/*
 * `mtasts`: per domain, the `_mta-sts` TXT id, the policy fetched over HTTPS
 * (env->https) and cached in LMDB under state_dir (surviving restarts,
 * fetched again when the id changes). One fetch per domain at a time in
 * the process: a delivery that needs a policy being fetched waits for that
 * fetch. The maintain op evicts expired policies and refreshes policies in
 * use before they age (see refresh_interval_ms), without needing the TXT
 * record. `enforce` gives matching MX hosts MX level `mtasts`, rejects the
 * others (TEMPFAIL 4.7.5) and requires TLS level `authenticated`
 * (satisfied by DANE where usable TLSA records exist, RFC 8461 §2);
 * `testing` only logs and counts. A failed or invalid TXT lookup, or a
 * failed fetch, uses the cached policy, else means no policy (RFC 8461
 * §3.1, §3.3); no free fetch slot with nothing cached is TEMPFAIL. For a
 * routed destination the route's host is the policy domain (§3.4), and an
 * IP-address route has none. Counts "mtasts" + "fetched", "fetch_failed",
 * "fetch_no_slot", "txt_failed", "txt_failed_no_policy", "txt_invalid",
 * "cache_full", "mx_mismatch", "testing_mx_mismatch",
 * "testing_tls_failure", and in fleet mode (env->store) "shared_used",
 * "shared_invalid", "shared_refresh", "refresh_left"; gauges (maintain)
 * "cache_entries", "cache_used_bytes", "cache_map_bytes". The cache is opened
 * on first use (after privileges are dropped); while it cannot be, policies are
 * fetched every time and not kept (logged). With env->store (fleet mode,
 * policy/mtasts_shared.h) a policy is read from the fleet before it is fetched,
 * one node fetches for the fleet, and what is fetched is shared; the store
 * failing means fetching alone. Errors: POSTERN_EINVAL, POSTERN_ENOMEM.
 */
int policy_mtasts_new(const struct policy_mtasts_opts *o,
                      struct policy_module *out);

/* ---- The chain --------------------------------------------------------- */

struct policy_chain;
struct policy_domain_run;
struct policy_conn_run;

/* An empty chain. Errors: POSTERN_ENOMEM. */
int policy_chain_new(struct policy_chain **out);
/* Appends a module; the chain owns it from now on (even on error).
 * Errors: POSTERN_ENOMEM. */
int policy_chain_add(struct policy_chain *c, struct policy_module m);
void policy_chain_free(struct policy_chain *c);
size_t policy_chain_len(const struct policy_chain *c);
const char *policy_chain_module_name(const struct policy_chain *c, size_t i);

/*
 * Runs every module's prepare_domain (one after another, in chain order).
 * `cb(arg, run, result)` runs once, later: with result OK the run is ready
 * for check_mx/prepare_conn; otherwise the domain cannot be served now
 * (TEMPFAIL) or ever (PERMFAIL) and `run` must still be freed. Returns 0 or
 * POSTERN_ENOMEM (cb never runs).
 */
typedef void (*policy_domain_cb)(void *arg, struct policy_domain_run *run,
                                 const struct policy_result *r);
int policy_chain_prepare_domain(struct policy_chain *c,
                                const struct policy_env *env,
                                const char *domain, policy_domain_cb cb,
                                void *arg);
void policy_domain_run_free(struct policy_domain_run *run);

/* What the modules found for the domain, as "module: text; ..." (for
 * postern-probe). Always NUL-terminated; "" when no module says anything. */
void policy_domain_run_describe(const struct policy_domain_run *run, char *buf,
                                size_t cap);

/* Ranks an MX candidate: every module's check_mx in order, then the level
 * against the strictest minimum (shortfall: TEMPFAIL 4.7.5, as Postfix
 * defers on TLS policy). Synchronous. */
void policy_chain_check_mx(struct policy_domain_run *run,
                           const struct policy_mx *mx,
                           struct policy_mx_verdict *v);

/*
 * Runs every module's prepare_conn for a host; `cb(arg, crun, req)` runs
 * later with the combined requirements (req->result not OK: skip the host;
 * crun must still be freed). Returns 0 or POSTERN_ENOMEM.
 */
typedef void (*policy_conn_cb)(void *arg, struct policy_conn_run *crun,
                               const struct policy_conn_req *req);
int policy_chain_prepare_conn(struct policy_domain_run *run,
                              const struct policy_env *env,
                              const struct policy_host *h, policy_conn_cb cb,
                              void *arg);
void policy_conn_run_free(struct policy_conn_run *crun);

/* Judges an established connection: every module's check_conn, then the
 * effective level against the strictest requirement. v->mx_level starts as
 * c->mx_level. Synchronous. */
void policy_chain_check_conn(struct policy_conn_run *crun,
                             const struct policy_conn *c,
                             struct policy_conn_verdict *v);

/*
 * The policy that governed a session to the host crun was prepared for
 * (crun may be NULL: none was), for TLS reports: DANE where a module found
 * usable TLSA records (RFC 8461 §2: DANE takes precedence), else the
 * domain's MTA-STS policy in enforce or testing mode, else
 * no-policy-found - with out->failure saying why when an MTA-STS policy
 * could not be fetched (RFC 8460 §4.4: "no-policy-found" if no policy
 * could be found).
 */
void policy_chain_tlsrpt_policy(const struct policy_domain_run *run,
                                const struct policy_conn_run *crun,
                                struct policy_tlsrpt_applied *out);

/* Delay between maintenance calls when no module states one. */
#define POLICY_MAINTAIN_DEFAULT_MS (5u * 60 * 1000)

/*
 * Runs every module's maintain op (periodic upkeep) on env's loop; the
 * engine calls it from one loop, again after the returned delay in
 * milliseconds (the shortest any module asked for, else
 * POLICY_MAINTAIN_DEFAULT_MS). Work it starts may outlive the call and is
 * cancelled when env's resolver and HTTPS client close.
 */
uint64_t policy_chain_maintain(struct policy_chain *c,
                               const struct policy_env *env);

/* Fills r as a failure with a printf-style reason. */
void policy_result_set(struct policy_result *r, enum policy_outcome o,
                       const char *module, const char *status, const char *fmt,
                       ...) __attribute__((format(printf, 5, 6)));

#endif
