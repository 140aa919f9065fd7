/*
 * chain.c - runs the policy modules in configuration order (see chain.h).
 *
 * Invariants: the asynchronous steps call their callback exactly once and
 * never inside the call that started them (the run's net_defer calls it
 * later when no module had anything asynchronous to do, or when a module
 * answered from inside its own prepare step, which modules may do: a cache
 * hit or "nothing to look up" needs no deferral of its own); a run's memory
 * is freed only in its defer's close callback. Module state for a domain or
 * a connection is created by that module and freed by it.
 */
#include "policy/chain.h"

#include "net/defer.h"
#include "policy/internal.h"
#include "policy/tlsrpt.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void policy_result_set(struct policy_result *r, enum policy_outcome o,
                       const char *module, const char *status, const char *fmt,
                       ...) {
  r->outcome = o;
  r->module = module;
  r->tlsrpt = POLICY_TLSRPT_SUCCESS;
  snprintf(r->status, sizeof r->status, "%s", status);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->reason, sizeof r->reason, fmt, ap);
  va_end(ap);
}

static void result_ok(struct policy_result *r) {
  memset(r, 0, sizeof *r);
  r->outcome = POLICY_OK;
}

struct policy_chain {
  struct policy_module *mods;
  size_t n, cap;
};

int policy_chain_new(struct policy_chain **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : POSTERN_ENOMEM;
}

int policy_chain_add(struct policy_chain *c, struct policy_module m) {
  if (c->n == c->cap) {
    size_t nc = c->cap ? c->cap * 2 : 4;
    struct policy_module *nm = realloc(c->mods, nc * sizeof *nm);
    if (nm == NULL) {
      if (m.ops->free)
        m.ops->free(m.state);
      return POSTERN_ENOMEM;
    }
    c->mods = nm;
    c->cap = nc;
  }
  c->mods[c->n++] = m;
  return 0;
}

void policy_chain_free(struct policy_chain *c) {
  if (c == NULL)
    return;
  for (size_t i = 0; i < c->n; i++)
    if (c->mods[i].ops->free)
      c->mods[i].ops->free(c->mods[i].state);
  free(c->mods);
  free(c);
}

size_t policy_chain_len(const struct policy_chain *c) {
  return c->n;
}

const char *policy_chain_module_name(const struct policy_chain *c, size_t i) {
  return i < c->n ? c->mods[i].ops->name : NULL;
}

/* ---- per-domain run ---- */

struct policy_domain_run {
  struct policy_chain *chain;
  struct policy_env env;
  struct policy_dest dest; /* env.dest points here when set */
  char domain[256];
  void **pd; /* per module */
  size_t next;
  policy_domain_cb cb;
  void *arg;
  struct policy_result result;
  struct net_defer soon; /* defers the final callback; freed when closed */
  bool done;
  /* A module's prepare_domain is running: its `done` only records. */
  bool in_call, sync_done;
  struct policy_result sync_result;
};

static void domain_step(struct policy_domain_run *run);

static void domain_fire(struct net_defer *d) {
  struct policy_domain_run *run = d->data;
  run->cb(run->arg, run, &run->result);
}

static void domain_finish(struct policy_domain_run *run, bool in_call) {
  run->done = true;
  if (in_call)
    net_defer_arm(&run->soon, domain_fire);
  else
    run->cb(run->arg, run, &run->result);
}

static void domain_module_done(void *arg, const struct policy_result *r) {
  struct policy_domain_run *run = arg;
  if (run->in_call) {
    /* Called from inside prepare_domain: domain_step goes on after it. */
    run->sync_done = true;
    run->sync_result = *r;
    return;
  }
  if (r->outcome != POLICY_OK) {
    run->result = *r;
    domain_finish(run, false);
    return;
  }
  run->next++;
  domain_step(run);
}

/* Starts the next module that has a prepare_domain step. When it completes
 * asynchronously, the callback continues the walk; a module that finishes
 * the chain with nothing left pending goes through the run's defer. */
static void domain_step(struct policy_domain_run *run) {
  struct policy_chain *c = run->chain;
  while (run->next < c->n) {
    struct policy_module *m = &c->mods[run->next];
    if (m->ops->prepare_domain == NULL) {
      run->next++;
      continue;
    }
    run->in_call = true;
    run->sync_done = false;
    int rc =
        m->ops->prepare_domain(m->state, &run->env, run->domain,
                               &run->pd[run->next], domain_module_done, run);
    run->in_call = false;
    if (rc == 0 && run->sync_done) {
      if (run->sync_result.outcome != POLICY_OK) {
        run->result = run->sync_result;
        domain_finish(run, true);
        return;
      }
      run->next++;
      continue;
    }
    if (rc == 0)
      return;
    policy_result_set(&run->result, POLICY_TEMPFAIL, m->ops->name, "4.7.0",
                      "policy %s could not start: %s", m->ops->name,
                      postern_strerror(rc));
    domain_finish(run, true);
    return;
  }
  domain_finish(run, true);
}

int policy_chain_prepare_domain(struct policy_chain *c,
                                const struct policy_env *env,
                                const char *domain, policy_domain_cb cb,
                                void *arg) {
  struct policy_domain_run *run = calloc(1, sizeof *run);
  if (run == NULL)
    return POSTERN_ENOMEM;
  run->pd = calloc(c->n ? c->n : 1, sizeof *run->pd);
  if (run->pd == NULL) {
    free(run);
    return POSTERN_ENOMEM;
  }
  run->chain = c;
  run->env = *env;
  if (env->dest != NULL) {
    run->dest = *env->dest;
    run->env.dest = &run->dest;
  }
  snprintf(run->domain, sizeof run->domain, "%s", domain);
  run->cb = cb;
  run->arg = arg;
  result_ok(&run->result);
  net_defer_init(env->loop, &run->soon, run);
  domain_step(run);
  return 0;
}

static void domain_closed(struct net_defer *d) {
  struct policy_domain_run *run = d->data;
  free(run->pd);
  free(run);
}

void policy_domain_run_free(struct policy_domain_run *run) {
  if (run == NULL)
    return;
  struct policy_chain *c = run->chain;
  for (size_t i = 0; i < c->n; i++)
    if (run->pd[i] && c->mods[i].ops->free_domain)
      c->mods[i].ops->free_domain(c->mods[i].state, run->pd[i]);
  net_defer_close(&run->soon, domain_closed);
}

void policy_domain_run_describe(const struct policy_domain_run *run, char *buf,
                                size_t cap) {
  size_t len = 0;
  if (cap == 0)
    return;
  buf[0] = '\0';
  const struct policy_chain *c = run->chain;
  for (size_t i = 0; i < c->n && len + 1 < cap; i++) {
    const struct policy_module *m = &c->mods[i];
    if (m->ops->describe_domain == NULL || run->pd[i] == NULL)
      continue;
    char one[512];
    one[0] = '\0';
    m->ops->describe_domain(m->state, run->pd[i], one, sizeof one);
    if (one[0] == '\0')
      continue;
    int n = snprintf(buf + len, cap - len, "%s%s: %s", len ? "; " : "",
                     m->ops->name, one);
    if (n < 0)
      break;
    len += (size_t)n < cap - len ? (size_t)n : cap - len - 1;
  }
}

void policy_chain_check_mx(struct policy_domain_run *run,
                           const struct policy_mx *mx,
                           struct policy_mx_verdict *v) {
  struct policy_chain *c = run->chain;
  memset(v, 0, sizeof *v);
  v->level = POLICY_MX_LEVEL_NONE;
  v->required = POLICY_MX_LEVEL_NONE;
  result_ok(&v->result);
  for (size_t i = 0; i < c->n; i++) {
    struct policy_module *m = &c->mods[i];
    if (m->ops->check_mx == NULL)
      continue;
    m->ops->check_mx(m->state, run->pd[i], mx, v);
    if (v->result.outcome != POLICY_OK)
      return;
  }
  /* A destination block's minimum is at least a floor (local, when in the
   * chain, has already used it in place of its own). */
  const struct policy_dest *dd = run->env.dest;
  if (dd != NULL && dd->has_min_mx && v->required < dd->min_mx)
    v->required = dd->min_mx;
  if (dd != NULL && v->required < dd->floor_mx)
    v->required = dd->floor_mx;
  if (v->level < v->required) {
    policy_result_set(&v->result, POLICY_TEMPFAIL, "chain", "4.7.5",
                      "MX %s reached MX level %s, policy requires %s", mx->host,
                      policy_mx_level_name(v->level),
                      policy_mx_level_name(v->required));
    v->result.tlsrpt = POLICY_TLSRPT_VALIDATION_FAILURE;
  }
}

/* ---- per-connection run ---- */

struct policy_conn_run {
  struct policy_domain_run *drun;
  struct policy_env env;
  struct policy_host host;
  struct policy_mx mx;
  char host_name[256], canonical[256], domain[256];
  void **pc;
  size_t next;
  policy_conn_cb cb;
  void *arg;
  struct policy_conn_req req;
  struct net_defer soon; /* defers the callback; freed when closed */
  /* A module's prepare_conn is running: its `done` only records. */
  bool in_call, sync_done;
  struct policy_result sync_result;
};

static void conn_step(struct policy_conn_run *cr);

static void conn_fire(struct net_defer *d) {
  struct policy_conn_run *cr = d->data;
  const struct policy_dest *dd = cr->env.dest;
  /* `dane required` (Postfix's dane-only): without usable TLSA records
   * this host is not good enough; wait for them (RFC 8460 §4.3.2.1 has a
   * result type for it). */
  if (dd != NULL && dd->dane == POLICY_DEST_REQUIRED &&
      cr->req.result.outcome == POLICY_OK && !cr->req.dane_usable) {
    policy_result_set(&cr->req.result, POLICY_TEMPFAIL, "destination", "4.7.5",
                      "destination %s requires DANE; %s has no usable TLSA "
                      "records",
                      dd->pattern, cr->host_name);
    cr->req.result.tlsrpt = POLICY_TLSRPT_DANE_REQUIRED;
  }
  cr->cb(cr->arg, cr, &cr->req);
}

static void conn_module_done(void *arg, const struct policy_result *r) {
  struct policy_conn_run *cr = arg;
  if (cr->in_call) {
    /* Called from inside prepare_conn: conn_step goes on after it. */
    cr->sync_done = true;
    cr->sync_result = *r;
    return;
  }
  if (r->outcome != POLICY_OK) {
    cr->req.result = *r;
    cr->cb(cr->arg, cr, &cr->req);
    return;
  }
  cr->next++;
  conn_step(cr);
}

static void conn_step(struct policy_conn_run *cr) {
  struct policy_chain *c = cr->drun->chain;
  while (cr->next < c->n) {
    struct policy_module *m = &c->mods[cr->next];
    if (m->ops->prepare_conn == NULL) {
      cr->next++;
      continue;
    }
    cr->in_call = true;
    cr->sync_done = false;
    int rc = m->ops->prepare_conn(m->state, &cr->env, cr->drun->pd[cr->next],
                                  &cr->host, &cr->pc[cr->next], &cr->req,
                                  conn_module_done, cr);
    cr->in_call = false;
    if (rc == 0 && cr->sync_done) {
      if (cr->sync_result.outcome != POLICY_OK) {
        cr->req.result = cr->sync_result;
        break;
      }
      cr->next++;
      continue;
    }
    if (rc == 0)
      return;
    policy_result_set(&cr->req.result, POLICY_TEMPFAIL, m->ops->name, "4.7.0",
                      "policy %s could not start: %s", m->ops->name,
                      postern_strerror(rc));
    break;
  }
  net_defer_arm(&cr->soon, conn_fire);
}

int policy_chain_prepare_conn(struct policy_domain_run *run,
                              const struct policy_env *env,
                              const struct policy_host *h, policy_conn_cb cb,
                              void *arg) {
  struct policy_conn_run *cr = calloc(1, sizeof *cr);
  if (cr == NULL)
    return POSTERN_ENOMEM;
  size_t n = run->chain->n;
  cr->pc = calloc(n ? n : 1, sizeof *cr->pc);
  if (cr->pc == NULL) {
    free(cr);
    return POSTERN_ENOMEM;
  }
  cr->drun = run;
  cr->env = *env;
  cr->env.dest = run->env.dest; /* the run's copy */
  /* Copy the host description: the caller's may not outlive the lookup. */
  cr->mx = *h->mx;
  snprintf(cr->host_name, sizeof cr->host_name, "%s", h->mx->host);
  snprintf(cr->domain, sizeof cr->domain, "%s", h->mx->domain);
  snprintf(cr->canonical, sizeof cr->canonical, "%s",
           h->canonical ? h->canonical : h->mx->host);
  cr->mx.host = cr->host_name;
  cr->mx.domain = cr->domain;
  cr->host = *h;
  cr->host.mx = &cr->mx;
  cr->host.canonical = cr->canonical;
  cr->cb = cb;
  cr->arg = arg;
  result_ok(&cr->req.result);
  net_defer_init(env->loop, &cr->soon, cr);
  conn_step(cr);
  return 0;
}

static void conn_closed(struct net_defer *d) {
  struct policy_conn_run *cr = d->data;
  free(cr->pc);
  free(cr);
}

void policy_conn_run_free(struct policy_conn_run *cr) {
  if (cr == NULL)
    return;
  struct policy_chain *c = cr->drun->chain;
  for (size_t i = 0; i < c->n; i++)
    if (cr->pc[i] && c->mods[i].ops->free_conn)
      c->mods[i].ops->free_conn(c->mods[i].state, cr->pc[i]);
  net_defer_close(&cr->soon, conn_closed);
}

void policy_chain_check_conn(struct policy_conn_run *cr,
                             const struct policy_conn *conn,
                             struct policy_conn_verdict *v) {
  struct policy_chain *c = cr->drun->chain;
  memset(v, 0, sizeof *v);
  v->level = conn->reached;
  v->mx_level = conn->mx_level;
  /* RFC 8461 §2, RFC 7672 §3: where usable DANE TLSA records exist, they
   * alone authenticate the server; a PKIX verdict counts for nothing, so
   * the session is only `encrypted` until the dane module vouches for it,
   * and a module that wants `authenticated` (mtasts) is satisfied by DANE. */
  if (conn->dane_usable && v->level > POLICY_TLS_LEVEL_ENCRYPTED)
    v->level = POLICY_TLS_LEVEL_ENCRYPTED;
  v->required = POLICY_TLS_LEVEL_NONE;
  result_ok(&v->result);
  for (size_t i = 0; i < c->n; i++) {
    struct policy_module *m = &c->mods[i];
    if (m->ops->check_conn == NULL)
      continue;
    m->ops->check_conn(m->state, cr->drun->pd[i], cr->pc[i], conn, v);
    if (v->result.outcome != POLICY_OK)
      return;
  }
  const struct policy_dest *dd = cr->env.dest;
  if (dd != NULL) {
    if (dd->has_min_tls && v->required < dd->min_tls)
      v->required = dd->min_tls;
    if (v->required < dd->floor_tls)
      v->required = dd->floor_tls;
    if (v->level < POLICY_TLS_LEVEL_AUTHENTICATED && !conn->dane_usable &&
        policy__dest_vouches(dd, conn))
      v->level = POLICY_TLS_LEVEL_AUTHENTICATED;
  }
  if (v->level < v->required) {
    policy_result_set(&v->result, POLICY_TEMPFAIL, "chain", "4.7.5",
                      "TLS level %s reached with %s, policy requires %s%s%s",
                      policy_tls_level_name(v->level), conn->host,
                      policy_tls_level_name(v->required),
                      conn->verify_error && conn->verify_error[0] ? ": " : "",
                      conn->verify_error ? conn->verify_error : "");
    v->result.tlsrpt = policy__tlsrpt_of_conn(conn);
  }
}

int policy__tlsrpt_of_conn(const struct policy_conn *c) {
  /* RFC 8460 §4.3.1: why the session fell short. */
  if (c->reached == POLICY_TLS_LEVEL_NONE)
    return POLICY_TLSRPT_STARTTLS_NOT_SUPPORTED;
  if (c->cert_expired)
    return POLICY_TLSRPT_CERTIFICATE_EXPIRED;
  if (c->pkix_ok && !c->name_ok)
    return POLICY_TLSRPT_CERTIFICATE_HOST_MISMATCH;
  if (!c->pkix_ok)
    return POLICY_TLSRPT_CERTIFICATE_NOT_TRUSTED;
  return POLICY_TLSRPT_VALIDATION_FAILURE;
}

void policy_chain_tlsrpt_policy(const struct policy_domain_run *run,
                                const struct policy_conn_run *crun,
                                struct policy_tlsrpt_applied *out) {
  memset(out, 0, sizeof *out);
  out->type = POLICY_TLSRPT_POLICY_NO_POLICY_FOUND;
  if (run == NULL)
    return;
  const struct policy_chain *c = run->chain;
  struct policy_tlsrpt_applied one;
  for (size_t i = 0; i < c->n; i++) {
    const struct policy_module *m = &c->mods[i];
    if (m->ops->tlsrpt_policy == NULL)
      continue;
    memset(&one, 0, sizeof one);
    one.type = POLICY_TLSRPT_POLICY_NO_POLICY_FOUND;
    m->ops->tlsrpt_policy(m->state, run->pd[i],
                          crun != NULL ? crun->pc[i] : NULL, &one);
    /* DANE outranks MTA-STS (RFC 8461 §2), which outranks nothing. */
    bool better = (one.type == POLICY_TLSRPT_POLICY_TLSA &&
                   out->type != POLICY_TLSRPT_POLICY_TLSA) ||
                  (one.type == POLICY_TLSRPT_POLICY_STS &&
                   out->type == POLICY_TLSRPT_POLICY_NO_POLICY_FOUND);
    if (better)
      *out = one;
    else if (out->type == POLICY_TLSRPT_POLICY_NO_POLICY_FOUND &&
             out->failure == 0)
      out->failure = one.failure;
  }
}

uint64_t policy_chain_maintain(struct policy_chain *c,
                               const struct policy_env *env) {
  uint64_t next = 0;
  for (size_t i = 0; i < c->n; i++) {
    struct policy_module *m = &c->mods[i];
    if (m->ops->maintain == NULL)
      continue;
    uint64_t ms = m->ops->maintain(m->state, env);
    if (ms && (next == 0 || ms < next))
      next = ms;
  }
  return next ? next : POLICY_MAINTAIN_DEFAULT_MS;
}
