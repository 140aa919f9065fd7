/*
 * dnssec.c - the `dnssec` policy module: MX level `dnssec` for a candidate
 * whose MX host name is vouched for by DNSSEC.
 *
 * The engine reports in policy_mx.mx_authenticated whether the MX answer
 * carried the AD bit from a resolver net/dns trusts (loopback or
 * `dns { trust_ad yes }`); this module only turns that fact into a level.
 * It keeps no state per domain or connection and never fails: an
 * unauthenticated MX simply stays at the level other modules give it, and
 * the `local` module's min_mx_level decides whether that is enough.
 *
 * Cases (RFC 7672 §2.2.1 and §2.2.2):
 *  - MX records: `dnssec` when the MX RRset (and any CNAME leading to it)
 *    validated.
 *  - Implicit MX (no MX records, RFC 5321 §5.1): `dnssec` when the denial
 *    of the MX RRset validated (authenticated NODATA). The domain itself is
 *    then provably its own mail host, so its name is as authenticated as an
 *    MX exchange from a signed RRset; RFC 7672 §2.2.2 treats it as a non-MX
 *    destination whose TLSA base domain is the domain.
 *  - Routed destinations: a route whose target is looked up by MX counts
 *    like any MX lookup of that target. A route to a literal host (`[host]`
 *    or an address) involves no MX lookup: the configuration, not DNSSEC,
 *    named the host, so it stays at `none` (the engine passes
 *    mx_authenticated false). Such a host may still use DANE (the `dane`
 *    module, RFC 7672 §2.2.2 "non-MX destinations").
 */
#include "policy/chain.h"

#include <stdlib.h>

static void dnssec_check_mx(void *state, void *pd, const struct policy_mx *mx,
                            struct policy_mx_verdict *v) {
  if (mx->mx_authenticated && v->level < POLICY_MX_LEVEL_DNSSEC)
    v->level = POLICY_MX_LEVEL_DNSSEC;
}

static const struct policy_module_ops dnssec_ops = {
    .name = "dnssec",
    .check_mx = dnssec_check_mx,
};

void policy_dnssec_new(struct policy_module *out) {
  out->ops = &dnssec_ops;
  out->state = NULL;
}
