/*
 * queue_counters.c - named counters kept in the queue's environment (the
 * "ctr" database), for figures that must survive a crash exactly as far as
 * the deliveries they describe: TLS reporting (RFC 8460) counts TLS
 * sessions per policy domain and day.
 *
 * Updates go through the writer like submissions and results, so they are
 * batched into the same commits (no extra fsync under load) and committed
 * in submission order: an update queued before a delivery's result is
 * durable no later than that result. A record is an 8-byte little-endian
 * count followed by a note, the bytes given when the counter was created
 * (a description the count belongs with); later updates keep the note.
 *
 * Ownership: queue_counters_submit copies keys and notes into one block
 * owned by the operation; scans hand out pointers into LMDB, valid during
 * the callback only.
 */
#include "queue/internal.h"

#include "base/postern_err.h"

#include <stdlib.h>
#include <string.h>

static void put_u64le(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64le(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

int queue__counters_copy(const struct queue_counter_add *adds, size_t n,
                         struct queue__counters **out) {
  size_t bytes = sizeof(struct queue__counters) + n * sizeof *adds;
  for (size_t i = 0; i < n; i++) {
    if (adds[i].key == NULL || adds[i].klen == 0 ||
        adds[i].klen > QUEUE_COUNTER_KEY_MAX ||
        adds[i].nlen > QUEUE_COUNTER_NOTE_MAX ||
        (adds[i].nlen > 0 && adds[i].note == NULL))
      return POSTERN_EINVAL;
    bytes += adds[i].klen + adds[i].nlen;
  }
  struct queue__counters *c = malloc(bytes);
  if (c == NULL)
    return POSTERN_ENOMEM;
  c->n = n;
  c->adds = (struct queue_counter_add *)(c + 1);
  unsigned char *p = (unsigned char *)(c->adds + n);
  for (size_t i = 0; i < n; i++) {
    struct queue_counter_add *d = &c->adds[i];
    *d = adds[i];
    memcpy(p, adds[i].key, adds[i].klen);
    d->key = p;
    p += adds[i].klen;
    if (adds[i].nlen > 0)
      memcpy(p, adds[i].note, adds[i].nlen);
    d->note = p;
    p += adds[i].nlen;
  }
  *out = c;
  return 0;
}

int queue__apply_counters(struct queue *q, struct queue__wtxn *w,
                          const struct queue__counters *c) {
  unsigned char stack[8 + 512];
  for (size_t i = 0; i < c->n; i++) {
    const struct queue_counter_add *a = &c->adds[i];
    MDB_val k = {.mv_size = a->klen, .mv_data = (void *)a->key};
    MDB_val v;
    int mrc = mdb_get(w->txn, q->ctr, &k, &v);
    if (mrc == 0 && v.mv_size >= 8) {
      if (a->add == 0)
        continue;
      /* Rewrite in place: MDB_RESERVE hands a writable copy of the
       * record's size, into which the old note is copied back. */
      uint64_t now = get_u64le(v.mv_data) + a->add;
      size_t len = v.mv_size;
      unsigned char *old = len <= sizeof stack ? stack : malloc(len);
      if (old == NULL)
        return POSTERN_ENOMEM;
      memcpy(old, v.mv_data, len);
      MDB_val nv = {.mv_size = len, .mv_data = NULL};
      mrc = mdb_put(w->txn, q->ctr, &k, &nv, MDB_RESERVE);
      if (mrc == 0) {
        memcpy(nv.mv_data, old, len);
        put_u64le(nv.mv_data, now);
      }
      if (old != stack)
        free(old);
      if (mrc)
        return queue__wtxn_fail(w, mrc);
      continue;
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND)
      return queue__mdb(mrc); /* a failed read wrote nothing */
    /* New (or a record too short to be ours: replaced). */
    MDB_val nv = {.mv_size = 8 + a->nlen, .mv_data = NULL};
    mrc = mdb_put(w->txn, q->ctr, &k, &nv, MDB_RESERVE);
    if (mrc)
      return queue__wtxn_fail(w, mrc);
    put_u64le(nv.mv_data, a->add);
    if (a->nlen > 0)
      memcpy((unsigned char *)nv.mv_data + 8, a->note, a->nlen);
  }
  return 0;
}

int queue_counters_scan(struct queue *q, const void *prefix, size_t plen,
                        queue_counter_fn fn, void *arg) {
  if (q == NULL || fn == NULL || (plen > 0 && prefix == NULL))
    return POSTERN_EINVAL;
  MDB_txn *txn;
  int rc = queue__txn_begin(q, MDB_RDONLY, &txn);
  if (rc)
    return rc;
  MDB_cursor *cur;
  int mrc = mdb_cursor_open(txn, q->ctr, &cur);
  if (mrc) {
    mdb_txn_abort(txn);
    return queue__mdb(mrc);
  }
  MDB_val k = {.mv_size = plen, .mv_data = (void *)prefix}, v;
  mrc = plen > 0 ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                 : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  rc = 0;
  while (mrc == 0) {
    if (k.mv_size < plen || (plen > 0 && memcmp(k.mv_data, prefix, plen) != 0))
      break;
    if (v.mv_size >= 8) {
      int stop = fn(arg, k.mv_data, k.mv_size, get_u64le(v.mv_data),
                    (const unsigned char *)v.mv_data + 8, v.mv_size - 8);
      if (stop)
        break;
    }
    mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  if (mrc != 0 && mrc != MDB_NOTFOUND)
    rc = queue__mdb(mrc);
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  return rc;
}

/* Deletes at most `chunk` records under the prefix in one transaction. */
static int delete_chunk(struct queue *q, const void *prefix, size_t plen,
                        size_t chunk, size_t *n) {
  struct queue__wtxn w = {0};
  *n = 0;
  int rc = queue__txn_begin(q, 0, &w.txn);
  if (rc)
    return rc;
  MDB_cursor *cur;
  int mrc = mdb_cursor_open(w.txn, q->ctr, &cur);
  if (mrc) {
    mdb_txn_abort(w.txn);
    return queue__mdb(mrc);
  }
  MDB_val k = {.mv_size = plen, .mv_data = (void *)prefix}, v;
  mrc = plen > 0 ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                 : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  while (mrc == 0 && *n < chunk) {
    if (k.mv_size < plen || (plen > 0 && memcmp(k.mv_data, prefix, plen) != 0))
      break;
    if ((mrc = mdb_cursor_del(cur, 0)) != 0)
      break;
    (*n)++;
    /* Everything before the deleted record under the prefix is gone
     * already: the next one is the first at or after the prefix. */
    k = (MDB_val){.mv_size = plen, .mv_data = (void *)prefix};
    mrc = plen > 0 ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                   : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  }
  mdb_cursor_close(cur);
  if (mrc != 0 && mrc != MDB_NOTFOUND) {
    mdb_txn_abort(w.txn);
    *n = 0;
    return queue__mdb(mrc);
  }
  mrc = mdb_txn_commit(w.txn);
  if (mrc)
    *n = 0;
  return queue__mdb(mrc);
}

int queue_counters_delete(struct queue *q, const void *prefix, size_t plen,
                          size_t *deleted) {
  if (q == NULL || (plen > 0 && prefix == NULL))
    return POSTERN_EINVAL;
  size_t total = 0, n;
  int rc;
  do {
    rc = delete_chunk(q, prefix, plen, 2000, &n);
    total += n;
  } while (rc == 0 && n == 2000);
  if (deleted)
    *deleted = total;
  return rc;
}
