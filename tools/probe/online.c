/*
 * online.c - `postern-probe [-c CONFIG] [--json] DOMAIN`: runs the relay's
 * own MX loop (engine/probe.h) against a domain with the relay's
 * configuration, resolver settings and policy chain, connects to every MX
 * candidate up to STARTTLS and the policy verdict, sends QUIT instead of
 * mail, and prints what the relay would do.
 *
 * Exit status: 0 when mail would be delivered, 1 when it would be deferred
 * or bounced, 2 on usage or configuration errors.
 */
#include "tools/probe/online.h"

#include "engine/config.h"
#include "engine/probe.h"
#include "engine/relay.h"
#include "net/dns.h"
#include "net/https.h"
#include "net/tls.h"
#include "policy/chain.h"
#include "base/postern_err.h"
#include "base/postern_json.h"
#include "base/postern_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct run {
  bool json;
  int exit_code;
};

/* Text from the network (replies, names) may hold anything: escape it. */
static void put_text(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p >= 0x20 && *p < 0x7f)
      putchar(*p);
    else
      printf("\\x%02x", *p);
  }
}

/* The result as one JSON object (jansson, base/postern_json.h). Returns 0,
 * or -1 when out of memory (said on stderr). */
static int print_json(const struct probe_result *res) {
  json_t *mx = json_array();
  int bad = mx == NULL;
  for (size_t i = 0; !bad && i < res->nmx; i++) {
    const struct probe_mx *m = &res->mx[i];
    json_t *addrs = json_array();
    for (size_t k = 0; addrs && k < m->naddrs; k++)
      if (json_array_append_new(addrs, postern_json_cstr(m->addrs[k])) != 0) {
        json_decref(addrs);
        addrs = NULL;
      }
    json_t *o = json_pack(
        "{s:o, s:I, s:b, s:s, s:o*, s:b, s:b, s:b, s:b, s:o, s:s, s:o, s:b, "
        "s:o, s:o}",
        "host", postern_json_cstr(m->host), "pref", (json_int_t)m->pref,
        "implicit", m->implicit, "mx_level", policy_mx_level_name(m->mx_level),
        "addresses", addrs, "addresses_authenticated", m->addrs_authenticated,
        "tls_required", m->tls_required, "dane_usable", m->dane_usable,
        "connected", m->connected, "address", postern_json_cstr(m->tried_addr),
        "tls_level",
        m->connected ? policy_tls_level_name(m->tls_level) : "none", "tls",
        postern_json_cstr(m->tls_info), "acceptable", m->acceptable, "status",
        postern_json_cstr(m->acceptable ? "" : m->status), "reason",
        postern_json_cstr(m->acceptable ? "" : m->reason));
    bad |= addrs == NULL || o == NULL || json_array_append_new(mx, o) != 0;
  }
  json_t *top = NULL;
  if (!bad)
    top = json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:s, s:o, s:o}", "domain",
        postern_json_cstr(res->domain), "route",
        res->routed ? postern_json_cstr(res->route) : json_null(),
        "destination",
        res->destination[0]
            ? json_pack("{s:o, s:o}", "pattern",
                        postern_json_cstr(res->destination), "sets",
                        postern_json_cstr(res->destination_set))
            : json_null(),
        "policy", postern_json_cstr(res->policy), "mx", mx, "verdict",
        res->deliverable ? "deliver" : (res->temporary ? "defer" : "bounce"),
        "status", postern_json_cstr(res->status), "reason",
        postern_json_cstr(res->reason));
  else
    json_decref(mx);
  if (top == NULL || postern_json_print(top, stdout, 1) != 0) {
    fputs("postern-probe: out of memory building the JSON result\n", stderr);
    json_decref(top);
    return -1;
  }
  json_decref(top);
  return 0;
}

static void print_text(const struct probe_result *res) {
  printf("domain ");
  put_text(res->domain);
  if (res->routed) {
    printf(" (static route ");
    put_text(res->route);
    putchar(')');
  }
  putchar('\n');
  if (res->destination[0]) {
    printf("destination block ");
    put_text(res->destination);
    printf(" applies: ");
    put_text(res->destination_set);
    putchar('\n');
  }
  if (res->policy[0]) {
    printf("policy: ");
    put_text(res->policy);
    putchar('\n');
  }
  for (size_t i = 0; i < res->nmx; i++) {
    const struct probe_mx *m = &res->mx[i];
    printf("MX %u ", m->pref);
    put_text(m->host);
    printf("%s: mx_level=%s\n", m->implicit ? " (implicit)" : "",
           policy_mx_level_name(m->mx_level));
    if (m->naddrs) {
      printf("  addresses:");
      for (size_t k = 0; k < m->naddrs; k++)
        printf(" %s", m->addrs[k]);
      printf(" (%s)\n", m->addrs_authenticated ? "DNSSEC-authenticated"
                                               : "not authenticated");
    }
    if (m->conn_prepared)
      printf("  DANE: %s\n", m->dane_usable ? "usable TLSA records"
                             : m->tls_required
                                 ? "TLSA records, none usable: TLS required"
                                 : "no TLSA records in use");
    if (m->connected) {
      printf("  connected to %s: tls_level=%s ", m->tried_addr,
             policy_tls_level_name(m->tls_level));
      put_text(m->tls_info);
      putchar('\n');
    }
    if (m->acceptable) {
      printf("  verdict: acceptable\n");
    } else {
      printf("  verdict: not acceptable (%s, %s): ",
             m->temporary ? "temporary" : "permanent", m->status);
      put_text(m->reason);
      putchar('\n');
    }
  }
  if (res->deliverable)
    printf("verdict: would deliver to %s\n", res->mx[res->deliver_to].host);
  else {
    printf("verdict: would %s (%s): ", res->temporary ? "defer" : "bounce",
           res->status);
    put_text(res->reason);
    putchar('\n');
  }
}

static void on_probe(void *arg, const struct probe_result *res) {
  struct run *run = arg;
  run->exit_code = res->deliverable ? 0 : 1;
  if (!run->json)
    print_text(res);
  else if (print_json(res) != 0)
    run->exit_code = 2;
}

int probe_online(const char *config_path, const char *domain, bool json,
                 bool verbose) {
  struct postern_config *cfg;
  struct config_error err;
  if (config_load(config_path, &cfg, &err) != 0) {
    char msg[2048];
    config_error_format(&err, msg, sizeof msg);
    fprintf(stderr, "postern-probe: %s\n", msg);
    return 2;
  }
  postern_log_configure(verbose ? POSTERN_LOG_DEBUG : POSTERN_LOG_ERROR,
                        POSTERN_LOG_LOGFMT, NULL);
  int ex = 2;
  struct tls_ctx *client_tls = NULL;
  struct policy_chain *chain = NULL;
  struct dns_resolver *dns = NULL;
  char terr[256] = "";
  if (https_global_init() != 0 || relay_chain_build(cfg, &chain) != 0) {
    fprintf(stderr, "postern-probe: cannot build the policy chain\n");
    goto out;
  }
  struct tls_ctx_opts to = {
      .min_version = cfg->tls.min_version == CONFIG_TLS_1_3 ? 0x0304 : 0};
  if (tls_ctx_new_client(&client_tls, cfg->tls.ca_file, &to, terr,
                         sizeof terr) != 0) {
    fprintf(stderr, "postern-probe: tls ca_file %s: %s\n", cfg->tls.ca_file,
            terr);
    goto out;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct dns_opts o;
  relay_dns_opts(cfg, &o);
  int rc = dns_resolver_new(&loop, &o, &dns);
  if (rc != 0) {
    fprintf(stderr, "postern-probe: resolver: %s\n", postern_strerror(rc));
    uv_loop_close(&loop);
    goto out;
  }
  struct run run = {.json = json, .exit_code = 2};
  struct probe_setup ps = {.cfg = cfg,
                           .chain = chain,
                           .client_tls = client_tls,
                           .loop = &loop,
                           .dns = dns};
  rc = probe_start(&ps, domain, on_probe, &run);
  if (rc == 0) {
    uv_run(&loop, UV_RUN_DEFAULT);
    ex = run.exit_code;
  } else {
    fprintf(stderr, "postern-probe: %s\n", postern_strerror(rc));
  }
  dns_resolver_close(dns, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
out:
  tls_ctx_free(client_tls);
  policy_chain_free(chain);
  config_free(cfg);
  https_global_cleanup();
  return ex;
}
