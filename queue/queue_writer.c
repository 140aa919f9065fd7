/*
 * queue_writer.c - group commit: the submit and result entry points, the
 * list of operations waiting for the writer, and the writer thread that
 * commits them in batches.
 *
 * The writer takes everything waiting (at most max_batch operations and
 * max_batch_bytes of bodies), lets more gather for up to commit_interval
 * after the previous commit started (gather), applies the batch in ONE
 * write transaction (queue_apply.c) with ONE commit (commit_batch), and
 * then calls each operation's callback on this thread. One operation that
 * fails does not fail the batch: one refused before it wrote is left out
 * of the transaction; one that fails mid-write aborts it and the rest is
 * applied again without it; one that does not fit a transaction already
 * holding others goes back to the head of the list for the next commit.
 *
 * Ownership: an operation (struct queue__op) is allocated by its submit
 * call; the list owns it until the writer takes it; the writer owns it
 * until its callback has returned, then frees it. The inputs it points to
 * are borrowed from the submitter until then. The list and the counters
 * are under q->mu.
 */
#include "queue/internal.h"

#include "base/postern_err.h"
#include "base/postern_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define OP_PENDING 1 /* op->status before its fate is known */
#define OP_REQUEUE 2 /* did not fit this transaction; goes back to the list */

enum op_kind { OP_SUBMIT, OP_RESULT, OP_COUNTERS };

struct queue__op {
  struct queue__op *next;
  enum op_kind kind;
  int status;
  union {
    struct {
      struct queue_msg_in in;
      queue_submit_cb cb;
    } sub;
    struct {
      struct queue_result_in in;
      queue_result_cb cb;
      struct queue_env *env; /* working copy, owned; handed to cb */
      char *expired;         /* QUEUE_REPLY_MAX+1 bytes per rcpt, lazily */
    } res;
    struct {
      struct queue__counters *c; /* owned */
      queue_counters_cb cb;      /* may be NULL */
    } ctr;
  } u;
  void *arg;
};

static void op_finish(struct queue__op *op) {
  if (op->kind == OP_SUBMIT) {
    op->u.sub.cb(op->arg, op->status);
  } else if (op->kind == OP_COUNTERS) {
    if (op->u.ctr.cb)
      op->u.ctr.cb(op->arg, op->status);
    free(op->u.ctr.c);
  } else {
    op->u.res.cb(op->arg, op->status, op->status ? NULL : op->u.res.env);
    free(op->u.res.env);
    free(op->u.res.expired);
  }
  free(op);
}

/* ---- One commit --------------------------------------------------------- */

static int apply(struct queue *q, struct queue__wtxn *w, struct queue__op *op) {
  if (op->kind == OP_SUBMIT)
    return queue__apply_submit(q, w, &op->u.sub.in);
  if (op->kind == OP_COUNTERS)
    return queue__apply_counters(q, w, op->u.ctr.c);
  return queue__apply_result(q, w, &op->u.res.in, &op->u.res.env,
                             &op->u.res.expired);
}

/*
 * Commits ops[0..n) in one transaction. An operation refused before it
 * wrote is dropped from the transaction; one that hits a full map or
 * another LMDB failure makes the transaction abort and the rest is
 * retried without it, so one big message cannot fail a whole batch.
 */
static void commit_batch(struct queue *q, struct queue__op **ops, size_t n) {
  bool touched = false;
  for (;;) {
    struct queue__wtxn w = {0};
    int rc = queue__txn_begin(q, 0, &w.txn);
    if (rc) {
      for (size_t i = 0; i < n; i++) {
        if (ops[i]->status == OP_PENDING)
          ops[i]->status = rc;
      }
      return;
    }
    size_t applied = 0;
    bool retry = false;
    for (size_t i = 0; i < n && !retry; i++) {
      struct queue__op *op = ops[i];
      if (op->status != OP_PENDING)
        continue;
      rc = apply(q, &w, op);
      if (rc == 0) {
        applied++;
      } else if (!w.failed) {
        op->status = rc; /* refused before any write */
        if (rc == POSTERN_ENOMEM)
          retry = true; /* may have written part of it */
      } else if (w.full && applied > 0) {
        op->status = OP_REQUEUE; /* fits in a fresh transaction */
        for (size_t j = i + 1; j < n; j++) {
          if (ops[j]->status == OP_PENDING)
            ops[j]->status = OP_REQUEUE;
        }
        retry = true;
      } else if (rc == POSTERN_EQFULL && !touched) {
        /* Make pages freed by the last commits reusable, then retry. */
        mdb_txn_abort(w.txn);
        w.txn = NULL;
        touched = true;
        if ((rc = queue__touch(q)) != 0) {
          op->status = rc;
          postern_log(POSTERN_LOG_WARN, "queue_full", "dir", q->dir, NULL);
        }
        retry = true;
      } else {
        op->status = rc;
        if (rc == POSTERN_EQFULL)
          postern_log(POSTERN_LOG_WARN, "queue_full", "dir", q->dir, NULL);
        retry = true;
      }
    }
    if (retry) {
      if (w.txn)
        mdb_txn_abort(w.txn);
      bool again = false;
      for (size_t i = 0; i < n; i++)
        again |= ops[i]->status == OP_PENDING;
      if (again)
        continue;
      return;
    }
    int mrc = mdb_txn_commit(w.txn);
    rc = queue__mdb(mrc);
    for (size_t i = 0; i < n; i++) {
      if (ops[i]->status == OP_PENDING)
        ops[i]->status = rc;
    }
    if (mrc) {
      char buf[32];
      snprintf(buf, sizeof buf, "%d", mrc);
      postern_log(POSTERN_LOG_ERROR, "queue_commit_failed", "error",
                  mdb_strerror(mrc), "code", buf, NULL);
    }
    pthread_mutex_lock(&q->mu);
    q->commits++;
    q->ops_done += applied;
    pthread_mutex_unlock(&q->mu);
    return;
  }
}

/* ---- The writer thread -------------------------------------------------- */

static size_t op_bytes(const struct queue__op *op) {
  size_t n = 0;
  if (op->kind == OP_SUBMIT) {
    for (size_t i = 0; i < op->u.sub.in.body_iovcnt; i++)
      n += op->u.sub.in.body[i].iov_len;
  }
  return n;
}

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/*
 * Called with mu held and work on the list: waits, at most until
 * commit_interval after the previous commit started, for more operations
 * to join this commit. Every commit rewrites about the same dozen B-tree
 * pages and pays two cache flushes (data, then the meta page) whether it
 * carries one operation or fifty, so under load fewer, fuller commits save
 * most of the queue's CPU; the writer never waits when the previous commit
 * is older than the interval (a lone message after a quiet spell), when a
 * full batch is waiting, or when stopping. Sets *last_start to now.
 */
static void gather(struct queue *q, uint64_t *last_start) {
  uint64_t now = mono_us();
  if (q->o.commit_interval_us != QUEUE_OPTS_COMMIT_ASAP &&
      now - *last_start < q->o.commit_interval_us) {
    uint64_t until = *last_start + q->o.commit_interval_us;
    q->gathering = true;
    while (!q->stopping && q->pending < q->o.max_batch &&
           q->pending_bytes < q->o.max_batch_bytes && now < until) {
      struct timespec ts = {.tv_sec = (time_t)(until / 1000000u),
                            .tv_nsec = (long)(until % 1000000u) * 1000};
      pthread_cond_timedwait(&q->cv, &q->mu, &ts);
      now = mono_us();
    }
    q->gathering = false;
  }
  *last_start = now;
}

static void *writer_main(void *arg) {
  struct queue *q = arg;
  pthread_setname_np(pthread_self(), "postern-queue"); /* for top -H, perf */
  uint64_t last_start = 0;
  size_t cap = q->o.max_batch;
  struct queue__op **ops = malloc(cap * sizeof *ops);
  if (!ops)
    abort();
  for (;;) {
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->stopping)
      pthread_cond_wait(&q->cv, &q->mu);
    if (!q->head) {
      pthread_mutex_unlock(&q->mu);
      break;
    }
    gather(q, &last_start);
    /* Take what is waiting now, bounded per commit. */
    size_t n = 0;
    uint64_t bytes = 0;
    while (q->head && n < cap &&
           (n == 0 || bytes + op_bytes(q->head) <= q->o.max_batch_bytes)) {
      struct queue__op *op = q->head;
      size_t ob = op_bytes(op);
      q->head = op->next;
      bytes += ob;
      q->pending--;
      q->pending_bytes -= ob;
      ops[n++] = op;
    }
    if (!q->head)
      q->tail = NULL;
    pthread_mutex_unlock(&q->mu);

    commit_batch(q, ops, n);

    struct queue__op *requeue = NULL, **rt = &requeue;
    for (size_t i = 0; i < n; i++) {
      if (ops[i]->status == OP_REQUEUE) {
        ops[i]->status = OP_PENDING;
        ops[i]->next = NULL;
        *rt = ops[i];
        rt = &ops[i]->next;
      } else {
        op_finish(ops[i]);
      }
    }
    if (requeue) {
      pthread_mutex_lock(&q->mu);
      *rt = q->head;
      if (!q->head)
        q->tail =
            (struct queue__op *)((char *)rt - offsetof(struct queue__op, next));
      q->head = requeue;
      for (struct queue__op *op = requeue; op; op = op->next) {
        q->pending++;
        q->pending_bytes += op_bytes(op);
      }
      pthread_mutex_unlock(&q->mu);
    }
  }
  free(ops);
  return NULL;
}

int queue__writer_start(struct queue *q) {
  pthread_mutex_init(&q->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* gather() waits */
  pthread_cond_init(&q->cv, &ca);
  pthread_condattr_destroy(&ca);
  int err = pthread_create(&q->writer, NULL, writer_main, q);
  if (err != 0) {
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    return postern_err_from_errno(err);
  }
  return 0;
}

void queue__writer_stop(struct queue *q) {
  pthread_mutex_lock(&q->mu);
  q->stopping = true;
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
  pthread_join(q->writer, NULL);
  pthread_cond_destroy(&q->cv);
  pthread_mutex_destroy(&q->mu);
}

/* ---- Submitting --------------------------------------------------------- */

static int enqueue(struct queue *q, struct queue__op *op) {
  op->status = OP_PENDING;
  op->next = NULL;
  pthread_mutex_lock(&q->mu);
  if (q->stopping) {
    pthread_mutex_unlock(&q->mu);
    return POSTERN_ESTATE;
  }
  if (q->tail)
    q->tail->next = op;
  else
    q->head = op;
  q->tail = op;
  q->pending++;
  q->pending_bytes += op_bytes(op);
  /* A gathering writer wakes by itself when its interval ends; waking it
   * for each operation would only cost a context switch, unless the batch
   * is full. */
  if (!q->gathering || q->pending >= q->o.max_batch ||
      q->pending_bytes >= q->o.max_batch_bytes)
    pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
  return 0;
}

/* Queues op for the writer, or frees it. */
static int submit_op(struct queue *q, struct queue__op *op) {
  int rc = enqueue(q, op);
  if (rc)
    free(op);
  return rc;
}

static struct queue__op *op_new(enum op_kind kind, void *arg) {
  struct queue__op *op = calloc(1, sizeof *op);
  if (op) {
    op->kind = kind;
    op->arg = arg;
  }
  return op;
}

int queue_msg_submit(struct queue *q, const struct queue_msg_in *m,
                     queue_submit_cb cb, void *arg) {
  if (!q || !m || !cb)
    return POSTERN_EINVAL;
  struct queue__op *op = op_new(OP_SUBMIT, arg);
  if (!op)
    return POSTERN_ENOMEM;
  op->u.sub.in = *m;
  op->u.sub.cb = cb;
  return submit_op(q, op);
}

int queue_result_submit(struct queue *q, const struct queue_result_in *r,
                        queue_result_cb cb, void *arg) {
  if (!q || !r || !cb)
    return POSTERN_EINVAL;
  struct queue__op *op = op_new(OP_RESULT, arg);
  if (!op)
    return POSTERN_ENOMEM;
  op->u.res.in = *r;
  op->u.res.cb = cb;
  return submit_op(q, op);
}

int queue_counters_submit(struct queue *q, const struct queue_counter_add *adds,
                          size_t n, queue_counters_cb cb, void *arg) {
  if (!q || (n > 0 && !adds))
    return POSTERN_EINVAL;
  struct queue__counters *c;
  int rc = queue__counters_copy(adds, n, &c);
  if (rc)
    return rc;
  struct queue__op *op = op_new(OP_COUNTERS, arg);
  if (!op) {
    free(c);
    return POSTERN_ENOMEM;
  }
  op->u.ctr.c = c;
  op->u.ctr.cb = cb;
  rc = enqueue(q, op);
  if (rc) {
    free(c);
    free(op);
  }
  return rc;
}

void queue_writer_totals(struct queue *q, uint64_t *commits, uint64_t *ops) {
  pthread_mutex_lock(&q->mu);
  if (commits)
    *commits = q->commits;
  if (ops)
    *ops = q->ops_done;
  pthread_mutex_unlock(&q->mu);
}
