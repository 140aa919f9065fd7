/*
 * engine/fleet.h - the shared-data half of fleet mode (docs/fleet.md):
 * MTA-STS policies shared through Redis (fleet_store.c, the policy layer's
 * struct policy_store) and TLS report counts summed over the fleet
 * (tlsrpt_fleet.c). Connection leases are lease.c. Engine-internal.
 */
#ifndef POSTERN_ENGINE_FLEET_H
#define POSTERN_ENGINE_FLEET_H

#include <stdbool.h>

#include <uv.h>

#include "engine/internal.h"

struct policy_store;
struct redis_client;

/* The Redis client of the worker whose loop is `loop`, when it is up;
 * NULL without a cluster block, while Redis is down, or on a loop that is
 * not a worker's (postern-probe). Call from that loop's thread. */
struct redis_client *engine__fleet_redis(struct relay *r, uv_loop_t *loop);

/* Makes the MTA-STS store when the configuration has a cluster block:
 * once, before the workers start (relay.c). */
void engine__fleet_init(struct relay *r);

/* The MTA-STS store (policy_env.store) backed by the loop's Redis client;
 * NULL without a cluster block or engine__fleet_init (postern-probe).
 * Lives as long as the process. */
const struct policy_store *engine__fleet_store(struct relay *r);

#endif
