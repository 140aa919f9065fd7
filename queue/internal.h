/*
 * internal.h - what the queue's .c files share; not part of the API.
 *
 * The files (each opens with what it owns):
 *   queue.c         the environment: open, close, the clock, the error rule
 *   queue_writer.c  the writer thread and group commit
 *   queue_apply.c   what one writer operation writes (new message, results)
 *   queue_admin.c   hold / release / retry / delete
 *   queue_read.c    reads: a message, the due index, list, stats
 *   queue_db.c      the databases and the code that keeps their invariants
 *   queue_rec.c     ids, the envelope record codec, state names, retry times
 *   queue_counters.c named counters (TLS reporting) and their writer op
 *
 * Errors. Every function of the module that can fail, internal ones
 * included, returns 0 or a negative POSTERN_E* code. An LMDB return code is
 * mapped where the mdb_* call returns (queue__mdb, or queue__wtxn_fail inside a
 * write transaction) and never leaves the function that made the call: locals
 * holding one are named `mrc`, locals holding a POSTERN code `rc`.
 */
#ifndef POSTERN_QUEUE_INTERNAL_H
#define POSTERN_QUEUE_INTERNAL_H

#include "queue/queue.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct queue__op; /* queue_writer.c */

struct queue {
  MDB_env *env;
  MDB_dbi msg, body, due, dom, meta, ctr;
  struct queue_opts o;
  char *dir;

  /* The writer (queue_writer.c). Everything below is under mu. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct queue__op *head, *tail;
  size_t pending;         /* ops on the list */
  uint64_t pending_bytes; /* their body bytes */
  bool gathering;         /* the writer waits in gather(): see enqueue */
  bool stopping;
  pthread_t writer;
  uint64_t commits, ops_done;
};

/* ---- The error rule (queue.c) ------------------------------------------- */

/*
 * The one mapping of an LMDB return code to 0 or a POSTERN code:
 * MDB_NOTFOUND ENOENT, MDB_KEYEXIST EEXIST, MDB_MAP_FULL EQFULL,
 * MDB_TXN_FULL and MDB_BAD_VALSIZE ETOOBIG, MDB_CORRUPTED,
 * MDB_PAGE_NOTFOUND and MDB_INVALID EQCORRUPT, MDB_VERSION_MISMATCH
 * EQLOCKED, MDB_READERS_FULL EBUSY, MDB_MAP_RESIZED EAGAIN, an errno its
 * POSTERN code (postern_err_from_errno), anything else EIO.
 */
int queue__mdb(int mrc);

/*
 * A write transaction and what its failed LMDB calls said beyond their
 * POSTERN code, recorded where they failed. The writer needs both: after
 * a failure part-way through an operation's writes the transaction can only
 * be aborted (an operation refused before it wrote, such as an unknown id,
 * leaves the transaction usable for the others), and a transaction that ran
 * out of room for dirty pages (MDB_TXN_FULL, ETOOBIG like a value LMDB
 * refuses for its size) can still commit what it held before.
 */
struct queue__wtxn {
  MDB_txn *txn;
  bool failed; /* an LMDB call of a write failed: abort is all that is left */
  bool full;   /* ... and it failed with MDB_TXN_FULL */
};

/* Records the failure mrc (not 0) of an LMDB call in w's transaction and
 * returns queue__mdb(mrc). */
int queue__wtxn_fail(struct queue__wtxn *w, int mrc);

/* ---- The databases (queue_db.c) ----------------------------------------- */

/* The due index's keys: next attempt ms (8 bytes big-endian), then the id. */
#define QUEUE__DUE_KEY_LEN (8 + QUEUE_ID_LEN)
void queue__due_key(unsigned char k[QUEUE__DUE_KEY_LEN], uint64_t ms,
                    const char *id);
uint64_t queue__due_key_ms(const unsigned char *k);

/* meta "counts": what a full scan of msg would count. */
struct queue__counts {
  uint64_t messages;
  uint64_t by_state[3];
  uint64_t recipients;
  uint64_t bytes;
};

/* mdb_txn_begin(q->env, NULL, flags, txn). */
int queue__txn_begin(struct queue *q, unsigned flags, MDB_txn **txn);

/* Reads and decodes message id inside txn (read or write) into *out (free
 * with free). ENOENT when absent, EQCORRUPT, ENOMEM, or the read's error;
 * a failure here writes nothing (w->failed stays as it was). */
int queue__msg_get(struct queue *q, MDB_txn *txn, const char *id,
                   struct queue_env **out);

/* Adds the new message e's due entry, domain entries and counts. */
int queue__msg_index(struct queue *q, struct queue__wtxn *w,
                     const struct queue_env *e);

/*
 * Replaces old by new (both describe the same id) keeping every invariant;
 * deletes the message (body included) and sets new->removed when new has no
 * recipient left, else recomputes new->next_ms and stores it.
 */
int queue__msg_rewrite(struct queue *q, struct queue__wtxn *w,
                       const struct queue_env *old, struct queue_env *new);

/* A working copy whose strings still point into `src` (same lifetime);
 * NULL when out of memory. Free with free(). */
struct queue_env *queue__env_clone_shallow(const struct queue_env *src);

/*
 * Collects up to max ids after `after` (NULL: from the first) from msg
 * (domain NULL) or from the domain's entries in dom, into ids[0..*n).
 */
int queue__ids_collect(struct queue *q, MDB_txn *txn, const char *domain,
                       const char *after, char (*ids)[QUEUE_ID_LEN + 1],
                       size_t max, size_t *n);

/*
 * LMDB reuses a page freed by transaction N only from transaction N+2 on
 * (N's snapshot stays the fallback meta until N+1 commits). On a full map,
 * space freed by the last commit (deliveries, qtool delete) becomes usable
 * after one more small commit: this one.
 */
int queue__touch(struct queue *q);

/* ---- Counters (queue_counters.c) ----------------------------------------- */

/* A counters operation's own copy of its updates (one block: free()). */
struct queue__counters {
  size_t n;
  struct queue_counter_add *adds; /* keys and notes point into the block */
};
int queue__counters_copy(const struct queue_counter_add *adds, size_t n,
                         struct queue__counters **out);
/* Applies the updates inside w (a failed read writes nothing). */
int queue__apply_counters(struct queue *q, struct queue__wtxn *w,
                          const struct queue__counters *c);

/* ---- What writer operations write (queue_apply.c) ----------------------- */

/*
 * Each applies one operation inside the writer's transaction w. On failure
 * nothing of the operation is committed: either it was refused before it
 * wrote (w->failed false; the transaction goes on without it, unless the
 * code is POSTERN_ENOMEM) or w->failed is set and the transaction must be
 * aborted.
 */
int queue__apply_submit(struct queue *q, struct queue__wtxn *w,
                        const struct queue_msg_in *m);
/* *env (owned, handed to the callback) gets the committed envelope; a
 * previous attempt's *env is freed first. *expired is the op's buffer for
 * max_age replies, allocated on first need, freed by the op's owner. */
int queue__apply_result(struct queue *q, struct queue__wtxn *w,
                        const struct queue_result_in *in,
                        struct queue_env **env, char **expired);

/* ---- The writer (queue_writer.c) ---------------------------------------- */

/* Initialises the writer's lock and condition and starts its thread. On
 * failure nothing is left to undo. */
int queue__writer_start(struct queue *q);

/* Lets the writer commit and call back everything submitted, then joins
 * it and destroys the lock and condition. */
void queue__writer_stop(struct queue *q);

/* ---- Records (queue_rec.c) ---------------------------------------------- */

/*
 * Envelope record codec. A record is a fixed header, the message's strings
 * (u32 length + bytes each), then per recipient a fixed part and its
 * strings. Native byte order: an LMDB file is not portable across
 * architectures anyway.
 */
/* A submission's body size, and its envelope as the writer stores it (one
 * calloc'ed block whose strings are borrowed from m). */
size_t queue__in_size(const struct queue_msg_in *m);
int queue__env_of_in(const struct queue_msg_in *m, uint64_t now,
                     struct queue_env **out);

size_t queue__rec_size(const struct queue_env *e);
void queue__rec_write(const struct queue_env *e, unsigned char *dst);
/* Decodes into one malloc'ed block owned by *out. Returns 0,
 * POSTERN_EQCORRUPT or POSTERN_ENOMEM. */
int queue__rec_decode(const void *data, size_t len, const char *id,
                      struct queue_env **out);

/* Copies the lowercased domain of addr (after the last '@'; "(none)" when
 * there is none) into dst, cut to QUEUE_DOMAIN_MAX. Returns its length. */
size_t queue__domain_of(const char *addr, char dst[QUEUE_DOMAIN_MAX + 1]);

/* Whether the recipient still needs an attempt. */
static inline int queue__rcpt_left(const struct queue_rcpt *r) {
  return r->state == QUEUE_RCPT_PENDING || r->state == QUEUE_RCPT_DEFERRED;
}

#endif
