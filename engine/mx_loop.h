/*
 * mx_loop.h - the MX loop: one attempt to find an acceptable SMTP session
 * for a destination, every MX candidate ranked by the policy chain
 * (mx_loop.c has the steps). What the loop finds is told to an observer
 * (struct mx_ops): the delivery side (deliver.c) turns an acceptable
 * session into a connection that carries mail; the probe side (probe.c)
 * records every step for postern-probe and sends no mail. The loop itself
 * knows neither.
 *
 * Ownership: an attempt owns its DNS query, its policy runs and the client
 * it is connecting. It belongs to its observer's owner from
 * engine__mx_new; once the observer's `exhausted` has been called, or its
 * `session_acceptable` has returned 0, the loop never touches it again and
 * the observer frees it (engine__mx_free). One thread: the loop's.
 */
#ifndef POSTERN_ENGINE_MX_LOOP_H
#define POSTERN_ENGINE_MX_LOOP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "engine/internal.h"
#include "net/smtp_client.h"
#include "policy/chain.h"

#define MX_MAX_CANDIDATES 32
#define MX_MAX_ADDRS 16

struct dns_resolver;
struct dns_query;
struct https_client;
struct mx_attempt;

/* Takes a slot / gives one back (waking a waiter; struct mx_slots is in
 * engine/internal.h). */
void engine__slot_take(const struct mx_slots *s);
void engine__slot_release(const struct mx_slots *s);

/* Where attempts run: shared by every attempt of a worker (or a probe). */
struct mx_env {
  struct relay *r; /* configuration, policy chain, client TLS, stopping */
  uv_loop_t *loop;
  struct dns_resolver *dns;
  struct https_client *https; /* MTA-STS fetches; NULL if unavailable */
  /* The SMTP clients this environment has open (see struct mx_slots). */
  const struct mx_slots *slots;
  /* Count TLS session attempts for TLS reports (engine/tlsrpt.h):
   * deliveries do, postern-probe does not. */
  bool tlsrpt;
};

/* What the loop reads about the destination (borrowed for the attempt). */
struct mx_dest {
  const char *key;    /* for logs */
  const char *domain; /* the recipients' domain */
  bool routed;
  const struct route_target *route; /* when routed */
  /* Not counted for TLS reports (a mailed TLS report itself: RFC 8460
   * §3, its sessions SHOULD NOT be in the next report). */
  bool no_tlsrpt;
  /* Mail for this destination is a TLS report: RFC 8460 §3 says it MUST
   * be delivered despite TLS failures, so a policy failure of a host is
   * logged and the session used as it is (plaintext retry included). */
  bool tls_report;
  /* The mail carries "TLS-Required: No" (RFC 8689 §5) and the operator
   * honours it: the destination's MTA-STS and DANE policies are waived
   * (STARTTLS still tried; the operator's minimums still apply). */
  bool tls_required_no;
  /* The mail was sent with REQUIRETLS (RFC 8689 §4.2): MX level mtasts or
   * dnssec, TLS authenticated, and a next hop offering REQUIRETLS, or the
   * host fails with 5.7.30. */
  bool requiretls;
};

struct mx_candidate {
  char host[256];
  uint16_t pref;
  bool implicit; /* no MX records: the domain itself (RFC 5321 §5.1) */
};

/* An acceptable session (the strings are borrowed for the call). */
struct mx_session {
  struct smtp_client *c;
  const char *mx;   /* the MX host name */
  const char *addr; /* "192.0.2.1:25", "[2001:db8::1]:25" */
  enum policy_mx_level mx_level;
  enum policy_tls_level tls_level;
};

/* How an attempt ended without an acceptable session (step 5): deferred
 * when anything failed temporarily, else bounced. The strings point into
 * the attempt: copy them before engine__mx_free. */
struct mx_outcome {
  bool temporary;
  const char *status; /* enhanced status, class 4 or 5 */
  const char *reason;
  const char *last_mx; /* the last candidate tried, or "" */
};

/* session_acceptable's answer when the observer does not take the
 * session: the loop closes it (QUIT) and ranks the next candidate. */
#define MX_NEXT 1

/*
 * The observer. `arg` is the one given to engine__mx_new. Hooks that may
 * be NULL say so; none may free the attempt except as stated, and none
 * runs inside engine__mx_run.
 */
struct mx_ops {
  /* The domain's policies are prepared (MTA-STS fetched...), whatever
   * their outcome. May be NULL. */
  void (*domain_prepared)(void *arg, struct mx_attempt *a,
                          const struct policy_domain_run *run);
  /* Candidate c was ranked by check_mx: its MX level, or why it is
   * rejected (v->result). May be NULL. */
  void (*candidate_ranked)(void *arg, struct mx_attempt *a,
                           const struct mx_candidate *c,
                           const struct policy_mx_verdict *v);
  /* The current candidate's addresses, before prepare_conn. May be NULL. */
  void (*addresses_found)(void *arg, struct mx_attempt *a,
                          const struct sockaddr_storage *addrs, size_t n,
                          bool authenticated);
  /* prepare_conn (TLSA lookup) is done for the current candidate, whatever
   * its outcome. May be NULL. */
  void (*connection_prepared)(void *arg, struct mx_attempt *a,
                              const struct policy_conn_req *req);
  /* An SMTP session reached EHLO (and STARTTLS) and check_conn ranked it;
   * `addr` is the address it went to. May be NULL. */
  void (*session_ranked)(void *arg, struct mx_attempt *a, const char *addr,
                         const struct smtp_client_facts *f,
                         const struct policy_conn_verdict *v);
  /* The policies accept session s. Returns 0 when the observer took the
   * client and the attempt (it frees the attempt, at once or later);
   * MX_NEXT to have the session closed and the next candidate ranked; a
   * negative POSTERN_E* code when it could not take it: the session is
   * closed and the attempt ends with a temporary failure. Required. */
  int (*session_acceptable)(void *arg, struct mx_attempt *a,
                            const struct mx_session *s);
  /* A step failed for the current candidate (or for the whole domain
   * before any candidate): the status (class fixed) and reason the attempt
   * recorded. May be NULL. */
  void (*step_failed)(void *arg, struct mx_attempt *a, bool temporary,
                      const char *status, const char *reason);
  /* No candidate is left: the attempt is the observer's to free.
   * Required. */
  void (*exhausted)(void *arg, struct mx_attempt *a,
                    const struct mx_outcome *o);
};

/* One attempt. Fields are the loop's, except `next`, which belongs to the
 * owner (its list of attempts). */
struct mx_attempt {
  struct mx_attempt *next;
  struct lease *lease; /* deliver.c: the fleet connection lease it holds */
  const struct mx_env *env;
  const struct mx_dest *dest;
  const struct mx_ops *ops;
  void *arg;
  struct policy_domain_run *drun;
  struct policy_conn_run *crun;
  struct policy_conn_req req;
  struct dns_query *q;
  struct mx_candidate cand[MX_MAX_CANDIDATES];
  size_t ncand, ci;
  bool mx_authenticated;
  struct policy_mx mx;
  struct policy_mx_verdict mxv;
  struct sockaddr_storage addrs[MX_MAX_ADDRS];
  size_t naddr, ai;
  bool addrs_authenticated;
  char canonical[256];
  bool plaintext; /* this connection is the plaintext retry */
  struct smtp_client *c;
  /* Failure bookkeeping across candidates (step 5 of the MX loop). */
  bool any_temp, any_fail;
  char temp_status[16], perm_status[16];
  char temp_reason[512], perm_reason[512];
  char last_mx[256];
  /* The destination block that applies (engine__destination_policy),
   * looked up when the attempt starts. */
  struct policy_dest pdest;
  bool has_pdest;
};

/* A new attempt (zeroed, not started), or NULL without memory. `env` and
 * `dest` are borrowed and must outlive it. */
struct mx_attempt *engine__mx_new(const struct mx_env *env,
                                  const struct mx_dest *dest,
                                  const struct mx_ops *ops, void *arg);

/* Starts the attempt (prepare_domain). Returns 0, or the error that kept
 * it from starting: the attempt is then untouched and no hook has run. */
int engine__mx_run(struct mx_attempt *a);

/* Records a failed step (it counts for step 5 and reaches step_failed). */
void engine__mx_fail(struct mx_attempt *a, bool temp, const char *status,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Ends the attempt now: `exhausted` runs inside this call. */
void engine__mx_exhaust(struct mx_attempt *a);

/*
 * Shutdown. An attempt that is connecting closes its client and returns
 * true: the caller frees it at once (no hook runs). One that waits for a
 * DNS answer cancels it and returns false: the cancelled lookup ends it
 * later, through `exhausted`. Otherwise nothing happens (false).
 */
bool engine__mx_stop(struct mx_attempt *a);

/* Frees the attempt and its policy runs. NULL is fine. */
void engine__mx_free(struct mx_attempt *a);

/* The index of the candidate the attempt is on, or SIZE_MAX before the
 * first and after the last. */
static inline size_t engine__mx_candidate(const struct mx_attempt *a) {
  return a->ci < a->ncand ? a->ci : SIZE_MAX;
}

/* "192.0.2.1:25" or "[2001:db8::1]:25". */
void engine__mx_addr_text(const struct sockaddr_storage *ss, char *out,
                          size_t cap);

#endif
