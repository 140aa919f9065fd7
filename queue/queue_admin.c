/*
 * queue_admin.c - qtool's changes to the queue: hold, release, retry and
 * delete, on listed ids, on every message, or on a domain's messages.
 *
 * They run on the calling thread, not through the writer, in write
 * transactions of at most ADMIN_CHUNK messages each (so --all on a huge
 * queue never makes one giant transaction); LMDB serialises them with the
 * writer's commits. Each message is rewritten with queue__msg_rewrite, so
 * the indexes and counters stay right; a running relay sees the change at
 * its next due scan. (Bounces are not an admin operation here: qtool
 * bounce goes through the relay's result path.)
 *
 * Ownership: ids are copied out of LMDB into a buffer owned by queue_admin
 * before they are changed; nothing is kept after return.
 */
#include "queue/internal.h"

#include "base/postern_err.h"

#include <stdlib.h>
#include <string.h>

#define ADMIN_CHUNK 2000

/* Applies op to id inside w. POSTERN_ENOENT with w->failed false: no such
 * message (nothing written); any other error: the transaction must be
 * aborted. */
static int admin_one(struct queue *q, struct queue__wtxn *w,
                     enum queue_admin_op op, const char *id, uint64_t now) {
  struct queue_env *old;
  int rc = queue__msg_get(q, w->txn, id, &old);
  if (rc)
    return rc;
  struct queue_env *e = queue__env_clone_shallow(old);
  if (!e) {
    free(old);
    return POSTERN_ENOMEM;
  }
  switch (op) {
  case QUEUE_ADMIN_HOLD:
    e->state = QUEUE_MSG_HELD;
    break;
  case QUEUE_ADMIN_RELEASE:
    if (e->state == QUEUE_MSG_HELD) {
      e->state = QUEUE_MSG_ACTIVE;
      for (size_t i = 0; i < e->n_rcpts; i++) {
        if (e->rcpts[i].state == QUEUE_RCPT_DEFERRED)
          e->state = QUEUE_MSG_DEFERRED;
      }
    }
    break;
  case QUEUE_ADMIN_RETRY:
    for (size_t i = 0; i < e->n_rcpts; i++) {
      if (queue__rcpt_left(&e->rcpts[i]))
        e->rcpts[i].next_ms = now;
    }
    if (e->state != QUEUE_MSG_HELD)
      e->state = QUEUE_MSG_ACTIVE;
    break;
  case QUEUE_ADMIN_DELETE:
    for (size_t i = 0; i < e->n_rcpts; i++) {
      if (queue__rcpt_left(&e->rcpts[i]))
        e->rcpts[i].state = QUEUE_RCPT_BOUNCED; /* only to drop it */
    }
    break;
  }
  rc = queue__msg_rewrite(q, w, old, e);
  free(e);
  free(old);
  return rc;
}

/*
 * One chunk of queue_admin in one write transaction: sel's listed ids from
 * `start`, or (all, or a domain) the next ADMIN_CHUNK ids after `last`,
 * collected into buf. Sets *n to the ids taken; adds to *ch and (listed ids
 * only) *unk once the transaction committed.
 */
static int admin_txn(struct queue *q, enum queue_admin_op op,
                     const struct queue_select *sel, size_t start,
                     const char *last, char (*buf)[QUEUE_ID_LEN + 1], size_t *n,
                     size_t *ch, size_t *unk) {
  bool listed = !sel->all && !sel->domain;
  struct queue__wtxn w = {0};
  int rc = queue__txn_begin(q, 0, &w.txn);
  if (rc)
    return rc;
  if (listed) {
    size_t left = sel->n_ids - start;
    *n = left < ADMIN_CHUNK ? left : ADMIN_CHUNK;
  } else if ((rc = queue__ids_collect(q, w.txn, sel->all ? NULL : sel->domain,
                                      last, buf, ADMIN_CHUNK, n))) {
    mdb_txn_abort(w.txn);
    return rc;
  }
  uint64_t now = queue_now_ms(q);
  size_t c = 0, u = 0;
  for (size_t i = 0; i < *n; i++) {
    const char *id = listed ? sel->ids[start + i] : buf[i];
    if (listed && !queue_id_valid(id))
      continue; /* counted as unknown by queue_admin */
    rc = admin_one(q, &w, op, id, now);
    if (rc == POSTERN_ENOENT && !w.failed) {
      u++;
      continue;
    }
    if (rc) {
      mdb_txn_abort(w.txn);
      return rc;
    }
    c++;
  }
  if ((rc = queue__mdb(mdb_txn_commit(w.txn))))
    return rc;
  *ch += c;
  if (listed)
    *unk += u;
  return 0;
}

int queue_admin(struct queue *q, enum queue_admin_op op,
                const struct queue_select *sel, size_t *changed,
                size_t *unknown) {
  size_t ch = 0, unk = 0;
  int rc = 0;
  if (!q || !sel || (unsigned)op > QUEUE_ADMIN_DELETE)
    return POSTERN_EINVAL;
  if (changed)
    *changed = 0;
  if (unknown)
    *unknown = 0;
  bool listed = !sel->all && !sel->domain;
  char(*buf)[QUEUE_ID_LEN + 1] = NULL;
  if (listed) {
    for (size_t i = 0; i < sel->n_ids; i++)
      unk += !queue_id_valid(sel->ids[i]);
  } else if (!(buf = malloc(ADMIN_CHUNK * sizeof *buf))) {
    return POSTERN_ENOMEM;
  }
  char last[QUEUE_ID_LEN + 1] = "";
  for (size_t start = 0; !listed || start < sel->n_ids;) {
    size_t n = 0;
    const char *after = last[0] ? last : NULL;
    rc = admin_txn(q, op, sel, start, after, buf, &n, &ch, &unk);
    if (rc == POSTERN_EQFULL && queue__touch(q) == 0) {
      /* A full map may still hold pages freed by the last commits, which
       * one more commit makes reusable (the writer does the same): retry
       * the chunk once, so that deletions can free space in a full queue. */
      rc = admin_txn(q, op, sel, start, after, buf, &n, &ch, &unk);
    }
    if (rc)
      break;
    if (listed) {
      start += n;
      continue;
    }
    if (n < ADMIN_CHUNK)
      break;
    memcpy(last, buf[n - 1], sizeof last);
  }
  free(buf);
  if (op == QUEUE_ADMIN_DELETE && ch > 0)
    queue__touch(q); /* make the freed pages reusable by the next commit */
  if (changed)
    *changed = ch;
  if (unknown)
    *unknown = unk;
  return rc;
}
