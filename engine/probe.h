/*
 * probe.h - runs the relay's MX loop against a domain without sending
 * mail, for `postern-probe` (like Postfix's posttls-finger): every MX
 * candidate is ranked, resolved, connected to (EHLO, STARTTLS) and judged
 * by the policy chain, and the session is closed with QUIT before any MAIL
 * command. The engine's public entry point for tools (with relay.h).
 */
#ifndef POSTERN_ENGINE_PROBE_H
#define POSTERN_ENGINE_PROBE_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "policy/chain.h"

struct postern_config;
struct dns_resolver;
struct tls_ctx;

#define PROBE_MAX_MX 32
#define PROBE_MAX_ADDRS 16

/* What happened with one MX candidate. */
struct probe_mx {
  char host[256];
  unsigned pref;
  bool implicit; /* no MX records: the domain itself */
  bool checked;  /* check_mx ran */
  /* As check_mx ranked it; once connected, the level the connection had
   * (policy_conn_verdict.mx_level: DANE may raise it). */
  enum policy_mx_level mx_level;
  size_t naddrs;
  char addrs[PROBE_MAX_ADDRS][64];
  bool addrs_authenticated;
  bool conn_prepared; /* prepare_conn ran (TLSA lookup) */
  bool tls_required;  /* a policy made TLS mandatory (DANE) */
  bool dane_usable;   /* usable DANE TLSA records govern the certificate */
  bool connected;     /* an SMTP session reached EHLO */
  char tried_addr[64];
  enum policy_tls_level tls_level; /* effective, after check_conn */
  char tls_info[200];              /* "TLSv1.3 cipher", verify error */
  bool acceptable;                 /* mail would be delivered here */
  bool temporary;                  /* when not acceptable: retry later? */
  char status[16];
  char reason[512];
};

struct probe_result {
  char domain[256];
  bool routed;
  char route[300];
  char policy[1024]; /* what the policy modules found for the domain */
  /* The destination block that applies ("" when none) and what it sets,
   * as one line ("min_tls_level authenticated, dane required"). */
  char destination[256];
  char destination_set[512];
  size_t nmx;
  struct probe_mx mx[PROBE_MAX_MX];
  /* The verdict the relay would reach: deliver to the first acceptable
   * candidate, else defer (a temporary failure along the way) or bounce. */
  bool deliverable;
  size_t deliver_to; /* index into mx when deliverable */
  bool temporary;
  char status[16];
  char reason[512];
};

typedef void (*probe_cb)(void *arg, const struct probe_result *res);

/* What a probe runs with, as the relay would: borrowed, and must stay
 * valid until the loop has run out of work (not only until the callback:
 * sessions close after it). */
struct probe_setup {
  struct postern_config *cfg; /* routes and delivery settings; read only */
  struct policy_chain *chain; /* relay_chain_build */
  struct tls_ctx *client_tls; /* tls_ctx_new_client */
  uv_loop_t *loop;
  struct dns_resolver *dns; /* on `loop` */
};

/*
 * Starts probing `domain` on s->loop (no queue is needed). `cb` runs once,
 * later, with the result (borrowed for the call). Returns 0 or
 * POSTERN_ENOMEM (then `cb` never runs).
 */
int probe_start(const struct probe_setup *s, const char *domain, probe_cb cb,
                void *arg);

#endif
