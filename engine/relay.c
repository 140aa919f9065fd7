/*
 * relay.c - starting, reloading and stopping the relay.
 *
 * Startup order matters: loops are made first (listeners are added to them
 * before they run), listeners are bound, privileges are dropped, then the
 * queue is opened and the scheduler started, and only then do the worker
 * threads run. Shutdown (SIGTERM/SIGINT): stop accepting, let attempts in
 * progress finish for up to shutdown_timeout (waiting jobs are given up:
 * they stay queued), then stop the workers, close the queue (its writer
 * commits what is pending first) and exit 0. SIGHUP loads the file again:
 * a broken file is rejected with its error and the running configuration
 * stays; a good one replaces the log settings, limits, routes and policy
 * chain (listeners, the queue and DNS need a restart, and say so).
 * Policy maintenance (maint.c) runs on worker 0's loop.
 */
#include "engine/internal.h"
#include "engine/dkim.h"

#include "engine/dest.h"
#include "engine/fleet.h"
#include "engine/metrics.h"
#include "net/dns.h"
#include "net/https.h"
#include "net/smtp_auth.h"
#include "net/smtp_server.h"
#include "net/tls.h"
#include "policy/chain.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Configurations and chains replaced by reloads are kept until exit:
 * workers may still be reading them, and reloads are rare. */
struct retired {
  struct retired *next;
  struct postern_config *cfg;
  struct policy_chain *chain;
  /* The reload's tasks to the workers (fleet mode), one per worker. */
  struct worker_task *tasks;
};
static struct retired *retired_list;
/* The listen block each server was started from (in the first
 * configuration, which a reload retires but never frees). */
static const struct config_listen **server_listen;

static uv_async_t main_wake;
static struct metrics_server *metrics_srv;
static struct worker_task *drain_tasks;
static atomic_int servers_closing;
static bool drained;
static bool finishing;

static void apply_log(const struct postern_config *cfg) {
  int rc =
      postern_log_configure(cfg->log.level, cfg->log.format, cfg->log.file);
  if (rc != 0)
    postern_log(POSTERN_LOG_ERROR, "log_open_failed", "file", cfg->log.file,
                "error", postern_strerror(rc), NULL);
}

/* ---- workers ---- */

static void worker_started(struct worker *w) {
  struct relay *r = w->ud;
  int rc = engine__deliver_worker_init(r, w);
  if (rc != 0) {
    postern_log(POSTERN_LOG_ERROR, "worker_init_failed", "error",
                postern_strerror(rc), NULL);
    abort(); /* A relay that cannot resolve cannot deliver: fail loudly. */
  }
  if (w->index == 0)
    engine__maint_start(r, w);
}

static void worker_stopping(struct worker *w) {
  if (w->index == 0)
    engine__maint_stop();
  engine__deliver_worker_stop(w);
}

static void worker_exited(struct worker *w) {
  engine__deliver_worker_exit(w);
}

/* ---- shutdown ---- */

static void finish(struct relay *r) {
  if (finishing)
    return;
  finishing = true;
  uv_timer_stop(&r->shutdown_timer);
  worker_pool_stop(&r->pool);
  queue_close(r->q);
  r->q = NULL;
  engine__sched_close(r->sched);
  uv_close((uv_handle_t *)&r->sig_term, NULL);
  uv_close((uv_handle_t *)&r->sig_int, NULL);
  uv_close((uv_handle_t *)&r->sig_hup, NULL);
  uv_close((uv_handle_t *)&r->shutdown_timer, NULL);
  uv_close((uv_handle_t *)&main_wake, NULL);
  metrics_server_close(metrics_srv);
  metrics_srv = NULL;
  postern_log(POSTERN_LOG_INFO, "stopped", NULL);
}

static void check_done(uv_async_t *a) {
  struct relay *r = a->data;
  if (atomic_load(&r->stopping) && drained &&
      atomic_load(&servers_closing) == 0)
    finish(r);
}

static void server_closed(void *ud) {
  /* On a worker thread: hop to the main loop. */
  (void)ud;
  atomic_fetch_sub(&servers_closing, 1);
  uv_async_send(&main_wake);
}

static void on_drained(void *arg) {
  (void)arg;
  drained = true;
  uv_async_send(&main_wake);
}

static void shutdown_forced(uv_timer_t *t) {
  struct relay *r = t->data;
  postern_log(POSTERN_LOG_WARN, "shutdown_timeout", "inflight_abandoned",
              r->sched ? "yes" : "no", NULL);
  finish(r);
}

static void begin_shutdown(struct relay *r, const char *why) {
  if (atomic_exchange(&r->stopping, true))
    return;
  postern_log(POSTERN_LOG_INFO, "stopping", "signal", why, NULL);
  atomic_store(&servers_closing, (int)r->nservers);
  for (size_t i = 0; i < r->nservers; i++)
    smtp_server_close(r->servers[i], server_closed, r);
  /* The drain tasks live until relay_run returns: a worker that is
   * already stopping drops posted tasks without running them. */
  drain_tasks = calloc((size_t)r->pool.n, sizeof *drain_tasks);
  for (int i = 0; drain_tasks && i < r->pool.n; i++) {
    drain_tasks[i].fn = engine__deliver_worker_drain;
    worker_post(&r->pool.w[i], &drain_tasks[i]);
  }
  engine__sched_drain(r->sched, on_drained, r);
  uv_timer_start(&r->shutdown_timer, shutdown_forced,
                 r->cfg->delivery.shutdown_timeout_ms, 0);
}

static void on_signal(uv_signal_t *s, int signum) {
  struct relay *r = s->data;
  if (signum == SIGHUP) {
    struct postern_config *ncfg = NULL;
    struct config_error err;
    int rc = config_load(r->config_path, &ncfg, &err);
    if (rc != 0) {
      char msg[2048];
      config_error_format(&err, msg, sizeof msg);
      postern_log(POSTERN_LOG_ERROR, "reload_rejected", "error", msg, NULL);
      return;
    }
    struct policy_chain *nchain;
    rc = relay_chain_build(ncfg, &nchain);
    if (rc != 0) {
      postern_log(POSTERN_LOG_ERROR, "reload_rejected", "error",
                  postern_strerror(rc), NULL);
      config_free(ncfg);
      return;
    }
    struct retired *old = calloc(1, sizeof *old);
    if (old == NULL) {
      config_free(ncfg);
      policy_chain_free(nchain);
      return;
    }
    /* The AUTH users of each listener go to its running server (the one
     * thing of a listen block a reload changes): the listen blocks are
     * matched by address; the old tables stay with the retired config. */
    for (size_t i = 0; i < r->nservers; i++) {
      const struct config_listen *ol = server_listen[i];
      for (size_t k = 0; k < ncfg->listen_count; k++) {
        const struct config_listen *nl = &ncfg->listens[k];
        if (strcmp(ol->addr.text, nl->addr.text) == 0 && ol->users != NULL &&
            nl->users != NULL) {
          smtp_server_set_users(r->servers[i], nl->users);
          char n[32];
          snprintf(n, sizeof n, "%zu", smtp_auth_users_count(nl->users));
          postern_log(POSTERN_LOG_INFO, "auth_users_reloaded", "listen",
                      nl->addr.text, "file", nl->users_file, "users", n, NULL);
        }
      }
    }
    old->cfg = r->cfg;
    old->chain = r->chain;
    old->next = retired_list;
    retired_list = old;
    r->cfg = ncfg;
    r->chain = nchain;
    apply_log(ncfg);
    /* Each worker looks at the new cluster block on its own loop. */
    old->tasks = calloc((size_t)r->pool.n, sizeof *old->tasks);
    for (int i = 0; old->tasks && i < r->pool.n; i++) {
      old->tasks[i].fn = engine__deliver_worker_reload;
      worker_post(&r->pool.w[i], &old->tasks[i]);
    }
    postern_log(POSTERN_LOG_INFO, "reloaded", "config", r->config_path, "note",
                "listen, queue, dns and tls settings apply after a restart",
                NULL);
    return;
  }
  begin_shutdown(r, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- metrics ---- */

static void read_gauges(void *ud, struct metrics_gauges *g) {
  struct relay *r = ud;
  struct queue_stats st;
  if (r->q && queue_stats_get(r->q, 0, &st) == 0) {
    g->queue_messages = st.messages;
    g->queue_recipients = st.recipients;
    g->queue_bytes = st.bytes;
    uint64_t now = queue_now_ms(r->q);
    if (st.oldest_arrival_ms && now > st.oldest_arrival_ms)
      g->queue_oldest_age_s = (now - st.oldest_arrival_ms) / 1000;
    free(st.top);
  }
  g->inflight = r->sched ? engine__sched_inflight(r->sched) : 0;
  /* smtp_server_close (at the start of a shutdown) frees the servers once
   * their sessions are gone; a scrape while the relay drains must not read
   * them. */
  if (!atomic_load(&r->stopping))
    for (size_t i = 0; i < r->nservers; i++)
      g->inbound_sessions += smtp_server_sessions(r->servers[i]);
  g->outbound_connections = atomic_load(&r->out_conns);
  /* The workers' resolvers and the client TLS context live until the
   * relay stops; their counters are atomics or locked. */
  if (!atomic_load(&r->stopping)) {
    for (int i = 0; i < r->pool.n; i++) {
      struct dwork *dw = r->pool.w[i].ud2;
      if (dw == NULL || dw->env.dns == NULL)
        continue;
      struct dns_cache_stats cs;
      dns_resolver_cache_stats(dw->env.dns, &cs);
      g->dns_cache_hits += cs.hits;
      g->dns_cache_misses += cs.misses;
      g->dns_cache_entries += cs.entries;
      g->dns_queries_waited += cs.waited;
    }
    if (r->client_tls) {
      struct tls_pkix_stats ps;
      tls_ctx_pkix_stats(r->client_tls, &ps);
      g->tls_pkix_verified = ps.verified;
      g->tls_pkix_cached = ps.cached;
      g->tls_pkix_skipped = ps.skipped;
    }
  }
}

static void start_metrics(struct relay *r, uv_loop_t *loop) {
  const struct config_metrics *m = &r->cfg->metrics;
  if (!m->enabled)
    return;
  int rc = metrics_server_start(loop, (const struct sockaddr *)&m->listen.sa,
                                read_gauges, r, &metrics_srv);
  if (rc != 0) {
    postern_log(POSTERN_LOG_ERROR, "metrics_listen_failed", "listen",
                m->listen.text, "error", postern_strerror(rc), NULL);
    return;
  }
  char port[16];
  snprintf(port, sizeof port, "%u", metrics_server_port(metrics_srv));
  postern_log(POSTERN_LOG_INFO, "metrics_listening", "listen", m->listen.text,
              "port", port, NULL);
}

/* ---- privileges ---- */

static int drop_privileges(const struct postern_config *cfg) {
  if (cfg->user == NULL || getuid() != 0)
    return 0;
  struct passwd *pw = getpwnam(cfg->user);
  if (pw == NULL) {
    postern_log(POSTERN_LOG_ERROR, "user_unknown", "user", cfg->user, NULL);
    return POSTERN_ECONFIG;
  }
  /* The state directory must stay writable for the new user. */
  mkdir(cfg->state_dir, 0750);
  if (chown(cfg->state_dir, pw->pw_uid, pw->pw_gid) != 0)
    postern_log(POSTERN_LOG_WARN, "chown_failed", "path", cfg->state_dir,
                "error", strerror(errno), NULL);
  if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
      setuid(pw->pw_uid) != 0) {
    postern_log(POSTERN_LOG_ERROR, "setuid_failed", "user", cfg->user, "error",
                strerror(errno), NULL);
    return POSTERN_EPERM;
  }
  postern_log(POSTERN_LOG_INFO, "privileges_dropped", "user", cfg->user, NULL);
  return 0;
}

/* ---- startup ---- */

static int start_servers(struct relay *r) {
  const struct postern_config *cfg = r->cfg;
  r->servers = calloc(cfg->listen_count, sizeof *r->servers);
  r->server_tls = calloc(cfg->listen_count, sizeof *r->server_tls);
  server_listen = calloc(cfg->listen_count, sizeof *server_listen);
  uv_loop_t **loops = calloc((size_t)r->pool.n, sizeof *loops);
  if (!r->servers || !r->server_tls || !server_listen || !loops) {
    free(loops);
    return POSTERN_ENOMEM;
  }
  for (int i = 0; i < r->pool.n; i++)
    loops[i] = &r->pool.w[i].loop;
  static const struct smtp_server_handlers handlers = {
      .assign_id = engine__ingress_assign_id,
      .message = engine__ingress_message,
      .auth_event = engine__ingress_auth_event,
  };
  int rc = 0;
  for (size_t i = 0; i < cfg->listen_count; i++) {
    const struct config_listen *l = &cfg->listens[i];
    if (l->tls_cert) {
      char err[256] = "";
      struct tls_ctx_opts to = {
          .min_version = cfg->tls.min_version == CONFIG_TLS_1_3 ? 0x0304 : 0};
      rc = tls_ctx_new_server(&r->server_tls[i], l->tls_cert, l->tls_key, &to,
                              err, sizeof err);
      if (rc != 0) {
        postern_log(POSTERN_LOG_ERROR, "listen_tls_failed", "listen",
                    l->addr.text, "error", err, NULL);
        break;
      }
    }
    struct cidr *acl = calloc(l->accept_from_count + 1, sizeof *acl);
    if (acl == NULL) {
      rc = POSTERN_ENOMEM;
      break;
    }
    size_t nacl = 0;
    for (size_t k = 0; k < l->accept_from_count; k++)
      if (cidr_parse(l->accept_from[k].text, &acl[nacl]) == 0)
        nacl++;
    struct smtp_server_opts so = {
        .listen = l->addr.text,
        .accept_from = acl,
        .naccept_from = nacl,
        .hostname = cfg->hostname,
        .max_message_size = l->max_message_size,
        .max_recipients = l->max_recipients,
        .max_sessions = l->max_sessions,
        .timeout_ms = l->timeout_ms,
        .tls = r->server_tls[i],
        .auth_mode = l->auth,
        .users = l->users,
        .auth_max_failures = l->auth_max_failures,
    };
    if (nacl == 0) {
      /* accept_from with nothing usable must not mean "everyone". */
      so.accept_from = NULL;
    }
    rc = smtp_server_start(loops, (unsigned)r->pool.n, &so, &handlers, r,
                           &r->servers[i]);
    free(acl);
    if (rc != 0) {
      postern_log(POSTERN_LOG_ERROR, "listen_failed", "listen", l->addr.text,
                  "error", postern_strerror(rc), NULL);
      break;
    }
    server_listen[r->nservers] = l;
    r->nservers++;
    char port[16];
    snprintf(port, sizeof port, "%u", smtp_server_port(r->servers[i]));
    postern_log(POSTERN_LOG_INFO, "listening", "listen", l->addr.text, "port",
                port, "tls", l->tls_cert ? "starttls" : "none", "auth",
                config_auth_mode_name(l->auth), NULL);
  }
  free(loops);
  return rc;
}

int relay_run(struct postern_config *cfg, const char *config_path) {
  static struct relay relay;
  struct relay *r = &relay;
  int rc;
  memset(r, 0, sizeof *r);
  engine__slots_init(r);
  r->cfg = cfg;
  r->config_path = config_path;
  apply_log(cfg);
  signal(SIGPIPE, SIG_IGN);

  /* libcurl's global setup (MTA-STS fetches) must run before any thread. */
  int hrc = https_global_init();
  if (hrc != 0)
    postern_log(POSTERN_LOG_WARN, "https_unavailable", "error",
                postern_strerror(hrc), NULL);
  struct policy_chain *chain;
  rc = relay_chain_build(cfg, &chain);
  if (rc != 0)
    return 1;
  r->chain = chain;
  char err[256] = "";
  struct tls_ctx_opts to = {
      .min_version = cfg->tls.min_version == CONFIG_TLS_1_3 ? 0x0304 : 0};
  rc = tls_ctx_new_client(&r->client_tls, cfg->tls.ca_file, &to, err,
                          sizeof err);
  if (rc != 0) {
    postern_log(POSTERN_LOG_ERROR, "tls_client_failed", "ca_file",
                cfg->tls.ca_file, "error", err, NULL);
    return 1;
  }
  if (cfg->tlsrpt.enabled && cfg->tlsrpt.dkim_key != NULL) {
    /* Read before privileges are dropped: the key may be root's only. */
    const char *d =
        cfg->tlsrpt.submitter ? cfg->tlsrpt.submitter : cfg->hostname;
    rc = dkim_key_load(cfg->tlsrpt.dkim_key, d, cfg->tlsrpt.dkim_selector,
                       &r->tlsrpt_dkim);
    if (rc != 0) {
      postern_log(POSTERN_LOG_ERROR, "tlsrpt_dkim_key_failed", "file",
                  cfg->tlsrpt.dkim_key, "error", postern_strerror(rc), "hint",
                  "a PEM RSA (2048 bits) or Ed25519 private key", NULL);
      return 1;
    }
  }
  engine__fleet_init(r);
  rc = worker_pool_init(&r->pool, (int)cfg->delivery.workers, worker_started,
                        worker_stopping, worker_exited, r);
  if (rc != 0)
    return 1;
  rc = start_servers(r);
  if (rc == 0)
    rc = drop_privileges(cfg);
  if (rc == 0) {
    mkdir(cfg->state_dir, 0750);
    struct queue_opts qo = {
        .state_dir = cfg->state_dir,
        .map_size = cfg->queue.map_size,
        .retry = {.initial = cfg->queue.retry_initial_ms,
                  .factor = cfg->queue.retry_factor,
                  .max = cfg->queue.retry_max_ms},
        .max_age = cfg->queue.max_age_ms,
        .delay_warning = cfg->queue.delay_warning_ms,
        .commit_interval_us = cfg->queue.commit_interval_ms
                                  ? cfg->queue.commit_interval_ms * 1000
                                  : QUEUE_OPTS_COMMIT_ASAP,
    };
    rc = queue_open(&qo, &r->q);
    if (rc != 0)
      postern_log(POSTERN_LOG_ERROR, "queue_open_failed", "state_dir",
                  cfg->state_dir, "error", postern_strerror(rc), NULL);
  }
  if (rc != 0) {
    /* Nothing runs yet: close what was started and leave. */
    for (size_t i = 0; i < r->nservers; i++)
      smtp_server_close(r->servers[i], NULL, NULL);
    worker_pool_run(&r->pool);
    worker_pool_stop(&r->pool);
    return 1;
  }

  uv_loop_t *loop = uv_default_loop();
  r->main_loop = loop;
  rc = engine__sched_new(r, loop, &r->sched);
  if (rc != 0) {
    postern_log(POSTERN_LOG_ERROR, "scheduler_failed", "error",
                postern_strerror(rc), NULL);
    for (size_t i = 0; i < r->nservers; i++)
      smtp_server_close(r->servers[i], NULL, NULL);
    worker_pool_run(&r->pool);
    worker_pool_stop(&r->pool);
    queue_close(r->q);
    return 1;
  }
  uv_async_init(loop, &main_wake, check_done);
  main_wake.data = r;
  uv_timer_init(loop, &r->shutdown_timer);
  r->shutdown_timer.data = r;
  uv_signal_init(loop, &r->sig_term);
  uv_signal_init(loop, &r->sig_int);
  uv_signal_init(loop, &r->sig_hup);
  r->sig_term.data = r->sig_int.data = r->sig_hup.data = r;
  uv_signal_start(&r->sig_term, on_signal, SIGTERM);
  uv_signal_start(&r->sig_int, on_signal, SIGINT);
  uv_signal_start(&r->sig_hup, on_signal, SIGHUP);

  start_metrics(r, loop);
  worker_pool_run(&r->pool);
  postern_log(POSTERN_LOG_INFO, "started", "config", config_path, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);

  for (size_t i = 0; i < cfg->listen_count && r->server_tls; i++)
    tls_ctx_free(r->server_tls[i]);
  free(r->server_tls);
  free(r->servers);
  free(server_listen);
  server_listen = NULL;
  free(drain_tasks);
  drain_tasks = NULL;
  tls_ctx_free(r->client_tls);
  dkim_key_free(r->tlsrpt_dkim);
  policy_chain_free(r->chain);
  config_free(r->cfg);
  while (retired_list) {
    struct retired *x = retired_list;
    retired_list = x->next;
    policy_chain_free(x->chain);
    config_free(x->cfg);
    free(x->tasks);
    free(x);
  }
  engine__slots_free(r);
  return 0;
}
