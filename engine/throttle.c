/*
 * throttle.c - the message rate of a destination (delivery { per_domain_rate }
 * or a destination block's `rate`, messages per second): whether one more
 * message may start now.
 *
 * Alone, or for a "local:" rate, each destination keeps its own clock: the
 * earliest moment the next message may start, one interval (1/rate) after
 * the previous one. In fleet mode (cluster { }) the rate is the fleet's:
 * each message takes a cell from a GCRA throttle in Redis (net/redis.h
 * redis_gcra, key `rate:<dest key>`), so all nodes together stay within it.
 * One request is in flight per destination; its grant is parked on the
 * destination (d->rate_permit) and the destination kicked, which takes it
 * for the next message. A denial arms the destination's timer for the time
 * Redis says. While Redis is down, or after a request failed, the local
 * clock runs at the rate times cluster { local_share }, as connections do
 * (lease.c): nothing waits on Redis.
 *
 * Ownership: the destination is kept alive while a request is in flight
 * (d->rate_acq, see engine__dest_maybe_free). One thread: the worker's.
 */
#include "engine/dest.h"

#include "base/postern_err.h"
#include "base/postern_log.h"
#include "net/redis.h"

#include <stdio.h>

/* After a failed request, the local clock rules for this long. */
#define THROTTLE_FALLBACK_MS 250

/* This node's share of a fleet rate (Redis down or failing). A share of 0
 * would stop the destination: keep a trickle. */
static double local_rate(const struct dest *d, uint32_t rate) {
  double local = (double)rate * d->dw->env.r->cfg->cluster.local_share;
  return local > 0.001 ? local : 0.001;
}

/* The local clock at `rate` messages per second (may be fractional). The
 * loop's clock counts milliseconds: every message whose turn falls within
 * the current millisecond may go now, or a rate above 1,000 a second
 * would be held to one message per tick (and per timer wake-up). */
static bool rate_take_local(struct dest *d, double rate) {
  uint64_t now = relay_now_ms(d->dw->env.r) * 1000;
  uint64_t step = (uint64_t)(1e6 / rate);
  if (step == 0)
    step = 1;
  if (d->rate_next_us < now + 1000) {
    /* A destination idle for a while starts afresh: no burst of saved-up
     * intervals. */
    d->rate_next_us = (d->rate_next_us > now ? d->rate_next_us : now) + step;
    return true;
  }
  engine__dest_timer_arm(d, (d->rate_next_us - now) / 1000);
  return false;
}

static void rate_answered(struct redis_client *c,
                          const struct redis_gcra_result *r, void *arg) {
  (void)c;
  struct dest *d = arg;
  d->rate_acq = false;
  if (d->freeing) {
    engine__dest_maybe_free(d);
    return;
  }
  if (r->status == 0 && r->allowed) {
    d->rate_permit = true;
    engine__dest_kick(d);
  } else if (r->status == 0) {
    engine__dest_timer_arm(d, (uint64_t)(r->wait_ms > 0 ? r->wait_ms : 1));
  } else {
    if (r->status != POSTERN_ECLOSED)
      postern_log(POSTERN_LOG_DEBUG, "cluster_rate_error", "dest", d->key,
                  "error", postern_strerror(r->status), NULL);
    d->rate_fallback_until = relay_now_ms(d->dw->env.r) + THROTTLE_FALLBACK_MS;
    engine__dest_kick(d);
  }
  engine__dest_maybe_free(d);
}

bool engine__dest_rate_take(struct dest *d, uint32_t rate) {
  struct dwork *dw = d->dw;
  if (dw->redis == NULL || d->lim_rate_local)
    return rate_take_local(d, rate);
  if (d->rate_permit) {
    d->rate_permit = false;
    return true;
  }
  if (!dw->redis_up || relay_now_ms(dw->env.r) < d->rate_fallback_until)
    return rate_take_local(d, local_rate(d, rate));
  if (d->rate_acq)
    return false;
  /* Burst 1: the fleet sends at most one message per interval, as a
   * single node does. */
  if (redis_gcra(dw->redis, d->gcra_key, (double)rate, 1, rate_answered, d) !=
      0) {
    d->rate_fallback_until = relay_now_ms(dw->env.r) + THROTTLE_FALLBACK_MS;
    return rate_take_local(d, local_rate(d, rate));
  }
  d->rate_acq = true;
  return false;
}
