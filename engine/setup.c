/*
 * setup.c - the runtime objects a configuration describes that both the
 * relay and postern-probe build: the policy chain (`policy { }`, in file
 * order) and the resolver options (`dns { }`). See relay.h.
 *
 * Ownership: the chain belongs to the caller (policy_chain_free); the
 * options are copied into the caller's struct.
 */
#include "engine/relay.h"

#include "net/dns.h"
#include "net/https.h"
#include "policy/chain.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

int relay_chain_build(const struct postern_config *cfg,
                      struct policy_chain **out) {
  struct policy_chain *c;
  int rc = policy_chain_new(&c);
  if (rc != 0)
    return rc;
  for (size_t i = 0; i < cfg->policy_count; i++) {
    const struct config_policy_module *pm = &cfg->policy[i];
    struct policy_module m;
    switch (pm->kind) {
    case CONFIG_POLICY_LOCAL:
      policy_local_new(pm->local.min_tls_level, pm->local.min_mx_level, &m);
      break;
    case CONFIG_POLICY_DNSSEC:
      policy_dnssec_new(&m);
      break;
    case CONFIG_POLICY_DANE:
      rc = policy_dane_new(&m);
      if (rc != 0) {
        policy_chain_free(c);
        return rc;
      }
      break;
    case CONFIG_POLICY_MTASTS: {
      /* relay_run initialised libcurl before any thread: this only reads
       * that result. Without HTTPS every fetch would fail and MTA-STS
       * would silently mean "no policy": refuse to start instead. */
      rc = https_global_init();
      struct policy_mtasts_opts mo = {
          .state_dir = cfg->state_dir,
          .ca_file = cfg->tls.ca_file,
          .https_port = pm->mtasts.https_port,
          .fetch_timeout_ms = pm->mtasts.fetch_timeout_ms,
          .max_policy_size = pm->mtasts.max_policy_size,
          .cache_size = pm->mtasts.cache_size,
          .refresh_interval_ms = pm->mtasts.refresh_interval_ms};
      if (rc == 0)
        rc = policy_mtasts_new(&mo, &m);
      if (rc != 0) {
        postern_log(POSTERN_LOG_ERROR, "policy_unavailable", "module", "mtasts",
                    "reason", postern_strerror(rc), NULL);
        policy_chain_free(c);
        return rc;
      }
      break;
    }
    default:
      postern_log(POSTERN_LOG_ERROR, "policy_unavailable", "module",
                  config_policy_kind_name(pm->kind), "reason",
                  "this build does not include the module yet", NULL);
      policy_chain_free(c);
      return POSTERN_EUNSUPPORTED;
    }
    rc = policy_chain_add(c, m);
    if (rc != 0) {
      policy_chain_free(c);
      return rc;
    }
  }
  *out = c;
  return 0;
}

void relay_dns_opts(const struct postern_config *cfg, struct dns_opts *o) {
  dns_opts_init(o);
  const struct config_dns *cd = &cfg->dns;
  for (size_t i = 0; i < cd->server_count && i < DNS_MAX_SERVERS; i++)
    o->servers[o->nservers++] = cd->servers[i].sa;
  o->timeout_ms = (unsigned)cd->timeout_ms;
  o->attempts = cd->attempts;
  o->trust_ad = cd->trust_ad;
  o->cache_size = cd->cache_size;
  o->cache_max_ttl = (uint32_t)(cd->cache_max_ttl_ms / 1000);
  o->max_inflight = cd->max_inflight;
}
