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

const struct config_destination *
engine__destination_block(const struct postern_config *cfg,
                          const char *domain) {
  size_t dl = strlen(domain);
  if (dl > 0 && domain[dl - 1] == '.')
    dl--;
  for (size_t i = 0; i < cfg->destination_count; i++) {
    const struct config_destination *b = &cfg->destinations[i];
    const char *p = b->pattern;
    size_t pl = strlen(p);
    if (strcmp(p, "*") == 0)
      return b;
    if (p[0] == '.') {
      /* ".example.com": every name below example.com, not itself. */
      if (dl > pl && strncasecmp(domain + dl - pl, p, pl) == 0)
        return b;
    } else if (dl == pl && strncasecmp(domain, p, pl) == 0) {
      return b;
    }
  }
  return NULL;
}

bool engine__destination_policy(const struct postern_config *cfg,
                                const char *domain, struct policy_dest *out) {
  const struct config_destination *b = engine__destination_block(cfg, domain);
  memset(out, 0, sizeof *out);
  if (b == NULL)
    return false;
  snprintf(out->pattern, sizeof out->pattern, "%s", b->pattern);
  out->has_min_tls = b->min_tls_level != CONFIG_DEST_TLS_INHERIT;
  out->min_tls = out->has_min_tls
                     ? (enum policy_tls_level)(b->min_tls_level - 1)
                     : POLICY_TLS_LEVEL_NONE;
  out->has_min_mx = b->min_mx_level != CONFIG_DEST_MX_INHERIT;
  out->min_mx = out->has_min_mx ? (enum policy_mx_level)(b->min_mx_level - 1)
                                : POLICY_MX_LEVEL_NONE;
  out->dane = (enum policy_dest_switch)b->dane;
  out->mtasts = (enum policy_dest_switch)b->mtasts;
  memcpy(out->pins, b->pins, sizeof out->pins);
  out->npins = b->npins;
  memcpy(out->names, b->names, sizeof out->names);
  out->nnames = b->nnames;
  return true;
}

void engine__destination_describe(const struct postern_config *cfg,
                                  const char *domain, char *pattern,
                                  size_t pcap, char *set, size_t scap) {
  const struct config_destination *b = engine__destination_block(cfg, domain);
  pattern[0] = set[0] = '\0';
  if (b == NULL)
    return;
  snprintf(pattern, pcap, "%s", b->pattern);
  static const char *const tls[] = {"", "none", "encrypted", "authenticated"};
  static const char *const mx[] = {"", "none", "mtasts", "dnssec"};
  static const char *const sw[] = {"", "on", "off", "required"};
  size_t o = 0;
#define ADD(...)                                                               \
  do {                                                                         \
    if (o < scap)                                                              \
      o += (size_t)snprintf(set + o, scap - o, "%s", o ? ", " : "");           \
    if (o < scap)                                                              \
      o += (size_t)snprintf(set + o, scap - o, __VA_ARGS__);                   \
  } while (0)
  if (b->min_tls_level)
    ADD("min_tls_level %s", tls[b->min_tls_level]);
  if (b->min_mx_level)
    ADD("min_mx_level %s", mx[b->min_mx_level]);
  if (b->dane)
    ADD("dane %s", sw[b->dane]);
  if (b->mtasts)
    ADD("mtasts %s", sw[b->mtasts]);
  if (b->npins)
    ADD("%zu pinned digest%s", b->npins, b->npins == 1 ? "" : "s");
  if (b->nnames)
    ADD("tls_names %s%s", b->names[0], b->nnames > 1 ? " ..." : "");
  if (b->connections.n)
    ADD("connections %s%u", b->connections.local ? "local:" : "",
        b->connections.n);
  if (b->rate.n)
    ADD("rate %s%u", b->rate.local ? "local:" : "", b->rate.n);
  if (b->reuse_limit)
    ADD("reuse_limit %u", b->reuse_limit);
#undef ADD
  if (o == 0)
    snprintf(set, scap, "nothing (inherits everything)");
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
