/*
 * conn.c - the connections of a destination once the MX loop found an
 * acceptable session: they carry the destination's messages one after the
 * other (reuse, up to reuse_limit), chain a waiting message behind the one
 * in progress when the next hop is fast, and close after idle_timeout.
 *
 * The hot path is here: conn_send_next -> smtp_client_send -> on_sent ->
 * (chained message, or the next one from the loop). One allocation per
 * message (struct ctxn: the message's SMTP view), nothing else.
 *
 * Ownership: a conn owns its client and the messages it is sending (cur,
 * next_tx); it is on its destination's list until conn_drop, and its
 * memory is freed once its client and both its handles (idle timer,
 * defer) are closed. A message is never started from inside a client
 * callback: the conn's defer starts it from the loop. One thread: the
 * worker's.
 */
#include "engine/dest.h"
#include "base/postern_idna.h"
#include "base/postern_utf8.h"

#include "engine/metrics.h"
#include "net/defer.h"
#include "net/rfc5322.h"
#include "net/smtp_client.h"
#include "base/postern_htab.h"
#include "base/postern_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A message is chained behind the one in progress (smtp_client_send_next)
 * only on a connection whose last message took at most chain_threshold and
 * whose current body is at most CHAIN_BODY_MAX: there the chained message
 * waits for nothing a fresh connection would not also wait for, and one
 * write and one read on each side carry two messages. On a slow next hop
 * (a remote MX, a content filter) each message keeps a connection of its
 * own. */
#define CHAIN_BODY_MAX (64u * 1024)

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
  struct lease *lease;  /* fleet mode: the slot it holds, or NULL */
  struct ctxn *cur;     /* being sent, or NULL when idle */
  struct ctxn *next_tx; /* chained behind cur, or NULL */
  uint64_t cur_start_ms, last_txn_ms;
  uv_timer_t idle;
  struct net_defer soon; /* starts the next message from the loop */
  int handles;           /* open: idle and soon */
  bool closing;
  /* Usable by dest_kick: false from a client callback until the loop runs
   * conn_next_soon, so that no send starts inside the client's callback. */
  bool ready;
  unsigned sent;
  char mx[256];
  char addr[64];
  enum policy_mx_level mx_level;
  enum policy_tls_level tls_level;
  /* The configuration the session was judged under: after a reload it
   * carries no new message (its policy may have changed). */
  uint64_t cfg_gen;
};

static void conn_send_next(struct conn *cn);
static void conn_chain(struct conn *cn);

static uint64_t now_ms(struct dest *d) {
  return relay_now_ms(d->dw->env.r);
}

/* ---- lifetime ---- */

static void conn_release(struct conn *cn) {
  if (--cn->handles == 0)
    free(cn);
}

static void conn_timer_closed(uv_handle_t *h) {
  conn_release(h->data);
}

static void conn_defer_closed(struct net_defer *d) {
  conn_release(d->data);
}

static void conn_closed(struct smtp_client *c, void *arg) {
  (void)c;
  struct conn *cn = arg;
  /* The destination may be gone by now: use only the relay. The fleet's
   * slot is given back only now that the socket is closed, so that the
   * destination never sees more connections than the fleet's limit. */
  engine__slot_release(&cn->r->slots);
  engine__lease_release(cn->lease);
  cn->lease = NULL;
  uv_close((uv_handle_t *)&cn->idle, conn_timer_closed);
  net_defer_close(&cn->soon, conn_defer_closed);
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
  /* d may be freed before the socket has closed: the lease must not
   * point at it any more. */
  engine__lease_detach(cn->lease);
  uv_timer_stop(&cn->idle);
  net_defer_cancel(&cn->soon);
  smtp_client_close(cn->c, conn_closed, cn);
}

static void conn_idle_expired(uv_timer_t *t) {
  struct conn *cn = t->data;
  struct dest *d = cn->d;
  conn_drop(cn);
  engine__dest_maybe_free(d);
}

/* Why cn may carry no new message, or NULL: it was judged under a
 * configuration since reloaded (its policy may have changed), or its fleet
 * lease is gone. */
static const char *conn_retired(const struct conn *cn) {
  if (cn->cfg_gen != cn->r->cfg->generation)
    return "configuration reloaded";
  if (engine__lease_lost(cn->lease))
    return "fleet lease lost";
  return NULL;
}

/* Runs from the loop after a message ended (or the session was accepted):
 * the next waiting message, or idle until idle_timeout. */
static void conn_next_soon(struct net_defer *nd) {
  struct conn *cn = nd->data;
  struct dest *d = cn->d;
  struct relay *r = d->dw->env.r;
  cn->ready = true;
  const char *why = conn_retired(cn);
  if (why != NULL) {
    postern_log(POSTERN_LOG_DEBUG, "connection_released", "dest", d->key,
                "reason", why, NULL);
    conn_drop(cn);
    engine__dest_kick(d);
    return;
  }
  if (d->head && engine__dest_rate_allows(d)) {
    conn_send_next(cn);
    return;
  }
  if (d->head == NULL && atomic_load(&r->slot_waiters) > 0) {
    /* Other destinations wait for a slot (max_connections): an idle
     * session must not hold one. */
    postern_log(POSTERN_LOG_DEBUG, "connection_released", "dest", d->key,
                "reason", "others wait for a connection slot", NULL);
    conn_drop(cn);
    engine__dest_kick(d);
    return;
  }
  uv_timer_start(&cn->idle, conn_idle_expired, r->cfg->delivery.idle_timeout_ms,
                 0);
  engine__dest_kick(d);
}

void engine__conns_trim_idle(struct dwork *dw) {
  /* Collect first: a drop may free its destination (the table must not
   * change during the walk). */
  size_t pos = 0, n = 0, cap = postern_htab_count(dw->dests);
  struct dest **ds = cap ? calloc(cap, sizeof *ds) : NULL;
  struct dest *d;
  while (ds && (d = postern_htab_next(dw->dests, &pos, NULL)) != NULL)
    if (!d->freeing && d->head == NULL)
      ds[n++] = d;
  for (size_t i = 0; i < n; i++) {
    d = ds[i];
    struct conn *cn = d->conns;
    while (cn) {
      struct conn *next = cn->next;
      if (cn->cur == NULL && cn->ready && !cn->closing) {
        postern_log(POSTERN_LOG_DEBUG, "connection_released", "dest", d->key,
                    "reason", "idle while others wait for a connection slot",
                    NULL);
        conn_drop(cn);
      }
      cn = next;
    }
    engine__dest_maybe_free(d);
  }
  free(ds);
}

struct conn *engine__conn_open(struct dest *d, const struct mx_session *s,
                               struct lease *lease) {
  struct conn *cn = calloc(1, sizeof *cn);
  if (cn == NULL)
    return NULL;
  cn->lease = lease;
  cn->d = d;
  cn->r = d->dw->env.r;
  cn->c = s->c;
  snprintf(cn->mx, sizeof cn->mx, "%s", s->mx);
  snprintf(cn->addr, sizeof cn->addr, "%s", s->addr);
  /* Logged and counted: the levels the connection really had. */
  cn->mx_level = s->mx_level;
  cn->tls_level = s->tls_level;
  cn->cfg_gen = cn->r->cfg->generation;
  metrics_inc(METRICS_CONNECTIONS_OPENED);
  uv_timer_init(d->dw->env.loop, &cn->idle);
  cn->idle.data = cn;
  net_defer_init(d->dw->env.loop, &cn->soon, cn);
  cn->handles = 2;
  cn->next = d->conns;
  d->conns = cn;
  d->nconns++;
  postern_log(POSTERN_LOG_DEBUG, "connection_ready", "dest", d->key, "mx",
              cn->mx, "addr", cn->addr, "mx_level",
              policy_mx_level_name(cn->mx_level), "tls_level",
              policy_tls_level_name(cn->tls_level), NULL);
  return cn;
}

void engine__conn_start(struct conn *cn) {
  net_defer_arm(&cn->soon, conn_next_soon);
}

/* ---- messages ---- */

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

/* Room for an address whose domain became an A-label. */
#define ADDR_ALABEL_MAX 330

/* addr with its domain in A-label form (IDNA2008) into out; false when the
 * local part is not ASCII (only SMTPUTF8 can carry it) or the domain does
 * not convert. */
static bool addr_alabel(const char *addr, char *out, size_t cap) {
  const char *at = strrchr(addr, '@');
  if (at == NULL || postern_has_8bit(addr, (size_t)(at - addr)) ||
      (size_t)(at - addr) > 64)
    return false;
  char dom[256];
  if (postern_idna_to_ascii(at + 1, dom, sizeof dom, NULL) != 0)
    return false;
  return (size_t)snprintf(out, cap, "%.*s@%s", (int)(at - addr), addr, dom) <
         cap;
}

/* The message to send for j (rcpts and notify texts in the same block),
 * or NULL when out of memory. */
static struct ctxn *ctxn_new(struct job *j) {
  const struct queue_env *env = j->m->env;
  /* A message that needs SMTPUTF8 only for the domains of its addresses
   * (ASCII local parts, an ASCII header) goes with their A-label forms and
   * without it, so that a next hop without SMTPUTF8 can take it too (RFC
   * 6531 §3.5: 5.6.7 only when the message really needs the extension). */
  bool utf8 = postern_has_8bit_str(env->sender);
  for (unsigned k = 0; k < j->n && !utf8; k++) {
    const char *a = env->rcpts[j->idx[k]].addr;
    utf8 = postern_has_8bit_str(a);
  }
  bool alabels =
      utf8 && !postern_has_8bit(j->m->body,
                                rfc5322_header_len(j->m->body, j->m->body_len));
  size_t extra = alabels ? (j->n + 1) * ADDR_ALABEL_MAX : 0;
  struct ctxn *tx = calloc(
      1, sizeof *tx + j->n * (sizeof *tx->rcpts + sizeof *tx->notify) + extra);
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
  bool eight = postern_has_8bit(j->m->body, j->m->body_len);
  const char *sender = env->sender;
  if (alabels) {
    char(*abuf)[ADDR_ALABEL_MAX] =
        (char(*)[ADDR_ALABEL_MAX])(tx->notify + j->n);
    bool ok = !postern_has_8bit_str(sender) ||
              addr_alabel(sender, abuf[j->n], ADDR_ALABEL_MAX);
    for (unsigned k = 0; k < j->n && ok; k++) {
      const char *a = tx->rcpts[k].addr;
      ok = !postern_has_8bit_str(a) || addr_alabel(a, abuf[k], ADDR_ALABEL_MAX);
    }
    if (ok) {
      if (postern_has_8bit_str(sender))
        sender = abuf[j->n];
      for (unsigned k = 0; k < j->n; k++)
        if (postern_has_8bit_str(tx->rcpts[k].addr))
          tx->rcpts[k].addr = abuf[k];
      utf8 = false;
    }
  }
  tx->msg = (struct smtp_message){
      .sender = sender,
      .ret = env->ret == QUEUE_RET_FULL
                 ? "FULL"
                 : (env->ret == QUEUE_RET_HDRS ? "HDRS" : NULL),
      .envid = env->envid[0] ? env->envid : NULL,
      .body_8bit = eight,
      .smtputf8 = utf8,
      /* RFC 8689 §4.2.1: the next hop gets REQUIRETLS on MAIL FROM. */
      .requiretls = env->requiretls,
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

static void on_sent(struct smtp_client *c, int status,
                    const struct smtp_send_result *res, void *arg) {
  (void)c;
  struct conn *cn = arg;
  struct ctxn *tx = cn->cur;
  struct job *j = tx->job;
  struct dest *d = cn->d;
  uint64_t now = now_ms(d);
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
    engine__job_set(j, k, o, dsn, reply);
    engine__job_log(
        j, k, cn->mx, cn->addr, cn->mx_level, cn->tls_level,
        o == QUEUE_OUTCOME_SENT
            ? "sent"
            : (o == QUEUE_OUTCOME_DEFERRED ? "deferred" : "bounced"),
        dsn, reply, now);
  }
  free(tx);
  engine__job_finish(j);
  cn->sent++;
  cn->last_txn_ms = now - cn->cur_start_ms;
  struct relay *r = d->dw->env.r;
  engine__dest_limits(d);
  if (status != 0 || cn->sent >= d->lim_reuse || atomic_load(&r->stopping) ||
      conn_retired(cn) != NULL) {
    if (cn->next_tx) {
      /* The chained message never reached DATA: closing the client
       * abandons it, and another connection carries it. */
      engine__dest_push_front(d, cn->next_tx->job);
      free(cn->next_tx);
      cn->next_tx = NULL;
    }
    conn_drop(cn);
    engine__dest_kick(d);
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
  net_defer_arm(&cn->soon, conn_next_soon);
}

/* Both callers have made sure cn is not retired (conn_retired). */
static void conn_send_next(struct conn *cn) {
  struct dest *d = cn->d;
  struct job *j = engine__dest_pop(d);
  if (j == NULL)
    return;
  struct ctxn *tx = ctxn_new(j);
  if (tx == NULL) {
    engine__job_fail_all(j, true, "4.3.0", "out of memory", cn->mx);
    return;
  }
  cn->cur = tx;
  cn->cur_start_ms = now_ms(d);
  int rc = smtp_client_send(cn->c, &tx->msg, on_sent, cn);
  if (rc != 0) {
    /* The server closed the idle session (or it broke): give the job back
     * and let another connection carry it. */
    cn->cur = NULL;
    free(tx);
    engine__dest_push_front(d, j);
    conn_drop(cn);
    engine__dest_kick(d);
    return;
  }
  conn_chain(cn);
}

/* Chains the next waiting job behind the message in progress, when the
 * connection is fast and the message small (see CHAIN_BODY_MAX). */
static void conn_chain(struct conn *cn) {
  struct dest *d = cn->d;
  struct relay *r = d->dw->env.r;
  if (d->head == NULL || cn->cur == NULL || cn->next_tx || cn->closing ||
      cn->cfg_gen != r->cfg->generation || cn->sent == 0 ||
      r->cfg->delivery.chain_threshold_ms == 0 ||
      cn->last_txn_ms > r->cfg->delivery.chain_threshold_ms ||
      cn->cur->msg.body_len > CHAIN_BODY_MAX || cn->sent + 2 > d->lim_reuse ||
      atomic_load(&r->stopping) || !engine__dest_rate_allows(d))
    return;
  struct job *j = engine__dest_pop(d);
  struct ctxn *tx = ctxn_new(j);
  if (tx == NULL) {
    engine__dest_push_front(d, j);
    return;
  }
  if (smtp_client_send_next(cn->c, &tx->msg, on_sent, cn) != 0) {
    /* Not chainable here (no PIPELINING, too big for the server...): it
     * goes out on its own. */
    free(tx);
    engine__dest_push_front(d, j);
    return;
  }
  cn->next_tx = tx;
  metrics_inc(METRICS_CHAINED);
}

/* ---- what the destination asks of its connections ---- */

void engine__conns_lease_adopt(struct dest *d) {
  for (struct conn *cn = d->conns; cn; cn = cn->next)
    if (cn->lease == NULL && !cn->closing)
      cn->lease = engine__lease_adopt(d);
}

bool engine__conns_feed(struct dest *d) {
  /* An idle connection that may carry no new message closes now: it frees
   * its slot, and the caller opens a new one if it needs one. */
  struct conn *next;
  for (struct conn *cn = d->conns; cn; cn = next) {
    next = cn->next;
    const char *why;
    if (cn->cur == NULL && !cn->closing && cn->ready &&
        (why = conn_retired(cn)) != NULL) {
      postern_log(POSTERN_LOG_DEBUG, "connection_released", "dest", d->key,
                  "reason", why, NULL);
      conn_drop(cn);
    }
  }
  /* A fast connection takes a waiting message behind its current one
   * before an idle connection does (see CHAIN_BODY_MAX). */
  for (struct conn *cn = d->conns; cn && d->head; cn = cn->next) {
    if (cn->cur != NULL)
      conn_chain(cn);
  }
  for (struct conn *cn = d->conns; cn && d->head; cn = cn->next) {
    if (cn->cur == NULL && !cn->closing && cn->ready) {
      if (!engine__dest_rate_allows(d))
        return false;
      uv_timer_stop(&cn->idle);
      conn_send_next(cn);
    }
  }
  return true;
}

size_t engine__conns_idle(const struct dest *d) {
  size_t idle = 0;
  for (const struct conn *cn = d->conns; cn; cn = cn->next)
    if (cn->cur == NULL && !cn->closing)
      idle++; /* ready now, or about to be */
  return idle;
}

void engine__conn_abandon(struct conn *cn) {
  ctxn_abandon(&cn->cur);
  ctxn_abandon(&cn->next_tx);
  conn_drop(cn);
}
