/*
 * dane_module.c - the `dane` policy module (RFC 7672, SMTP with DANE TLS).
 *
 * Per connection (prepare_conn) it finds the TLSA RRset of the MX host and
 * at the established connection (check_conn) it verifies the peer's chain
 * against it with policy_dane_verify (dane.c).
 *
 * Which hosts get a TLSA lookup (RFC 7672 §2.2):
 *  - the host must be in a signed zone: the address records the engine
 *    connects to validated (the engine judges A and AAAA apart and drops a
 *    failed or bogus family, §2.1.1, dns_host_select), or they were reached
 *    through a CNAME chain whose first link validated (Aliases, below); an
 *    insecure answer or an insecure first link means no DANE (§2.2.2);
 *  - its name must be authenticated as the mail host: from a validated MX
 *    RRset (§2.2.1), as an implicit MX whose MX denial validated, or as a
 *    host the configuration names directly (a `[host]` route, no MX
 *    lookup: a "non-MX destination", §2.2.2). A host from an insecure MX
 *    RRset gets no DANE (§2.2.1: an attacker who forged the MX answer
 *    chooses the host and its TLSA) - also when a route sent the mail to
 *    that MX lookup.
 * Aliases (§2.2.2, policy_dane_tlsa_bases): when the whole CNAME chain and
 * the addresses validated, `_<port>._tcp.<expanded>` is tried first and
 * `_<port>._tcp.<original>` when the first is insecure or absent. When the
 * addresses came through an alias and did not validate, the chain may
 * still start in a signed zone: c-ares reports no per-record status, so
 * the host's own CNAME RRset is asked for (a CNAME query is answered by
 * the alias itself); when it validated - a secure CNAME into an unsigned
 * zone - only `_<port>._tcp.<original>` is looked up; a failed CNAME lookup
 * is TEMPFAIL (§2.1.1). The name whose TLSA RRset was used is the TLSA
 * base domain: with the MX host name the reference identifier for names
 * (§3.2.2), and the SNI the engine sends (req->sni, §8.1).
 *
 * Answers: authenticated records -> TLS mandatory (§2.2: no plaintext even
 * when every record is unusable), and with usable records the chain must
 * match. Insecure answers, NXDOMAIN or NODATA -> no DANE for the host.
 * SERVFAIL (what a validating resolver answers for bogus data), timeouts
 * and malformed answers -> TEMPFAIL for the host: the engine skips it and
 * defers the message if no other host succeeds, never bounces it (§2.2).
 *
 * Ownership: the per-connection state (`struct dane_conn`) is this
 * module's; the chain hands it back to dane_free_conn. It copies everything
 * it needs from the borrowed env and host at prepare time (the resolver
 * and the loop outlive every run). While its TLSA lookup is in flight it is
 * referenced by the resolver too: a free_conn during that time cancels the
 * lookup and leaves the freeing to the lookup's CANCELED callback.
 * Threading: one connection run belongs to one loop; the module state is
 * immutable and shared.
 */
#include "policy/chain.h"
#include "policy/tlsrpt.h"

#include "net/dns.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dane_conn {
  struct dns_query *q;
  bool orphaned; /* free_conn ran while the lookup was in flight */
  void (*count)(const char *module, const char *outcome);
  struct dns_resolver *dns;
  uint16_t port;
  /* The MX name came from a validated MX RRset (or a validated denial of
   * one): a DANE match then also vouches for MX level `dnssec`. */
  bool mx_authenticated;
  char host[DNS_NAME_MAX];      /* the MX host name (reference name) */
  char canonical[DNS_NAME_MAX]; /* after CNAME expansion */
  char base[DNS_NAME_MAX];      /* TLSA base domain once found */
  /* Where TLSA records are looked for, in order (policy_dane_tlsa_bases),
   * pointing to host or canonical; `next` is the one being looked up. */
  const char *bases[2];
  size_t nbases, next;
  /* The lookup in flight is the CNAME query of the host, not TLSA. */
  bool cname_phase;
  policy_done_cb done;
  void *arg;
  struct policy_conn_req *req; /* the chain's, alive while we are pending */
  /* Found TLSA records: present means secure records exist. The whole
   * RRset is kept, however large: dropping records would turn a host whose
   * only usable records were dropped into "all unusable" and accept an
   * unauthenticated session. `rec[i].data` points into `blob`. */
  bool present, usable;
  bool failed; /* the lookup failed or was bogus (TEMPFAIL) */
  size_t nrec;
  struct policy_tlsa *rec;
  uint8_t *blob;
};

static void count(struct dane_conn *dc, const char *outcome) {
  if (dc->count)
    dc->count("dane", outcome);
}

static void dane_conn_free(struct dane_conn *dc) {
  free(dc->rec);
  free(dc->blob);
  free(dc);
}

static void dane_free_conn(void *state, void *pc) {
  struct dane_conn *dc = pc;
  if (dc == NULL)
    return;
  if (dc->q) {
    /* The resolver still holds us: its CANCELED callback frees. */
    dc->orphaned = true;
    dns_query_cancel(dc->q);
    return;
  }
  dane_conn_free(dc);
}

static int start_lookup(struct dane_conn *dc);

/* Reports the outcome of prepare_conn to the chain (the last thing done
 * with the run's memory: the chain may free the run inside `done`). */
static void finish(struct dane_conn *dc, const struct policy_result *r) {
  dc->done(dc->arg, r);
}

static void finish_ok(struct dane_conn *dc) {
  struct policy_result r;
  memset(&r, 0, sizeof r);
  r.outcome = POLICY_OK;
  finish(dc, &r);
}

/* Keeps an authenticated TLSA RRset, all of it: its size is bounded by
 * the DNS message that carried it (64 KiB), never by a limit of ours.
 * Returns 0 or POSTERN_ENOMEM. */
static int keep_records(struct dane_conn *dc, const struct dns_answer *a) {
  size_t n = 0, total = 0;
  for (size_t i = 0; i < a->nrr; i++) {
    if (a->rr[i].type == DNS_T_TLSA) {
      n++;
      total += a->rr[i].u.tlsa.len;
    }
  }
  dc->rec = calloc(n ? n : 1, sizeof *dc->rec);
  dc->blob = malloc(total ? total : 1);
  if (dc->rec == NULL || dc->blob == NULL)
    return POSTERN_ENOMEM;
  size_t off = 0;
  for (size_t i = 0; i < a->nrr; i++) {
    const struct dns_rr *rr = &a->rr[i];
    if (rr->type != DNS_T_TLSA)
      continue;
    memcpy(dc->blob + off, rr->u.tlsa.data, rr->u.tlsa.len);
    struct policy_tlsa *t = &dc->rec[dc->nrec++];
    *t = (struct policy_tlsa){.usage = rr->u.tlsa.usage,
                              .selector = rr->u.tlsa.selector,
                              .mtype = rr->u.tlsa.mtype,
                              .data = dc->blob + off,
                              .len = rr->u.tlsa.len};
    off += rr->u.tlsa.len;
    if (policy_tlsa_usable(t))
      dc->usable = true;
  }
  return 0;
}

/* Nothing more to find: the host has no DANE (an insecure or empty answer,
 * or names that cannot be trusted). */
static void finish_none(struct dane_conn *dc, bool secure_absence,
                        const char *reason) {
  count(dc, secure_absence ? "none" : "insecure");
  postern_log(POSTERN_LOG_DEBUG, "dane_none", "host", dc->host, "reason",
              reason, NULL);
  finish_ok(dc);
}

static void finish_tempfail(struct dane_conn *dc, const char *what,
                            const char *name, const char *why) {
  struct policy_result r;
  count(dc, "tempfail");
  policy_result_set(&r, POLICY_TEMPFAIL, "dane", "4.7.5", "%s %s failed: %s",
                    what, name, why);
  /* RFC 8460 §4.3.2.1: no valid records came back from the resolver. */
  r.tlsrpt = POLICY_TLSRPT_DNSSEC_INVALID;
  dc->failed = true;
  finish(dc, &r);
}

static const char *answer_error(const struct dns_answer *a) {
  return a->err ? postern_strerror(a->err) : dns_status_name(a->status);
}

/* Starts the TLSA lookup at the next base domain candidate, or finishes
 * with no DANE when there is none left. */
static void next_base(struct dane_conn *dc, bool secure_absence,
                      const char *reason) {
  if (dc->next >= dc->nbases) {
    finish_none(dc, secure_absence, reason);
    return;
  }
  int rc = start_lookup(dc);
  if (rc != 0) {
    char qname[DNS_NAME_MAX + 16];
    snprintf(qname, sizeof qname, "_%u._tcp.%s", (unsigned)dc->port,
             dc->bases[dc->next]);
    finish_tempfail(dc, "TLSA lookup for", qname, postern_strerror(rc));
  }
}

/* The explicit CNAME lookup of the MX host: its AD bit says whether the
 * first link of the alias chain is secure (RFC 7672 §2.2.2). */
static void on_cname(struct dane_conn *dc, const struct dns_answer *a) {
  bool secure = false;
  switch (a->status) {
  case DNS_ANSWER:
    for (size_t i = 0; i < a->nrr; i++)
      if (a->rr[i].type == DNS_T_CNAME)
        secure = a->authenticated;
    break;
  case DNS_NXDOMAIN:
  case DNS_NODATA:
    break;
  default:
    /* Indeterminate or bogus is never "insecure" (RFC 7672 §2.1.1). */
    finish_tempfail(dc, "CNAME lookup for", dc->host, answer_error(a));
    return;
  }
  struct policy_dane_host h = {.host = dc->host,
                               .canonical = dc->canonical,
                               .name_authenticated = true,
                               .addrs_authenticated = false,
                               .cname_authenticated = secure};
  const char *bases[2];
  dc->nbases = policy_dane_tlsa_bases(&h, bases);
  for (size_t i = 0; i < dc->nbases; i++)
    dc->bases[i] = bases[i];
  dc->next = 0;
  next_base(dc, false, "insecure CNAME into an unsigned zone");
}

static void on_tlsa(const struct dns_answer *a, void *arg) {
  struct dane_conn *dc = arg;
  dc->q = NULL;
  if (dc->orphaned) {
    dane_conn_free(dc);
    return;
  }
  if (dc->cname_phase) {
    dc->cname_phase = false;
    on_cname(dc, a);
    return;
  }
  const char *looked = dc->bases[dc->next];
  char qname[DNS_NAME_MAX + 16];
  snprintf(qname, sizeof qname, "_%u._tcp.%s", (unsigned)dc->port, looked);
  switch (a->status) {
  case DNS_ANSWER:
    if (a->authenticated) {
      int rc = keep_records(dc, a);
      if (rc != 0) {
        finish_tempfail(dc, "keeping the TLSA records of", qname,
                        postern_strerror(rc));
        return;
      }
      snprintf(dc->base, sizeof dc->base, "%s", looked);
      uint8_t digest[32];
      rc = policy_tlsa_rrset_digest(dc->rec, dc->nrec, dc->base, digest);
      if (rc != 0) {
        finish_tempfail(dc, "keeping the TLSA records of", qname,
                        postern_strerror(rc));
        return;
      }
      dc->present = true;
      /* TLS sessions are cached per TLSA RRset: after a rollover no
       * session made under the old records (carrying the old chain) is
       * offered. */
      char *tp = dc->req->tls_policy;
      memcpy(tp, "dane:", 5);
      for (size_t i = 0; i < sizeof digest; i++)
        snprintf(tp + 5 + 2 * i, 3, "%02x", digest[i]);
      /* §2.2: secure TLSA records make TLS mandatory, usable or not. */
      dc->req->tls_required = true;
      dc->req->dane_usable = dc->usable;
      /* §8.1: the SNI is the TLSA base domain (a host name from the chain,
       * so it fits; a name that did not would leave the MX host name). */
      size_t bl = strlen(dc->base);
      if (bl < sizeof dc->req->sni)
        memcpy(dc->req->sni, dc->base, bl + 1);
      postern_log(POSTERN_LOG_DEBUG, "dane_tlsa", "host", dc->host,
                  "base_domain", dc->base, "usable", dc->usable ? "yes" : "no",
                  NULL);
      finish_ok(dc);
      return;
    }
    break; /* insecure: like no records */
  case DNS_NXDOMAIN:
  case DNS_NODATA:
    break;
  case DNS_TEMPFAIL:
  case DNS_MALFORMED:
  case DNS_CANCELED:
  default:
    /* A validating resolver answers SERVFAIL for bogus data (RFC 4035
     * §5.5): that must not be taken for "no TLSA" (RFC 7672 §2.2). */
    finish_tempfail(dc, "TLSA lookup for", qname, answer_error(a));
    return;
  }
  /* Nothing secure at this name: try the original name after the expanded
   * one (§2.2.2), else the host has no DANE. */
  bool secure_absence =
      (a->status == DNS_NXDOMAIN || a->status == DNS_NODATA) &&
      a->authenticated;
  dc->next++;
  next_base(dc, secure_absence,
            secure_absence ? "no TLSA records" : "insecure TLSA answer");
}

static int start_lookup(struct dane_conn *dc) {
  if (dc->cname_phase)
    return dns_query(dc->dns, dc->host, DNS_T_CNAME, on_tlsa, dc, &dc->q);
  char qname[DNS_NAME_MAX + 16];
  int n = snprintf(qname, sizeof qname, "_%u._tcp.%s", (unsigned)dc->port,
                   dc->bases[dc->next]);
  if (n < 0 || (size_t)n >= sizeof qname)
    return POSTERN_EINVAL;
  return dns_query(dc->dns, qname, DNS_T_TLSA, on_tlsa, dc, &dc->q);
}

static int dane_prepare_conn(void *state, const struct policy_env *env,
                             void *pd, const struct policy_host *h, void **pc,
                             struct policy_conn_req *req, policy_done_cb done,
                             void *arg) {
  const struct policy_mx *mx = h->mx;
  if (env->dest != NULL && env->dest->dane == POLICY_DEST_OFF) {
    /* The operator turned DANE off for this destination: no TLSA lookup,
     * whatever the zone publishes. Logged on every connection it skips. */
    postern_log(POSTERN_LOG_INFO, "destination_override", "destination",
                env->dest->pattern, "mx", mx->host, "override", "dane off",
                NULL);
    *pc = NULL;
    static const struct policy_result ok = {.outcome = POLICY_OK};
    done(arg, &ok);
    return 0;
  }
  const char *canonical =
      h->canonical && h->canonical[0] ? h->canonical : mx->host;
  struct policy_dane_host dh = {.host = mx->host,
                                .canonical = canonical,
                                .name_authenticated =
                                    mx->mx_authenticated || mx->routed,
                                .addrs_authenticated = h->addrs_authenticated};
  const char *bases[2];
  size_t nbases = policy_dane_tlsa_bases(&dh, bases);
  /* Addresses reached through an alias without AD: the chain may still
   * start in a signed zone (a secure CNAME into an unsigned one). c-ares
   * tells nothing per record, so ask for the alias's own CNAME RRset. */
  bool ask_cname = nbases == 0 && dh.name_authenticated &&
                   !h->addrs_authenticated && strcmp(canonical, mx->host) != 0;
  if ((nbases == 0 && !ask_cname) || env->dns == NULL) {
    /* No DANE for this host (RFC 7672 §2.2.1, §2.2.2). */
    if (env->count)
      env->count("dane", "insecure");
    struct policy_result r;
    memset(&r, 0, sizeof r);
    r.outcome = POLICY_OK;
    done(arg, &r); /* the chain accepts an answer inside the call */
    return 0;
  }
  struct dane_conn *dc = calloc(1, sizeof *dc);
  if (dc == NULL)
    return POSTERN_ENOMEM;
  dc->count = env->count;
  dc->dns = env->dns;
  dc->port = mx->port ? mx->port : 25;
  dc->mx_authenticated = mx->mx_authenticated;
  snprintf(dc->host, sizeof dc->host, "%s", mx->host);
  snprintf(dc->canonical, sizeof dc->canonical, "%s", canonical);
  /* The candidates point into dc, which outlives every lookup. */
  for (size_t i = 0; i < nbases; i++)
    dc->bases[i] = bases[i] == canonical ? dc->canonical : dc->host;
  dc->nbases = nbases;
  dc->cname_phase = ask_cname;
  dc->done = done;
  dc->arg = arg;
  dc->req = req;
  int rc = start_lookup(dc);
  if (rc != 0) {
    free(dc);
    return rc;
  }
  *pc = dc;
  return 0;
}

/* RFC 8460 §4.3: what a failed DANE match is reported as. No record
 * matching anything, or none usable, means the TLSA RRset failed to
 * validate the server (tlsa-invalid); the rest are certificate failures
 * under a DANE-TA record. */
static int tlsrpt_of_dane(enum policy_dane_status st) {
  switch (st) {
  case POLICY_DANE_CHAIN:
    return POLICY_TLSRPT_CERTIFICATE_NOT_TRUSTED;
  case POLICY_DANE_EXPIRED:
    return POLICY_TLSRPT_CERTIFICATE_EXPIRED;
  case POLICY_DANE_NAME:
    return POLICY_TLSRPT_CERTIFICATE_HOST_MISMATCH;
  default:
    return POLICY_TLSRPT_TLSA_INVALID;
  }
}

/* TLS reports: DANE governed the session when usable records were found
 * (policy-string: each record in presentation form, RFC 8460 §4.4). A
 * failed lookup found no policy: the session's result says why
 * (dnssec-invalid). */
static void dane_tlsrpt_policy(void *state, void *pd, void *pc,
                               struct policy_tlsrpt_applied *out) {
  (void)state, (void)pd;
  const struct dane_conn *dc = pc;
  if (dc == NULL || !dc->present || !dc->usable)
    return;
  out->type = POLICY_TLSRPT_POLICY_TLSA;
  size_t off = 0;
  for (size_t i = 0; i < dc->nrec && dc->present; i++) {
    const struct policy_tlsa *t = &dc->rec[i];
    int n = snprintf(out->strings + off, sizeof out->strings - off, "%u %u %u ",
                     t->usage, t->selector, t->mtype);
    if (n < 0 || (size_t)n + 2 * t->len + 2 > sizeof out->strings - off)
      break; /* the rest does not fit: cut */
    off += (size_t)n;
    static const char hex[] = "0123456789abcdef";
    for (size_t k = 0; k < t->len; k++) {
      out->strings[off++] = hex[t->data[k] >> 4];
      out->strings[off++] = hex[t->data[k] & 15];
    }
    out->strings[off++] = '\n';
    out->strings[off] = '\0';
  }
  size_t hl = strlen(dc->host);
  if (hl + 2 <= sizeof out->mx) {
    memcpy(out->mx, dc->host, hl);
    memcpy(out->mx + hl, "\n", 2);
  }
}

static void dane_check_conn(void *state, void *pd, void *pc,
                            const struct policy_conn *c,
                            struct policy_conn_verdict *v) {
  struct dane_conn *dc = pc;
  if (dc == NULL || !dc->present)
    return;
  /* Secure TLSA records: at least an encrypted session (§2.2). */
  if (v->required < POLICY_TLS_LEVEL_ENCRYPTED)
    v->required = POLICY_TLS_LEVEL_ENCRYPTED;
  if (c->reached == POLICY_TLS_LEVEL_NONE || c->chain_len == 0) {
    policy_result_set(&v->result, POLICY_TEMPFAIL, "dane", "4.7.5",
                      "%s has secure TLSA records but the session is not "
                      "TLS-protected",
                      dc->host);
    v->result.tlsrpt = POLICY_TLSRPT_STARTTLS_NOT_SUPPORTED;
    return;
  }
  if (!dc->usable) {
    /* §3.1.3 and §2.2: only unusable records, so encryption without
     * authentication is what the records allow. */
    count(dc, "unusable");
    postern_log(POSTERN_LOG_INFO, "dane_unusable", "host", dc->host,
                "base_domain", dc->base, NULL);
    return;
  }
  struct policy_dane_cert chain[16];
  size_t n = c->chain_len < 16 ? c->chain_len : 16;
  for (size_t i = 0; i < n; i++)
    chain[i] = (struct policy_dane_cert){.der = c->chain_der[i],
                                         .len = c->chain_der_len[i]};
  const char *names[2] = {dc->host, dc->base};
  size_t nnames = strcmp(dc->host, dc->base) == 0 ? 1 : 2;
  struct policy_dane_result res;
  int rc = policy_dane_verify(dc->rec, dc->nrec, chain, n, names, nnames,
                              time(NULL), &res);
  if (rc != 0) {
    count(dc, rc == POSTERN_ENOMEM ? "tempfail" : "mismatch");
    policy_result_set(&v->result, POLICY_TEMPFAIL, "dane", "4.7.5",
                      "DANE verification for %s failed: %s", dc->host,
                      postern_strerror(rc));
    v->result.tlsrpt = POLICY_TLSRPT_VALIDATION_FAILURE;
    return;
  }
  if (res.status != POLICY_DANE_OK) {
    count(dc, "mismatch");
    policy_result_set(&v->result, POLICY_TEMPFAIL, "dane", "4.7.5",
                      "DANE: %s (TLSA at _%u._tcp.%s): %s", dc->host,
                      (unsigned)dc->port, dc->base,
                      policy_dane_status_message(res.status));
    v->result.tlsrpt = tlsrpt_of_dane(res.status);
    postern_log(POSTERN_LOG_WARN, "dane_mismatch", "host", dc->host,
                "base_domain", dc->base, "dane",
                policy_dane_status_name(res.status), NULL);
    return;
  }
  count(dc, "ok");
  v->level = POLICY_TLS_LEVEL_AUTHENTICATED;
  /* DANE ran only because DNSSEC authenticated the MX name (RFC 7672
   * §2.2.1): the connection has that MX level whether or not the `dnssec`
   * module is in the chain. A host a route names stays at its level. */
  if (dc->mx_authenticated && v->mx_level < POLICY_MX_LEVEL_DNSSEC)
    v->mx_level = POLICY_MX_LEVEL_DNSSEC;
  char depth[16], usage[16];
  snprintf(depth, sizeof depth, "%d", res.depth);
  snprintf(usage, sizeof usage, "%d", res.usage);
  postern_log(POSTERN_LOG_DEBUG, "dane_ok", "host", dc->host, "base_domain",
              dc->base, "usage", usage, "depth", depth, NULL);
}

static const struct policy_module_ops dane_ops = {
    .name = "dane",
    .prepare_conn = dane_prepare_conn,
    .free_conn = dane_free_conn,
    .check_conn = dane_check_conn,
    .tlsrpt_policy = dane_tlsrpt_policy,
};

int policy_dane_new(struct policy_module *out) {
  out->ops = &dane_ops;
  out->state = NULL;
  return 0;
}
