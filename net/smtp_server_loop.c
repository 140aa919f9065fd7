/*
 * smtp_server_loop.c - the SMTP server's loop contexts and the calls that
 * reach them from other threads: smtp_server_txn_done() (the engine's
 * answer to a message), smtp_server_stop() and smtp_server_close(); and
 * freeing the server when the last loop is done.
 *
 * Invariants:
 *  - another thread never touches a loop's sessions: it queues a finished
 *    transaction on the loop's `done` list (under `mu`) or sets a request
 *    flag (atomics), then wakes the loop with uv_async_send(); on_async
 *    does the work on the loop's own thread;
 *  - a loop that handled the close request closes its async handle once it
 *    has no listener and no session left (smtp_server__loop_maybe_finish);
 *    `handles_live` counts the loops whose async handle is open, and the
 *    one that drops it to zero frees the server, so no txn_done can reach
 *    freed memory.
 */
#include "net/smtp_server_session.h"

#include "base/postern_err.h"

#include <stdio.h>
#include <stdlib.h>

static void process_done(struct loop_ctx *lc) {
  pthread_mutex_lock(&lc->mu);
  struct smtp_server_txn *t = lc->done;
  lc->done = NULL;
  pthread_mutex_unlock(&lc->mu);
  /* The list is in reverse order of arrival, which does not matter: each
   * session has at most one transaction in flight. */
  while (t != NULL) {
    struct smtp_server_txn *next = t->next; /* t may be freed below */
    smtp_server__txn_finished(t->s, t);
    t = next;
  }
}

static void srv_free(struct smtp_server *srv) {
  for (unsigned i = 0; i < srv->nloops; i++)
    pthread_mutex_destroy(&srv->lcs[i].mu);
  free(srv->lcs);
  free(srv->accept);
  smtp_auth_limit_free(srv->limit);
  free(srv);
}

static void on_async_close(uv_handle_t *h) {
  struct loop_ctx *lc = h->data;
  struct smtp_server *srv = lc->srv;
  if (atomic_fetch_sub(&srv->handles_live, 1) == 1) {
    void (*cb)(void *) = srv->closed_cb;
    void *ud = srv->closed_ud;
    srv_free(srv);
    if (cb)
      cb(ud);
  }
}

void smtp_server__loop_maybe_finish(struct loop_ctx *lc) {
  if (!lc->closing || lc->listener_open || lc->nsess > 0 || lc->async_closing)
    return;
  lc->async_closing = true;
  uv_close((uv_handle_t *)&lc->async, on_async_close);
}

static void on_async(uv_async_t *a) {
  struct loop_ctx *lc = a->data;
  struct smtp_server *srv = lc->srv;
  process_done(lc);
  if (atomic_load(&srv->stop_req) && !lc->stopping) {
    lc->stopping = true;
    smtp_server__stop_listening(lc);
  }
  if (atomic_load(&srv->close_req) && !lc->closing) {
    lc->closing = true;
    smtp_server__stop_listening(lc);
    for (struct session *s = lc->sessions, *next; s != NULL; s = next) {
      next = s->next;
      if (s->txn_pending) {
        s->close_after = true;
      } else if (!s->handles_closing && s->st != SMTP_SERVER__S_CLOSING) {
        smtp_server__reply(
            s, "421 4.3.2 Service shutting down, closing connection");
        smtp_server__session_close(s);
      }
    }
    smtp_server__loop_maybe_finish(lc);
  }
}

void smtp_server__loop_init(struct smtp_server *srv, unsigned index,
                            uv_loop_t *loop) {
  struct loop_ctx *lc = &srv->lcs[index];
  lc->srv = srv;
  lc->loop = loop;
  lc->index = index;
  pthread_mutex_init(&lc->mu, NULL);
  lc->async.data = lc;
  uv_async_init(lc->loop, &lc->async, on_async);
  atomic_fetch_add(&srv->handles_live, 1);
}

void smtp_server_txn_done(struct smtp_server_txn *txn, int status,
                          const char *id) {
  struct loop_ctx *lc = txn->s->lc;
  txn->status = status;
  txn->has_id = id != NULL;
  if (id != NULL) {
    snprintf(txn->id, sizeof txn->id, "%s", id);
  }
  pthread_mutex_lock(&lc->mu);
  txn->next = lc->done;
  lc->done = txn;
  pthread_mutex_unlock(&lc->mu);
  uv_async_send(&lc->async);
}

void smtp_server_stop(struct smtp_server *srv) {
  atomic_store(&srv->stop_req, true);
  for (unsigned i = 0; i < srv->nloops; i++)
    uv_async_send(&srv->lcs[i].async);
}

void smtp_server_close(struct smtp_server *srv, void (*closed_cb)(void *),
                       void *ud) {
  srv->closed_cb = closed_cb;
  srv->closed_ud = ud;
  /* A loop woken by something else may see close_req, and the last loop
   * to finish frees the server, before this loop has signalled them all:
   * hold one reference of our own until it has. */
  atomic_fetch_add(&srv->handles_live, 1);
  atomic_store(&srv->close_req, true);
  for (unsigned i = 0; i < srv->nloops; i++)
    uv_async_send(&srv->lcs[i].async);
  if (atomic_fetch_sub(&srv->handles_live, 1) == 1) {
    /* Every loop finished meanwhile: this thread is the last one out. */
    void (*cb)(void *) = srv->closed_cb;
    void *cud = srv->closed_ud;
    srv_free(srv);
    if (cb)
      cb(cud);
  }
}
