/*
 * local.c - the `local` policy module: the operator's minimum MX and TLS
 * levels (`policy { local { min_tls_level ...; min_mx_level ... } }`).
 * Both default to none, which is opportunistic TLS (RFC 7435): STARTTLS is
 * always tried, and plaintext is accepted when nothing requires more.
 */
#include "policy/chain.h"

#include <stdlib.h>

struct local_state {
  enum policy_tls_level min_tls;
  enum policy_mx_level min_mx;
};

static void local_free(void *state) {
  free(state);
}

static void local_check_mx(void *state, void *pd, const struct policy_mx *mx,
                           struct policy_mx_verdict *v) {
  struct local_state *s = state;
  if (s->min_mx > v->required)
    v->required = s->min_mx;
}

static void local_check_conn(void *state, void *pd, void *pc,
                             const struct policy_conn *c,
                             struct policy_conn_verdict *v) {
  struct local_state *s = state;
  if (s->min_tls > v->required)
    v->required = s->min_tls;
}

static const struct policy_module_ops local_ops = {
    .name = "local",
    .free = local_free,
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
