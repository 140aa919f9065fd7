/*
 * local.c - the `local` policy module: the operator's minimum MX and TLS
 * levels (`policy { local { min_tls_level ...; min_mx_level ... } }`).
 * Both default to none, which is opportunistic TLS (RFC 7435): STARTTLS is
 * always tried, and plaintext is accepted when nothing requires more.
 *
 * A `destination` block's minimums replace these for its destination
 * (policy_env.dest, kept as the per-domain state: it points into the
 * domain run, which outlives every check); a block that asks for less is
 * the operator's explicit say, logged on each check it changes.
 */
#include "policy/chain.h"

#include "base/postern_log.h"

#include <stdlib.h>

struct local_state {
  enum policy_tls_level min_tls;
  enum policy_mx_level min_mx;
};

static void local_free(void *state) {
  free(state);
}

static int local_prepare_domain(void *state, const struct policy_env *env,
                                const char *domain, void **pd,
                                policy_done_cb done, void *arg) {
  (void)state, (void)domain;
  *pd = (void *)env->dest;
  static const struct policy_result ok = {.outcome = POLICY_OK};
  done(arg, &ok);
  return 0;
}

static void local_check_mx(void *state, void *pd, const struct policy_mx *mx,
                           struct policy_mx_verdict *v) {
  struct local_state *s = state;
  const struct policy_dest *d = pd;
  enum policy_mx_level min = s->min_mx;
  if (d != NULL && d->has_min_mx) {
    if (d->min_mx < min)
      postern_log(POSTERN_LOG_INFO, "destination_override", "destination",
                  d->pattern, "mx", mx->host, "override", "min_mx_level",
                  "level", policy_mx_level_name(d->min_mx), "instead_of",
                  policy_mx_level_name(min), NULL);
    min = d->min_mx;
  }
  if (min > v->required)
    v->required = min;
}

static void local_check_conn(void *state, void *pd, void *pc,
                             const struct policy_conn *c,
                             struct policy_conn_verdict *v) {
  struct local_state *s = state;
  const struct policy_dest *d = pd;
  enum policy_tls_level min = s->min_tls;
  if (d != NULL && d->has_min_tls) {
    if (d->min_tls < min && !c->hypothetical)
      postern_log(POSTERN_LOG_INFO, "destination_override", "destination",
                  d->pattern, "mx", c->host, "override", "min_tls_level",
                  "level", policy_tls_level_name(d->min_tls), "instead_of",
                  policy_tls_level_name(min), NULL);
    min = d->min_tls;
  }
  if (min > v->required)
    v->required = min;
}

static const struct policy_module_ops local_ops = {
    .name = "local",
    .free = local_free,
    .prepare_domain = local_prepare_domain,
    .check_mx = local_check_mx,
    .check_conn = local_check_conn,
};

void policy_local_new(enum policy_tls_level min_tls,
                      enum policy_mx_level min_mx, struct policy_module *out) {
  struct local_state *s = malloc(sizeof *s);
  /* Without memory the process cannot run at all; fail at startup. */
  if (s == NULL)
    abort();
  s->min_tls = min_tls;
  s->min_mx = min_mx;
  out->ops = &local_ops;
  out->state = s;
}
