/*
 * mx_loop.c - the MX loop (DESIGN.md, issue "Delivery engine"): where MX
 * candidates are found, ordered and ranked, and the session with each one
 * is judged by the policy chain.
 *
 *   prepare_domain (policies) -> MX lookup (AD) -> candidates by preference,
 *   equal preferences shuffled -> per candidate: check_mx (MX level or
 *   reject), A/AAAA, prepare_conn (TLSA), connect, EHLO, STARTTLS ->
 *   check_conn (TLS level) -> acceptable: the observer takes the session
 *   (or declines it, and the next candidate is ranked).
 *
 * When no candidate is acceptable the attempt is exhausted: deferred if
 * anything failed temporarily along the way, bounced only when every
 * failure was permanent (the observer applies it). A 5xx greeting or
 * EHLO/HELO reply only skips its host (it comes before TLS and the policy
 * check, so an attacker can inject it). A STARTTLS handshake failure is
 * retried once in plaintext when no policy requires TLS (opportunistic
 * TLS, RFC 7435).
 *
 * The observer (mx_loop.h) hears every step; the loop holds no knowledge
 * of jobs, destinations' limits or postern-probe. Ownership: see
 * mx_loop.h.
 */
#include "engine/mx_loop.h"

#include "engine/fleet.h"
#include "engine/metrics.h"
#include "engine/tlsrpt.h"
#include "policy/tlsrpt.h"
#include "net/dns.h"
#include "net/tls.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static void attempt_next_candidate(struct mx_attempt *a);
static void attempt_next_addr(struct mx_attempt *a);

static void attempt_fail(struct mx_attempt *a, bool temp, const char *status,
                         const char *fmt, va_list ap) {
  char *reason = temp ? a->temp_reason : a->perm_reason;
  vsnprintf(reason, sizeof a->temp_reason, fmt, ap);
  snprintf(temp ? a->temp_status : a->perm_status, sizeof a->temp_status, "%s",
           status);
  /* The status class must match the outcome (RFC 3463 §3.1). */
  (temp ? a->temp_status : a->perm_status)[0] = temp ? '4' : '5';
  if (temp)
    a->any_temp = true;
  a->any_fail = true;
  if (a->ops->step_failed)
    a->ops->step_failed(a->arg, a, temp, temp ? a->temp_status : a->perm_status,
                        reason);
  postern_log(POSTERN_LOG_DEBUG, "attempt_step_failed", "dest", a->dest->key,
              "mx", a->last_mx, "temporary", temp ? "yes" : "no", "dsn",
              temp ? a->temp_status : a->perm_status, "reason", reason, NULL);
}

void engine__mx_fail(struct mx_attempt *a, bool temp, const char *status,
                     const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  attempt_fail(a, temp, status, fmt, ap);
  va_end(ap);
}

/* Every candidate failed (step 5 of the MX loop): temporary if anything
 * failed temporarily, or nothing could be tried at all. */
void engine__mx_exhaust(struct mx_attempt *a) {
  bool temp = a->any_temp || !a->any_fail;
  struct mx_outcome o = {
      .temporary = temp,
      .status =
          temp ? (a->any_temp ? a->temp_status : "4.4.1") : a->perm_status,
      .reason =
          temp ? (a->any_temp ? a->temp_reason : "no MX host could be tried")
               : a->perm_reason,
      .last_mx = a->last_mx,
  };
  a->ops->exhausted(a->arg, a, &o);
}

struct mx_attempt *engine__mx_new(const struct mx_env *env,
                                  const struct mx_dest *dest,
                                  const struct mx_ops *ops, void *arg) {
  struct mx_attempt *a = calloc(1, sizeof *a);
  if (a == NULL)
    return NULL;
  a->env = env;
  a->dest = dest;
  a->ops = ops;
  a->arg = arg;
  return a;
}

void engine__mx_free(struct mx_attempt *a) {
  if (a == NULL)
    return;
  policy_conn_run_free(a->crun);
  policy_domain_run_free(a->drun);
  free(a);
}

void engine__slot_take(const struct mx_slots *s) {
  atomic_fetch_add(s->count, 1);
}

void engine__slot_release(const struct mx_slots *s) {
  atomic_fetch_sub(s->count, 1);
  if (s->freed)
    s->freed(s->arg);
}

static void client_closed(struct smtp_client *c, void *arg) {
  (void)c;
  engine__slot_release(arg);
}

bool engine__mx_stop(struct mx_attempt *a) {
  if (a->c) {
    smtp_client_close(a->c, client_closed, (void *)a->env->slots);
    a->c = NULL;
    return true;
  }
  if (a->q)
    dns_query_cancel(a->q);
  return false;
}

static bool stopping(const struct mx_attempt *a) {
  return atomic_load(&a->env->r->stopping);
}

static struct policy_env penv(const struct mx_attempt *a) {
  struct policy_env e = {.loop = a->env->loop,
                         .dns = a->env->dns,
                         .https = a->env->https,
                         .now_ms = relay_now_ms(a->env->r),
                         .count = metrics_policy};
  e.routed = a->dest->routed;
  e.dest = a->has_pdest ? &a->pdest : NULL;
  e.store = engine__fleet_store(a->env->r);
  return e;
}

/* The port MX hosts (or the route's host) listen on. */
static uint16_t cand_port(const struct mx_attempt *a) {
  return a->dest->routed ? a->dest->route->port : a->env->r->cfg->delivery.port;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port) {
  if (ss->ss_family == AF_INET)
    ((struct sockaddr_in *)ss)->sin_port = htons(port);
  else
    ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

void engine__mx_addr_text(const struct sockaddr_storage *ss, char *out,
                          size_t cap) {
  char ip[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    port = ntohs(s4->sin_port);
    snprintf(out, cap, "%s:%u", ip, port);
  } else {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    port = ntohs(s6->sin6_port);
    snprintf(out, cap, "[%s]:%u", ip, port);
  }
}

static enum policy_tls_level tls_of(enum smtp_tls_level l) {
  switch (l) {
  case SMTP_TLS_AUTHENTICATED:
    return POLICY_TLS_LEVEL_AUTHENTICATED;
  case SMTP_TLS_ENCRYPTED:
    return POLICY_TLS_LEVEL_ENCRYPTED;
  default:
    return POLICY_TLS_LEVEL_NONE;
  }
}

/* ---- TLS reports ---- */

/*
 * Counts one TLS session attempt (RFC 8460 §4.4): its outcome `result`
 * (0 success) under the policy that governed it (DANE, MTA-STS, none), the
 * host and, with a connection c, both ends' addresses. crun: the current
 * candidate's policy run, NULL before prepare_conn. Attempts that are not
 * TLS sessions (a failed connect, a plaintext retry after a failed
 * handshake, already counted) are not counted.
 */
static void count_session(struct mx_attempt *a, struct smtp_client *c,
                          const struct policy_conn_run *crun, int result) {
  const struct mx_dest *d = a->dest;
  /* Checked before the policy description is gathered: without a tlsrpt
   * block nothing would be counted, on every connection. */
  if (!a->env->tlsrpt || d->no_tlsrpt || !a->env->r->cfg->tlsrpt.enabled)
    return;
  /* A route to an address has no policy domain to report to (§3.4 of
   * RFC 8461 names the smart host's domain). */
  const char *pdomain = d->routed ? d->route->host : d->domain;
  unsigned char tmp[16];
  if (inet_pton(AF_INET, pdomain, tmp) == 1 ||
      inet_pton(AF_INET6, pdomain, tmp) == 1)
    return;
  struct policy_tlsrpt_applied ap;
  policy_chain_tlsrpt_policy(a->drun, crun, &ap);
  char sip[INET6_ADDRSTRLEN] = "", rip[INET6_ADDRSTRLEN] = "";
  if (c != NULL) {
    if (smtp_client_local_ip(c, sip, sizeof sip) != 0)
      sip[0] = '\0';
    const struct sockaddr_storage *ss = &a->addrs[a->ai];
    const void *ip =
        ss->ss_family == AF_INET
            ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
            : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
    if (inet_ntop(ss->ss_family, ip, rip, sizeof rip) == NULL)
      rip[0] = '\0';
  }
  struct tlsrpt_event e = {.policy_domain = pdomain,
                           .applied = &ap,
                           .result = result,
                           .mx_host =
                               a->ci < a->ncand ? a->cand[a->ci].host : "",
                           .sending_ip = sip,
                           .receiving_ip = rip};
  engine__tlsrpt_count(a->env->r, &e);
}

/* A TLS report is delivered despite TLS failures (RFC 8460 §3): for its
 * destination a policy failure is logged and then passed over. Returns
 * whether it was. */
static bool report_overrides(const struct mx_attempt *a,
                             const struct policy_result *r) {
  if (!a->dest->tls_report)
    return false;
  postern_log(POSTERN_LOG_INFO, "tlsrpt_report_policy_overridden", "dest",
              a->dest->key, "mx", a->last_mx, "module",
              r->module ? r->module : "", "reason", r->reason, NULL);
  return true;
}

/* REQUIRETLS (RFC 8689 §4.2.1): a host that falls short of the levels the
 * message demands, or does not offer the extension, is not usable for it -
 * a permanent failure of that host (5.7.30), so that with no host left the
 * message is returned rather than retried for days; temporary failures
 * along the way still defer it. Returns whether the failure was
 * recorded here. */
static bool requiretls_fail(struct mx_attempt *a,
                            const struct policy_result *r) {
  if (!a->dest->requiretls || r->module == NULL ||
      strcmp(r->module, "chain") != 0)
    return false;
  engine__mx_fail(a, false, "5.7.30", "REQUIRETLS: %s", r->reason);
  return true;
}

/* ---- connecting to one address, judging the session ---- */

static void on_ready(struct smtp_client *c, int status,
                     const struct smtp_client_facts *f, void *arg);

static void attempt_connect(struct mx_attempt *a) {
  struct relay *r = a->env->r;
  const struct config_delivery *dc = &r->cfg->delivery;
  struct smtp_client_opts o = {
      .connect_timeout_ms = dc->connect_timeout_ms,
      .command_timeout_ms = dc->command_timeout_ms,
      .data_timeout_ms = dc->data_timeout_ms,
      .helo_name = r->cfg->hostname,
      .local_addr =
          dc->local_ip.text ? (const struct sockaddr *)&dc->local_ip.sa : NULL,
      .tls_ctx = r->client_tls,
      .starttls = !a->plaintext,
      /* The TLSA base domain where DANE records were found (RFC 7672
       * §8.1), else the MX host name. */
      .sni = a->req.sni[0] ? a->req.sni : NULL,
      /* Sessions are cached per policy (TLSA RRset digest, or PKIX). */
      .session_policy = a->req.tls_policy[0] ? a->req.tls_policy : NULL,
      /* Usable TLSA records alone authenticate this host: a PKIX verdict
       * would count only as `encrypted` (policy_chain_check_conn), so the
       * chain is not run through the X509 verifier at all. */
      .skip_pkix = a->req.dane_usable,
  };
  struct sockaddr_storage *sa = &a->addrs[a->ai];
  if (o.local_addr && o.local_addr->sa_family != sa->ss_family)
    o.local_addr = NULL;
  engine__slot_take(a->env->slots);
  int rc =
      smtp_client_connect(&a->c, a->env->loop, &o, (const struct sockaddr *)sa,
                          a->mx.host, on_ready, a);
  if (rc != 0) {
    engine__slot_release(a->env->slots);
    engine__mx_fail(a, true, "4.3.0", "cannot start connection: %s",
                    postern_strerror(rc));
    a->ai++;
    attempt_next_addr(a);
  }
}

/* Whether the policies would accept a plaintext session with this host:
 * decides the opportunistic plaintext retry after a failed handshake. */
static bool plaintext_acceptable(struct mx_attempt *a) {
  if (a->dest->tls_report)
    return true; /* RFC 8460 §3: despite any TLS failure */
  if (a->req.tls_required)
    return false;
  struct policy_conn pc = {.host = a->mx.host,
                           .reached = POLICY_TLS_LEVEL_NONE,
                           .verify_error = "",
                           .dane_usable = a->req.dane_usable,
                           .mx_level = a->mxv.level,
                           .hypothetical = true};
  struct policy_conn_verdict v;
  policy_chain_check_conn(a->crun, &pc, &v);
  return v.result.outcome == POLICY_OK;
}

/* The session did not come up: a step failure for this address. */
static void session_failed(struct mx_attempt *a, struct smtp_client *c,
                           int status, const struct smtp_client_facts *f,
                           const char *addr) {
  char reply[600] = "";
  if (f && f->last_reply && f->last_reply->code)
    smtp_reply_format(f->last_reply, reply, sizeof reply);
  /* A handshake can fail without a TLS error: the server may hang up or
   * go silent after its 220 to STARTTLS (smtp_client.h: starttls is then
   * FAILED whatever the status). */
  bool tls_failed =
      status == POSTERN_ETLS || (f && f->starttls == SMTP_STARTTLS_FAILED);
  if (tls_failed && !a->plaintext)
    count_session(a, c, a->crun, POLICY_TLSRPT_VALIDATION_FAILURE);
  smtp_client_close(c, client_closed, (void *)a->env->slots);
  if (tls_failed && !a->plaintext) {
    /* RFC 7435 §3: fall back to cleartext only when no policy demands TLS
     * for this host; otherwise this host is unusable now. */
    if (plaintext_acceptable(a)) {
      postern_log(POSTERN_LOG_INFO, "starttls_failed_plaintext_retry", "mx",
                  a->mx.host, "addr", addr, "reason",
                  f && f->tls_error ? f->tls_error : "", NULL);
      a->plaintext = true;
      attempt_connect(a);
      return;
    }
    engine__mx_fail(a, true, "4.7.5", "TLS handshake with %s failed: %s",
                    a->mx.host, f && f->tls_error ? f->tls_error : "");
  } else if (reply[0] == '5') {
    /* A 5xx greeting or EHLO/HELO reply arrived before the policy could
     * judge the session - in plaintext, before STARTTLS, anybody on the
     * path can send one. On its own it must never bounce mail to a domain
     * whose policy (DANE, MTA-STS) promises that an active attacker can at
     * most delay it: skip the host and try the next, as Postfix does
     * (smtp_skip_5xx_greeting); with none left, defer. */
    const struct smtp_reply *lr = f->last_reply;
    engine__mx_fail(a, true, lr->has_enh ? lr->enh : "4.0.0",
                    "host %s[%s] refused the session: %s", a->mx.host, addr,
                    reply);
  } else if (reply[0]) {
    engine__mx_fail(a, true, "4.0.0", "host %s[%s] said: %s", a->mx.host, addr,
                    reply);
  } else {
    engine__mx_fail(a, true, "4.4.1", "connect to %s[%s]: %s", a->mx.host, addr,
                    postern_strerror(status));
  }
  a->plaintext = false;
  a->ai++;
  attempt_next_addr(a);
}

static void on_ready(struct smtp_client *c, int status,
                     const struct smtp_client_facts *f, void *arg) {
  struct mx_attempt *a = arg;
  char addr[64];
  engine__mx_addr_text(&a->addrs[a->ai], addr, sizeof addr);
  a->c = NULL;
  if (status != 0) {
    session_failed(a, c, status, f, addr);
    return;
  }
  /* Rank the session (step 3 of the MX loop). */
  const uint8_t *ders[16];
  size_t lens[16];
  size_t nchain = 0;
  if (f->tls) {
    size_t n = tls_conn_peer_chain_len(f->tls);
    for (size_t i = 0; i < n && nchain < 16; i++)
      if (tls_conn_peer_cert_der(f->tls, i, &ders[nchain], &lens[nchain]) == 0)
        nchain++;
  }
  struct policy_conn pc = {
      .host = a->mx.host,
      .reached = tls_of(f->tls_level),
      .pkix_ok = f->verify.pkix_ok,
      .name_ok = f->verify.name_ok,
      .cert_expired = f->verify.expired,
      .verify_error = f->tls_error ? f->tls_error : "",
      .chain_len = nchain,
      .chain_der = ders,
      .chain_der_len = lens,
      .dane_usable = a->req.dane_usable,
      .mx_level = a->mxv.level,
  };
  if (a->req.tls_required && f->starttls != SMTP_STARTTLS_DONE &&
      !a->dest->tls_report) {
    count_session(a, c, a->crun,
                  f->starttls == SMTP_STARTTLS_FAILED
                      ? POLICY_TLSRPT_VALIDATION_FAILURE
                      : POLICY_TLSRPT_STARTTLS_NOT_SUPPORTED);
    smtp_client_close(c, client_closed, (void *)a->env->slots);
    engine__mx_fail(a, true, "4.7.5",
                    "TLS is required for %s but STARTTLS was %s", a->mx.host,
                    smtp_starttls_name(f->starttls));
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  struct policy_conn_verdict v;
  policy_chain_check_conn(a->crun, &pc, &v);
  if (a->ops->session_ranked)
    a->ops->session_ranked(a->arg, a, addr, f, &v);
  if (!a->plaintext) {
    /* A session the policy took without TLS is still a failure to
     * negotiate TLS for the report (RFC 8460 §4.3.1). */
    int res = v.result.outcome != POLICY_OK
                  ? (v.result.tlsrpt ? v.result.tlsrpt
                                     : POLICY_TLSRPT_VALIDATION_FAILURE)
              : v.tlsrpt_testing ? v.tlsrpt_testing
              : f->starttls == SMTP_STARTTLS_DONE
                  ? POLICY_TLSRPT_SUCCESS
                  : POLICY_TLSRPT_STARTTLS_NOT_SUPPORTED;
    count_session(a, c, a->crun, res);
  }
  if (v.result.outcome != POLICY_OK && report_overrides(a, &v.result)) {
    v.result.outcome = POLICY_OK;
    v.level = tls_of(f->tls_level);
  }
  if (v.result.outcome != POLICY_OK) {
    /* A session the policy rejected is never offered again: resuming it
     * would bring back the chain that just failed. */
    smtp_client_forget_tls_session(c);
    smtp_client_close(c, client_closed, (void *)a->env->slots);
    if (!requiretls_fail(a, &v.result))
      engine__mx_fail(a, v.result.outcome == POLICY_TEMPFAIL, v.result.status,
                      "%s", v.result.reason);
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  if (a->dest->requiretls && !(f->caps & SMTP_CAP_REQUIRETLS)) {
    /* §4.2.1: a next hop that does not offer REQUIRETLS (after STARTTLS)
     * cannot carry the message on; try the next. */
    smtp_client_close(c, client_closed, (void *)a->env->slots);
    engine__mx_fail(a, false, "5.7.30",
                    "REQUIRETLS: %s does not offer REQUIRETLS", a->mx.host);
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  /* Acceptable: the observer takes the session, or passes. */
  struct mx_session s = {.c = c,
                         .mx = a->mx.host,
                         .addr = addr,
                         .mx_level = v.mx_level,
                         .tls_level = v.level};
  int rc = a->ops->session_acceptable(a->arg, a, &s);
  if (rc == 0)
    return; /* the attempt is the observer's now */
  smtp_client_close(c, client_closed, (void *)a->env->slots);
  if (rc == MX_NEXT) {
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  engine__mx_fail(a, true, "4.3.0", "%s", postern_strerror(rc));
  engine__mx_exhaust(a);
}

static void attempt_next_addr(struct mx_attempt *a) {
  if (stopping(a)) {
    engine__mx_fail(a, true, "4.3.2", "shutting down");
    engine__mx_exhaust(a);
    return;
  }
  if (a->ai < a->naddr) {
    attempt_connect(a);
    return;
  }
  a->ci++;
  attempt_next_candidate(a);
}

/* ---- one candidate: addresses, prepare_conn ---- */

static void on_conn_prepared(void *arg, struct policy_conn_run *crun,
                             const struct policy_conn_req *req) {
  struct mx_attempt *a = arg;
  a->crun = crun;
  a->req = *req;
  if (a->ops->connection_prepared)
    a->ops->connection_prepared(a->arg, a, req);
  if (req->result.outcome != POLICY_OK && report_overrides(a, &req->result))
    a->req.result.outcome = POLICY_OK;
  else if (req->result.outcome != POLICY_OK) {
    if (req->result.tlsrpt)
      count_session(a, NULL, crun, req->result.tlsrpt);
    engine__mx_fail(a, req->result.outcome == POLICY_TEMPFAIL,
                    req->result.status, "%s", req->result.reason);
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  a->ai = 0;
  a->plaintext = false;
  attempt_next_addr(a);
}

static void prepare_conn(struct mx_attempt *a) {
  if (a->ops->addresses_found)
    a->ops->addresses_found(a->arg, a, a->addrs, a->naddr,
                            a->addrs_authenticated);
  struct policy_host h = {.mx = &a->mx,
                          .addrs_authenticated = a->addrs_authenticated,
                          .canonical = a->canonical};
  struct policy_env e = penv(a);
  policy_conn_run_free(a->crun);
  a->crun = NULL;
  int rc = policy_chain_prepare_conn(a->drun, &e, &h, on_conn_prepared, a);
  if (rc != 0) {
    engine__mx_fail(a, true, "4.3.0", "policy: %s", postern_strerror(rc));
    a->ci++;
    attempt_next_candidate(a);
  }
}

static void on_addrs(const struct dns_answer *ans, void *arg) {
  struct mx_attempt *a = arg;
  a->q = NULL;
  if (ans->status == DNS_CANCELED) {
    engine__mx_exhaust(a);
    return;
  }
  if (ans->status != DNS_ANSWER) {
    bool temp = ans->status == DNS_TEMPFAIL || ans->status == DNS_MALFORMED;
    engine__mx_fail(a, temp, temp ? "4.4.3" : "5.4.4",
                    "address lookup for %s: %s", a->mx.host,
                    dns_status_name(ans->status));
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  /* A family whose lookup failed or was bogus is dropped, never taken for
   * "insecure": with a validated A RRset next to a bogus AAAA one, DANE
   * applies to the A addresses alone (RFC 7672 §2.1.1). */
  bool use[2];
  a->addrs_authenticated = dns_host_select(ans, use);
  a->naddr = 0;
  uint16_t port = cand_port(a);
  for (size_t i = 0; i < ans->nrr && a->naddr < MX_MAX_ADDRS; i++) {
    struct sockaddr_storage *ss = &a->addrs[a->naddr];
    memset(ss, 0, sizeof *ss);
    uint16_t t = ans->rr[i].type;
    if ((t == DNS_T_A && !use[DNS_FAMILY_A]) ||
        (t == DNS_T_AAAA && !use[DNS_FAMILY_AAAA]))
      continue;
    if (t == DNS_T_A) {
      struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
      s4->sin_family = AF_INET;
      s4->sin_addr = ans->rr[i].u.a;
    } else if (t == DNS_T_AAAA) {
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
      s6->sin6_family = AF_INET6;
      s6->sin6_addr = ans->rr[i].u.aaaa;
    } else {
      continue;
    }
    set_port(ss, port);
    a->naddr++;
  }
  snprintf(a->canonical, sizeof a->canonical, "%s",
           ans->cname ? ans->cname : a->mx.host);
  prepare_conn(a);
}

/* Ranks the current candidate with check_mx and goes on to its addresses,
 * or to the next candidate. */
static void attempt_next_candidate(struct mx_attempt *a) {
  const struct mx_dest *d = a->dest;
  if (stopping(a)) {
    engine__mx_fail(a, true, "4.3.2", "shutting down");
    engine__mx_exhaust(a);
    return;
  }
  if (a->ci >= a->ncand) {
    engine__mx_exhaust(a);
    return;
  }
  struct mx_candidate *cand = &a->cand[a->ci];
  snprintf(a->last_mx, sizeof a->last_mx, "%s", cand->host);
  /* Only a host the configuration names directly ([host] route, no MX
   * lookup) is a non-MX destination (RFC 7672 §2.2.2). A route whose
   * target is looked up by MX is an ordinary MX lookup of that target: its
   * hosts are authenticated by the MX RRset's AD bit alone (§2.2.1). */
  a->mx = (struct policy_mx){.domain = d->domain,
                             .host = cand->host,
                             .port = cand_port(a),
                             .mx_authenticated = a->mx_authenticated,
                             .implicit = cand->implicit,
                             .routed = d->routed && d->route->no_mx};
  policy_chain_check_mx(a->drun, &a->mx, &a->mxv);
  if (a->ops->candidate_ranked)
    a->ops->candidate_ranked(a->arg, a, cand, &a->mxv);
  if (a->mxv.result.outcome != POLICY_OK && report_overrides(a, &a->mxv.result))
    a->mxv.result.outcome = POLICY_OK;
  if (a->mxv.result.outcome != POLICY_OK) {
    /* A candidate refused before any connection (an MX the MTA-STS policy
     * does not list) is no TLS session: not counted for reports. */
    if (!requiretls_fail(a, &a->mxv.result))
      engine__mx_fail(a, a->mxv.result.outcome == POLICY_TEMPFAIL,
                      a->mxv.result.status, "%s", a->mxv.result.reason);
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  /* An address literal needs no lookup. */
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, cand->host, &s4->sin_addr) == 1) {
    ss.ss_family = AF_INET;
  } else if (inet_pton(AF_INET6, cand->host, &s6->sin6_addr) == 1) {
    ss.ss_family = AF_INET6;
  }
  if (ss.ss_family) {
    set_port(&ss, cand_port(a));
    a->addrs[0] = ss;
    a->naddr = 1;
    a->addrs_authenticated = false;
    snprintf(a->canonical, sizeof a->canonical, "%s", cand->host);
    prepare_conn(a);
    return;
  }
  int rc = dns_resolve_host(a->env->dns, cand->host, on_addrs, a, &a->q);
  if (rc != 0) {
    engine__mx_fail(a, true, "4.4.3", "address lookup for %s: %s", cand->host,
                    postern_strerror(rc));
    a->ci++;
    attempt_next_candidate(a);
  }
}

/* ---- the candidates: MX lookup and order ---- */

static uint32_t rnd32(void) {
  uint32_t v = 0;
  if (getrandom(&v, sizeof v, 0) != sizeof v)
    v = (uint32_t)uv_hrtime();
  return v;
}

/* Orders the candidates by preference; equal preferences in random order
 * (RFC 5321 §5.1): shuffle first, then a stable insertion sort by
 * preference. */
static void order_candidates(struct mx_candidate *cand, size_t n) {
  for (size_t i = n; i > 1; i--) {
    size_t k = rnd32() % i;
    struct mx_candidate t = cand[i - 1];
    cand[i - 1] = cand[k];
    cand[k] = t;
  }
  for (size_t i = 1; i < n; i++) {
    struct mx_candidate t = cand[i];
    size_t k = i;
    while (k > 0 && cand[k - 1].pref > t.pref) {
      cand[k] = cand[k - 1];
      k--;
    }
    cand[k] = t;
  }
}

static void on_mx(const struct dns_answer *ans, void *arg) {
  struct mx_attempt *a = arg;
  const struct mx_dest *d = a->dest;
  a->q = NULL;
  const char *name = d->routed ? d->route->host : d->domain;
  switch (ans->status) {
  case DNS_CANCELED:
    engine__mx_exhaust(a);
    return;
  case DNS_NXDOMAIN:
    engine__mx_fail(a, false, "5.1.2", "domain %s does not exist", name);
    engine__mx_exhaust(a);
    return;
  case DNS_TEMPFAIL:
  case DNS_MALFORMED:
    engine__mx_fail(a, true, "4.4.3", "MX lookup for %s: %s", name,
                    dns_status_name(ans->status));
    engine__mx_exhaust(a);
    return;
  case DNS_NODATA:
    /* RFC 5321 §5.1: no MX records, the domain is its own implicit MX. */
    snprintf(a->cand[0].host, sizeof a->cand[0].host, "%s", name);
    a->cand[0].implicit = true;
    a->ncand = 1;
    a->mx_authenticated = ans->authenticated;
    break;
  case DNS_ANSWER:
    if (ans->null_mx) {
      /* RFC 7505 §3: the domain accepts no mail at all. */
      engine__mx_fail(a, false, "5.1.10", "domain %s accepts no mail (null MX)",
                      name);
      engine__mx_exhaust(a);
      return;
    }
    a->mx_authenticated = ans->authenticated;
    a->ncand = 0;
    for (size_t i = 0; i < ans->nrr && a->ncand < MX_MAX_CANDIDATES; i++) {
      if (ans->rr[i].type != DNS_T_MX || strcmp(ans->rr[i].u.mx.host, ".") == 0)
        continue;
      struct mx_candidate *c = &a->cand[a->ncand++];
      snprintf(c->host, sizeof c->host, "%s", ans->rr[i].u.mx.host);
      c->pref = ans->rr[i].u.mx.pref;
      c->implicit = false;
    }
    order_candidates(a->cand, a->ncand);
    break;
  }
  a->ci = 0;
  attempt_next_candidate(a);
}

static void on_domain_prepared(void *arg, struct policy_domain_run *run,
                               const struct policy_result *r) {
  struct mx_attempt *a = arg;
  const struct mx_dest *d = a->dest;
  a->drun = run;
  if (a->ops->domain_prepared)
    a->ops->domain_prepared(a->arg, a, run);
  if (r->outcome != POLICY_OK && !report_overrides(a, r)) {
    if (r->tlsrpt)
      count_session(a, NULL, NULL, r->tlsrpt);
    engine__mx_fail(a, r->outcome == POLICY_TEMPFAIL, r->status, "%s",
                    r->reason);
    engine__mx_exhaust(a);
    return;
  }
  if (d->routed && d->route->no_mx) {
    snprintf(a->cand[0].host, sizeof a->cand[0].host, "%s", d->route->host);
    a->ncand = 1;
    a->ci = 0;
    attempt_next_candidate(a);
    return;
  }
  const char *name = d->routed ? d->route->host : d->domain;
  int rc = dns_query(a->env->dns, name, DNS_T_MX, on_mx, a, &a->q);
  if (rc != 0) {
    engine__mx_fail(a, true, "4.4.3", "MX lookup for %s: %s", name,
                    postern_strerror(rc));
    engine__mx_exhaust(a);
  }
}

int engine__mx_run(struct mx_attempt *a) {
  const struct mx_dest *d = a->dest;
  a->has_pdest =
      engine__destination_policy(a->env->r->cfg, d->domain, &a->pdest);
  if (d->requiretls) {
    /* RFC 8689 §4.2.1: the MX name authenticated (MTA-STS or DNSSEC) and
     * the session authenticated; floors no setting may lower. */
    if (!a->has_pdest)
      snprintf(a->pdest.pattern, sizeof a->pdest.pattern, "(REQUIRETLS)");
    a->has_pdest = true;
    a->pdest.floor_mx = POLICY_MX_LEVEL_MTASTS;
    a->pdest.floor_tls = POLICY_TLS_LEVEL_AUTHENTICATED;
  }
  if (d->tls_required_no) {
    /* RFC 8689 §5: deliver even where MTA-STS or DANE would refuse; the
     * modules then log each policy they skip. An operator's "dane
     * required" is stricter than any sender's wish and stays. */
    if (!a->has_pdest)
      snprintf(a->pdest.pattern, sizeof a->pdest.pattern, "(TLS-Required: No)");
    a->has_pdest = true;
    a->pdest.mtasts = POLICY_DEST_OFF;
    if (a->pdest.dane != POLICY_DEST_REQUIRED)
      a->pdest.dane = POLICY_DEST_OFF;
    postern_log(POSTERN_LOG_INFO, "tls_required_no_honoured", "dest", d->key,
                NULL);
  }
  struct policy_env e = penv(a);
  const char *pdomain = d->routed ? d->route->host : d->domain;
  return policy_chain_prepare_domain(a->env->r->chain, &e, pdomain,
                                     on_domain_prepared, a);
}
