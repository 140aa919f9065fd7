/*
 * queue.c - the queue's LMDB environment: open and close, the options'
 * defaults, the clock, and the one mapping of LMDB codes to POSTERN codes.
 *
 * The environment <state_dir>/queue/ holds the databases described in
 * queue_db.c. queue_open creates what is missing, opens the databases in
 * one transaction and starts the writer thread (queue_writer.c);
 * queue_close stops the writer, after it has committed and called back
 * everything submitted, and then closes the environment. internal.h lists
 * the module's other files and the error rule they follow: an LMDB code is
 * mapped right where the mdb_* call returns, with queue__mdb below.
 *
 * Ownership: struct queue is allocated here and freed by queue_close; it
 * keeps a copy of the options (state_dir excepted: borrowed, not kept) and
 * the path of the environment.
 */
#include "queue/internal.h"

#include "base/postern_err.h"
#include "base/postern_lmdb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

int queue__mdb(int mrc) {
  switch (mrc) {
  case 0:
    return 0;
  case MDB_NOTFOUND:
    return POSTERN_ENOENT;
  case MDB_KEYEXIST:
    return POSTERN_EEXIST;
  case MDB_MAP_FULL:
    return POSTERN_EQFULL;
  case MDB_TXN_FULL:
  case MDB_BAD_VALSIZE:
    return POSTERN_ETOOBIG;
  case MDB_CORRUPTED:
  case MDB_PAGE_NOTFOUND:
  case MDB_INVALID:
    return POSTERN_EQCORRUPT;
  case MDB_VERSION_MISMATCH:
    return POSTERN_EQLOCKED;
  case MDB_READERS_FULL:
    return POSTERN_EBUSY;
  case MDB_MAP_RESIZED:
    return POSTERN_EAGAIN;
  default:
    return mrc > 0 ? postern_err_from_errno(mrc) : POSTERN_EIO;
  }
}

int queue__wtxn_fail(struct queue__wtxn *w, int mrc) {
  w->failed = true;
  w->full = mrc == MDB_TXN_FULL;
  return queue__mdb(mrc);
}

static uint64_t default_clock(void *arg) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t default_random(void *arg) {
  uint32_t v = 0;
  if (getrandom(&v, sizeof v, 0) != sizeof v)
    v = (uint32_t)default_clock(NULL);
  return v;
}

uint64_t queue_now_ms(struct queue *q) {
  return q->o.clock_ms(q->o.test_arg);
}

static void opts_defaults(struct queue_opts *o) {
  if (!o->map_size)
    o->map_size = QUEUE_DEFAULT_MAP_SIZE;
  if (!o->retry.initial)
    o->retry.initial = QUEUE_DEFAULT_RETRY_INITIAL;
  if (o->retry.factor < 1.0)
    o->retry.factor = QUEUE_DEFAULT_RETRY_FACTOR;
  if (!o->retry.max)
    o->retry.max = QUEUE_DEFAULT_RETRY_MAX;
  if (!o->max_age)
    o->max_age = QUEUE_DEFAULT_MAX_AGE;
  if (!o->max_batch)
    o->max_batch = QUEUE_DEFAULT_MAX_BATCH;
  if (!o->max_batch_bytes)
    o->max_batch_bytes = QUEUE_DEFAULT_MAX_BATCH_BYTES;
  if (!o->commit_interval_us)
    o->commit_interval_us = QUEUE_DEFAULT_COMMIT_INTERVAL_US;
  if (!o->clock_ms)
    o->clock_ms = default_clock;
  if (!o->random_u32)
    o->random_u32 = default_random;
}

/* Opens the six databases in one transaction, creating them if needed. */
static int dbs_open(struct queue *q) {
  MDB_txn *txn;
  int rc = queue__txn_begin(q, 0, &txn);
  if (rc)
    return rc;
  int mrc;
  if ((mrc = mdb_dbi_open(txn, "msg", MDB_CREATE, &q->msg)) ||
      (mrc = mdb_dbi_open(txn, "body", MDB_CREATE, &q->body)) ||
      (mrc = mdb_dbi_open(txn, "due", MDB_CREATE, &q->due)) ||
      (mrc = mdb_dbi_open(txn, "dom", MDB_CREATE | MDB_DUPSORT, &q->dom)) ||
      (mrc = mdb_dbi_open(txn, "meta", MDB_CREATE, &q->meta)) ||
      (mrc = mdb_dbi_open(txn, "ctr", MDB_CREATE, &q->ctr))) {
    mdb_txn_abort(txn);
    return queue__mdb(mrc);
  }
  return queue__mdb(mdb_txn_commit(txn));
}

int queue_open(const struct queue_opts *opts, struct queue **out) {
  if (!opts || !opts->state_dir || !*opts->state_dir || !out)
    return POSTERN_EINVAL;
  struct queue *q = calloc(1, sizeof *q);
  if (!q)
    return POSTERN_ENOMEM;
  q->o = *opts;
  opts_defaults(&q->o);

  int rc;
  size_t dl = strlen(opts->state_dir) + sizeof "/queue";
  q->dir = malloc(dl);
  if (!q->dir) {
    free(q);
    return POSTERN_ENOMEM;
  }
  snprintf(q->dir, dl, "%s/queue", opts->state_dir);
  q->o.state_dir = NULL; /* not kept: the caller's string is borrowed */

  struct stat st;
  if (q->o.no_create) {
    char data[4096];
    snprintf(data, sizeof data, "%s/data.mdb", q->dir);
    if (stat(data, &st) != 0) {
      rc = postern_err_from_errno(errno);
      goto fail;
    }
  } else if (mkdir(q->dir, 0700) != 0 && errno != EEXIST) {
    rc = postern_err_from_errno(errno);
    goto fail;
  }

  if ((rc = queue__mdb(mdb_env_create(&q->env))))
    goto fail;
  if (!q->o.no_create &&
      (rc = queue__mdb(mdb_env_set_mapsize(q->env, q->o.map_size))))
    goto fail_env;
  if ((rc = queue__mdb(mdb_env_set_maxdbs(q->env, 8))) ||
      (rc = queue__mdb(mdb_env_set_maxreaders(q->env, 1022))))
    goto fail_env;
  /* Default sync mode: commits are durable before the callback runs.
   * MDB_NOTLS: read txns are not bound to threads (several threads read).
   * MDB_NORDAHEAD (madvise MADV_RANDOM on the map): every commit writes
   * its pages to free pages scattered over the whole file, and the next
   * read of each faults it in; with readahead each such fault also maps
   * its neighbours, which with a big queue (1,000,000 messages, 2.5 GiB)
   * tripled the relay's file-backed RSS and cost 25% of its CPU
   * (docs/benchmarks.md, queue scale). Our reads are B-tree lookups, not
   * scans, so readahead never helps them. */
  if (!q->o.no_create &&
      (rc = postern_lmdb_reserve_lock(q->dir, POSTERN_LMDB_LOCK_RESERVE)))
    goto fail_env;
  if ((rc = queue__mdb(
           mdb_env_open(q->env, q->dir, MDB_NOTLS | MDB_NORDAHEAD, 0600))))
    goto fail_env;
  int dead = 0;
  mdb_reader_check(q->env, &dead);
  if ((rc = dbs_open(q)) || (rc = queue__writer_start(q)))
    goto fail_env;
  *out = q;
  return 0;

fail_env:
  mdb_env_close(q->env);
fail:
  free(q->dir);
  free(q);
  return rc;
}

void queue_close(struct queue *q) {
  if (!q)
    return;
  queue__writer_stop(q);
  mdb_env_close(q->env);
  free(q->dir);
  free(q);
}
