/*
 * route.c - where a recipient domain's mail goes: the static route that
 * applies (`delivery { route ... }`), the destination key that groups
 * domains sharing a next hop, and the worker that owns each destination.
 *
 * Everything here reads the configuration in force and keeps no state: a
 * reload that changes the routes applies to the next message dispatched.
 * Destinations are spread over workers with postern_hash (keyed per
 * process), so a remote party choosing domain names cannot pile every
 * destination onto one loop.
 */
#include "engine/internal.h"

#include "base/postern_htab.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

bool engine__route_lookup(const struct relay *r, const char *domain,
                          struct route_target *out) {
  const struct config_delivery *dc = &r->cfg->delivery;
  const struct config_route *star = NULL, *exact = NULL;
  for (size_t i = 0; i < dc->route_count && !exact; i++) {
    const struct config_route *rt = &dc->routes[i];
    if (strcmp(rt->domain, "*") == 0) {
      if (!star)
        star = rt;
    } else if (strcasecmp(rt->domain, domain) == 0) {
      exact = rt;
    }
  }
  const struct config_route *rt = exact ? exact : star;
  if (rt == NULL)
    return false;
  snprintf(out->host, sizeof out->host, "%s", rt->host);
  out->port = rt->port;
  out->no_mx = rt->no_mx || rt->is_ip;
  return true;
}

bool engine__dest_key(const struct relay *r, const char *domain,
                      struct route_target *rt, char *key, size_t cap) {
  bool routed = engine__route_lookup(r, domain, rt);
  /* Domains routed to the same place share one destination, so their
   * mail shares connections. */
  if (routed)
    snprintf(key, cap, "[%s]:%u%s", rt->host, rt->port, rt->no_mx ? "" : "+mx");
  else
    snprintf(key, cap, "%s", domain);
  for (char *c = key; *c; c++)
    if (*c >= 'A' && *c <= 'Z')
      *c = (char)(*c - 'A' + 'a');
  return routed;
}

/* The worker owning a destination: every job for `key` goes to it, so
 * its connections and limits live on one loop. */
struct worker *engine__dest_worker(struct relay *r, const char *key) {
  return &r->pool.w[postern_hash(key, strlen(key)) % (uint64_t)r->pool.n];
}
