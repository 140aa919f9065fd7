/*
 * relay.h - the relay as the programs that run it see it: `postern` runs
 * it, and `postern-probe` builds the same policy chain and resolver options
 * from a configuration. Everything else about the running relay is the
 * engine's own (internal.h, never included outside engine/).
 */
#ifndef POSTERN_ENGINE_RELAY_H
#define POSTERN_ENGINE_RELAY_H

#include "engine/config.h"

struct policy_chain;
struct dns_opts;

/*
 * Runs the relay with `cfg` (owned by the relay from now on) until SIGTERM
 * or SIGINT. Returns the process exit status: 0 after a clean shutdown, 1
 * when startup failed (the reason was logged).
 */
int relay_run(struct postern_config *cfg, const char *config_path);

/* Builds the policy chain the configuration describes (owned by the
 * caller: policy_chain_free). Errors: POSTERN_EUNSUPPORTED (a module this
 * build lacks, logged), POSTERN_ENOMEM, or the module's own error. */
int relay_chain_build(const struct postern_config *cfg,
                      struct policy_chain **out);

/* The resolver options `dns { }` describes. */
void relay_dns_opts(const struct postern_config *cfg, struct dns_opts *o);

#endif
