/*
 * probe.c - postern-probe's side of the MX loop (see probe.h): an observer
 * that records what the loop finds at every step for every candidate,
 * declines every acceptable session (QUIT before MAIL) so that all
 * candidates are ranked, and reaches the verdict the relay would.
 *
 * Ownership: a probe owns its attempt and a stand-in relay (the caller's
 * configuration, chain and TLS context, no queue, no workers); both go
 * right after the callback. Sessions still closing then only touch a
 * counter of this file's, never the probe.
 */
#include "engine/probe.h"

#include "engine/mx_loop.h"
#include "net/smtp_client.h"
#include "base/postern_err.h"

#include <stdio.h>
#include <stdlib.h>

struct probe {
  struct relay relay; /* a stand-in for mx_env; never runs */
  struct mx_env env;
  char key[300];
  char domain[256];
  bool routed;
  struct route_target route;
  struct mx_dest target;
  struct probe_result res;
  probe_cb cb;
  void *arg;
};

/* The probe's outbound sessions: counted as the relay counts its own, in
 * memory that outlives every probe. */
static atomic_uint probe_conns;
static const struct mx_slots probe_slots = {.count = &probe_conns};

/* The record of the candidate the attempt is on, or NULL. */
static struct probe_mx *probe_cur(struct probe *p, const struct mx_attempt *a) {
  size_t ci = engine__mx_candidate(a);
  if (ci == SIZE_MAX || ci >= PROBE_MAX_MX)
    return NULL;
  if (p->res.nmx <= ci)
    p->res.nmx = ci + 1;
  return &p->res.mx[ci];
}

static void on_domain_prepared(void *arg, struct mx_attempt *a,
                               const struct policy_domain_run *run) {
  (void)a;
  struct probe *p = arg;
  policy_domain_run_describe(run, p->res.policy, sizeof p->res.policy);
}

static void on_candidate_ranked(void *arg, struct mx_attempt *a,
                                const struct mx_candidate *c,
                                const struct policy_mx_verdict *v) {
  struct probe_mx *pm = probe_cur(arg, a);
  if (pm == NULL)
    return;
  snprintf(pm->host, sizeof pm->host, "%s", c->host);
  pm->pref = c->pref;
  pm->implicit = c->implicit;
  pm->checked = true;
  pm->mx_level = v->level;
}

static void on_addresses(void *arg, struct mx_attempt *a,
                         const struct sockaddr_storage *addrs, size_t n,
                         bool authenticated) {
  struct probe_mx *pm = probe_cur(arg, a);
  if (pm == NULL)
    return;
  pm->naddrs = 0;
  for (size_t i = 0; i < n && i < PROBE_MAX_ADDRS; i++)
    engine__mx_addr_text(&addrs[i], pm->addrs[pm->naddrs++],
                         sizeof pm->addrs[0]);
  pm->addrs_authenticated = authenticated;
}

static void on_connection_prepared(void *arg, struct mx_attempt *a,
                                   const struct policy_conn_req *req) {
  struct probe_mx *pm = probe_cur(arg, a);
  if (pm == NULL)
    return;
  pm->conn_prepared = true;
  pm->tls_required = req->tls_required;
  pm->dane_usable = req->dane_usable;
}

static void on_session_ranked(void *arg, struct mx_attempt *a, const char *addr,
                              const struct smtp_client_facts *f,
                              const struct policy_conn_verdict *v) {
  struct probe_mx *pm = probe_cur(arg, a);
  if (pm == NULL)
    return;
  pm->connected = true;
  snprintf(pm->tried_addr, sizeof pm->tried_addr, "%s", addr);
  pm->tls_level = v->level;
  pm->mx_level = v->mx_level;
  snprintf(pm->tls_info, sizeof pm->tls_info, "starttls=%s%s%s%s%s%s%s",
           smtp_starttls_name(f->starttls), f->tls_version ? " " : "",
           f->tls_version ? f->tls_version : "", f->tls_cipher ? " " : "",
           f->tls_cipher ? f->tls_cipher : "",
           f->tls_error && f->tls_error[0] ? " verify: " : "",
           f->tls_error ? f->tls_error : "");
}

/* This candidate would take the mail: say so, QUIT, and go on to rank the
 * others too. */
static int on_acceptable(void *arg, struct mx_attempt *a,
                         const struct mx_session *s) {
  (void)s;
  struct probe_mx *pm = probe_cur(arg, a);
  if (pm)
    pm->acceptable = true;
  return MX_NEXT;
}

static void on_step_failed(void *arg, struct mx_attempt *a, bool temporary,
                           const char *status, const char *reason) {
  struct probe_mx *pm = probe_cur(arg, a);
  if (pm == NULL)
    return;
  pm->acceptable = false;
  pm->temporary = temporary;
  snprintf(pm->status, sizeof pm->status, "%s", status);
  snprintf(pm->reason, sizeof pm->reason, "%s", reason);
}

/* The verdict: the first acceptable candidate, else the same rule as for
 * real mail (step 5 of the MX loop). */
static void on_exhausted(void *arg, struct mx_attempt *a,
                         const struct mx_outcome *o) {
  struct probe *p = arg;
  struct probe_result *res = &p->res;
  for (size_t i = 0; i < res->nmx; i++) {
    if (res->mx[i].acceptable) {
      res->deliverable = true;
      res->deliver_to = i;
      snprintf(res->status, sizeof res->status, "2.0.0");
      snprintf(res->reason, sizeof res->reason, "would deliver to %s",
               res->mx[i].host);
      break;
    }
  }
  if (!res->deliverable) {
    res->temporary = o->temporary;
    snprintf(res->status, sizeof res->status, "%s", o->status);
    snprintf(res->reason, sizeof res->reason, "%s", o->reason);
  }
  p->cb(p->arg, res);
  engine__mx_free(a);
  free(p);
}

static const struct mx_ops probe_ops = {
    .domain_prepared = on_domain_prepared,
    .candidate_ranked = on_candidate_ranked,
    .addresses_found = on_addresses,
    .connection_prepared = on_connection_prepared,
    .session_ranked = on_session_ranked,
    .session_acceptable = on_acceptable,
    .step_failed = on_step_failed,
    .exhausted = on_exhausted,
};

int probe_start(const struct probe_setup *s, const char *domain, probe_cb cb,
                void *arg) {
  struct probe *p = calloc(1, sizeof *p);
  if (p == NULL)
    return POSTERN_ENOMEM;
  p->relay.cfg = s->cfg;
  p->relay.chain = s->chain;
  p->relay.client_tls = s->client_tls;
  p->env = (struct mx_env){.r = &p->relay,
                           .loop = s->loop,
                           .dns = s->dns,
                           .https = NULL,
                           .slots = &probe_slots};
  p->cb = cb;
  p->arg = arg;
  snprintf(p->res.domain, sizeof p->res.domain, "%s", domain);
  snprintf(p->domain, sizeof p->domain, "%s", domain);
  p->routed =
      engine__dest_key(&p->relay, domain, &p->route, p->key, sizeof p->key);
  p->res.routed = p->routed;
  engine__destination_describe(
      p->relay.cfg, domain, p->res.destination, sizeof p->res.destination,
      p->res.destination_set, sizeof p->res.destination_set);
  if (p->routed)
    snprintf(p->res.route, sizeof p->res.route, "%s", p->key);
  p->target = (struct mx_dest){.key = p->key,
                               .domain = p->domain,
                               .routed = p->routed,
                               .route = &p->route};
  struct mx_attempt *a = engine__mx_new(&p->env, &p->target, &probe_ops, p);
  if (a == NULL) {
    free(p);
    return POSTERN_ENOMEM;
  }
  int rc = engine__mx_run(a);
  if (rc != 0) {
    engine__mx_free(a);
    free(p);
    return rc;
  }
  return 0;
}
