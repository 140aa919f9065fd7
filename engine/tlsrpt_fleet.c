/*
 * engine/tlsrpt_fleet.c - TLS reports (RFC 8460) over a fleet (docs/fleet.md
 * "TLS reports"): each node shares its counts in Redis, and each day's
 * report for a policy domain is sent by one node, with every node's counts.
 *
 * Redis keys (under key_prefix):
 *   tlsrpt:<day>:<domain>       hash: node name -> that node's counts of the
 *                               day (tlsrpt_store_export's text). A node
 *                               writes only its own field, so sharing again
 *                               (after a restart) replaces, never adds.
 *                               Expires `keep` after the day.
 *   tlsrpt-send:<day>:<domain>  the send lease (redis_lease_*, one holder,
 *                               the node name): who sends the report.
 *   tlsrpt-done:<day>:<domain>  "<outcome> <node> <unix ms> <nodes summed>"
 *                               once the report is done (sent, given up, no
 *                               record): no other node sends it. Expires
 *                               `keep` after the day.
 *
 * The send protocol (engine__tlsrpt_fleet_claim): done? -> the other node's
 * outcome; else the lease: held by another node -> busy (ask again later);
 * ours -> the hash, summed with this node's own counts read afresh from
 * its queue (tlsrpt_store_sum). Any Redis failure on the way -> unavailable;
 * tlsrpt_send.c decides what that means (wait, or send alone).
 *
 * Runs on worker 0's loop with that worker's Redis client (the report
 * sender's loop, maint.c). Never blocks: every step is a Redis command
 * bounded by the command timeout. Ownership: a step's context is freed by
 * its last callback; the answer's sum belongs to the receiver.
 */
#include "engine/fleet.h"

#include "base/postern_err.h"
#include "base/postern_log.h"
#include "engine/tlsrpt_store.h"
#include "net/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The send lease's life; the holder renews it every tick (a minute). */
#define SEND_LEASE_MS (10u * 60 * 1000)
#define KEY_MAX 400

static void key_of(char *buf, size_t cap, const char *kind, const char *day,
                   const char *domain) {
  snprintf(buf, cap, "%s:%s:%s", kind, day, domain);
}

/* The same with the key prefix, for raw commands (the lease primitives
 * add it themselves). False when it does not fit. */
static bool full_key(struct redis_client *rc, char full[KEY_MAX + 80],
                     const char *kind, const char *day, const char *domain) {
  char k[KEY_MAX];
  key_of(k, sizeof k, kind, day, domain);
  return redis_client_key(rc, k, full, KEY_MAX + 80) >= 0;
}

/* The Redis expiry of a day's keys: `keep` after its end (unix ms). */
static unsigned long long day_expiry_ms(struct relay *r, const char *day) {
  long long start = tlsrpt_store_day_start(day);
  return (unsigned long long)(start + 86400) * 1000 + r->cfg->tlsrpt.keep_ms;
}

/* This node's counts could not be written out (over TLSRPT_SHARE_MAX, a
 * queue read error): the fleet's report goes without them. */
static void export_failed(const char *domain, const char *day, int rc) {
  postern_log(POSTERN_LOG_WARN, "tlsrpt_fleet_export_failed", "domain", domain,
              "day", day, "error", postern_strerror(rc), "lost",
              "this node's counts are not in the fleet's report", NULL);
}

/* ---- The send claim ---- */

struct claim {
  struct relay *r;
  char day[11], domain[256];
  tlsrpt_fleet_cb cb;
  void *arg;
};

static void claim_end(struct claim *c, struct tlsrpt_fleet_answer *a) {
  c->cb(c->arg, a);
  free(c);
}

static void claim_unavailable(struct claim *c, int status, const char *step) {
  struct tlsrpt_fleet_answer a = {.verdict = TLSRPT_FLEET_UNAVAILABLE};
  if (status != POSTERN_ECLOSED)
    postern_log(POSTERN_LOG_INFO, "tlsrpt_fleet_redis_failed", "domain",
                c->domain, "day", c->day, "step", step, "error",
                postern_strerror(status), NULL);
  claim_end(c, &a);
}

/* The lease is ours: every node's counts, this node's from its queue. */
static void on_counts(struct redis_client *client,
                      const struct redis_result *res, void *arg) {
  (void)client;
  struct claim *c = arg;
  if (res->status != 0 || redis_value_type(res->value) != REDIS_V_ARRAY) {
    claim_unavailable(c, res->status ? res->status : POSTERN_EPROTO,
                      "reading the counts");
    return;
  }
  const char *node = c->r->cfg->cluster.node;
  size_t n = redis_value_count(res->value) / 2;
  struct tlsrpt_share_text *t = calloc(n + 1, sizeof *t);
  struct tlsrpt_fleet_answer a = {.verdict = TLSRPT_FLEET_SEND};
  char *own = NULL;
  size_t ownlen = 0, nt = 0;
  if (t == NULL) {
    claim_unavailable(c, POSTERN_ENOMEM, "reading the counts");
    return;
  }
  size_t off = (size_t)snprintf(a.nodes, sizeof a.nodes, "%s", node);
  int rc = tlsrpt_store_export(c->r->q, c->day, c->domain, &own, &ownlen);
  if (rc == 0)
    t[nt++] = (struct tlsrpt_share_text){own, ownlen};
  else if (rc != POSTERN_ENOENT)
    export_failed(c->domain, c->day, rc);
  for (size_t i = 0; i < n; i++) {
    size_t fl = 0, vl = 0;
    const char *f = redis_value_str(redis_value_at(res->value, 2 * i), &fl);
    const char *v = redis_value_str(redis_value_at(res->value, 2 * i + 1), &vl);
    if (f == NULL || v == NULL || strcmp(f, node) == 0)
      continue; /* ours is read afresh from the queue */
    t[nt++] = (struct tlsrpt_share_text){v, vl};
    if (off < sizeof a.nodes)
      off += (size_t)snprintf(a.nodes + off, sizeof a.nodes - off, ",%.*s",
                              (int)(fl < 64 ? fl : 64), f);
  }
  size_t bad = 0;
  rc = tlsrpt_store_sum(c->day, c->domain, t, nt, &a.sum, &a.nsum, &bad);
  if (bad > 0) {
    char nb[24];
    snprintf(nb, sizeof nb, "%zu", bad);
    postern_log(POSTERN_LOG_WARN, "tlsrpt_fleet_counts_invalid", "domain",
                c->domain, "day", c->day, "nodes", nb, "using",
                "the other nodes' counts", NULL);
  }
  free(own);
  free(t);
  if (rc != 0) {
    claim_unavailable(c, rc, "summing the counts");
    return;
  }
  claim_end(c, &a);
}

static void on_lease(struct redis_client *rc,
                     const struct redis_lease_result *res, void *arg) {
  struct claim *c = arg;
  if (res->status != 0) {
    claim_unavailable(c, res->status, "taking the send lease");
    return;
  }
  if (!res->granted) {
    struct tlsrpt_fleet_answer a = {.verdict = TLSRPT_FLEET_BUSY};
    claim_end(c, &a);
    return;
  }
  char full[KEY_MAX + 80];
  if (!full_key(rc, full, "tlsrpt", c->day, c->domain) ||
      redis_command(rc, on_counts, c, "HGETALL %s", full) != 0)
    claim_unavailable(c, POSTERN_ENOMEM, "reading the counts");
}

static void on_done_read(struct redis_client *rc,
                         const struct redis_result *res, void *arg) {
  struct claim *c = arg;
  if (res->status != 0) {
    claim_unavailable(c, res->status, "reading the done record");
    return;
  }
  if (redis_value_type(res->value) == REDIS_V_STR) {
    struct tlsrpt_fleet_answer a = {.verdict = TLSRPT_FLEET_DONE};
    size_t len = 0;
    const char *s = redis_value_str(res->value, &len);
    snprintf(a.by, sizeof a.by, "%.*s", (int)(len < 300 ? len : 300), s);
    claim_end(c, &a);
    return;
  }
  char k[KEY_MAX];
  key_of(k, sizeof k, "tlsrpt-send", c->day, c->domain);
  if (redis_lease_acquire(rc, k, c->r->cfg->cluster.node, 1, SEND_LEASE_MS,
                          on_lease, c) != 0)
    claim_unavailable(c, POSTERN_ENOMEM, "taking the send lease");
}

int engine__tlsrpt_fleet_claim(struct relay *r, uv_loop_t *loop,
                               const char *day, const char *domain,
                               tlsrpt_fleet_cb cb, void *arg) {
  struct redis_client *rc = engine__fleet_redis(r, loop);
  if (rc == NULL)
    return POSTERN_ECLOSED;
  struct claim *c = calloc(1, sizeof *c);
  if (c == NULL)
    return POSTERN_ENOMEM;
  c->r = r;
  c->cb = cb;
  c->arg = arg;
  snprintf(c->day, sizeof c->day, "%s", day);
  snprintf(c->domain, sizeof c->domain, "%s", domain);
  char full[KEY_MAX + 80];
  int rc2 = !full_key(rc, full, "tlsrpt-done", day, domain)
                ? POSTERN_ETOOBIG
                : redis_command(rc, on_done_read, c, "GET %s", full);
  if (rc2 != 0)
    free(c);
  return rc2;
}

/* ---- The end of a report, the lease's renewal ---- */

static void on_ignore(struct redis_client *rc, const struct redis_result *res,
                      void *arg) {
  (void)rc, (void)res, (void)arg;
}

static void on_lease_ignore(struct redis_client *rc,
                            const struct redis_lease_result *res, void *arg) {
  (void)rc, (void)res, (void)arg;
}

void engine__tlsrpt_fleet_done(struct relay *r, uv_loop_t *loop,
                               const char *day, const char *domain,
                               const char *outcome, const char *nodes) {
  struct redis_client *rc = engine__fleet_redis(r, loop);
  char k[KEY_MAX], full[KEY_MAX + 80], val[800];
  if (rc == NULL) {
    /* Other nodes find the lease expired and send again: receivers get
     * the same report-id twice (RFC 8460 §4.4 lets them drop repeats). */
    postern_log(POSTERN_LOG_WARN, "tlsrpt_fleet_done_unrecorded", "domain",
                domain, "day", day, "outcome", outcome, NULL);
    return;
  }
  snprintf(val, sizeof val, "%s %s %llu %s", outcome, r->cfg->cluster.node,
           (unsigned long long)relay_now_ms(r), nodes && *nodes ? nodes : "-");
  unsigned long long exp = day_expiry_ms(r, day), now = relay_now_ms(r);
  unsigned long long ttl = exp > now + 86400000ull ? exp - now : 86400000ull;
  if (full_key(rc, full, "tlsrpt-done", day, domain))
    redis_command(rc, on_ignore, NULL, "SET %s %s PX %llu", full, val, ttl);
  key_of(k, sizeof k, "tlsrpt-send", day, domain);
  redis_lease_release(rc, k, r->cfg->cluster.node, on_lease_ignore, NULL);
}

void engine__tlsrpt_fleet_renew(struct relay *r, uv_loop_t *loop,
                                const char *day, const char *domain) {
  struct redis_client *rc = engine__fleet_redis(r, loop);
  char k[KEY_MAX];
  if (rc == NULL)
    return;
  key_of(k, sizeof k, "tlsrpt-send", day, domain);
  redis_lease_renew(rc, k, r->cfg->cluster.node, SEND_LEASE_MS, on_lease_ignore,
                    NULL);
}

/* ---- Sharing a day's counts ---- */

struct publish {
  struct relay *r;
  char day[11];
  size_t pending, domains, failed;
};

struct late_check {
  struct publish *p;
  char domain[256];
};

static void publish_step_done(struct publish *p) {
  if (--p->pending > 0)
    return;
  char nd[24], nf[24];
  snprintf(nd, sizeof nd, "%zu", p->domains);
  snprintf(nf, sizeof nf, "%zu", p->failed);
  postern_log(p->failed ? POSTERN_LOG_WARN : POSTERN_LOG_INFO,
              "tlsrpt_fleet_published", "day", p->day, "domains", nd, "failed",
              nf, NULL);
  free(p);
}

static void on_published(struct redis_client *rc,
                         const struct redis_result *res, void *arg) {
  (void)rc;
  struct publish *p = arg;
  if (res->status != 0)
    p->failed++;
  publish_step_done(p);
}

/* A finished day shared after its report was sent: our counts are in it
 * only if the sender had them (a restart shares them again, harmlessly). */
static void on_late_check(struct redis_client *rc,
                          const struct redis_result *res, void *arg) {
  (void)rc;
  struct late_check *lc = arg;
  struct publish *p = lc->p;
  if (res->status == 0 && redis_value_type(res->value) == REDIS_V_STR) {
    size_t len = 0;
    const char *v = redis_value_str(res->value, &len);
    const char *node = p->r->cfg->cluster.node;
    /* "<outcome> <node> <ms> <n1,n2,...>": look for ours in the list. */
    const char *list = v;
    for (int sp = 0; sp < 3 && list; sp++) {
      list = strchr(list, ' ');
      list = list ? list + 1 : NULL;
    }
    bool in = false;
    size_t nl = strlen(node);
    for (const char *x = list; x && *x;) {
      size_t l = strcspn(x, ",");
      if (l == nl && memcmp(x, node, nl) == 0)
        in = true;
      x += l + (x[l] == ',');
    }
    if (!in)
      postern_log(POSTERN_LOG_WARN, "tlsrpt_fleet_counts_late", "domain",
                  lc->domain, "day", p->day, "report", v, "lost",
                  "this node's counts are not in the report sent", NULL);
  }
  free(lc);
  publish_step_done(p);
}

int engine__tlsrpt_fleet_publish(struct relay *r, uv_loop_t *loop,
                                 const char *day, bool finished) {
  struct redis_client *rc = engine__fleet_redis(r, loop);
  if (rc == NULL)
    return POSTERN_ECLOSED;
  struct tlsrpt_store_domain *d = NULL;
  size_t n = 0;
  int err = tlsrpt_store_load(r->q, day, NULL, &d, &n);
  if (err != 0 || n == 0) {
    tlsrpt_store_free(d, n);
    return err;
  }
  struct publish *p = calloc(1, sizeof *p);
  if (p == NULL) {
    tlsrpt_store_free(d, n);
    return POSTERN_ENOMEM;
  }
  p->r = r;
  p->pending = 1; /* ours, until every command is issued */
  snprintf(p->day, sizeof p->day, "%s", day);
  const char *node = r->cfg->cluster.node;
  for (size_t i = 0; i < n; i++) {
    char *text = NULL;
    size_t len = 0;
    char full[KEY_MAX + 80];
    int erc = tlsrpt_store_export(r->q, day, d[i].domain, &text, &len);
    if (erc != 0) {
      if (erc != POSTERN_ENOENT)
        export_failed(d[i].domain, day, erc);
      continue;
    }
    if (full_key(rc, full, "tlsrpt", day, d[i].domain)) {
      p->domains++;
      p->pending++;
      if (redis_command(rc, on_published, p, "HSET %s %s %b", full, node, text,
                        len) != 0)
        p->pending--, p->failed++;
      redis_command(rc, on_ignore, NULL, "PEXPIREAT %s %llu", full,
                    day_expiry_ms(r, day));
    }
    free(text);
    struct late_check *lc = finished ? calloc(1, sizeof *lc) : NULL;
    if (lc != NULL && full_key(rc, full, "tlsrpt-done", day, d[i].domain)) {
      lc->p = p;
      snprintf(lc->domain, sizeof lc->domain, "%s", d[i].domain);
      p->pending++;
      if (redis_command(rc, on_late_check, lc, "GET %s", full) != 0) {
        p->pending--;
        free(lc);
      }
    } else {
      free(lc);
    }
  }
  tlsrpt_store_free(d, n);
  publish_step_done(p);
  return 0;
}
