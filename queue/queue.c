/*
 * queue.c - the LMDB environment, the group-commit writer, the scheduler's
 * reads, results, administration and statistics.
 *
 * Databases in the one environment <state_dir>/queue/:
 *   msg   id -> envelope record (queue_rec.c)
 *   body  id -> body bytes
 *   due   (next attempt ms, 8 bytes big-endian) || id -> ""   ordered by time
 *   dom   domain -> id (DUPSORT), for each domain with a recipient left
 *   meta  "counts" -> struct counts
 *
 * Invariants, kept by every write transaction (msg_unindex/msg_index below
 * are the only code that touches due, dom and counts):
 *   - a message has a due entry iff it is not held and has a recipient
 *     pending or deferred; the entry's time is the envelope's next_ms;
 *   - dom holds (domain, id) for each domain of its recipients left;
 *   - counts equal what a full scan of msg would find.
 * A message with no recipient left is deleted in the same transaction.
 *
 * Ownership: the writer thread owns every struct op from the moment it is
 * taken off the list until its callback returns; the submitted inputs are
 * borrowed from the caller until then. Read paths copy out of LMDB before
 * ending their read transaction.
 */
#include "queue/internal.h"

#include "base/postern_err.h"
#include "base/postern_lmdb.h"
#include "base/postern_log.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#define DUE_KEY_LEN (8 + QUEUE_ID_LEN)
#define ADMIN_CHUNK 2000
#define OP_PENDING 1 /* op->status before its fate is known */
#define OP_REQUEUE 2 /* did not fit this transaction; goes back to the list */

struct counts {
  uint64_t messages;
  uint64_t by_state[3];
  uint64_t recipients;
  uint64_t bytes;
};

enum op_kind { OP_SUBMIT, OP_RESULT };

struct op {
  struct op *next;
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
  } u;
  void *arg;
};

struct queue {
  MDB_env *env;
  MDB_dbi msg, body, due, dom, meta;
  struct queue_opts o;
  char *dir;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct op *head, *tail;
  size_t pending;         /* ops on the list */
  uint64_t pending_bytes; /* their body bytes */
  bool gathering;         /* the writer waits in gather(): see enqueue */
  bool stopping;
  pthread_t writer;
  uint64_t commits, ops_done; /* under mu */
};

/* ---- Small helpers ------------------------------------------------------ */

static int from_mdb(int rc) {
  switch (rc) {
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
    return rc > 0 ? postern_err_from_errno(rc) : POSTERN_EIO;
  }
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

static void due_key(unsigned char k[DUE_KEY_LEN], uint64_t ms, const char *id) {
  for (int i = 0; i < 8; i++)
    k[i] = (unsigned char)(ms >> (8 * (7 - i)));
  memcpy(k + 8, id, QUEUE_ID_LEN);
}

static uint64_t due_key_ms(const unsigned char *k) {
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

static int txn_begin(struct queue *q, unsigned flags, MDB_txn **txn) {
  return from_mdb(mdb_txn_begin(q->env, NULL, flags, txn));
}

/* ---- Index maintenance (inside a write transaction) --------------------- */

static int counts_add(struct queue *q, MDB_txn *txn, const struct queue_env *e,
                      int sign) {
  MDB_val k = {6, "counts"}, v;
  struct counts c = {0};
  int rc = mdb_get(txn, q->meta, &k, &v);
  if (rc == 0 && v.mv_size == sizeof c)
    memcpy(&c, v.mv_data, sizeof c);
  else if (rc != MDB_NOTFOUND && rc != 0)
    return rc;
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
  return mdb_put(txn, q->meta, &k, &v, 0);
}

/* Removes e's due entry, domain entries and counts. Returns an MDB code. */
static int msg_unindex(struct queue *q, MDB_txn *txn,
                       const struct queue_env *e) {
  int rc;
  if (e->state != QUEUE_MSG_HELD && env_has_left(e)) {
    unsigned char kb[DUE_KEY_LEN];
    due_key(kb, e->next_ms, e->id);
    MDB_val k = {sizeof kb, kb};
    rc = mdb_del(txn, q->due, &k, NULL);
    if (rc && rc != MDB_NOTFOUND)
      return rc;
  }
  for (size_t i = 0; i < e->n_rcpts; i++) {
    if (!queue__rcpt_left(&e->rcpts[i]))
      continue;
    char d[QUEUE_DOMAIN_MAX + 1];
    MDB_val k = {queue__domain_of(e->rcpts[i].addr, d), d};
    MDB_val v = {QUEUE_ID_LEN, (void *)e->id};
    rc = mdb_del(txn, q->dom, &k, &v);
    if (rc && rc != MDB_NOTFOUND) /* two recipients share a domain */
      return rc;
  }
  return counts_add(q, txn, e, -1);
}

static int msg_index(struct queue *q, MDB_txn *txn, const struct queue_env *e) {
  int rc;
  if (e->state != QUEUE_MSG_HELD && env_has_left(e)) {
    unsigned char kb[DUE_KEY_LEN];
    due_key(kb, e->next_ms, e->id);
    MDB_val k = {sizeof kb, kb}, v = {0, ""};
    if ((rc = mdb_put(txn, q->due, &k, &v, 0)))
      return rc;
  }
  for (size_t i = 0; i < e->n_rcpts; i++) {
    if (!queue__rcpt_left(&e->rcpts[i]))
      continue;
    char d[QUEUE_DOMAIN_MAX + 1];
    MDB_val k = {queue__domain_of(e->rcpts[i].addr, d), d};
    MDB_val v = {QUEUE_ID_LEN, (void *)e->id};
    rc = mdb_put(txn, q->dom, &k, &v, MDB_NODUPDATA);
    if (rc && rc != MDB_KEYEXIST)
      return rc;
  }
  return counts_add(q, txn, e, +1);
}

static int msg_put_env(struct queue *q, MDB_txn *txn,
                       const struct queue_env *e) {
  MDB_val k = {QUEUE_ID_LEN, (void *)e->id};
  MDB_val v = {queue__rec_size(e), NULL};
  int rc = mdb_put(txn, q->msg, &k, &v, MDB_RESERVE);
  if (rc == 0)
    queue__rec_write(e, v.mv_data);
  return rc;
}

/*
 * Replaces old by new (both describe the same id) keeping every invariant;
 * deletes the message when new has no recipient left. MDB code.
 */
static int msg_rewrite(struct queue *q, MDB_txn *txn,
                       const struct queue_env *old, struct queue_env *new) {
  int rc = msg_unindex(q, txn, old);
  if (rc)
    return rc;
  if (!env_has_left(new)) {
    MDB_val k = {QUEUE_ID_LEN, (void *)new->id};
    if ((rc = mdb_del(txn, q->msg, &k, NULL)))
      return rc;
    rc = mdb_del(txn, q->body, &k, NULL);
    new->removed = true;
    return rc == MDB_NOTFOUND ? 0 : rc;
  }
  env_recompute_next(new);
  if ((rc = msg_put_env(q, txn, new)))
    return rc;
  return msg_index(q, txn, new);
}

/* Reads and decodes id inside txn. Returns 0 or a POSTERN code. */
static int msg_get(struct queue *q, MDB_txn *txn, const char *id,
                   struct queue_env **out) {
  MDB_val k = {QUEUE_ID_LEN, (void *)id}, v;
  int rc = mdb_get(txn, q->msg, &k, &v);
  if (rc)
    return from_mdb(rc);
  return queue__rec_decode(v.mv_data, v.mv_size, id, out);
}

/* A working copy whose strings still point into `src` (same lifetime). */
static struct queue_env *env_clone_shallow(const struct queue_env *src) {
  struct queue_env *e = malloc(sizeof *e + src->n_rcpts * sizeof *e->rcpts);
  if (!e)
    return NULL;
  *e = *src;
  e->rcpts = (struct queue_rcpt *)(e + 1);
  memcpy(e->rcpts, src->rcpts, src->n_rcpts * sizeof *e->rcpts);
  return e;
}

/* ---- Applying writer operations ----------------------------------------- */

/* Returns an MDB code (positive errno or negative MDB_*) or a negative
 * POSTERN code for a logical failure that wrote nothing. */
static int apply_submit(struct queue *q, MDB_txn *txn, struct op *op) {
  const struct queue_msg_in *m = &op->u.sub.in;
  if (!queue_id_valid(m->id) || m->n_rcpts == 0 || m->n_rcpts > 65535 ||
      !m->sender)
    return POSTERN_EINVAL;
  for (size_t i = 0; i < m->n_rcpts; i++) {
    if (!m->rcpts[i].addr)
      return POSTERN_EINVAL;
  }
  uint64_t now = queue_now_ms(q);
  size_t size = 0;
  for (size_t i = 0; i < m->body_iovcnt; i++)
    size += m->body[i].iov_len;

  struct queue_env *e = calloc(1, sizeof *e + m->n_rcpts * sizeof *e->rcpts);
  if (!e)
    return POSTERN_ENOMEM;
  e->rcpts = (struct queue_rcpt *)(e + 1);
  memcpy(e->id, m->id, QUEUE_ID_LEN + 1);
  e->state = QUEUE_MSG_ACTIVE;
  e->sender = m->sender;
  e->envid = m->envid ? m->envid : "";
  e->client_addr = m->client_addr ? m->client_addr : "";
  e->client_helo = m->client_helo ? m->client_helo : "";
  e->ret = m->ret;
  e->arrival_ms = m->arrival_ms ? m->arrival_ms : now;
  e->size = size;
  e->n_rcpts = m->n_rcpts;
  for (size_t i = 0; i < m->n_rcpts; i++) {
    struct queue_rcpt *r = &e->rcpts[i];
    r->addr = m->rcpts[i].addr;
    r->orcpt = m->rcpts[i].orcpt ? m->rcpts[i].orcpt : "";
    r->notify = m->rcpts[i].notify;
    r->state = QUEUE_RCPT_PENDING;
    r->next_ms = now;
    r->status = "";
    r->reply = "";
  }
  e->next_ms = now;

  MDB_val k = {QUEUE_ID_LEN, (void *)m->id};
  MDB_val v = {queue__rec_size(e), NULL};
  int rc = mdb_put(txn, q->msg, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
  if (rc == MDB_KEYEXIST) {
    rc = POSTERN_EEXIST; /* nothing written: the txn stays usable */
    goto out;
  }
  if (rc)
    goto out;
  queue__rec_write(e, v.mv_data);
  v.mv_size = size;
  if ((rc = mdb_put(txn, q->body, &k, &v, MDB_RESERVE)))
    goto out;
  unsigned char *p = v.mv_data;
  for (size_t i = 0; i < m->body_iovcnt; i++) {
    if (m->body[i].iov_len)
      memcpy(p, m->body[i].iov_base, m->body[i].iov_len);
    p += m->body[i].iov_len;
  }
  rc = msg_index(q, txn, e);
out:
  free(e);
  return rc;
}

static void set_expired_reply(char *buf, const char *last) {
  snprintf(buf, QUEUE_REPLY_MAX + 1,
           "message expired in the queue (max_age)%s%s",
           last && *last ? "; last reply: " : "", last ? last : "");
}

static int apply_result(struct queue *q, MDB_txn *txn, struct op *op) {
  const struct queue_result_in *in = &op->u.res.in;
  free(op->u.res.env); /* from an attempt that was rolled back */
  op->u.res.env = NULL;
  if (!in->id || !queue_id_valid(in->id))
    return POSTERN_EINVAL;
  struct queue_env *old;
  int rc = msg_get(q, txn, in->id, &old);
  if (rc)
    return rc; /* a POSTERN code: nothing was written */
  for (size_t i = 0; i < in->n_results; i++) {
    unsigned ix = in->results[i].index;
    if (ix >= old->n_rcpts || !queue__rcpt_left(&old->rcpts[ix])) {
      free(old);
      return POSTERN_EINVAL;
    }
  }
  struct queue_env *e = env_clone_shallow(old);
  if (!e) {
    free(old);
    return POSTERN_ENOMEM;
  }
  uint64_t now = queue_now_ms(q);
  bool expired = q->o.max_age && now >= e->arrival_ms &&
                 now - e->arrival_ms >= q->o.max_age;
  bool warn = q->o.delay_warning && !e->delay_warned && now >= e->arrival_ms &&
              now - e->arrival_ms >= q->o.delay_warning;
  bool warned_now = false;
  for (size_t i = 0; i < in->n_results; i++) {
    const struct queue_rcpt_result *res = &in->results[i];
    struct queue_rcpt *r = &e->rcpts[res->index];
    r->attempts++;
    r->last_ms = now;
    r->status = res->status ? res->status : "";
    r->reply = res->reply ? res->reply : "";
    switch (res->outcome) {
    case QUEUE_OUTCOME_SENT:
      r->state = QUEUE_RCPT_SENT;
      r->event = QUEUE_DSN_SENT;
      break;
    case QUEUE_OUTCOME_BOUNCED:
      r->state = QUEUE_RCPT_BOUNCED;
      r->event = QUEUE_DSN_BOUNCED;
      break;
    case QUEUE_OUTCOME_DEFERRED:
    default:
      if (expired) {
        if (!op->u.res.expired) {
          op->u.res.expired = malloc(e->n_rcpts * (QUEUE_REPLY_MAX + 1));
          if (!op->u.res.expired) {
            free(e);
            free(old);
            return POSTERN_ENOMEM;
          }
        }
        char *buf = op->u.res.expired + res->index * (QUEUE_REPLY_MAX + 1);
        set_expired_reply(buf, r->reply);
        r->state = QUEUE_RCPT_BOUNCED;
        r->status = "4.4.7"; /* RFC 3463: delivery time expired */
        r->reply = buf;
        r->event = QUEUE_DSN_BOUNCED;
      } else {
        r->state = QUEUE_RCPT_DEFERRED;
        r->next_ms = queue_retry_next(&q->o.retry, r->attempts, now,
                                      q->o.random_u32(q->o.test_arg));
        if (warn) {
          r->event = QUEUE_DSN_DELAYED;
          warned_now = true;
        }
      }
      break;
    }
  }
  if (warned_now)
    e->delay_warned = true;
  if (e->state != QUEUE_MSG_HELD) {
    e->state = QUEUE_MSG_ACTIVE;
    for (size_t i = 0; i < e->n_rcpts; i++) {
      if (e->rcpts[i].state == QUEUE_RCPT_DEFERRED)
        e->state = QUEUE_MSG_DEFERRED;
    }
  }
  rc = msg_rewrite(q, txn, old, e);
  /* e's strings point into old or into the borrowed input: keep old alive
   * by packing both into one owned block for the callback. */
  if (rc == 0) {
    size_t need = queue__rec_size(e);
    unsigned char *tmp = malloc(need);
    struct queue_env *copy = NULL;
    if (tmp) {
      queue__rec_write(e, tmp);
      if (queue__rec_decode(tmp, need, e->id, &copy) == 0) {
        copy->removed = e->removed;
        copy->next_ms = e->next_ms;
        for (size_t i = 0; i < e->n_rcpts; i++)
          copy->rcpts[i].event = e->rcpts[i].event;
      }
      free(tmp);
    }
    op->u.res.env = copy;
    if (!copy)
      rc = POSTERN_ENOMEM; /* the txn is aborted and retried without us */
  }
  free(e);
  free(old);
  return rc;
}

/* ---- The writer thread -------------------------------------------------- */

static void op_finish(struct op *op) {
  if (op->kind == OP_SUBMIT) {
    op->u.sub.cb(op->arg, op->status);
  } else {
    op->u.res.cb(op->arg, op->status, op->status ? NULL : op->u.res.env);
    free(op->u.res.env);
    free(op->u.res.expired);
  }
  free(op);
}

/*
 * LMDB reuses a page freed by transaction N only from transaction N+2 on
 * (N's snapshot stays the fallback meta until N+1 commits). On a full map,
 * space freed by the last commit (deliveries, qtool delete) becomes usable
 * after one more small commit: this one. Returns an MDB code.
 */
static int touch(struct queue *q) {
  /* Reader slots of killed processes (a qtool hit by kill -9) pin old
   * snapshots and so their pages: clear them first. */
  int dead = 0;
  mdb_reader_check(q->env, &dead);
  MDB_txn *txn;
  int rc = mdb_txn_begin(q->env, NULL, 0, &txn);
  if (rc)
    return rc;
  MDB_val k = {4, "tick"}, v;
  uint64_t tick = 0;
  if (mdb_get(txn, q->meta, &k, &v) == 0 && v.mv_size == sizeof tick)
    memcpy(&tick, v.mv_data, sizeof tick);
  tick++;
  v.mv_size = sizeof tick;
  v.mv_data = &tick;
  if ((rc = mdb_put(txn, q->meta, &k, &v, 0))) {
    mdb_txn_abort(txn);
    return rc;
  }
  return mdb_txn_commit(txn);
}

/*
 * Commits ops[0..n) in one transaction. An operation that fails with a
 * logical error is dropped from the transaction; one that hits a full map
 * or another LMDB failure makes the transaction abort and the rest is
 * retried without it, so one big message cannot fail a whole batch.
 */
static void commit_batch(struct queue *q, struct op **ops, size_t n) {
  bool touched = false;
  for (;;) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(q->env, NULL, 0, &txn);
    if (rc) {
      for (size_t i = 0; i < n; i++) {
        if (ops[i]->status == OP_PENDING)
          ops[i]->status = from_mdb(rc);
      }
      return;
    }
    size_t applied = 0;
    bool retry = false;
    for (size_t i = 0; i < n && !retry; i++) {
      struct op *op = ops[i];
      if (op->status != OP_PENDING)
        continue;
      rc = op->kind == OP_SUBMIT ? apply_submit(q, txn, op)
                                 : apply_result(q, txn, op);
      if (rc == 0) {
        applied++;
      } else if (rc < 0 && rc > -1000) {
        /* POSTERN codes are small negatives; MDB codes are <= -30799. */
        if (rc == POSTERN_ENOMEM) {
          op->status = rc;
          retry = true; /* may have written part of it */
        } else {
          op->status = rc; /* detected before any write */
        }
      } else if (rc == MDB_TXN_FULL && applied > 0) {
        op->status = OP_REQUEUE; /* fits in a fresh transaction */
        for (size_t j = i + 1; j < n; j++) {
          if (ops[j]->status == OP_PENDING)
            ops[j]->status = OP_REQUEUE;
        }
        retry = true;
      } else if (rc == MDB_MAP_FULL && !touched) {
        /* Make pages freed by the last commits reusable, then retry. */
        mdb_txn_abort(txn);
        txn = NULL;
        touched = true;
        if ((rc = touch(q)) != 0) {
          op->status = from_mdb(rc);
          postern_log(POSTERN_LOG_WARN, "queue_full", "dir", q->dir, NULL);
        }
        retry = true;
      } else {
        op->status = from_mdb(rc);
        if (rc == MDB_MAP_FULL)
          postern_log(POSTERN_LOG_WARN, "queue_full", "dir", q->dir, NULL);
        retry = true;
      }
    }
    if (retry) {
      if (txn)
        mdb_txn_abort(txn);
      bool again = false;
      for (size_t i = 0; i < n; i++)
        again |= ops[i]->status == OP_PENDING;
      if (again)
        continue;
      return;
    }
    rc = mdb_txn_commit(txn);
    for (size_t i = 0; i < n; i++) {
      if (ops[i]->status == OP_PENDING)
        ops[i]->status = from_mdb(rc);
    }
    if (rc) {
      char buf[32];
      snprintf(buf, sizeof buf, "%d", rc);
      postern_log(POSTERN_LOG_ERROR, "queue_commit_failed", "error",
                  mdb_strerror(rc), "code", buf, NULL);
    }
    pthread_mutex_lock(&q->mu);
    q->commits++;
    q->ops_done += applied;
    pthread_mutex_unlock(&q->mu);
    return;
  }
}

static size_t op_bytes(const struct op *op) {
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
  struct op **ops = malloc(cap * sizeof *ops);
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
      struct op *op = q->head;
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

    struct op *requeue = NULL, **rt = &requeue;
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
        q->tail = (struct op *)((char *)rt - offsetof(struct op, next));
      q->head = requeue;
      for (struct op *op = requeue; op; op = op->next) {
        q->pending++;
        q->pending_bytes += op_bytes(op);
      }
      pthread_mutex_unlock(&q->mu);
    }
  }
  free(ops);
  return NULL;
}

static int enqueue(struct queue *q, struct op *op) {
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
static int submit_op(struct queue *q, struct op *op) {
  int rc = enqueue(q, op);
  if (rc)
    free(op);
  return rc;
}

static struct op *op_new(enum op_kind kind, void *arg) {
  struct op *op = calloc(1, sizeof *op);
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
  struct op *op = op_new(OP_SUBMIT, arg);
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
  struct op *op = op_new(OP_RESULT, arg);
  if (!op)
    return POSTERN_ENOMEM;
  op->u.res.in = *r;
  op->u.res.cb = cb;
  return submit_op(q, op);
}

void queue_writer_totals(struct queue *q, uint64_t *commits, uint64_t *ops) {
  pthread_mutex_lock(&q->mu);
  if (commits)
    *commits = q->commits;
  if (ops)
    *ops = q->ops_done;
  pthread_mutex_unlock(&q->mu);
}

/* ---- Open and close ----------------------------------------------------- */

int queue_open(const struct queue_opts *opts, struct queue **out) {
  if (!opts || !opts->state_dir || !*opts->state_dir || !out)
    return POSTERN_EINVAL;
  struct queue *q = calloc(1, sizeof *q);
  if (!q)
    return POSTERN_ENOMEM;
  q->o = *opts;
  if (!q->o.map_size)
    q->o.map_size = QUEUE_DEFAULT_MAP_SIZE;
  if (!q->o.retry.initial)
    q->o.retry.initial = QUEUE_DEFAULT_RETRY_INITIAL;
  if (q->o.retry.factor < 1.0)
    q->o.retry.factor = QUEUE_DEFAULT_RETRY_FACTOR;
  if (!q->o.retry.max)
    q->o.retry.max = QUEUE_DEFAULT_RETRY_MAX;
  if (!q->o.max_age)
    q->o.max_age = QUEUE_DEFAULT_MAX_AGE;
  if (!q->o.max_batch)
    q->o.max_batch = QUEUE_DEFAULT_MAX_BATCH;
  if (!q->o.max_batch_bytes)
    q->o.max_batch_bytes = QUEUE_DEFAULT_MAX_BATCH_BYTES;
  if (!q->o.commit_interval_us)
    q->o.commit_interval_us = QUEUE_DEFAULT_COMMIT_INTERVAL_US;
  if (!q->o.clock_ms)
    q->o.clock_ms = default_clock;
  if (!q->o.random_u32)
    q->o.random_u32 = default_random;

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
      goto fail_dir;
    }
  } else if (mkdir(q->dir, 0700) != 0 && errno != EEXIST) {
    rc = postern_err_from_errno(errno);
    goto fail_dir;
  }

  if ((rc = mdb_env_create(&q->env)))
    goto fail_mdb;
  if (!q->o.no_create && (rc = mdb_env_set_mapsize(q->env, q->o.map_size)))
    goto fail_env;
  if ((rc = mdb_env_set_maxdbs(q->env, 8)) ||
      (rc = mdb_env_set_maxreaders(q->env, 1022)))
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
      (rc = postern_lmdb_reserve_lock(q->dir, POSTERN_LMDB_LOCK_RESERVE))) {
    mdb_env_close(q->env);
    goto fail_dir; /* already a POSTERN code */
  }
  if ((rc = mdb_env_open(q->env, q->dir, MDB_NOTLS | MDB_NORDAHEAD, 0600)))
    goto fail_env;
  int dead = 0;
  mdb_reader_check(q->env, &dead);

  MDB_txn *txn;
  if ((rc = mdb_txn_begin(q->env, NULL, 0, &txn)))
    goto fail_env;
  if ((rc = mdb_dbi_open(txn, "msg", MDB_CREATE, &q->msg)) ||
      (rc = mdb_dbi_open(txn, "body", MDB_CREATE, &q->body)) ||
      (rc = mdb_dbi_open(txn, "due", MDB_CREATE, &q->due)) ||
      (rc = mdb_dbi_open(txn, "dom", MDB_CREATE | MDB_DUPSORT, &q->dom)) ||
      (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &q->meta))) {
    mdb_txn_abort(txn);
    goto fail_env;
  }
  if ((rc = mdb_txn_commit(txn)))
    goto fail_env;

  pthread_mutex_init(&q->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* gather() waits */
  pthread_cond_init(&q->cv, &ca);
  pthread_condattr_destroy(&ca);
  if ((rc = pthread_create(&q->writer, NULL, writer_main, q)) != 0) {
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    mdb_env_close(q->env);
    free(q->dir);
    free(q);
    return postern_err_from_errno(rc);
  }
  *out = q;
  return 0;

fail_env:
  mdb_env_close(q->env);
fail_mdb:
  rc = from_mdb(rc);
fail_dir:
  free(q->dir);
  free(q);
  return rc;
}

void queue_close(struct queue *q) {
  if (!q)
    return;
  pthread_mutex_lock(&q->mu);
  q->stopping = true;
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
  pthread_join(q->writer, NULL);
  pthread_cond_destroy(&q->cv);
  pthread_mutex_destroy(&q->mu);
  mdb_env_close(q->env);
  free(q->dir);
  free(q);
}

/* ---- Reads -------------------------------------------------------------- */

int queue_msg_load(struct queue *q, const char *id, struct queue_env **env,
                   void **body, size_t *body_len) {
  if (!q || !id || !queue_id_valid(id) || !env)
    return POSTERN_EINVAL;
  MDB_txn *txn;
  int rc = txn_begin(q, MDB_RDONLY, &txn);
  if (rc)
    return rc;
  struct queue_env *e = NULL;
  if ((rc = msg_get(q, txn, id, &e)))
    goto out;
  if (body) {
    MDB_val k = {QUEUE_ID_LEN, (void *)id}, v;
    int mrc = mdb_get(txn, q->body, &k, &v);
    if (mrc) {
      rc = mrc == MDB_NOTFOUND ? POSTERN_EQCORRUPT : from_mdb(mrc);
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

int queue_due_scan(struct queue *q, uint64_t now_ms,
                   const struct queue_due *after, struct queue_due *out,
                   size_t max, size_t *n) {
  *n = 0;
  if (max == 0)
    return 0;
  MDB_txn *txn;
  int rc = txn_begin(q, MDB_RDONLY, &txn);
  if (rc)
    return rc;
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(txn, q->due, &c))) {
    mdb_txn_abort(txn);
    return from_mdb(rc);
  }
  unsigned char kb[DUE_KEY_LEN];
  memset(kb, 0, sizeof kb);
  if (after)
    due_key(kb, after->due_ms, after->id);
  MDB_val k = {sizeof kb, kb}, v;
  rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  if (rc == 0 && after && k.mv_size == sizeof kb &&
      memcmp(k.mv_data, kb, sizeof kb) == 0)
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  while (rc == 0 && *n < max) {
    if (k.mv_size != DUE_KEY_LEN) {
      rc = MDB_CORRUPTED;
      break;
    }
    uint64_t ms = due_key_ms(k.mv_data);
    if (ms > now_ms)
      break;
    out[*n].due_ms = ms;
    memcpy(out[*n].id, (char *)k.mv_data + 8, QUEUE_ID_LEN);
    out[*n].id[QUEUE_ID_LEN] = '\0';
    (*n)++;
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(c);
  mdb_txn_abort(txn);
  return rc == MDB_NOTFOUND ? 0 : from_mdb(rc);
}

int queue_due_next(struct queue *q, uint64_t after_ms, uint64_t *due_ms) {
  *due_ms = UINT64_MAX;
  if (after_ms == UINT64_MAX)
    return 0;
  MDB_txn *txn;
  int rc = txn_begin(q, MDB_RDONLY, &txn);
  if (rc)
    return rc;
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(txn, q->due, &c))) {
    mdb_txn_abort(txn);
    return from_mdb(rc);
  }
  unsigned char kb[8];
  for (int i = 0; i < 8; i++)
    kb[i] = (unsigned char)((after_ms + 1) >> (8 * (7 - i)));
  MDB_val k = {sizeof kb, kb}, v;
  rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  if (rc == 0)
    *due_ms = due_key_ms(k.mv_data);
  mdb_cursor_close(c);
  mdb_txn_abort(txn);
  return rc == MDB_NOTFOUND ? 0 : from_mdb(rc);
}

/* ---- Administration ----------------------------------------------------- */

/* Applies op to id inside txn. 1 = applied, 0 = unknown id, <0 = error
 * (MDB code or POSTERN code; either way the txn must be aborted). */
static int admin_one(struct queue *q, MDB_txn *txn, enum queue_admin_op op,
                     const char *id, uint64_t now) {
  struct queue_env *old;
  int rc = msg_get(q, txn, id, &old);
  if (rc == POSTERN_ENOENT)
    return 0;
  if (rc)
    return rc;
  struct queue_env *e = env_clone_shallow(old);
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
  rc = msg_rewrite(q, txn, old, e);
  free(e);
  free(old);
  return rc ? from_mdb(rc) : 1;
}

/* Collects up to max ids after `after` from msg (domain NULL) or from the
 * domain's entries in dom. Returns an MDB code. */
static int collect_ids(struct queue *q, MDB_txn *txn, const char *domain,
                       const char *after, char (*ids)[QUEUE_ID_LEN + 1],
                       size_t max, size_t *n) {
  MDB_cursor *c;
  *n = 0;
  int rc = mdb_cursor_open(txn, domain ? q->dom : q->msg, &c);
  if (rc)
    return rc;
  char d[QUEUE_DOMAIN_MAX + 1];
  MDB_val k, v;
  if (domain) {
    size_t i = 0; /* lowercased like the keys (queue__domain_of) */
    for (; domain[i] && i < QUEUE_DOMAIN_MAX; i++)
      d[i] = (char)((domain[i] >= 'A' && domain[i] <= 'Z') ? domain[i] + 32
                                                           : domain[i]);
    d[i] = '\0';
    k.mv_size = i;
    k.mv_data = d;
    v.mv_size = after ? QUEUE_ID_LEN : 0;
    v.mv_data = (void *)(after ? after : "");
    rc = after ? mdb_cursor_get(c, &k, &v, MDB_GET_BOTH_RANGE)
               : mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
    MDB_cursor_op nx = MDB_NEXT_DUP;
    if (rc == 0 && after && v.mv_size == QUEUE_ID_LEN &&
        memcmp(v.mv_data, after, QUEUE_ID_LEN) == 0)
      rc = mdb_cursor_get(c, &k, &v, nx);
    while (rc == 0 && *n < max) {
      if (v.mv_size == QUEUE_ID_LEN) {
        memcpy(ids[*n], v.mv_data, QUEUE_ID_LEN);
        ids[(*n)++][QUEUE_ID_LEN] = '\0';
      }
      rc = mdb_cursor_get(c, &k, &v, nx);
    }
  } else {
    k.mv_size = after ? QUEUE_ID_LEN : 0;
    k.mv_data = (void *)(after ? after : "");
    rc = after ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
               : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    if (rc == 0 && after && k.mv_size == QUEUE_ID_LEN &&
        memcmp(k.mv_data, after, QUEUE_ID_LEN) == 0)
      rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    while (rc == 0 && *n < max) {
      if (k.mv_size == QUEUE_ID_LEN) {
        memcpy(ids[*n], k.mv_data, QUEUE_ID_LEN);
        ids[(*n)++][QUEUE_ID_LEN] = '\0';
      }
      rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
  }
  mdb_cursor_close(c);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * One chunk of queue_admin in one write transaction: sel's listed ids from
 * `start`, or (all, or a domain) the next ADMIN_CHUNK ids after `last`,
 * collected into buf. Sets *n to the ids taken; adds to *ch and (listed ids
 * only) *unk once the transaction committed. 0 or a POSTERN code.
 */
static int admin_txn(struct queue *q, enum queue_admin_op op,
                     const struct queue_select *sel, size_t start,
                     const char *last, char (*buf)[QUEUE_ID_LEN + 1], size_t *n,
                     size_t *ch, size_t *unk) {
  bool listed = !sel->all && !sel->domain;
  MDB_txn *txn;
  int rc = txn_begin(q, 0, &txn);
  if (rc)
    return rc;
  if (listed) {
    size_t left = sel->n_ids - start;
    *n = left < ADMIN_CHUNK ? left : ADMIN_CHUNK;
  } else if ((rc = collect_ids(q, txn, sel->all ? NULL : sel->domain, last, buf,
                               ADMIN_CHUNK, n))) {
    mdb_txn_abort(txn);
    return from_mdb(rc);
  }
  uint64_t now = queue_now_ms(q);
  size_t c = 0, u = 0;
  for (size_t i = 0; i < *n; i++) {
    const char *id = listed ? sel->ids[start + i] : buf[i];
    if (listed && !queue_id_valid(id))
      continue; /* counted as unknown by queue_admin */
    int r = admin_one(q, txn, op, id, now);
    if (r < 0) {
      mdb_txn_abort(txn);
      return r;
    }
    u += r == 0;
    c += (size_t)r;
  }
  if ((rc = mdb_txn_commit(txn)))
    return from_mdb(rc);
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
    if (rc == POSTERN_EQFULL && touch(q) == 0) {
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
    touch(q); /* make the freed pages reusable by the next commit */
  if (changed)
    *changed = ch;
  if (unknown)
    *unknown = unk;
  return rc;
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
    if ((rc = txn_begin(q, MDB_RDONLY, &txn)))
      break;
    size_t n = 0, got = 0;
    int r = collect_ids(q, txn, domain, last[0] ? last : NULL, ids, max, &n);
    for (size_t i = 0; r == 0 && i < n; i++) {
      int g = msg_get(q, txn, ids[i], &envs[got]);
      if (g == 0)
        got++;
      else if (g != POSTERN_ENOENT)
        rc = g;
    }
    mdb_txn_abort(txn);
    if (r)
      rc = from_mdb(r);
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

int queue_stats_get(struct queue *q, size_t top_n, struct queue_stats *st) {
  memset(st, 0, sizeof *st);
  if (top_n) {
    st->top = calloc(top_n, sizeof *st->top);
    if (!st->top)
      return POSTERN_ENOMEM;
  }
  MDB_txn *txn;
  int rc = txn_begin(q, MDB_RDONLY, &txn);
  if (rc)
    goto fail;
  MDB_val k = {6, "counts"}, v;
  rc = mdb_get(txn, q->meta, &k, &v);
  if (rc == 0 && v.mv_size == sizeof(struct counts)) {
    struct counts c;
    memcpy(&c, v.mv_data, sizeof c);
    st->messages = c.messages;
    memcpy(st->by_state, c.by_state, sizeof st->by_state);
    st->recipients = c.recipients;
    st->bytes = c.bytes;
  } else if (rc != MDB_NOTFOUND && rc != 0) {
    goto fail_txn;
  }
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(txn, q->msg, &c)))
    goto fail_txn;
  rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  if (rc == 0 && k.mv_size == QUEUE_ID_LEN) {
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
  if ((rc = mdb_cursor_open(txn, q->dom, &c)))
    goto fail_txn;
  rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  while (rc == 0) {
    size_t cnt = 0;
    mdb_cursor_count(c, &cnt);
    st->domains++;
    /* Insert into the top list (small N: insertion is fine). */
    size_t pos = st->n_top;
    while (pos > 0 && st->top[pos - 1].messages < cnt)
      pos--;
    if (pos < top_n) {
      size_t last = st->n_top < top_n ? st->n_top : top_n - 1;
      memmove(&st->top[pos + 1], &st->top[pos], (last - pos) * sizeof *st->top);
      size_t l = k.mv_size > QUEUE_DOMAIN_MAX ? QUEUE_DOMAIN_MAX : k.mv_size;
      memcpy(st->top[pos].domain, k.mv_data, l);
      st->top[pos].domain[l] = '\0';
      st->top[pos].messages = cnt;
      if (st->n_top < top_n)
        st->n_top++;
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_NODUP);
  }
  mdb_cursor_close(c);
  MDB_envinfo info;
  MDB_stat ms;
  mdb_env_info(q->env, &info);
  mdb_env_stat(q->env, &ms);
  st->db_used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
  st->map_size = info.me_mapsize;
  mdb_txn_abort(txn);
  return rc == MDB_NOTFOUND ? 0 : from_mdb(rc);
fail_txn:
  mdb_txn_abort(txn);
  rc = from_mdb(rc);
fail:
  free(st->top);
  st->top = NULL;
  return rc;
}
