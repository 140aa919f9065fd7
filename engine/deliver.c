/*
 * deliver.c - the delivery attempt: for one destination (a domain, or a
 * static route) on the worker that owns it, find an acceptable connection
 * with the MX loop ranked by security levels, and carry the destination's
 * messages over it.
 *
 * The MX loop (DESIGN.md, issue "Delivery engine"):
 *   prepare_domain (policies) -> MX lookup (AD) -> candidates by preference,
 *   equal preferences shuffled -> per candidate: check_mx (MX level or
 *   reject), A/AAAA, prepare_conn (TLSA), connect, EHLO, STARTTLS ->
 *   check_conn (TLS level) -> deliver, or close and try the next candidate.
 * When no candidate is acceptable the jobs are deferred if anything failed
 * temporarily along the way, and bounced only when every failure was
 * permanent. A 5xx greeting or EHLO/HELO reply only skips its host (it
 * comes before TLS and the policy check, so an attacker can inject it). A
 * STARTTLS handshake failure is retried once in plaintext when no policy
 * requires TLS (opportunistic TLS, RFC 7435).
 *
 * Ownership: a `struct dest` lives on its worker while it has jobs,
 * connections or attempts; an `attempt` owns its DNS queries, policy runs
 * and the client it is connecting; a `conn` owns an accepted client and
 * the job it is sending. Jobs are handed to engine__job_finish when their
 * results are known, and never touched afterwards.
 */
#include "engine/internal.h"
#include "engine/metrics.h"
#include "engine/probe.h"
#include "engine/relay.h"

#include "net/dns.h"
#include "net/https.h"
#include "net/smtp_client.h"
#include "policy/chain.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define DEST_BUCKETS 4096
#define MAX_CANDIDATES 32
#define MAX_ADDRS 16
/* How often a destination waiting for a free connection slot looks again. */
#define DEST_SLOT_RETRY_MS 100
/* A message is chained behind the one in progress (smtp_client_send_next)
 * only on a connection whose last message took at most chain_threshold and
 * whose current body is at most CHAIN_BODY_MAX: there the chained message
 * waits for nothing a fresh connection would not also wait for, and one
 * write and one read on each side carry two messages. On a slow next hop
 * (a remote MX, a content filter) each message keeps a connection of its
 * own. */
#define CHAIN_BODY_MAX (64u * 1024)

struct dest;

struct dwork {
  struct relay *r;
  struct worker *w; /* NULL for a probe */
  uv_loop_t *loop;
  struct dns_resolver *dns;
  struct https_client *https; /* MTA-STS fetches; NULL if unavailable */
  struct dest *buckets[DEST_BUCKETS];
};

/* One message on a connection; rcpts and notify live in the same block. */
struct ctxn {
  struct job *job;
  struct smtp_rcpt *rcpts;
  char (*notify)[40];
  struct smtp_message msg; /* borrowed by the client until on_sent */
};

struct conn {
  struct dest *d;
  struct relay *r;
  struct conn *next;
  struct smtp_client *c;
  struct ctxn *cur;     /* being sent, or NULL when idle */
  struct ctxn *next_tx; /* chained behind cur, or NULL */
  uint64_t cur_start_ms, last_txn_ms;
  uv_timer_t idle;
  bool closing;
  /* Usable by dest_kick: false from a client callback until the loop runs
   * conn_next_soon, so that no send starts inside the client's callback. */
  bool ready;
  unsigned sent;
  char mx[256];
  char addr[64];
  enum policy_mx_level mx_level;
  enum policy_tls_level tls_level;
};

struct candidate {
  char host[256];
  uint16_t pref;
  bool implicit;
};

struct probe;

struct attempt {
  struct dest *d;
  struct probe *probe; /* probe mode: judge every candidate, send nothing */
  struct attempt *next;
  struct policy_domain_run *drun;
  struct policy_conn_run *crun;
  struct policy_conn_req req;
  struct dns_query *q;
  struct candidate cand[MAX_CANDIDATES];
  size_t ncand, ci;
  bool mx_authenticated;
  struct policy_mx mx;
  struct policy_mx_verdict mxv;
  struct sockaddr_storage addrs[MAX_ADDRS];
  size_t naddr, ai;
  bool addrs_authenticated;
  char canonical[256];
  bool plaintext; /* this connection is the plaintext retry */
  struct smtp_client *c;
  /* Failure bookkeeping across candidates (step 5 of the MX loop). */
  bool any_temp, any_fail;
  char temp_status[16], perm_status[16];
  char temp_reason[512], perm_reason[512];
  char last_mx[256];
};

struct dest {
  struct dwork *dw;
  struct dest *hnext;
  char key[300];
  char domain[256];
  bool routed;
  struct route_target route;
  struct job *head, *tail;
  size_t njobs;
  struct conn *conns; /* established (busy or idle) */
  size_t nconns;
  struct attempt *attempts;
  size_t nattempts;
  uint64_t rate_next_ms;
  uv_timer_t rate_timer;
  bool rate_timer_on;
  bool freeing;
  /* An attempt found no usable host while other attempts or connections
   * went on with the jobs: open no further connection until one succeeds,
   * so that a server refusing concurrent sessions (421 at the greeting)
   * does not see a reconnect per exhausted attempt. */
  bool saturated;
  /* Step 5 across attempts: a temporary failure seen by an attempt that
   * exhausted while others went on with the same jobs. When the last one
   * exhausts too, the jobs are deferred, not bounced. Cleared when the
   * jobs are settled or gone, or a connection succeeds. */
  bool temp_seen;
  char temp_status[16];
  char temp_reason[512];
};

struct probe {
  struct dwork dw; /* first: probe_dest_closed finds the probe from it */
  struct dest *d;
  struct probe_result res;
  probe_cb cb;
  void *arg;
};

/* The probe's record of the candidate the attempt is on, or NULL. */
static struct probe_mx *probe_cur(struct attempt *a) {
  if (a->probe == NULL || a->ci >= a->ncand || a->ci >= PROBE_MAX_MX)
    return NULL;
  struct probe_mx *m = &a->probe->res.mx[a->ci];
  if (a->probe->res.nmx <= a->ci)
    a->probe->res.nmx = a->ci + 1;
  return m;
}

static void dest_kick(struct dest *d);
static void attempt_next_candidate(struct attempt *a);
static void attempt_next_addr(struct attempt *a);
static void conn_send_next(struct conn *cn);

static struct dwork *dw_of(struct worker *w) {
  return w->ud2;
}

/* ---- logging ---- */

static uint64_t now_ms(struct dwork *dw) {
  return relay_now_ms(dw->r);
}

static void log_rcpt(struct job *j, unsigned k, const char *mx,
                     const char *addr, enum policy_mx_level mxl,
                     enum policy_tls_level tlsl, const char *status,
                     const char *dsn, const char *reply, uint64_t now) {
  const struct queue_env *env = j->m->env;
  const struct queue_rcpt *rc = &env->rcpts[j->idx[k]];
  struct postern_log_rec r;
  enum postern_log_level lvl =
      strcmp(status, "sent") == 0 ? POSTERN_LOG_INFO : POSTERN_LOG_WARN;
  metrics_delivery(status[0] == 's'   ? METRICS_SENT
                   : status[0] == 'd' ? METRICS_DEFERRED
                                      : METRICS_BOUNCED,
                   mxl, tlsl);
  if (!postern_log_enabled(lvl))
    return;
  postern_log_begin(&r, lvl, "delivery");
  postern_log_str(&r, "id", j->m->id);
  postern_log_str(&r, "rcpt", rc->addr);
  postern_log_str(&r, "domain", j->domain);
  postern_log_str(&r, "mx", mx ? mx : "");
  postern_log_str(&r, "addr", addr ? addr : "");
  postern_log_str(&r, "mx_level", policy_mx_level_name(mxl));
  postern_log_str(&r, "tls_level", policy_tls_level_name(tlsl));
  postern_log_str(&r, "status", status);
  postern_log_str(&r, "dsn", dsn);
  postern_log_str(&r, "reply", reply);
  postern_log_uint(&r, "attempt", rc->attempts + 1);
  postern_log_fmt(&r, "delay", "%.3f",
                  (double)(now - env->arrival_ms) / 1000.0);
  postern_log_end(&r);
}

/* Records one recipient's outcome in its job. */
static void job_set(struct job *j, unsigned k, enum queue_outcome o,
                    const char *status, const char *reply) {
  j->results[k].index = j->idx[k];
  j->results[k].outcome = o;
  snprintf(j->status[k], sizeof j->status[k], "%s", status);
  snprintf(j->reply[k], sizeof j->reply[k], "%s", reply);
  j->results[k].status = j->status[k];
  j->results[k].reply = j->reply[k];
}

/* Fails every recipient of a job with one status (no connection made). */
static void job_fail_all(struct job *j, bool temp, const char *status,
                         const char *reason, const char *mx) {
  uint64_t now = relay_now_ms(j->relay);
  snprintf(j->mx, sizeof j->mx, "%s", mx ? mx : "");
  for (unsigned k = 0; k < j->n; k++) {
    job_set(j, k, temp ? QUEUE_OUTCOME_DEFERRED : QUEUE_OUTCOME_BOUNCED, status,
            reason);
    log_rcpt(j, k, mx, NULL, POLICY_MX_LEVEL_NONE, POLICY_TLS_LEVEL_NONE,
             temp ? "deferred" : "bounced", status, reason, now);
  }
  engine__job_finish(j);
}

/* ---- destinations ---- */

static size_t key_hash(const char *k) {
  size_t h = 5381;
  for (; *k; k++)
    h = h * 33 + (unsigned char)*k;
  return h;
}

static struct dest *dest_get(struct dwork *dw, struct job *j) {
  size_t b = key_hash(j->dest_key) % DEST_BUCKETS;
  for (struct dest *d = dw->buckets[b]; d; d = d->hnext)
    if (strcmp(d->key, j->dest_key) == 0)
      return d;
  struct dest *d = calloc(1, sizeof *d);
  if (d == NULL)
    return NULL;
  d->dw = dw;
  snprintf(d->key, sizeof d->key, "%s", j->dest_key);
  snprintf(d->domain, sizeof d->domain, "%s", j->domain);
  d->routed = j->routed;
  d->route = j->route;
  uv_timer_init(dw->loop, &d->rate_timer);
  d->rate_timer.data = d;
  d->hnext = dw->buckets[b];
  dw->buckets[b] = d;
  return d;
}

static void dest_closed(uv_handle_t *h) {
  free(h->data);
}

/* Frees a destination with nothing left: no job, connection or attempt. */
static void dest_maybe_free(struct dest *d) {
  if (d->njobs || d->nconns || d->nattempts || d->freeing)
    return;
  struct dwork *dw = d->dw;
  size_t b = key_hash(d->key) % DEST_BUCKETS;
  for (struct dest **pp = &dw->buckets[b]; *pp; pp = &(*pp)->hnext)
    if (*pp == d) {
      *pp = d->hnext;
      break;
    }
  d->freeing = true;
  uv_close((uv_handle_t *)&d->rate_timer, dest_closed);
}

static struct job *dest_pop(struct dest *d) {
  struct job *j = d->head;
  if (j) {
    d->head = j->next;
    if (d->head == NULL)
      d->tail = NULL;
    j->next = NULL;
    d->njobs--;
  }
  return j;
}

static void dest_push_front(struct dest *d, struct job *j) {
  j->next = d->head;
  d->head = j;
  if (d->tail == NULL)
    d->tail = j;
  d->njobs++;
}

void engine__deliver_job(struct worker *w, struct worker_task *t) {
  struct job *j = (struct job *)t;
  struct dwork *dw = dw_of(w);
  if (atomic_load(&dw->r->stopping)) {
    engine__job_abandon(j);
    return;
  }
  struct dest *d = dest_get(dw, j);
  if (d == NULL) {
    job_fail_all(j, true, "4.3.0", "out of memory", NULL);
    return;
  }
  j->next = NULL;
  if (d->tail)
    d->tail->next = j;
  else
    d->head = j;
  d->tail = j;
  d->njobs++;
  dest_kick(d);
}

static void rate_fire(uv_timer_t *t) {
  struct dest *d = t->data;
  d->rate_timer_on = false;
  dest_kick(d);
}

/* per_domain_rate: may one more message start now? If not, arm the timer. */
static bool rate_allows(struct dest *d) {
  uint32_t rate = d->dw->r->cfg->delivery.per_domain_rate;
  if (rate == 0)
    return true;
  uint64_t now = now_ms(d->dw);
  if (now >= d->rate_next_ms) {
    uint64_t step = 1000 / rate ? 1000 / rate : 1;
    d->rate_next_ms =
        (d->rate_next_ms + step > now) ? d->rate_next_ms + step : now + step;
    return true;
  }
  if (!d->rate_timer_on) {
    d->rate_timer_on = true;
    uv_timer_start(&d->rate_timer, rate_fire, d->rate_next_ms - now, 0);
  }
  return false;
}

static void attempt_start(struct dest *d);
static void conn_chain(struct conn *cn);

/* Puts waiting jobs on idle connections and starts attempts while the
 * destination has more work than connections, within the limits. */
static void dest_kick(struct dest *d) {
  struct relay *r = d->dw->r;
  if (atomic_load(&r->stopping))
    return;
  /* A fast connection takes a waiting message behind its current one
   * before an idle connection does (see CHAIN_BODY_MAX). */
  for (struct conn *cn = d->conns; cn && d->head; cn = cn->next) {
    if (cn->cur != NULL)
      conn_chain(cn);
  }
  for (struct conn *cn = d->conns; cn && d->head; cn = cn->next) {
    if (cn->cur == NULL && !cn->closing && cn->ready) {
      if (!rate_allows(d))
        return;
      uv_timer_stop(&cn->idle);
      conn_send_next(cn);
    }
  }
  const struct config_delivery *dc = &r->cfg->delivery;
  while (d->njobs > d->nattempts &&
         !(d->saturated && d->nconns + d->nattempts) &&
         d->nconns + d->nattempts < dc->per_domain_connections &&
         atomic_load(&r->out_conns) < dc->max_connections) {
    size_t idle = 0;
    for (struct conn *cn = d->conns; cn; cn = cn->next)
      if (cn->cur == NULL && !cn->closing)
        idle++; /* ready now, or about to be */
    if (idle)
      break;
    attempt_start(d);
  }
  /* Waiting jobs that nothing carries (max_connections reached) would wait
   * for the next job to this destination, which may never come: the slot
   * is freed by another destination's connection, maybe on another worker.
   * Look again shortly. */
  if (d->njobs == 0)
    d->temp_seen = false; /* it spoke for waiting jobs only */
  if (d->njobs && d->nconns == 0 && d->nattempts == 0 && !d->rate_timer_on) {
    d->rate_timer_on = true;
    uv_timer_start(&d->rate_timer, rate_fire, DEST_SLOT_RETRY_MS, 0);
  }
  dest_maybe_free(d);
}

/* ---- connections ---- */

static void conn_timer_closed(uv_handle_t *h) {
  free(h->data);
}

static void conn_closed(struct smtp_client *c, void *arg) {
  struct conn *cn = arg;
  /* The destination may be gone by now: use only the relay. */
  atomic_fetch_sub(&cn->r->out_conns, 1);
  uv_close((uv_handle_t *)&cn->idle, conn_timer_closed);
}

static void conn_drop(struct conn *cn) {
  if (cn->closing)
    return;
  cn->closing = true;
  struct dest *d = cn->d;
  for (struct conn **pp = &d->conns; *pp; pp = &(*pp)->next)
    if (*pp == cn) {
      *pp = cn->next;
      break;
    }
  d->nconns--;
  uv_timer_stop(&cn->idle);
  smtp_client_close(cn->c, conn_closed, cn);
}

static void conn_idle_expired(uv_timer_t *t) {
  struct conn *cn = t->data;
  struct dest *d = cn->d;
  conn_drop(cn);
  dest_maybe_free(d);
}

static const char *notify_text(unsigned n, char *buf, size_t cap) {
  if (n == 0)
    return NULL;
  if (n & QUEUE_NOTIFY_NEVER)
    return "NEVER";
  buf[0] = '\0';
  if (n & QUEUE_NOTIFY_SUCCESS)
    strncat(buf, "SUCCESS,", cap - strlen(buf) - 1);
  if (n & QUEUE_NOTIFY_FAILURE)
    strncat(buf, "FAILURE,", cap - strlen(buf) - 1);
  if (n & QUEUE_NOTIFY_DELAY)
    strncat(buf, "DELAY,", cap - strlen(buf) - 1);
  size_t l = strlen(buf);
  if (l)
    buf[l - 1] = '\0';
  return buf;
}

static void conn_next_soon(uv_timer_t *t) {
  struct conn *cn = t->data;
  struct dest *d = cn->d;
  struct relay *r = d->dw->r;
  cn->ready = true;
  if (d->head && rate_allows(d)) {
    conn_send_next(cn);
    return;
  }
  uv_timer_start(&cn->idle, conn_idle_expired, r->cfg->delivery.idle_timeout_ms,
                 0);
  dest_kick(d);
}

static void on_sent(struct smtp_client *c, int status,
                    const struct smtp_send_result *res, void *arg) {
  struct conn *cn = arg;
  struct ctxn *tx = cn->cur;
  struct job *j = tx->job;
  struct dest *d = cn->d;
  uint64_t now = now_ms(d->dw);
  cn->cur = NULL;
  cn->ready = false;
  snprintf(j->mx, sizeof j->mx, "%s", cn->mx);
  for (unsigned k = 0; k < j->n && k < res->nrcpts; k++) {
    const struct smtp_result *sr = &res->rcpt[k];
    char reply[QUEUE_REPLY_MAX + 1];
    smtp_reply_format(&sr->reply, reply, sizeof reply);
    char dsn[16];
    if (sr->reply.has_enh)
      snprintf(dsn, sizeof dsn, "%s", sr->reply.enh);
    else
      snprintf(dsn, sizeof dsn, "%d.0.0",
               sr->outcome == SMTP_OUTCOME_OK
                   ? 2
                   : (sr->outcome == SMTP_OUTCOME_TEMP ? 4 : 5));
    /* The enhanced status class always matches the outcome class. */
    int cls = sr->outcome == SMTP_OUTCOME_OK
                  ? 2
                  : (sr->outcome == SMTP_OUTCOME_TEMP ? 4 : 5);
    dsn[0] = (char)('0' + cls);
    enum queue_outcome o =
        sr->outcome == SMTP_OUTCOME_OK
            ? QUEUE_OUTCOME_SENT
            : (sr->outcome == SMTP_OUTCOME_TEMP ? QUEUE_OUTCOME_DEFERRED
                                                : QUEUE_OUTCOME_BOUNCED);
    job_set(j, k, o, dsn, reply);
    log_rcpt(j, k, cn->mx, cn->addr, cn->mx_level, cn->tls_level,
             o == QUEUE_OUTCOME_SENT
                 ? "sent"
                 : (o == QUEUE_OUTCOME_DEFERRED ? "deferred" : "bounced"),
             dsn, reply, now);
  }
  free(tx);
  engine__job_finish(j);
  cn->sent++;
  cn->last_txn_ms = now - cn->cur_start_ms;
  struct relay *r = d->dw->r;
  if (status != 0 || cn->sent >= r->cfg->delivery.reuse_limit ||
      atomic_load(&r->stopping)) {
    if (cn->next_tx) {
      /* The chained message never reached DATA: closing the client
       * abandons it, and another connection carries it. */
      dest_push_front(d, cn->next_tx->job);
      free(cn->next_tx);
      cn->next_tx = NULL;
    }
    conn_drop(cn);
    dest_kick(d);
    return;
  }
  if (cn->next_tx) {
    /* The client has made the chained message current already. */
    cn->cur = cn->next_tx;
    cn->next_tx = NULL;
    cn->cur_start_ms = now;
    conn_chain(cn);
    return;
  }
  /* The next message starts from the loop, not from inside the client's
   * callback: the client finishes its own bookkeeping first. */
  uv_timer_start(&cn->idle, conn_next_soon, 0, 0);
}

/* Whether any byte has the high bit set (BODY=8BITMIME, RFC 6152; a
 * non-ASCII address needs SMTPUTF8, RFC 6531). Eight bytes at a time: a
 * 100 KiB body is scanned on every delivery. */
static bool has_8bit(const void *data, size_t len) {
  const unsigned char *p = data;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, sizeof w);
    if (w & 0x8080808080808080ull)
      return true;
  }
  for (; i < len; i++)
    if (p[i] >= 0x80)
      return true;
  return false;
}

/* The message to send for j (rcpts and notify texts in the same block),
 * or NULL when out of memory. */
static struct ctxn *ctxn_new(struct job *j) {
  const struct queue_env *env = j->m->env;
  struct ctxn *tx =
      calloc(1, sizeof *tx + j->n * (sizeof *tx->rcpts + sizeof *tx->notify));
  if (tx == NULL)
    return NULL;
  tx->job = j;
  tx->rcpts = (struct smtp_rcpt *)(tx + 1);
  tx->notify = (char(*)[40])(tx->rcpts + j->n);
  for (unsigned k = 0; k < j->n; k++) {
    const struct queue_rcpt *rc = &env->rcpts[j->idx[k]];
    tx->rcpts[k].addr = rc->addr;
    tx->rcpts[k].notify =
        notify_text(rc->notify, tx->notify[k], sizeof tx->notify[k]);
    tx->rcpts[k].orcpt = rc->orcpt[0] ? rc->orcpt : NULL;
  }
  /* The server accepted 8BITMIME and SMTPUTF8 mail, so we owe the next hop
   * the matching parameters (RFC 6152, RFC 6531 §3.4): 8-bit content asks
   * for BODY=8BITMIME, a non-ASCII address for SMTPUTF8. */
  bool eight = has_8bit(j->m->body, j->m->body_len);
  bool utf8 = has_8bit(env->sender, strlen(env->sender));
  for (unsigned k = 0; k < j->n && !utf8; k++)
    utf8 = has_8bit(tx->rcpts[k].addr, strlen(tx->rcpts[k].addr));
  tx->msg = (struct smtp_message){
      .sender = env->sender,
      .ret = env->ret == QUEUE_RET_FULL
                 ? "FULL"
                 : (env->ret == QUEUE_RET_HDRS ? "HDRS" : NULL),
      .envid = env->envid[0] ? env->envid : NULL,
      .body_8bit = eight,
      .smtputf8 = utf8,
      .rcpts = tx->rcpts,
      .nrcpts = j->n,
      .body = j->m->body,
      .body_len = j->m->body_len,
  };
  return tx;
}

/* Stopping: the message is neither sent nor failed; it stays queued. */
static void ctxn_abandon(struct ctxn **tx) {
  if (*tx) {
    engine__job_abandon((*tx)->job);
    free(*tx);
    *tx = NULL;
  }
}

static void conn_send_next(struct conn *cn) {
  struct dest *d = cn->d;
  struct job *j = dest_pop(d);
  if (j == NULL)
    return;
  struct ctxn *tx = ctxn_new(j);
  if (tx == NULL) {
    job_fail_all(j, true, "4.3.0", "out of memory", cn->mx);
    return;
  }
  cn->cur = tx;
  cn->cur_start_ms = now_ms(d->dw);
  int rc = smtp_client_send(cn->c, &tx->msg, on_sent, cn);
  if (rc != 0) {
    /* The server closed the idle session (or it broke): give the job back
     * and let another connection carry it. */
    cn->cur = NULL;
    free(tx);
    dest_push_front(d, j);
    conn_drop(cn);
    dest_kick(d);
    return;
  }
  conn_chain(cn);
}

/* Chains the next waiting job behind the message in progress, when the
 * connection is fast and the message small (see CHAIN_BODY_MAX). */
static void conn_chain(struct conn *cn) {
  struct dest *d = cn->d;
  struct relay *r = d->dw->r;
  if (d->head == NULL || cn->cur == NULL || cn->next_tx || cn->closing ||
      cn->sent == 0 || r->cfg->delivery.chain_threshold_ms == 0 ||
      cn->last_txn_ms > r->cfg->delivery.chain_threshold_ms ||
      cn->cur->msg.body_len > CHAIN_BODY_MAX ||
      cn->sent + 2 > r->cfg->delivery.reuse_limit ||
      atomic_load(&r->stopping) || !rate_allows(d))
    return;
  struct job *j = dest_pop(d);
  struct ctxn *tx = ctxn_new(j);
  if (tx == NULL) {
    dest_push_front(d, j);
    return;
  }
  if (smtp_client_send_next(cn->c, &tx->msg, on_sent, cn) != 0) {
    /* Not chainable here (no PIPELINING, too big for the server...): it
     * goes out on its own. */
    free(tx);
    dest_push_front(d, j);
    return;
  }
  cn->next_tx = tx;
  metrics_inc(METRICS_CHAINED);
}

/* ---- attempts: the MX loop ---- */

static void attempt_fail(struct attempt *a, bool temp, const char *status,
                         const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void attempt_fail(struct attempt *a, bool temp, const char *status,
                         const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *reason = temp ? a->temp_reason : a->perm_reason;
  vsnprintf(reason, sizeof a->temp_reason, fmt, ap);
  va_end(ap);
  snprintf(temp ? a->temp_status : a->perm_status, sizeof a->temp_status, "%s",
           status);
  /* The status class must match the outcome (RFC 3463 §3.1). */
  (temp ? a->temp_status : a->perm_status)[0] = temp ? '4' : '5';
  if (temp)
    a->any_temp = true;
  a->any_fail = true;
  struct probe_mx *pm = probe_cur(a);
  if (pm) {
    pm->acceptable = false;
    pm->temporary = temp;
    snprintf(pm->status, sizeof pm->status, "%s",
             temp ? a->temp_status : a->perm_status);
    snprintf(pm->reason, sizeof pm->reason, "%s", reason);
  }
  postern_log(POSTERN_LOG_DEBUG, "attempt_step_failed", "dest", a->d->key, "mx",
              a->last_mx, "temporary", temp ? "yes" : "no", "dsn",
              temp ? a->temp_status : a->perm_status, "reason", reason, NULL);
}

static void attempt_free(struct attempt *a) {
  struct dest *d = a->d;
  for (struct attempt **pp = &d->attempts; *pp; pp = &(*pp)->next)
    if (*pp == a) {
      *pp = a->next;
      break;
    }
  d->nattempts--;
  policy_conn_run_free(a->crun);
  policy_domain_run_free(a->drun);
  free(a);
}

/* Every candidate failed: settle the destination's waiting jobs unless
 * another connection or attempt can still carry them. */
static void probe_finish(struct attempt *a);

static void attempt_exhausted(struct attempt *a) {
  struct dest *d = a->d;
  if (a->probe) {
    probe_finish(a);
    return;
  }
  bool temp = a->any_temp || !a->any_fail;
  char status[16], reason[512];
  if (temp) {
    snprintf(status, sizeof status, "%s",
             a->any_temp ? a->temp_status : "4.4.1");
    snprintf(reason, sizeof reason, "%s",
             a->any_temp ? a->temp_reason : "no MX host could be tried");
  } else {
    snprintf(status, sizeof status, "%s", a->perm_status);
    snprintf(reason, sizeof reason, "%s", a->perm_reason);
  }
  char mx[256];
  snprintf(mx, sizeof mx, "%s", a->last_mx);
  attempt_free(a);
  if (atomic_load(&d->dw->r->stopping)) {
    /* Shutting down: the jobs stay queued and due, with no attempt counted
     * against them. */
    struct job *j;
    while ((j = dest_pop(d)) != NULL)
      engine__job_abandon(j);
    return;
  }
  if (d->nconns == 0 && d->nattempts == 0) {
    if (!temp && d->temp_seen) {
      temp = true;
      snprintf(status, sizeof status, "%s", d->temp_status);
      snprintf(reason, sizeof reason, "%s", d->temp_reason);
    }
    d->saturated = false;
    d->temp_seen = false;
    struct job *j;
    while (d->njobs > d->nattempts && (j = dest_pop(d)) != NULL)
      job_fail_all(j, temp, status, reason, mx);
  } else {
    d->saturated = true;
    if (temp) {
      d->temp_seen = true;
      snprintf(d->temp_status, sizeof d->temp_status, "%s", status);
      snprintf(d->temp_reason, sizeof d->temp_reason, "%s", reason);
    }
  }
  dest_kick(d);
}

static struct policy_env penv(struct dest *d) {
  struct policy_env e = {.loop = d->dw->loop,
                         .dns = d->dw->dns,
                         .https = d->dw->https,
                         .now_ms = now_ms(d->dw),
                         .count = metrics_policy};
  e.routed = d->routed;
  return e;
}

static void on_ready(struct smtp_client *c, int status,
                     const struct smtp_client_facts *f, void *arg);

static void client_closed_free(struct smtp_client *c, void *arg) {
  (void)c;
  struct relay *r = arg;
  atomic_fetch_sub(&r->out_conns, 1);
}

static void attempt_connect(struct attempt *a) {
  struct dest *d = a->d;
  struct relay *r = d->dw->r;
  const struct config_delivery *dc = &r->cfg->delivery;
  struct smtp_client_opts o = {
      .connect_timeout_ms = dc->connect_timeout_ms,
      .command_timeout_ms = dc->command_timeout_ms,
      .data_timeout_ms = dc->data_timeout_ms,
      .helo_name = r->cfg->hostname,
      .local_addr =
          dc->local_ip.text ? (const struct sockaddr *)&dc->local_ip.sa : NULL,
      .tls_ctx = r->client_tls,
      .starttls = !a->plaintext,
      /* The TLSA base domain where DANE records were found (RFC 7672
       * §8.1), else the MX host name. */
      .sni = a->req.sni[0] ? a->req.sni : NULL,
      /* Sessions are cached per policy (TLSA RRset digest, or PKIX). */
      .session_policy = a->req.tls_policy[0] ? a->req.tls_policy : NULL,
  };
  struct sockaddr_storage *sa = &a->addrs[a->ai];
  if (o.local_addr && o.local_addr->sa_family != sa->ss_family)
    o.local_addr = NULL;
  atomic_fetch_add(&r->out_conns, 1);
  int rc =
      smtp_client_connect(&a->c, d->dw->loop, &o, (const struct sockaddr *)sa,
                          a->mx.host, on_ready, a);
  if (rc != 0) {
    atomic_fetch_sub(&r->out_conns, 1);
    attempt_fail(a, true, "4.3.0", "cannot start connection: %s",
                 postern_strerror(rc));
    a->ai++;
    attempt_next_addr(a);
  }
}

static void addr_text(const struct sockaddr_storage *ss, char *out,
                      size_t cap) {
  char ip[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    port = ntohs(s4->sin_port);
    snprintf(out, cap, "%s:%u", ip, port);
  } else {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    port = ntohs(s6->sin6_port);
    snprintf(out, cap, "[%s]:%u", ip, port);
  }
}

static enum policy_tls_level tls_of(enum smtp_tls_level l) {
  switch (l) {
  case SMTP_TLS_AUTHENTICATED:
    return POLICY_TLS_LEVEL_AUTHENTICATED;
  case SMTP_TLS_ENCRYPTED:
    return POLICY_TLS_LEVEL_ENCRYPTED;
  default:
    return POLICY_TLS_LEVEL_NONE;
  }
}

/* Whether the policies would accept a plaintext session with this host:
 * decides the opportunistic plaintext retry after a failed handshake. */
static bool plaintext_acceptable(struct attempt *a) {
  if (a->req.tls_required)
    return false;
  struct policy_conn pc = {.host = a->mx.host,
                           .reached = POLICY_TLS_LEVEL_NONE,
                           .verify_error = "",
                           .dane_usable = a->req.dane_usable,
                           .mx_level = a->mxv.level,
                           .hypothetical = true};
  struct policy_conn_verdict v;
  policy_chain_check_conn(a->crun, &pc, &v);
  return v.result.outcome == POLICY_OK;
}

static void on_ready(struct smtp_client *c, int status,
                     const struct smtp_client_facts *f, void *arg) {
  struct attempt *a = arg;
  struct dest *d = a->d;
  struct relay *r = d->dw->r;
  char addr[64];
  addr_text(&a->addrs[a->ai], addr, sizeof addr);
  a->c = NULL;
  if (status != 0) {
    char reply[600] = "";
    if (f && f->last_reply && f->last_reply->code)
      smtp_reply_format(f->last_reply, reply, sizeof reply);
    smtp_client_close(c, client_closed_free, r);
    /* A handshake can fail without a TLS error: the server may hang up or
     * go silent after its 220 to STARTTLS (smtp_client.h: starttls is
     * then FAILED whatever the status). */
    bool tls_failed =
        status == POSTERN_ETLS || (f && f->starttls == SMTP_STARTTLS_FAILED);
    if (tls_failed && !a->plaintext) {
      /* RFC 7435 §3: fall back to cleartext only when no policy demands
       * TLS for this host; otherwise this host is unusable now. */
      if (plaintext_acceptable(a)) {
        postern_log(POSTERN_LOG_INFO, "starttls_failed_plaintext_retry", "mx",
                    a->mx.host, "addr", addr, "reason",
                    f && f->tls_error ? f->tls_error : "", NULL);
        a->plaintext = true;
        attempt_connect(a);
        return;
      }
      attempt_fail(a, true, "4.7.5", "TLS handshake with %s failed: %s",
                   a->mx.host, f && f->tls_error ? f->tls_error : "");
    } else if (reply[0] == '5') {
      /* A 5xx greeting or EHLO/HELO reply arrived before the policy could
       * judge the session - in plaintext, before STARTTLS, anybody on the
       * path can send one. On its own it must never bounce mail to a
       * domain whose policy (DANE, MTA-STS) promises that an active
       * attacker can at most delay it: skip the host and try the next, as
       * Postfix does (smtp_skip_5xx_greeting); with none left, defer. */
      const struct smtp_reply *lr = f->last_reply;
      attempt_fail(a, true, lr->has_enh ? lr->enh : "4.0.0",
                   "host %s[%s] refused the session: %s", a->mx.host, addr,
                   reply);
    } else if (reply[0]) {
      attempt_fail(a, true, "4.0.0", "host %s[%s] said: %s", a->mx.host, addr,
                   reply);
    } else {
      attempt_fail(a, true, "4.4.1", "connect to %s[%s]: %s", a->mx.host, addr,
                   postern_strerror(status));
    }
    a->plaintext = false;
    a->ai++;
    attempt_next_addr(a);
    return;
  }
  /* Rank the session (step 3 of the MX loop). */
  const uint8_t *ders[16];
  size_t lens[16];
  size_t nchain = 0;
  if (f->tls) {
    size_t n = tls_conn_peer_chain_len(f->tls);
    for (size_t i = 0; i < n && nchain < 16; i++)
      if (tls_conn_peer_cert_der(f->tls, i, &ders[nchain], &lens[nchain]) == 0)
        nchain++;
  }
  struct policy_conn pc = {
      .host = a->mx.host,
      .reached = tls_of(f->tls_level),
      .pkix_ok = f->verify.pkix_ok,
      .name_ok = f->verify.name_ok,
      .verify_error = f->tls_error ? f->tls_error : "",
      .chain_len = nchain,
      .chain_der = ders,
      .chain_der_len = lens,
      .dane_usable = a->req.dane_usable,
      .mx_level = a->mxv.level,
  };
  if (a->req.tls_required && f->starttls != SMTP_STARTTLS_DONE) {
    smtp_client_close(c, client_closed_free, r);
    attempt_fail(a, true, "4.7.5", "TLS is required for %s but STARTTLS was %s",
                 a->mx.host, smtp_starttls_name(f->starttls));
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  struct policy_conn_verdict v;
  policy_chain_check_conn(a->crun, &pc, &v);
  struct probe_mx *pm = probe_cur(a);
  if (pm) {
    pm->connected = true;
    snprintf(pm->tried_addr, sizeof pm->tried_addr, "%s", addr);
    pm->tls_level = v.level;
    pm->mx_level = v.mx_level;
    snprintf(pm->tls_info, sizeof pm->tls_info, "starttls=%s%s%s%s%s%s%s",
             smtp_starttls_name(f->starttls), f->tls_version ? " " : "",
             f->tls_version ? f->tls_version : "", f->tls_cipher ? " " : "",
             f->tls_cipher ? f->tls_cipher : "",
             f->tls_error && f->tls_error[0] ? " verify: " : "",
             f->tls_error ? f->tls_error : "");
  }
  if (v.result.outcome != POLICY_OK) {
    /* A session the policy rejected is never offered again: resuming it
     * would bring back the chain that just failed. */
    smtp_client_forget_tls_session(c);
    smtp_client_close(c, client_closed_free, r);
    attempt_fail(a, v.result.outcome == POLICY_TEMPFAIL, v.result.status, "%s",
                 v.result.reason);
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  if (pm) {
    /* Probe: this candidate would take the mail; say so, QUIT, and go on
     * to rank the others too. */
    pm->acceptable = true;
    smtp_client_close(c, client_closed_free, r);
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  /* Acceptable: the attempt becomes a connection of the destination. */
  struct conn *cn = calloc(1, sizeof *cn);
  if (cn == NULL) {
    smtp_client_close(c, client_closed_free, r);
    attempt_fail(a, true, "4.3.0", "out of memory");
    attempt_exhausted(a);
    return;
  }
  cn->d = d;
  cn->r = r;
  cn->c = c;
  snprintf(cn->mx, sizeof cn->mx, "%s", a->mx.host);
  snprintf(cn->addr, sizeof cn->addr, "%s", addr);
  /* Logged and counted: the levels the connection really had. */
  cn->mx_level = v.mx_level;
  cn->tls_level = v.level;
  metrics_inc(METRICS_CONNECTIONS_OPENED);
  uv_timer_init(d->dw->loop, &cn->idle);
  cn->idle.data = cn;
  cn->next = d->conns;
  d->conns = cn;
  d->nconns++;
  d->saturated = false;
  d->temp_seen = false;
  postern_log(POSTERN_LOG_DEBUG, "connection_ready", "dest", d->key, "mx",
              cn->mx, "addr", addr, "mx_level",
              policy_mx_level_name(cn->mx_level), "tls_level",
              policy_tls_level_name(cn->tls_level), NULL);
  attempt_free(a);
  uv_timer_start(&cn->idle, conn_next_soon, 0, 0);
  dest_kick(d);
}

static void attempt_next_addr(struct attempt *a) {
  if (atomic_load(&a->d->dw->r->stopping)) {
    attempt_fail(a, true, "4.3.2", "shutting down");
    attempt_exhausted(a);
    return;
  }
  if (a->ai < a->naddr) {
    attempt_connect(a);
    return;
  }
  a->ci++;
  attempt_next_candidate(a);
}

static void on_conn_prepared(void *arg, struct policy_conn_run *crun,
                             const struct policy_conn_req *req) {
  struct attempt *a = arg;
  a->crun = crun;
  a->req = *req;
  struct probe_mx *pm = probe_cur(a);
  if (pm) {
    pm->conn_prepared = true;
    pm->tls_required = req->tls_required;
    pm->dane_usable = req->dane_usable;
  }
  if (req->result.outcome != POLICY_OK) {
    attempt_fail(a, req->result.outcome == POLICY_TEMPFAIL, req->result.status,
                 "%s", req->result.reason);
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  a->ai = 0;
  a->plaintext = false;
  attempt_next_addr(a);
}

static uint16_t cand_port(struct attempt *a) {
  struct dest *d = a->d;
  return d->routed ? d->route.port : d->dw->r->cfg->delivery.port;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port) {
  if (ss->ss_family == AF_INET)
    ((struct sockaddr_in *)ss)->sin_port = htons(port);
  else
    ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static void prepare_conn(struct attempt *a) {
  struct dest *d = a->d;
  struct probe_mx *pm = probe_cur(a);
  if (pm) {
    pm->naddrs = 0;
    for (size_t i = 0; i < a->naddr && i < PROBE_MAX_ADDRS; i++)
      addr_text(&a->addrs[i], pm->addrs[pm->naddrs++], sizeof pm->addrs[0]);
    pm->addrs_authenticated = a->addrs_authenticated;
  }
  struct policy_host h = {.mx = &a->mx,
                          .addrs_authenticated = a->addrs_authenticated,
                          .canonical = a->canonical};
  struct policy_env e = penv(d);
  policy_conn_run_free(a->crun);
  a->crun = NULL;
  int rc = policy_chain_prepare_conn(a->drun, &e, &h, on_conn_prepared, a);
  if (rc != 0) {
    attempt_fail(a, true, "4.3.0", "policy: %s", postern_strerror(rc));
    a->ci++;
    attempt_next_candidate(a);
  }
}

static void on_addrs(const struct dns_answer *ans, void *arg) {
  struct attempt *a = arg;
  a->q = NULL;
  if (ans->status == DNS_CANCELED) {
    attempt_exhausted(a);
    return;
  }
  if (ans->status != DNS_ANSWER) {
    bool temp = ans->status == DNS_TEMPFAIL || ans->status == DNS_MALFORMED;
    attempt_fail(a, temp, temp ? "4.4.3" : "5.4.4", "address lookup for %s: %s",
                 a->mx.host, dns_status_name(ans->status));
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  /* A family whose lookup failed or was bogus is dropped, never taken for
   * "insecure": with a validated A RRset next to a bogus AAAA one, DANE
   * applies to the A addresses alone (RFC 7672 §2.1.1). */
  bool use[2];
  a->addrs_authenticated = dns_host_select(ans, use);
  a->naddr = 0;
  uint16_t port = cand_port(a);
  for (size_t i = 0; i < ans->nrr && a->naddr < MAX_ADDRS; i++) {
    struct sockaddr_storage *ss = &a->addrs[a->naddr];
    memset(ss, 0, sizeof *ss);
    uint16_t t = ans->rr[i].type;
    if ((t == DNS_T_A && !use[DNS_FAMILY_A]) ||
        (t == DNS_T_AAAA && !use[DNS_FAMILY_AAAA]))
      continue;
    if (t == DNS_T_A) {
      struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
      s4->sin_family = AF_INET;
      s4->sin_addr = ans->rr[i].u.a;
    } else if (t == DNS_T_AAAA) {
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
      s6->sin6_family = AF_INET6;
      s6->sin6_addr = ans->rr[i].u.aaaa;
    } else {
      continue;
    }
    set_port(ss, port);
    a->naddr++;
  }
  snprintf(a->canonical, sizeof a->canonical, "%s",
           ans->cname ? ans->cname : a->mx.host);
  prepare_conn(a);
}

static void attempt_next_candidate(struct attempt *a) {
  struct dest *d = a->d;
  if (atomic_load(&d->dw->r->stopping)) {
    attempt_fail(a, true, "4.3.2", "shutting down");
    attempt_exhausted(a);
    return;
  }
  if (a->ci >= a->ncand) {
    attempt_exhausted(a);
    return;
  }
  struct candidate *cand = &a->cand[a->ci];
  snprintf(a->last_mx, sizeof a->last_mx, "%s", cand->host);
  /* Only a host the configuration names directly ([host] route, no MX
   * lookup) is a non-MX destination (RFC 7672 §2.2.2). A route whose
   * target is looked up by MX is an ordinary MX lookup of that target: its
   * hosts are authenticated by the MX RRset's AD bit alone (§2.2.1). */
  a->mx = (struct policy_mx){.domain = d->domain,
                             .host = cand->host,
                             .port = cand_port(a),
                             .mx_authenticated = a->mx_authenticated,
                             .implicit = cand->implicit,
                             .routed = d->routed && d->route.no_mx};
  policy_chain_check_mx(a->drun, &a->mx, &a->mxv);
  struct probe_mx *pm = probe_cur(a);
  if (pm) {
    snprintf(pm->host, sizeof pm->host, "%s", cand->host);
    pm->pref = cand->pref;
    pm->implicit = cand->implicit;
    pm->checked = true;
    pm->mx_level = a->mxv.level;
  }
  if (a->mxv.result.outcome != POLICY_OK) {
    attempt_fail(a, a->mxv.result.outcome == POLICY_TEMPFAIL,
                 a->mxv.result.status, "%s", a->mxv.result.reason);
    a->ci++;
    attempt_next_candidate(a);
    return;
  }
  /* An address literal needs no lookup. */
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, cand->host, &s4->sin_addr) == 1) {
    ss.ss_family = AF_INET;
  } else if (inet_pton(AF_INET6, cand->host, &s6->sin6_addr) == 1) {
    ss.ss_family = AF_INET6;
  }
  if (ss.ss_family) {
    set_port(&ss, cand_port(a));
    a->addrs[0] = ss;
    a->naddr = 1;
    a->addrs_authenticated = false;
    snprintf(a->canonical, sizeof a->canonical, "%s", cand->host);
    prepare_conn(a);
    return;
  }
  int rc = dns_resolve_host(d->dw->dns, cand->host, on_addrs, a, &a->q);
  if (rc != 0) {
    attempt_fail(a, true, "4.4.3", "address lookup for %s: %s", cand->host,
                 postern_strerror(rc));
    a->ci++;
    attempt_next_candidate(a);
  }
}

static uint32_t rnd32(void) {
  uint32_t v = 0;
  if (getrandom(&v, sizeof v, 0) != sizeof v)
    v = (uint32_t)uv_hrtime();
  return v;
}

static void on_mx(const struct dns_answer *ans, void *arg) {
  struct attempt *a = arg;
  struct dest *d = a->d;
  a->q = NULL;
  const char *name = d->routed ? d->route.host : d->domain;
  switch (ans->status) {
  case DNS_CANCELED:
    attempt_exhausted(a);
    return;
  case DNS_NXDOMAIN:
    attempt_fail(a, false, "5.1.2", "domain %s does not exist", name);
    attempt_exhausted(a);
    return;
  case DNS_TEMPFAIL:
  case DNS_MALFORMED:
    attempt_fail(a, true, "4.4.3", "MX lookup for %s: %s", name,
                 dns_status_name(ans->status));
    attempt_exhausted(a);
    return;
  case DNS_NODATA:
    /* RFC 5321 §5.1: no MX records, the domain is its own implicit MX. */
    snprintf(a->cand[0].host, sizeof a->cand[0].host, "%s", name);
    a->cand[0].implicit = true;
    a->ncand = 1;
    a->mx_authenticated = ans->authenticated;
    break;
  case DNS_ANSWER:
    if (ans->null_mx) {
      /* RFC 7505 §3: the domain accepts no mail at all. */
      attempt_fail(a, false, "5.1.10", "domain %s accepts no mail (null MX)",
                   name);
      attempt_exhausted(a);
      return;
    }
    a->mx_authenticated = ans->authenticated;
    a->ncand = 0;
    for (size_t i = 0; i < ans->nrr && a->ncand < MAX_CANDIDATES; i++) {
      if (ans->rr[i].type != DNS_T_MX || strcmp(ans->rr[i].u.mx.host, ".") == 0)
        continue;
      struct candidate *c = &a->cand[a->ncand++];
      snprintf(c->host, sizeof c->host, "%s", ans->rr[i].u.mx.host);
      c->pref = ans->rr[i].u.mx.pref;
      c->implicit = false;
    }
    /* Order by preference; equal preferences in random order (RFC 5321
     * §5.1): shuffle first, then a stable insertion sort by preference. */
    for (size_t i = a->ncand; i > 1; i--) {
      size_t k = rnd32() % i;
      struct candidate t = a->cand[i - 1];
      a->cand[i - 1] = a->cand[k];
      a->cand[k] = t;
    }
    for (size_t i = 1; i < a->ncand; i++) {
      struct candidate t = a->cand[i];
      size_t k = i;
      while (k > 0 && a->cand[k - 1].pref > t.pref) {
        a->cand[k] = a->cand[k - 1];
        k--;
      }
      a->cand[k] = t;
    }
    break;
  }
  a->ci = 0;
  attempt_next_candidate(a);
}

static void on_domain_prepared(void *arg, struct policy_domain_run *run,
                               const struct policy_result *r) {
  struct attempt *a = arg;
  struct dest *d = a->d;
  a->drun = run;
  if (a->probe)
    policy_domain_run_describe(run, a->probe->res.policy,
                               sizeof a->probe->res.policy);
  if (r->outcome != POLICY_OK) {
    attempt_fail(a, r->outcome == POLICY_TEMPFAIL, r->status, "%s", r->reason);
    attempt_exhausted(a);
    return;
  }
  if (d->routed && d->route.no_mx) {
    snprintf(a->cand[0].host, sizeof a->cand[0].host, "%s", d->route.host);
    a->ncand = 1;
    a->ci = 0;
    attempt_next_candidate(a);
    return;
  }
  const char *name = d->routed ? d->route.host : d->domain;
  int rc = dns_query(d->dw->dns, name, DNS_T_MX, on_mx, a, &a->q);
  if (rc != 0) {
    attempt_fail(a, true, "4.4.3", "MX lookup for %s: %s", name,
                 postern_strerror(rc));
    attempt_exhausted(a);
  }
}

static void attempt_start(struct dest *d) {
  struct attempt *a = calloc(1, sizeof *a);
  if (a == NULL)
    return;
  a->d = d;
  a->next = d->attempts;
  d->attempts = a;
  d->nattempts++;
  struct policy_env e = penv(d);
  const char *pdomain = d->routed ? d->route.host : d->domain;
  int rc = policy_chain_prepare_domain(d->dw->r->chain, &e, pdomain,
                                       on_domain_prepared, a);
  if (rc != 0) {
    attempt_fail(a, true, "4.3.0", "policy: %s", postern_strerror(rc));
    /* Callbacks must not run inside dest_kick's loop: settle later. */
    attempt_exhausted(a);
  }
}

/* ---- per-worker setup ---- */

int engine__deliver_worker_init(struct relay *r, struct worker *w) {
  struct dwork *dw = calloc(1, sizeof *dw);
  if (dw == NULL)
    return POSTERN_ENOMEM;
  dw->r = r;
  dw->w = w;
  dw->loop = &w->loop;
  struct dns_opts o;
  relay_dns_opts(r->cfg, &o);
  int rc = dns_resolver_new(&w->loop, &o, &dw->dns);
  if (rc != 0) {
    free(dw);
    return rc;
  }
  /* Without HTTPS (libcurl unusable) the relay still runs; build_chain
   * refuses an mtasts module in that case. */
  if (https_client_new(&w->loop, &dw->https) != 0)
    dw->https = NULL;
  w->ud2 = dw;
  return 0;
}

/* Draining for shutdown: give up every job not yet on a connection. */
void engine__deliver_worker_drain(struct worker *w, struct worker_task *t) {
  struct dwork *dw = dw_of(w);
  (void)t; /* owned by relay.c */
  if (dw == NULL)
    return;
  for (size_t b = 0; b < DEST_BUCKETS; b++)
    for (struct dest *d = dw->buckets[b]; d; d = d->hnext) {
      struct job *j;
      while ((j = dest_pop(d)) != NULL)
        engine__job_abandon(j);
    }
}

/* On shutdown: abandon every job (it stays queued and due), close every
 * connection, cancel every attempt's lookup and close the resolver. The
 * callbacks that follow unwind the attempts; the memory they could touch
 * is freed in engine__deliver_worker_exit, after the loop has ended. */
void engine__deliver_worker_stop(struct worker *w) {
  struct dwork *dw = dw_of(w);
  if (dw == NULL)
    return;
  for (size_t b = 0; b < DEST_BUCKETS; b++) {
    for (struct dest *d = dw->buckets[b]; d; d = d->hnext) {
      struct job *j;
      while ((j = dest_pop(d)) != NULL)
        engine__job_abandon(j);
      while (d->conns) {
        struct conn *cn = d->conns;
        ctxn_abandon(&cn->cur);
        ctxn_abandon(&cn->next_tx);
        conn_drop(cn);
      }
      struct attempt *a = d->attempts;
      while (a) {
        struct attempt *next = a->next;
        if (a->c) {
          smtp_client_close(a->c, client_closed_free, dw->r);
          a->c = NULL;
          attempt_free(a);
        } else if (a->q) {
          dns_query_cancel(a->q);
        }
        a = next;
      }
      if (!d->freeing) {
        d->freeing = true;
        uv_close((uv_handle_t *)&d->rate_timer, NULL);
      }
    }
  }
  dns_resolver_close(dw->dns, NULL, NULL);
  if (dw->https)
    https_client_close(dw->https, NULL, NULL);
}

void engine__deliver_worker_exit(struct worker *w) {
  struct dwork *dw = dw_of(w);
  if (dw == NULL)
    return;
  for (size_t b = 0; b < DEST_BUCKETS; b++) {
    struct dest *d = dw->buckets[b];
    while (d) {
      struct dest *next = d->hnext;
      while (d->attempts)
        attempt_free(d->attempts);
      free(d);
      d = next;
    }
  }
  w->ud2 = NULL;
  free(dw);
}

/* ---- postern-probe: the MX loop without mail ---- */

static void probe_dest_closed(uv_handle_t *h) {
  struct dest *d = h->data;
  struct probe *p = (struct probe *)d->dw; /* dw is the probe's first member */
  free(d);
  free(p);
}

static void probe_finish(struct attempt *a) {
  struct probe *p = a->probe;
  struct probe_result *res = &p->res;
  for (size_t i = 0; i < res->nmx; i++) {
    if (res->mx[i].acceptable) {
      res->deliverable = true;
      res->deliver_to = i;
      snprintf(res->status, sizeof res->status, "2.0.0");
      snprintf(res->reason, sizeof res->reason, "would deliver to %s",
               res->mx[i].host);
      break;
    }
  }
  if (!res->deliverable) {
    /* The same rule as for real mail (step 5 of the MX loop). */
    bool temp = a->any_temp || !a->any_fail;
    res->temporary = temp;
    snprintf(res->status, sizeof res->status, "%s",
             temp ? (a->any_temp ? a->temp_status : "4.4.1") : a->perm_status);
    snprintf(res->reason, sizeof res->reason, "%s",
             temp ? (a->any_temp ? a->temp_reason : "no MX host could be tried")
                  : a->perm_reason);
  }
  p->cb(p->arg, res);
  struct dest *d = a->d;
  attempt_free(a);
  d->freeing = true;
  uv_close((uv_handle_t *)&d->rate_timer, probe_dest_closed);
}

int probe_start(struct relay *r, uv_loop_t *loop, struct dns_resolver *dns,
                const char *domain, probe_cb cb, void *arg) {
  struct probe *p = calloc(1, sizeof *p);
  struct dest *d = calloc(1, sizeof *d);
  struct attempt *a = calloc(1, sizeof *a);
  if (p == NULL || d == NULL || a == NULL) {
    free(p);
    free(d);
    free(a);
    return POSTERN_ENOMEM;
  }
  p->dw.r = r;
  p->dw.loop = loop;
  p->dw.dns = dns;
  p->cb = cb;
  p->arg = arg;
  snprintf(p->res.domain, sizeof p->res.domain, "%s", domain);
  d->dw = &p->dw;
  snprintf(d->domain, sizeof d->domain, "%s", domain);
  d->routed = engine__dest_key(r, domain, &d->route, d->key, sizeof d->key);
  p->res.routed = d->routed;
  if (d->routed)
    snprintf(p->res.route, sizeof p->res.route, "%s", d->key);
  uv_timer_init(loop, &d->rate_timer);
  d->rate_timer.data = d;
  p->d = d;
  a->d = d;
  a->probe = p;
  d->attempts = a;
  d->nattempts = 1;
  struct policy_env e = penv(d);
  const char *pdomain = d->routed ? d->route.host : d->domain;
  int rc =
      policy_chain_prepare_domain(r->chain, &e, pdomain, on_domain_prepared, a);
  if (rc != 0) {
    d->attempts = NULL;
    d->nattempts = 0;
    free(a);
    uv_close((uv_handle_t *)&d->rate_timer, probe_dest_closed);
    return rc;
  }
  return 0;
}
