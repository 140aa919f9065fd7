/*
 * chain.h - the security-level model and the policy chain (DESIGN.md).
 *
 * Every delivery attempt ranks what it built with two levels: how the MX
 * host name was authenticated (MX level) and what protects the SMTP session
 * (TLS level). Policy modules run in the order the configuration lists them;
 * each may (1) prepare per destination domain (asynchronously: MTA-STS
 * fetch), (2) check an MX candidate - raise its MX level, state a minimum,
 * or reject it, (3) prepare per connection (asynchronously: TLSA lookup),
 * and (4) check the established connection - state the TLS level it
 * requires and judge the certificate. The effective requirement is the
 * strictest one any module states. Policy fails closed: a module that
 * cannot decide reports a temporary failure, never "no policy".
 *
 * Lifetimes: a chain is built once from the configuration and shared by
 * every worker loop (modules keep per-loop state in the env they are
 * given). A domain run and its connection runs belong to one loop.
 */
#ifndef POSTERN_POLICY_CHAIN_H
#define POSTERN_POLICY_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct dns_resolver;

#define POLICY_MX_LEVEL_MAP(X)                                                 \
  X(NONE, "none")                                                              \
  X(MTASTS, "mtasts")                                                          \
  X(DNSSEC, "dnssec")

enum policy_mx_level {
#define POLICY__MXL(name, str) POLICY_MX_LEVEL_##name,
  POLICY_MX_LEVEL_MAP(POLICY__MXL)
#undef POLICY__MXL
};

#define POLICY_TLS_LEVEL_MAP(X)                                                \
  X(NONE, "none")                                                              \
  X(ENCRYPTED, "encrypted")                                                    \
  X(AUTHENTICATED, "authenticated")

enum policy_tls_level {
#define POLICY__TLSL(name, str) POLICY_TLS_LEVEL_##name,
  POLICY_TLS_LEVEL_MAP(POLICY__TLSL)
#undef POLICY__TLSL
};

/* Static names ("dnssec", "encrypted"); "unknown" out of range. */
const char *policy_mx_level_name(enum policy_mx_level l);
const char *policy_tls_level_name(enum policy_tls_level l);
/* Parse a name; 0 or POSTERN_EINVAL. */
int policy_mx_level_parse(const char *s, enum policy_mx_level *out);
int policy_tls_level_parse(const char *s, enum policy_tls_level *out);

/* ---- Verdicts ---------------------------------------------------------- */

enum policy_outcome {
  POLICY_OK,       /* go on */
  POLICY_TEMPFAIL, /* cannot decide now, or not acceptable now: 4.x.x */
  POLICY_PERMFAIL, /* never acceptable: 5.x.x */
};

struct policy_result {
  enum policy_outcome outcome;
  char status[16];  /* enhanced status for failures, "4.7.5" */
  char reason[256]; /* for logs and DSNs */
  const char *module; /* the module that decided, static */
};

/* What a module can use on the loop it runs on. Borrowed for the call. */
struct policy_env {
  uv_loop_t *loop;
  struct dns_resolver *dns;
  uint64_t now_ms;
};

/* An MX candidate as the engine found it. */
struct policy_mx {
  const char *domain; /* the recipient domain */
  const char *host;   /* MX host name (or the domain itself, implicit MX) */
  uint16_t port;
  bool mx_authenticated; /* the MX RRset came with AD from a trusted resolver */
  bool implicit;         /* no MX records: the domain is its own MX */
  bool routed;           /* a static route chose this host, not DNS */
};

struct policy_mx_verdict {
  enum policy_mx_level level;    /* what the candidate reached */
  enum policy_mx_level required; /* strictest minimum stated */
  struct policy_result result;
};

/* A candidate whose addresses were looked up, about to be connected. */
struct policy_host {
  const struct policy_mx *mx;
  bool addrs_authenticated; /* A/AAAA answers were authenticated */
  const char *canonical;    /* host name after CNAME expansion */
};

/* What must hold before connecting (after prepare_conn). */
struct policy_conn_req {
  /* TLS is mandatory for this host: no plaintext retry when STARTTLS is
   * missing or its handshake fails (DANE, RFC 7672 §2.2). */
  bool tls_required;
  /* A DANE TLSA RRset usable for this host governs certificate checks:
   * other modules then skip PKIX (RFC 8461 §2). */
  bool dane_usable;
  struct policy_result result; /* TEMPFAIL: skip this host (lookup failed) */
};

/* What the SMTP client reached on a connection. Borrowed for the call. */
struct policy_conn {
  const char *host;              /* the MX host name connected to */
  enum policy_tls_level reached; /* none / encrypted / authenticated (PKIX) */
  bool pkix_ok, name_ok;
  const char *verify_error; /* "" when verified */
  size_t chain_len;         /* peer certificates, leaf first */
  const uint8_t *const *chain_der;
  const size_t *chain_der_len;
  bool dane_usable; /* copied from the connection's policy_conn_req */
};

struct policy_conn_verdict {
  enum policy_tls_level level;    /* effective level (DANE may raise it) */
  enum policy_tls_level required; /* strictest requirement stated */
  struct policy_result result;    /* not OK: close and try the next MX */
};

/* ---- Modules ----------------------------------------------------------- */

typedef void (*policy_done_cb)(void *arg, const struct policy_result *r);

/*
 * A module is a named table of functions; any may be NULL when the module
 * has nothing to do at that step. Asynchronous steps return 0 and call
 * `done` later (never inside the call), or return a negative POSTERN_E*
 * code and never call it. Per-domain (`pd`) and per-connection (`pc`)
 * state is the module's, freed by its free_domain/free_conn.
 */
struct policy_module_ops {
  const char *name;
  void (*free)(void *state);
  int (*prepare_domain)(void *state, const struct policy_env *env,
                        const char *domain, void **pd, policy_done_cb done,
                        void *arg);
  void (*free_domain)(void *state, void *pd);
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
};

struct policy_module {
  const struct policy_module_ops *ops;
  void *state;
};

/* `local`: the operator's minimums. Never fails. */
void policy_local_new(enum policy_tls_level min_tls,
                      enum policy_mx_level min_mx, struct policy_module *out);

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
 * effective level against the strictest requirement. Synchronous. */
void policy_chain_check_conn(struct policy_conn_run *crun,
                             const struct policy_conn *c,
                             struct policy_conn_verdict *v);

/* Fills r as a failure with a printf-style reason. */
void policy_result_set(struct policy_result *r, enum policy_outcome o,
                       const char *module, const char *status,
                       const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
