/*
 * queue_db.c - the queue's databases and the only code that touches the
 * due index, the domain index and the counters.
 *
 * Databases in the one environment <state_dir>/queue/:
 *   msg   id -> envelope record (queue_rec.c)
 *   body  id -> body bytes
 *   due   (next attempt ms, 8 bytes big-endian) || id -> ""   ordered by time
 *   dom   domain -> id (DUPSORT), for each domain with a recipient left
 *   meta  "counts" -> struct queue__counts; "tick" -> u64 (queue__touch)
 *
 * Invariants, kept by every write transaction (index_update below is the
 * only code that touches due, dom and counts):
 *   - a message has a due entry iff it is not held and has a recipient
 *     pending or deferred; the entry's time is the envelope's next_ms;
 *   - dom holds (domain, id) for each domain of its recipients left;
 *   - counts equal what a full scan of msg would find.
 * A message with no recipient left is deleted in the same transaction.
 *
 * Errors follow internal.h: LMDB codes are mapped where the call returns;
 * in a write transaction through queue__wtxn_fail, so that the writer
 * knows the transaction must be aborted. Tolerated codes (an entry already
 * gone or already there) are tested on the call's own return value.
 */
#include "queue/internal.h"

#include "base/postern_err.h"

#include <stdlib.h>
#include <string.h>

void queue__due_key(unsigned char k[QUEUE__DUE_KEY_LEN], uint64_t ms,
                    const char *id) {
  for (int i = 0; i < 8; i++)
    k[i] = (unsigned char)(ms >> (8 * (7 - i)));
  memcpy(k + 8, id, QUEUE_ID_LEN);
}

uint64_t queue__due_key_ms(const unsigned char *k) {
  uint64_t ms = 0;
  for (int i = 0; i < 8; i++)
    ms = (ms << 8) | k[i];
  return ms;
}

static bool env_has_left(const struct queue_env *e) {
  for (size_t i = 0; i < e->n_rcpts; i++) {
    if (queue__rcpt_left(&e->rcpts[i]))
      return true;
  }
  return false;
}

static size_t env_left_count(const struct queue_env *e) {
  size_t n = 0;
  for (size_t i = 0; i < e->n_rcpts; i++)
    n += queue__rcpt_left(&e->rcpts[i]) ? 1 : 0;
  return n;
}

/* next_ms = earliest next attempt among recipients left. */
static void env_recompute_next(struct queue_env *e) {
  uint64_t next = UINT64_MAX;
  for (size_t i = 0; i < e->n_rcpts; i++) {
    if (queue__rcpt_left(&e->rcpts[i]) && e->rcpts[i].next_ms < next)
      next = e->rcpts[i].next_ms;
  }
  e->next_ms = next == UINT64_MAX ? 0 : next;
}

int queue__txn_begin(struct queue *q, unsigned flags, MDB_txn **txn) {
  return queue__mdb(mdb_txn_begin(q->env, NULL, flags, txn));
}

/* ---- Index maintenance (inside a write transaction) --------------------- */

static int counts_add(struct queue *q, struct queue__wtxn *w,
                      const struct queue_env *e, int sign) {
  MDB_val k = {6, "counts"}, v;
  struct queue__counts c = {0};
  int mrc = mdb_get(w->txn, q->meta, &k, &v);
  if (mrc == 0 && v.mv_size == sizeof c)
    memcpy(&c, v.mv_data, sizeof c);
  else if (mrc != MDB_NOTFOUND && mrc != 0)
    return queue__wtxn_fail(w, mrc);
  uint64_t left = env_left_count(e);
  if (sign > 0) {
    c.messages++;
    c.by_state[e->state]++;
    c.recipients += left;
    c.bytes += e->size;
  } else {
    c.messages--;
    c.by_state[e->state]--;
    c.recipients -= left;
    c.bytes -= e->size;
  }
  v.mv_size = sizeof c;
  v.mv_data = &c;
  if ((mrc = mdb_put(w->txn, q->meta, &k, &v, 0)))
    return queue__wtxn_fail(w, mrc);
  return 0;
}

/*
 * Adds (sign +1) or removes (sign -1) e's due entry, domain entries and
 * counts. An entry already there (or already gone) is fine: recipients that
 * share a domain share its entry.
 */
static int index_update(struct queue *q, struct queue__wtxn *w,
                        const struct queue_env *e, int sign) {
  int ok = sign > 0 ? MDB_KEYEXIST : MDB_NOTFOUND, mrc;
  if (e->state != QUEUE_MSG_HELD && env_has_left(e)) {
    unsigned char kb[QUEUE__DUE_KEY_LEN];
    queue__due_key(kb, e->next_ms, e->id);
    MDB_val k = {sizeof kb, kb}, v = {0, ""};
    mrc = sign > 0 ? mdb_put(w->txn, q->due, &k, &v, 0)
                   : mdb_del(w->txn, q->due, &k, NULL);
    if (mrc && mrc != ok)
      return queue__wtxn_fail(w, mrc);
  }
  for (size_t i = 0; i < e->n_rcpts; i++) {
    if (!queue__rcpt_left(&e->rcpts[i]))
      continue;
    char d[QUEUE_DOMAIN_MAX + 1];
    MDB_val k = {queue__domain_of(e->rcpts[i].addr, d), d};
    MDB_val v = {QUEUE_ID_LEN, (void *)e->id};
    mrc = sign > 0 ? mdb_put(w->txn, q->dom, &k, &v, MDB_NODUPDATA)
                   : mdb_del(w->txn, q->dom, &k, &v);
    if (mrc && mrc != ok)
      return queue__wtxn_fail(w, mrc);
  }
  return counts_add(q, w, e, sign);
}

int queue__msg_index(struct queue *q, struct queue__wtxn *w,
                     const struct queue_env *e) {
  return index_update(q, w, e, +1);
}

static int msg_put_env(struct queue *q, struct queue__wtxn *w,
                       const struct queue_env *e) {
  MDB_val k = {QUEUE_ID_LEN, (void *)e->id};
  MDB_val v = {queue__rec_size(e), NULL};
  int mrc = mdb_put(w->txn, q->msg, &k, &v, MDB_RESERVE);
  if (mrc)
    return queue__wtxn_fail(w, mrc);
  queue__rec_write(e, v.mv_data);
  return 0;
}

int queue__msg_rewrite(struct queue *q, struct queue__wtxn *w,
                       const struct queue_env *old, struct queue_env *new) {
  int rc = index_update(q, w, old, -1);
  if (rc)
    return rc;
  if (!env_has_left(new)) {
    MDB_val k = {QUEUE_ID_LEN, (void *)new->id};
    int mrc = mdb_del(w->txn, q->msg, &k, NULL);
    if (mrc)
      return queue__wtxn_fail(w, mrc);
    mrc = mdb_del(w->txn, q->body, &k, NULL);
    new->removed = true;
    return mrc == 0 || mrc == MDB_NOTFOUND ? 0 : queue__wtxn_fail(w, mrc);
  }
  env_recompute_next(new);
  if ((rc = msg_put_env(q, w, new)))
    return rc;
  return queue__msg_index(q, w, new);
}

/* ---- Reads inside any transaction --------------------------------------- */

int queue__msg_get(struct queue *q, MDB_txn *txn, const char *id,
                   struct queue_env **out) {
  MDB_val k = {QUEUE_ID_LEN, (void *)id}, v;
  int rc = queue__mdb(mdb_get(txn, q->msg, &k, &v));
  if (rc)
    return rc;
  return queue__rec_decode(v.mv_data, v.mv_size, id, out);
}

struct queue_env *queue__env_clone_shallow(const struct queue_env *src) {
  struct queue_env *e = malloc(sizeof *e + src->n_rcpts * sizeof *e->rcpts);
  if (!e)
    return NULL;
  *e = *src;
  e->rcpts = (struct queue_rcpt *)(e + 1);
  memcpy(e->rcpts, src->rcpts, src->n_rcpts * sizeof *e->rcpts);
  return e;
}

int queue__ids_collect(struct queue *q, MDB_txn *txn, const char *domain,
                       const char *after, char (*ids)[QUEUE_ID_LEN + 1],
                       size_t max, size_t *n) {
  MDB_cursor *c;
  *n = 0;
  int mrc = mdb_cursor_open(txn, domain ? q->dom : q->msg, &c);
  if (mrc)
    return queue__mdb(mrc);
  /* In msg the ids are the keys; in dom they are the domain key's values. */
  char d[QUEUE_DOMAIN_MAX + 1];
  MDB_val k, v, *idv = domain ? &v : &k;
  MDB_cursor_op first, next;
  if (domain) {
    size_t i = 0; /* lowercased like the keys (queue__domain_of) */
    for (; domain[i] && i < QUEUE_DOMAIN_MAX; i++)
      d[i] = (char)((domain[i] >= 'A' && domain[i] <= 'Z') ? domain[i] + 32
                                                           : domain[i]);
    d[i] = '\0';
    k.mv_size = i;
    k.mv_data = d;
    first = after ? MDB_GET_BOTH_RANGE : MDB_SET_KEY;
    next = MDB_NEXT_DUP;
  } else {
    first = after ? MDB_SET_RANGE : MDB_FIRST;
    next = MDB_NEXT;
  }
  idv->mv_size = after ? QUEUE_ID_LEN : 0;
  idv->mv_data = (void *)(after ? after : "");
  mrc = mdb_cursor_get(c, &k, &v, first);
  if (mrc == 0 && after && idv->mv_size == QUEUE_ID_LEN &&
      memcmp(idv->mv_data, after, QUEUE_ID_LEN) == 0)
    mrc = mdb_cursor_get(c, &k, &v, next);
  while (mrc == 0 && *n < max) {
    if (idv->mv_size == QUEUE_ID_LEN) {
      memcpy(ids[*n], idv->mv_data, QUEUE_ID_LEN);
      ids[(*n)++][QUEUE_ID_LEN] = '\0';
    }
    mrc = mdb_cursor_get(c, &k, &v, next);
  }
  mdb_cursor_close(c);
  return mrc == MDB_NOTFOUND ? 0 : queue__mdb(mrc);
}

/* ---- Making freed pages reusable ---------------------------------------- */

int queue__touch(struct queue *q) {
  /* Reader slots of killed processes (a qtool hit by kill -9) pin old
   * snapshots and so their pages: clear them first. */
  int dead = 0;
  mdb_reader_check(q->env, &dead);
  MDB_txn *txn;
  int rc = queue__txn_begin(q, 0, &txn);
  if (rc)
    return rc;
  MDB_val k = {4, "tick"}, v;
  uint64_t tick = 0;
  if (mdb_get(txn, q->meta, &k, &v) == 0 && v.mv_size == sizeof tick)
    memcpy(&tick, v.mv_data, sizeof tick);
  tick++;
  v.mv_size = sizeof tick;
  v.mv_data = &tick;
  int mrc = mdb_put(txn, q->meta, &k, &v, 0);
  if (mrc) {
    mdb_txn_abort(txn);
    return queue__mdb(mrc);
  }
  return queue__mdb(mdb_txn_commit(txn));
}
