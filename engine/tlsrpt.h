/*
 * engine/tlsrpt.h - TLS reporting (RFC 8460) in the relay: counting each
 * TLS session attempt (tlsrpt.c). Engine-internal.
 */
#ifndef POSTERN_ENGINE_TLSRPT_H
#define POSTERN_ENGINE_TLSRPT_H

#include <stdint.h>

#include "engine/internal.h"
#include "policy/chain.h"

/* One TLS session attempt as TLS reports count it. Strings are borrowed
 * for the call; NULL or "" when unknown. */
struct tlsrpt_event {
  const char *policy_domain; /* the recipient domain, or a route's host */
  const struct policy_tlsrpt_applied *applied;
  int result;               /* enum policy_tlsrpt_result; 0: success */
  const char *mx_host;      /* receiving-mx-hostname */
  const char *sending_ip;   /* sending-mta-ip */
  const char *receiving_ip; /* receiving-ip */
};

/* Counts the attempt when the configuration has a tlsrpt block: queues
 * the counter updates (engine/tlsrpt.c has the layout) for the queue's
 * writer. Never fails the delivery: a count that cannot be queued is
 * logged at debug level and lost. Any thread. */
void engine__tlsrpt_count(struct relay *r, const struct tlsrpt_event *e);

#endif
