/*
 * queue.h - Postern's persistent mail queue on LMDB.
 *
 * A message acknowledged with 250 lives here until every recipient is sent or
 * bounced. The queue is one LMDB environment in <state_dir>/queue/ opened with
 * LMDB's default durability (every commit is fsync'ed; a kill -9 at any
 * instant leaves the last committed state), shared by the relay and qtool
 * through LMDB's own multi-process locking.
 *
 * Threads. Every function may be called from any thread. Writes that come from
 * the relay's hot path (new messages, delivery results) go through ONE writer
 * thread owned by the queue: it takes everything that is waiting (at most
 * max_batch operations), applies it in ONE write transaction with one commit,
 * and then runs each operation's callback ON THE WRITER THREAD. Callers that
 * live on a libuv loop must hop back to their loop themselves (uv_async_send)
 * and must keep the callback short: while it runs, nothing else commits.
 * Administrative changes (hold, release, retry, delete) and all reads run
 * synchronously on the calling thread in their own short transactions.
 *
 * Records. Per message: the envelope (sender, RET, ENVID, submitting client,
 * arrival time, size, state) with, per recipient, its address, DSN NOTIFY and
 * ORCPT, state (pending / deferred / sent / bounced), attempts, last enhanced
 * status and reply, and next attempt time; the body; and an entry in the due
 * index keyed by (next attempt ms big-endian, id) while the message is not
 * held and has recipients left. Counters (messages by state, recipients,
 * bytes) and a per-domain index are kept in the same transactions, so stats
 * cost O(domains), not O(messages).
 *
 * Claiming work writes nothing: the scheduler keeps its own in-flight set, so
 * a message in flight when the process died is simply due again at start
 * (at-least-once delivery; duplicates only for what was in flight).
 *
 * Errors are negative POSTERN_E* codes (postern_err.h): POSTERN_EQFULL when
 * the LMDB map is full, POSTERN_ENOSPC / POSTERN_EIO for disk errors,
 * POSTERN_EQCORRUPT for a damaged database, POSTERN_ENOENT for unknown ids.
 */
#ifndef POSTERN_QUEUE_H
#define POSTERN_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* A message id: 26 characters of Crockford base32 (like ULID), 48 bits of
 * Unix time in ms then 80 bits that are random, and incremented within one
 * millisecond so ids from one process are strictly increasing. Ids sort by
 * time as plain strings. */
#define QUEUE_ID_LEN 26

/* Bounds on what the queue stores per recipient. Longer replies are cut. */
#define QUEUE_STATUS_MAX 15 /* "5.7.1" style enhanced status code */
#define QUEUE_REPLY_MAX 512 /* remote reply text kept for qtool and DSNs */
#define QUEUE_DOMAIN_MAX 255

#define QUEUE_MS_SECOND 1000ull
#define QUEUE_MS_MINUTE (60ull * QUEUE_MS_SECOND)
#define QUEUE_MS_HOUR (60ull * QUEUE_MS_MINUTE)
#define QUEUE_MS_DAY (24ull * QUEUE_MS_HOUR)

/* Defaults applied by queue_open for options left 0. */
#define QUEUE_DEFAULT_MAP_SIZE (16ull << 30)
#define QUEUE_DEFAULT_RETRY_INITIAL (5 * QUEUE_MS_MINUTE)
#define QUEUE_DEFAULT_RETRY_FACTOR 2.0
#define QUEUE_DEFAULT_RETRY_MAX QUEUE_MS_HOUR
#define QUEUE_DEFAULT_MAX_AGE (5 * QUEUE_MS_DAY)
#define QUEUE_DEFAULT_MAX_BATCH 1024
#define QUEUE_DEFAULT_MAX_BATCH_BYTES (256ull << 20)
#define QUEUE_DEFAULT_COMMIT_INTERVAL_US 1000
#define QUEUE_OPTS_COMMIT_ASAP UINT64_MAX /* commit_interval_us: no wait */

/* The retry schedule; durations in ms. */
struct queue_retry_params {
  uint64_t initial; /* delay after the first attempt */
  double factor;    /* each further delay is the previous one times this */
  uint64_t max;     /* delays never exceed this (before jitter) */
};

/*
 * Options. The config module fills this from `queue { ... }`; every field
 * left 0/NULL gets the default above. queue_open copies what it keeps.
 */
struct queue_opts {
  const char *state_dir; /* required, must exist; the env lives in
                            <state_dir>/queue/ (created 0700) */
  uint64_t map_size;     /* bytes; default 16G. Ignored with no_create. */
  struct queue_retry_params retry; /* default 5m, 2, 1h */
  uint64_t max_age;         /* ms; default 5d. Older messages bounce (4.4.7). */
  uint64_t delay_warning;   /* ms; 0 = never report delays (RFC 3461 DELAY) */
  unsigned max_batch;       /* operations per commit; default 1024 */
  uint64_t max_batch_bytes; /* body bytes per commit; default 256M */
  /* Shortest time between the starts of two commits, in microseconds;
   * default 1000 (QUEUE_OPTS_COMMIT_ASAP for none). A commit costs about
   * the same for one operation as for fifty (the same dirty pages, one
   * fdatasync), so under load the writer lets operations gather for this
   * long; an operation arriving after a quiet spell is committed at once. */
  uint64_t commit_interval_us;
  /* Open only an existing queue, adopting its map size (qtool): a typo in a
   * path then gives ENOENT instead of a new empty queue. */
  bool no_create;
  /* For tests: the clock (Unix ms) and the jitter source. NULL means
   * CLOCK_REALTIME and getrandom(2). Called on any thread. */
  uint64_t (*clock_ms)(void *arg);
  uint32_t (*random_u32)(void *arg);
  void *test_arg;
};

struct queue;

/*
 * Opens (creating with no_create false) the queue and starts its writer
 * thread. Clears reader slots left by dead processes. On success *out is the
 * handle; close it with queue_close.
 * Errors: POSTERN_EINVAL (no state_dir), POSTERN_ENOENT (no_create and no
 * queue), POSTERN_EPERM, POSTERN_EQCORRUPT, POSTERN_EQLOCKED (incompatible
 * LMDB version), POSTERN_ENOMEM, POSTERN_EIO.
 */
int queue_open(const struct queue_opts *opts, struct queue **out);

/*
 * Stops the writer after it has committed and called back everything already
 * submitted, then closes the environment. Submissions racing with close get
 * POSTERN_ESTATE from their submit call. NULL is ignored.
 */
void queue_close(struct queue *q);

/*
 * Writes a new unique id and its NUL into out. Thread-safe, never fails
 * (aborts only if the kernel has no randomness at all).
 */
void queue_id_new(char out[QUEUE_ID_LEN + 1]);

/* Whether s is a well-formed id (26 Crockford base32 characters). */
bool queue_id_valid(const char *s);

/* The Unix ms encoded in a valid id. */
uint64_t queue_id_time_ms(const char *id);

/* ---- Messages ---------------------------------------------------------- */

/* RFC 3461 NOTIFY flags; 0 means the parameter was absent (default). */
#define QUEUE_NOTIFY_NEVER 1u
#define QUEUE_NOTIFY_SUCCESS 2u
#define QUEUE_NOTIFY_FAILURE 4u
#define QUEUE_NOTIFY_DELAY 8u

/* RFC 3461 RET. */
enum queue_ret { QUEUE_RET_UNSET = 0, QUEUE_RET_FULL, QUEUE_RET_HDRS };

#define QUEUE_RCPT_STATE_MAP(X)                                                \
  X(PENDING, "pending")                                                        \
  X(DEFERRED, "deferred")                                                      \
  X(SENT, "sent")                                                              \
  X(BOUNCED, "bounced")

enum queue_rcpt_state {
#define QUEUE__RS(name, str) QUEUE_RCPT_##name,
  QUEUE_RCPT_STATE_MAP(QUEUE__RS)
#undef QUEUE__RS
};

/*
 * Message states. ACTIVE: never deferred (new, or made due by `retry`);
 * DEFERRED: the last attempt deferred some recipient and it waits for its
 * next attempt; HELD: never attempted until released. Whether a message is
 * due now is a matter of its next attempt time, not of its state.
 */
#define QUEUE_MSG_STATE_MAP(X)                                                 \
  X(ACTIVE, "active")                                                          \
  X(DEFERRED, "deferred")                                                      \
  X(HELD, "held")

enum queue_msg_state {
#define QUEUE__MS(name, str) QUEUE_MSG_##name,
  QUEUE_MSG_STATE_MAP(QUEUE__MS)
#undef QUEUE__MS
};

/* Static names ("deferred"); "unknown" for values outside the enum. */
const char *queue_rcpt_state_name(enum queue_rcpt_state s);
const char *queue_msg_state_name(enum queue_msg_state s);
/* Parses a message state name. Returns 0 or POSTERN_EINVAL. */
int queue_msg_state_parse(const char *s, enum queue_msg_state *out);

/*
 * What a result update did to a recipient: facts only. The engine applies
 * the recipient's NOTIFY (RFC 3461 section 4.1: NEVER, and the default of
 * FAILURE plus, at the MTA's choice, DELAY) when it decides which DSN to
 * send; it also uses BOUNCED to log expiries the queue decided.
 */
enum queue_dsn_event {
  QUEUE_DSN_NONE = 0,
  QUEUE_DSN_BOUNCED, /* became bounced in this update (including max_age
                        expiry, status 4.4.7) */
  QUEUE_DSN_DELAYED, /* deferred in the update in which the message first
                        passed delay_warning (once per message) */
  QUEUE_DSN_SENT,    /* became sent in this update */
};

struct queue_rcpt_in {
  const char *addr;  /* forward-path without <> */
  const char *orcpt; /* RFC 3461 ORCPT ("rfc822;a@b"), or NULL */
  unsigned notify;   /* QUEUE_NOTIFY_* bits, 0 = absent */
};

/*
 * A finished message handed over by an SMTP session. All pointers are
 * BORROWED until the submit callback has run: the writer copies straight
 * from them into LMDB inside the write transaction, so the caller copies
 * nothing and must keep them valid and unchanged until then.
 */
struct queue_msg_in {
  const char *id;     /* from queue_id_new, at MAIL FROM time */
  const char *sender; /* reverse-path without <>, "" for the null sender */
  const struct queue_rcpt_in *rcpts;
  size_t n_rcpts; /* 1 .. 65535 */
  enum queue_ret ret;
  const char *envid;        /* RFC 3461 ENVID (xtext as received), or NULL */
  const char *client_addr;  /* submitting client "192.0.2.1:2525", or NULL */
  const char *client_helo;  /* its HELO/EHLO name, or NULL */
  uint64_t arrival_ms;      /* Unix ms; 0 means now */
  const struct iovec *body; /* the message, as received after DATA */
  size_t body_iovcnt;
  /* A TLS report (RFC 8460) the relay made itself: delivered despite TLS
   * failures and not counted in the next report (§3). Kept with the
   * message (queue_env.tls_report). */
  bool tls_report;
  /* Sent with MAIL ... REQUIRETLS (RFC 8689 §4.1: the server tags the
   * message; its delivery then requires TLS on every hop). Kept with the
   * message (queue_env.requiretls). */
  bool requiretls;
  /* The SMTP AUTH user who submitted it (RFC 4954), or NULL. Kept with
   * the message (queue_env.auth_user). */
  const char *auth_user;
};

/*
 * Commit outcome of a submission, run on the writer thread after the
 * transaction holding the message was committed (status 0: the message is
 * durable, send 250) or failed (status < 0, nothing of it is stored):
 * POSTERN_EQFULL (map full: the other messages of the batch still commit),
 * POSTERN_ENOSPC, POSTERN_EIO, POSTERN_EEXIST (id already queued),
 * POSTERN_EINVAL (bad id, no recipients), POSTERN_ETOOBIG (a single message
 * bigger than one transaction can hold).
 */
typedef void (*queue_submit_cb)(void *arg, int status);

/*
 * Queues m for the writer. Returns 0 and later calls cb(arg, status) exactly
 * once, never inside this call; or returns POSTERN_ENOMEM / POSTERN_ESTATE
 * (queue closing) / POSTERN_EINVAL and never calls cb. The new message is
 * ACTIVE with every recipient PENDING and due at once.
 */
int queue_msg_submit(struct queue *q, const struct queue_msg_in *m,
                     queue_submit_cb cb, void *arg);

/* A recipient as stored. Strings are NUL-terminated and never NULL (""). */
struct queue_rcpt {
  const char *addr;
  const char *orcpt;
  unsigned notify;
  enum queue_rcpt_state state;
  unsigned attempts;
  uint64_t next_ms;   /* next attempt, meaningful while pending/deferred */
  uint64_t last_ms;   /* last attempt, 0 if none */
  const char *status; /* last enhanced status ("4.2.0"), "" if none */
  const char *reply;  /* last reply text, bounded to QUEUE_REPLY_MAX */
  enum queue_dsn_event event; /* only set in a result callback's envelope */
};

/* An envelope copied out of LMDB; one allocation, freed by queue_env_free. */
struct queue_env {
  char id[QUEUE_ID_LEN + 1];
  enum queue_msg_state state;
  const char *sender;
  const char *envid;
  const char *client_addr;
  const char *client_helo;
  enum queue_ret ret;
  uint64_t arrival_ms;
  uint64_t next_ms;  /* earliest next attempt of a pending/deferred rcpt */
  uint64_t size;     /* body bytes */
  bool delay_warned; /* a delay DSN was already asked for */
  bool tls_report;   /* a TLS report the relay made (queue_msg_in) */
  bool requiretls;   /* MAIL ... REQUIRETLS, RFC 8689 (queue_msg_in) */
  bool removed;      /* result callbacks: the message left the queue */
  /* The SMTP AUTH login, "" when none (queue_msg_in). */
  const char *auth_user;
  size_t n_rcpts;
  struct queue_rcpt *rcpts;
};

void queue_env_free(struct queue_env *env);

/*
 * The envelope queue_msg_load() would return for submission `m` once it is
 * committed (ACTIVE, every recipient PENDING and due at m->arrival_ms),
 * built without reading the queue: what a submitter hands on, so that
 * nothing reads the message back. m->arrival_ms must be set (the submitter
 * stamps it, so the stored and the handed-on envelopes agree). One
 * allocation, free with queue_env_free. Errors: POSTERN_EINVAL,
 * POSTERN_ENOMEM.
 */
int queue_env_of_submission(const struct queue_msg_in *m,
                            struct queue_env **out);

/*
 * Copies the envelope of message id into *env (free with queue_env_free)
 * and, when body is not NULL, its body into a malloc'ed *body of *body_len
 * bytes (free with free). Uses one short read transaction; nothing stays
 * open after return. Errors: POSTERN_ENOENT, POSTERN_ENOMEM,
 * POSTERN_EQCORRUPT, POSTERN_EIO.
 */
int queue_msg_load(struct queue *q, const char *id, struct queue_env **env,
                   void **body, size_t *body_len);

/* ---- Scheduler ---------------------------------------------------------- */

struct queue_due {
  char id[QUEUE_ID_LEN + 1];
  uint64_t due_ms;
};

/*
 * Fills out[0..max) with due entries whose time is <= now_ms, in (time, id)
 * order, starting after the entry `after` (NULL: from the start; pass the
 * last entry of the previous call to page past messages already in flight).
 * Sets *n. Held messages and messages without recipients left are never in
 * the due index. One short read transaction; O(log n + max).
 * Errors: POSTERN_EIO, POSTERN_EQCORRUPT.
 */
int queue_due_scan(struct queue *q, uint64_t now_ms,
                   const struct queue_due *after, struct queue_due *out,
                   size_t max, size_t *n);

/*
 * Sets *due_ms to the earliest due time strictly later than after_ms, or
 * UINT64_MAX when nothing is due later; for the scheduler's timer.
 */
int queue_due_next(struct queue *q, uint64_t after_ms, uint64_t *due_ms);

/* ---- Delivery results --------------------------------------------------- */

enum queue_outcome {
  QUEUE_OUTCOME_SENT,
  QUEUE_OUTCOME_DEFERRED,
  QUEUE_OUTCOME_BOUNCED,
};

struct queue_rcpt_result {
  unsigned index; /* the recipient's index in queue_env.rcpts */
  enum queue_outcome outcome;
  const char *status; /* enhanced status, "" or NULL if none */
  const char *reply;  /* reply text or reason; cut to QUEUE_REPLY_MAX */
};

/* One attempt's results for some recipients of one message. Borrowed until
 * the result callback has run. */
struct queue_result_in {
  const char *id;
  const struct queue_rcpt_result *results;
  size_t n_results;
};

/*
 * Outcome of a result submission, on the writer thread after commit.
 * status 0: env is the envelope as committed, valid only during the
 * callback (copy what you keep); each recipient's `event` says what this
 * update did to it (enum queue_dsn_event). env->removed is true when no
 * recipient is pending or deferred any more and the message was deleted. status
 * < 0: env is NULL; POSTERN_ENOENT (the message was deleted meanwhile, e.g. by
 * qtool), POSTERN_EINVAL (index out of range or recipient already final),
 * POSTERN_EQFULL, POSTERN_ENOSPC, POSTERN_EIO: nothing was changed and the
 * message stays due.
 */
typedef void (*queue_result_cb)(void *arg, int status,
                                const struct queue_env *env);

/*
 * Queues results for the writer; batched with submissions in the same
 * commits. Sent and bounced recipients become final; a deferred recipient
 * gets attempts+1 and next attempt per queue_retry_next, or bounces with
 * 4.4.7 when the message is older than max_age. A held message stays held
 * and out of the due index. Returns like queue_msg_submit.
 */
int queue_result_submit(struct queue *q, const struct queue_result_in *r,
                        queue_result_cb cb, void *arg);

/*
 * The retry schedule as a pure function: the time of the next attempt after
 * `attempts` attempts (>= 1) made, the last one at now_ms. The delay is
 * min(initial * factor^(attempts-1), max), then moved by a jitter within
 * +-10% chosen by rnd (uniform over the 2001 steps of 0.01%: rnd % 2001).
 */
uint64_t queue_retry_next(const struct queue_retry_params *p, unsigned attempts,
                          uint64_t now_ms, uint32_t rnd);

/* ---- Counters ------------------------------------------------------------
 *
 * Named counters kept in the queue's environment, for figures that must
 * survive a crash exactly as far as the deliveries they describe (TLS
 * reporting, RFC 8460). Updates go through the writer: batched into the
 * same commits as submissions and results, and committed in the order they
 * were queued, so an update queued before a delivery's result is durable
 * no later than that result. Keys are opaque bytes, 1 to
 * QUEUE_COUNTER_KEY_MAX; each counter holds a uint64 and a note (bytes
 * given when the counter is created and kept by later updates).
 * ------------------------------------------------------------------------ */

#define QUEUE_COUNTER_KEY_MAX 400
#define QUEUE_COUNTER_NOTE_MAX 4096

struct queue_counter_add {
  const void *key;
  size_t klen;
  uint64_t add;     /* 0 only creates the counter (with its note) */
  const void *note; /* used only when the counter is new */
  size_t nlen;
};

/* After the commit, on the writer thread: 0 or the commit's error
 * (POSTERN_EQFULL, POSTERN_ENOSPC, POSTERN_EIO: nothing was counted). */
typedef void (*queue_counters_cb)(void *arg, int status);

/*
 * Queues n updates for the writer; keys and notes are copied, so `adds` is
 * borrowed for the call only. cb may be NULL. Returns 0, POSTERN_EINVAL (a
 * key empty or longer than QUEUE_COUNTER_KEY_MAX, a note longer than
 * QUEUE_COUNTER_NOTE_MAX), POSTERN_ENOMEM or POSTERN_ESTATE (closing).
 */
int queue_counters_submit(struct queue *q, const struct queue_counter_add *adds,
                          size_t n, queue_counters_cb cb, void *arg);

/* Called for each counter in key order; key and note point into the
 * database and are valid during the call only. Non-zero stops the scan. */
typedef int (*queue_counter_fn)(void *arg, const void *key, size_t klen,
                                uint64_t value, const void *note, size_t nlen);

/* Calls fn for every counter whose key starts with prefix (plen 0: all),
 * in one short read transaction. Returns 0 or the read's error. */
int queue_counters_scan(struct queue *q, const void *prefix, size_t plen,
                        queue_counter_fn fn, void *arg);

/* Deletes every counter whose key starts with prefix, on the calling
 * thread in write transactions of at most 2,000 records; *deleted (may be
 * NULL) says how many. Returns 0 or the first error (what was committed
 * before it stays deleted). */
int queue_counters_delete(struct queue *q, const void *prefix, size_t plen,
                          size_t *deleted);

/* ---- Administration (qtool) -------------------------------------------- */

#define QUEUE_ADMIN_OP_MAP(X)                                                  \
  X(HOLD, "hold")                                                              \
  X(RELEASE, "release")                                                        \
  X(RETRY, "retry")                                                            \
  X(DELETE, "delete")

enum queue_admin_op {
#define QUEUE__AO(name, str) QUEUE_ADMIN_##name,
  QUEUE_ADMIN_OP_MAP(QUEUE__AO)
#undef QUEUE__AO
};

/*
 * Which messages an admin operation touches: the ids listed, or every
 * message (all), or every message with a recipient left whose domain is
 * `domain` (case-insensitive).
 */
struct queue_select {
  const char *const *ids;
  size_t n_ids;
  bool all;
  const char *domain;
};

/*
 * Applies op synchronously on the calling thread, in write transactions of
 * at most a few thousand messages each (so --all on a huge queue never makes
 * one giant transaction); a running relay sees the change at its next due
 * scan. HOLD takes a message out of the due index; RELEASE puts it back with
 * its recipients' next attempt times (due at once if those passed); RETRY
 * sets every pending/deferred recipient's next attempt to now (a held
 * message stays held); DELETE removes it without notice.
 * *changed counts the messages the operation applied to (already held
 * messages count for HOLD too); *unknown counts listed ids not in the queue.
 * Either pointer may be NULL. Errors: POSTERN_EINVAL, POSTERN_EQFULL,
 * POSTERN_ENOSPC, POSTERN_EIO; on error, earlier chunks stay committed.
 */
int queue_admin(struct queue *q, enum queue_admin_op op,
                const struct queue_select *sel, size_t *changed,
                size_t *unknown);

/* ---- Listing and statistics -------------------------------------------- */

/*
 * Visits envelopes in id (= arrival) order, starting after `after_id` (NULL
 * or "" from the first), restricted to `domain` when not NULL. Reads at most
 * `max` envelopes per read transaction into memory, ends the transaction,
 * then calls fn for each: no transaction is held while fn runs (it may do
 * I/O). fn returns 0 to go on, non-zero to stop. The env passed to fn is
 * valid during the call only.
 */
typedef int (*queue_list_fn)(void *arg, const struct queue_env *env);
int queue_list(struct queue *q, const char *after_id, const char *domain,
               size_t max, queue_list_fn fn, void *arg);

struct queue_domain_count {
  char domain[QUEUE_DOMAIN_MAX + 1];
  uint64_t messages; /* messages with a recipient left in this domain */
};

struct queue_stats {
  uint64_t messages;
  uint64_t by_state[3];       /* indexed by enum queue_msg_state */
  uint64_t recipients;        /* recipients pending or deferred */
  uint64_t bytes;             /* body bytes of all messages */
  uint64_t oldest_arrival_ms; /* 0 when empty */
  uint64_t domains;           /* distinct destination domains */
  size_t n_top;
  struct queue_domain_count *top; /* malloc'ed, biggest first; free() it */
  /* LMDB's own view: pages used and map size, in bytes. */
  uint64_t db_used_bytes;
  uint64_t map_size;
};

/*
 * Fills *st from the counters kept in every write transaction and the
 * per-domain index, with the top_n biggest domains. One read transaction,
 * O(domains). Free st->top with free().
 */
int queue_stats_get(struct queue *q, size_t top_n, struct queue_stats *st);

/* The writer's totals since open, for the benchmark: commits done and
 * operations committed. */
void queue_writer_totals(struct queue *q, uint64_t *commits, uint64_t *ops);

/* The queue's clock (opts.clock_ms or CLOCK_REALTIME), Unix ms. */
uint64_t queue_now_ms(struct queue *q);

#endif
