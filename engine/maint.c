/*
 * maint.c - policy maintenance: MTA-STS refreshes and cache upkeep
 * (policy_chain_maintain), on worker 0's loop, at the interval the chain
 * asks for.
 *
 * Refresh fetches get a resolver and HTTPS client of their own, so they
 * never take a delivery's fetch slot. Ownership: the timer, resolver and
 * client are this file's (one set per process); engine__maint_stop closes
 * them on worker 0's loop when it stops, which cancels refreshes in flight.
 */
#include "engine/internal.h"

#include "engine/fleet.h"
#include "engine/metrics.h"
#include "engine/tlsrpt_send.h"
#include "net/dns.h"
#include "net/https.h"
#include "policy/chain.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

/* The first pass soon after startup: expired policies go, gauges appear. */
#define MAINT_FIRST_MS 1000

/* On worker 0's loop only. Refresh fetches get a resolver and HTTPS client
 * of their own, so they never take a delivery's fetch slot. */
static struct {
  struct relay *r;
  uv_timer_t timer;
  struct dns_resolver *dns;
  struct https_client *https;
  bool on;
} maint;

static void maint_run(uv_timer_t *t) {
  struct relay *r = maint.r;
  struct policy_env env = {.loop = t->loop,
                           .dns = maint.dns,
                           .https = maint.https,
                           .now_ms = relay_now_ms(r),
                           .count = metrics_policy,
                           .gauge = metrics_policy_gauge,
                           /* refreshes share what they fetch */
                           .store = engine__fleet_store(r)};
  uint64_t next = policy_chain_maintain(r->chain, &env);
  uv_timer_start(&maint.timer, maint_run, next, 0);
}

void engine__maint_start(struct relay *r, struct worker *w) {
  struct dns_opts o;
  relay_dns_opts(r->cfg, &o);
  int rc = dns_resolver_new(&w->loop, &o, &maint.dns);
  if (rc != 0) {
    postern_log(POSTERN_LOG_ERROR, "policy_maintenance_unavailable", "error",
                postern_strerror(rc), NULL);
    return;
  }
  if (https_client_new(&w->loop, &maint.https) != 0)
    maint.https = NULL;
  maint.r = r;
  uv_timer_init(&w->loop, &maint.timer);
  uv_timer_start(&maint.timer, maint_run, MAINT_FIRST_MS, 0);
  /* TLS reports go out from here too: same loop, resolver and client. */
  engine__tlsrpt_send_start(r, &w->loop, maint.dns, maint.https);
  maint.on = true;
}

/* Closing the resolver and client cancels the refreshes in flight. */
void engine__maint_stop(void) {
  if (!maint.on)
    return;
  maint.on = false;
  engine__tlsrpt_send_stop();
  uv_timer_stop(&maint.timer);
  uv_close((uv_handle_t *)&maint.timer, NULL);
  dns_resolver_close(maint.dns, NULL, NULL);
  if (maint.https)
    https_client_close(maint.https, NULL, NULL);
}
