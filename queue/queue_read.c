/*
 * queue_read.c - the queue's read paths: a message for a delivery attempt,
 * the due index for the scheduler, and listing and statistics for qtool.
 *
 * Each runs on the calling thread in short read transactions and copies
 * what it returns out of LMDB before the transaction ends: nothing handed
 * out points into the map, and no transaction stays open while a caller's
 * function runs (queue_list ends its transaction before calling fn).
 * Statistics cost O(domains): the counters and the domain index are kept
 * by every write transaction (queue_db.c).
 */
#include "queue/internal.h"

#include "base/postern_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- A message ---------------------------------------------------------- */

int queue_msg_load(struct queue *q, const char *id, struct queue_env **env,
                   void **body, size_t *body_len) {
  if (!q || !id || !queue_id_valid(id) || !env)
    return POSTERN_EINVAL;
  MDB_txn *txn;
  int rc = queue__txn_begin(q, MDB_RDONLY, &txn);
  if (rc)
    return rc;
  struct queue_env *e = NULL;
  if ((rc = queue__msg_get(q, txn, id, &e)))
    goto out;
  if (body) {
    MDB_val k = {QUEUE_ID_LEN, (void *)id}, v;
    int mrc = mdb_get(txn, q->body, &k, &v);
    if (mrc) {
      rc = mrc == MDB_NOTFOUND ? POSTERN_EQCORRUPT : queue__mdb(mrc);
      goto out;
    }
    void *b = malloc(v.mv_size ? v.mv_size : 1);
    if (!b) {
      rc = POSTERN_ENOMEM;
      goto out;
    }
    memcpy(b, v.mv_data, v.mv_size);
    *body = b;
    if (body_len)
      *body_len = v.mv_size;
  }
out:
  mdb_txn_abort(txn);
  if (rc)
    free(e);
  else
    *env = e;
  return rc;
}

/* ---- The scheduler's reads of the due index ----------------------------- */

/* A read transaction and a cursor on the due index; end both with
 * mdb_cursor_close and mdb_txn_abort. */
static int due_cursor_open(struct queue *q, MDB_txn **txn, MDB_cursor **c) {
  int rc = queue__txn_begin(q, MDB_RDONLY, txn);
  if (rc)
    return rc;
  int mrc = mdb_cursor_open(*txn, q->due, c);
  if (mrc) {
    mdb_txn_abort(*txn);
    return queue__mdb(mrc);
  }
  return 0;
}

int queue_due_scan(struct queue *q, uint64_t now_ms,
                   const struct queue_due *after, struct queue_due *out,
                   size_t max, size_t *n) {
  *n = 0;
  if (max == 0)
    return 0;
  MDB_txn *txn;
  MDB_cursor *c;
  int rc = due_cursor_open(q, &txn, &c);
  if (rc)
    return rc;
  unsigned char kb[QUEUE__DUE_KEY_LEN];
  memset(kb, 0, sizeof kb);
  if (after)
    queue__due_key(kb, after->due_ms, after->id);
  MDB_val k = {sizeof kb, kb}, v;
  int mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  if (mrc == 0 && after && k.mv_size == sizeof kb &&
      memcmp(k.mv_data, kb, sizeof kb) == 0)
    mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  while (mrc == 0 && *n < max) {
    if (k.mv_size != QUEUE__DUE_KEY_LEN) {
      mrc = MDB_CORRUPTED;
      break;
    }
    uint64_t ms = queue__due_key_ms(k.mv_data);
    if (ms > now_ms)
      break;
    out[*n].due_ms = ms;
    memcpy(out[*n].id, (char *)k.mv_data + 8, QUEUE_ID_LEN);
    out[*n].id[QUEUE_ID_LEN] = '\0';
    (*n)++;
    mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(c);
  mdb_txn_abort(txn);
  return mrc == MDB_NOTFOUND ? 0 : queue__mdb(mrc);
}

int queue_due_next(struct queue *q, uint64_t after_ms, uint64_t *due_ms) {
  *due_ms = UINT64_MAX;
  if (after_ms == UINT64_MAX)
    return 0;
  MDB_txn *txn;
  MDB_cursor *c;
  int rc = due_cursor_open(q, &txn, &c);
  if (rc)
    return rc;
  unsigned char kb[8];
  for (int i = 0; i < 8; i++)
    kb[i] = (unsigned char)((after_ms + 1) >> (8 * (7 - i)));
  MDB_val k = {sizeof kb, kb}, v;
  int mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  if (mrc == 0)
    *due_ms = queue__due_key_ms(k.mv_data);
  mdb_cursor_close(c);
  mdb_txn_abort(txn);
  return mrc == MDB_NOTFOUND ? 0 : queue__mdb(mrc);
}

/* ---- Listing and statistics --------------------------------------------- */

int queue_list(struct queue *q, const char *after_id, const char *domain,
               size_t max, queue_list_fn fn, void *arg) {
  if (max == 0)
    max = 1000;
  char(*ids)[QUEUE_ID_LEN + 1] = malloc(max * sizeof *ids);
  struct queue_env **envs = calloc(max, sizeof *envs);
  int rc = 0;
  if (!ids || !envs) {
    rc = POSTERN_ENOMEM;
    goto done;
  }
  char last[QUEUE_ID_LEN + 1] = "";
  if (after_id && *after_id)
    snprintf(last, sizeof last, "%s", after_id);
  for (;;) {
    MDB_txn *txn;
    if ((rc = queue__txn_begin(q, MDB_RDONLY, &txn)))
      break;
    size_t n = 0, got = 0;
    int r =
        queue__ids_collect(q, txn, domain, last[0] ? last : NULL, ids, max, &n);
    for (size_t i = 0; r == 0 && i < n; i++) {
      int g = queue__msg_get(q, txn, ids[i], &envs[got]);
      if (g == 0)
        got++;
      else if (g != POSTERN_ENOENT)
        rc = g;
    }
    mdb_txn_abort(txn);
    if (r)
      rc = r;
    bool stop = rc != 0;
    for (size_t i = 0; i < got; i++) {
      if (!stop && fn(arg, envs[i]) != 0)
        stop = true;
      free(envs[i]);
      envs[i] = NULL;
    }
    if (stop || n < max)
      break;
    memcpy(last, ids[n - 1], sizeof last);
  }
done:
  free(ids);
  free(envs);
  return rc;
}

/* Inserts (domain k, cnt) into st->top, biggest first, keeping top_n at most
 * (small N: insertion is fine). */
static void top_insert(struct queue_stats *st, size_t top_n, const MDB_val *k,
                       size_t cnt) {
  size_t pos = st->n_top;
  while (pos > 0 && st->top[pos - 1].messages < cnt)
    pos--;
  if (pos >= top_n)
    return;
  size_t last = st->n_top < top_n ? st->n_top : top_n - 1;
  memmove(&st->top[pos + 1], &st->top[pos], (last - pos) * sizeof *st->top);
  size_t l = k->mv_size > QUEUE_DOMAIN_MAX ? QUEUE_DOMAIN_MAX : k->mv_size;
  memcpy(st->top[pos].domain, k->mv_data, l);
  st->top[pos].domain[l] = '\0';
  st->top[pos].messages = cnt;
  if (st->n_top < top_n)
    st->n_top++;
}

int queue_stats_get(struct queue *q, size_t top_n, struct queue_stats *st) {
  memset(st, 0, sizeof *st);
  if (top_n) {
    st->top = calloc(top_n, sizeof *st->top);
    if (!st->top)
      return POSTERN_ENOMEM;
  }
  MDB_txn *txn;
  int rc = queue__txn_begin(q, MDB_RDONLY, &txn);
  if (rc)
    goto fail;
  MDB_val k = {6, "counts"}, v;
  int mrc = mdb_get(txn, q->meta, &k, &v);
  if (mrc == 0 && v.mv_size == sizeof(struct queue__counts)) {
    struct queue__counts c;
    memcpy(&c, v.mv_data, sizeof c);
    st->messages = c.messages;
    memcpy(st->by_state, c.by_state, sizeof st->by_state);
    st->recipients = c.recipients;
    st->bytes = c.bytes;
  } else if (mrc != MDB_NOTFOUND && mrc != 0) {
    goto fail_txn;
  }
  MDB_cursor *c;
  if ((mrc = mdb_cursor_open(txn, q->msg, &c)))
    goto fail_txn;
  mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  if (mrc == 0 && k.mv_size == QUEUE_ID_LEN) {
    struct queue_env *e;
    char id[QUEUE_ID_LEN + 1];
    memcpy(id, k.mv_data, QUEUE_ID_LEN);
    id[QUEUE_ID_LEN] = '\0';
    if (queue__rec_decode(v.mv_data, v.mv_size, id, &e) == 0) {
      st->oldest_arrival_ms = e->arrival_ms;
      free(e);
    }
  }
  mdb_cursor_close(c);
  if ((mrc = mdb_cursor_open(txn, q->dom, &c)))
    goto fail_txn;
  mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  while (mrc == 0) {
    size_t cnt = 0;
    mdb_cursor_count(c, &cnt);
    st->domains++;
    top_insert(st, top_n, &k, cnt);
    mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT_NODUP);
  }
  mdb_cursor_close(c);
  MDB_envinfo info;
  MDB_stat ms;
  mdb_env_info(q->env, &info);
  mdb_env_stat(q->env, &ms);
  st->db_used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
  st->map_size = info.me_mapsize;
  mdb_txn_abort(txn);
  return mrc == MDB_NOTFOUND ? 0 : queue__mdb(mrc);
fail_txn:
  mdb_txn_abort(txn);
  rc = queue__mdb(mrc);
fail:
  free(st->top);
  st->top = NULL;
  return rc;
}
