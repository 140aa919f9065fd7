/*
 * sched.c - the scheduler: decides when a queued message is attempted and
 * hands its recipients, grouped by destination, to the workers.
 *
 * It runs on the main loop. New mail arrives from the commit callback
 * with its envelope and body, as the ingress had them (attempted at once,
 * and never read back from the queue); retries
 * come from scanning the queue's due index every second and at the next due
 * time. The in-flight set (id -> msgref) is in memory only: nothing is
 * written to claim a message, so after a crash everything that was in
 * flight is simply due again (at-least-once).
 *
 * Invariants: a message is in the in-flight set from dispatch until the
 * last of its jobs has its results committed; a message in flight is never
 * dispatched twice; the set never exceeds `delivery { max_inflight }`
 * messages nor, beyond its first message, `max_inflight_bytes` of bodies,
 * so a burst of due mail cannot exhaust memory (what does not fit waits in
 * the due index). Both limits are read from the configuration in force, so
 * a reload changes them.
 */
#include "engine/internal.h"

#include "engine/dsn.h"
#include "engine/metrics.h"
#include "net/rfc5322.h"
#include "base/postern_idna.h"
#include "base/postern_err.h"
#include "base/postern_htab.h"
#include "base/postern_log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SCHED_SCAN_PAGE 512
#define SCHED_TICK_MS 1000
/* A message whose result could not be committed (disk full, say) waits this
 * long before it is tried again, so a broken disk cannot cause a busy loop. */
#define SCHED_PENALTY_MS 30000

/* A newly committed message: its id, and when the submitter handed it on
 * (engine__sched_notify_msg) the message itself, so nothing is read back. */
struct new_id {
  struct new_id *next;
  struct msgref *m; /* NULL: load it */
  char id[QUEUE_ID_LEN + 1];
};

struct penalty {
  struct penalty *next;
  char id[QUEUE_ID_LEN + 1];
  uint64_t until_ms;
};

struct sched {
  struct relay *r;
  uv_loop_t *loop;
  uv_async_t wake;
  uv_timer_t timer;
  pthread_mutex_t mu;
  struct new_id *new_head, *new_tail; /* guarded by mu */
  struct msgref *done_head;           /* guarded by mu */
  /* id -> struct msgref; keys are the msgrefs' own ids. */
  struct postern_htab *inflight;
  /* Penalized ids, oldest first: every penalty lasts as long, so they
   * expire from the head; `penalty_set` (id -> struct penalty, keyed by
   * the penalty's own id) finds one in O(1). */
  struct penalty *penalties, *penalties_tail;
  struct postern_htab *penalty_set;
  uint64_t inflight_bytes; /* bodies of the messages in flight */
  bool draining;
  bool scan_wanted; /* new mail was skipped because the set was full */
  void (*drain_cb)(void *);
  void *drain_arg;
  int closing;
};

static void sched_scan(struct sched *s);
static void dispatch(struct sched *s, const char *id, struct msgref *ready);

size_t engine__sched_inflight(struct sched *s) {
  return postern_htab_count(s->inflight);
}

/* Whether the in-flight set has room for another message. Bodies stay in
 * memory until their results are committed: max_inflight_bytes caps their
 * total as max_inflight caps their number, so that big messages arriving
 * faster than they can be delivered wait in the due index rather than in
 * the heap. */
static bool inflight_full(const struct sched *s) {
  const struct config_delivery *dc = &s->r->cfg->delivery;
  size_t n = postern_htab_count(s->inflight);
  return n >= dc->max_inflight ||
         (n > 0 && s->inflight_bytes >= dc->max_inflight_bytes);
}

static void inflight_del(struct sched *s, struct msgref *m) {
  if (postern_htab_del(s->inflight, m->id) != NULL)
    s->inflight_bytes -= m->body_len;
}

void engine__msgref_free(struct msgref *m) {
  if (m == NULL)
    return;
  queue_env_free(m->env);
  free(m->body);
  free(m->notes);
  free(m);
}

static void notify(struct sched *s, const char *id, struct msgref *m) {
  struct new_id *n = malloc(sizeof *n);
  if (n == NULL) {
    /* The message is committed and due: the next scan finds it. */
    if (m)
      engine__msgref_free(m);
    return;
  }
  n->next = NULL;
  n->m = m;
  memcpy(n->id, id, QUEUE_ID_LEN + 1);
  pthread_mutex_lock(&s->mu);
  if (s->new_tail)
    s->new_tail->next = n;
  else
    s->new_head = n;
  s->new_tail = n;
  pthread_mutex_unlock(&s->mu);
  uv_async_send(&s->wake);
}

void engine__sched_notify_new(struct sched *s, const char *id) {
  notify(s, id, NULL);
}

void engine__sched_notify_msg(struct sched *s, struct msgref *m) {
  notify(s, m->id, m);
}

struct msgref *engine__msgref_of_submission(const struct queue_msg_in *in,
                                            const void *body, size_t len) {
  struct msgref *m = calloc(1, sizeof *m);
  if (m == NULL)
    return NULL;
  memcpy(m->id, in->id, QUEUE_ID_LEN + 1);
  m->body = malloc(len ? len : 1);
  if (m->body == NULL || queue_env_of_submission(in, &m->env) != 0) {
    free(m->body);
    free(m);
    return NULL;
  }
  if (len)
    memcpy(m->body, body, len);
  m->body_len = len;
  return m;
}

void engine__sched_job_done(struct sched *s, struct msgref *m) {
  pthread_mutex_lock(&s->mu);
  m->next = s->done_head;
  s->done_head = m;
  pthread_mutex_unlock(&s->mu);
  uv_async_send(&s->wake);
}

static void penalties_expire(struct sched *s, uint64_t now) {
  while (s->penalties && s->penalties->until_ms <= now) {
    struct penalty *p = s->penalties;
    s->penalties = p->next;
    if (s->penalties == NULL)
      s->penalties_tail = NULL;
    /* A newer penalty for the same id replaced this one in the set. */
    if (postern_htab_get(s->penalty_set, p->id) == p)
      postern_htab_del(s->penalty_set, p->id);
    free(p);
  }
}

static bool penalized(struct sched *s, const char *id, uint64_t now) {
  penalties_expire(s, now);
  return postern_htab_get(s->penalty_set, id) != NULL;
}

static void penalize(struct sched *s, const char *id, uint64_t now) {
  struct penalty *p = malloc(sizeof *p);
  if (p == NULL)
    return;
  memcpy(p->id, id, QUEUE_ID_LEN + 1);
  p->until_ms = now + SCHED_PENALTY_MS;
  p->next = NULL;
  if (postern_htab_put(s->penalty_set, p->id, p) != 0) {
    free(p);
    return;
  }
  if (s->penalties_tail)
    s->penalties_tail->next = p;
  else
    s->penalties = p;
  s->penalties_tail = p;
}

static const char *rcpt_domain(const char *addr) {
  const char *at = strrchr(addr, '@');
  return at ? at + 1 : "";
}

/* Splits the message's open recipients into jobs, one per destination, and
 * posts each to the worker owning that destination. */
/* Whether the message asks, by a "TLS-Required: No" header field (RFC 8689
 * §5), to be delivered even where TLS policies fail, and the configuration
 * lets it. */
static bool tls_required_no(struct sched *s, const struct msgref *m) {
  char v[16];
  return s->r->cfg->tls_required_no == 0 && m->body != NULL &&
         rfc5322_header_value(m->body, m->body_len, "TLS-Required", v,
                              sizeof v) == 0 &&
         strcasecmp(v, "No") == 0;
}

static void dispatch_msg(struct sched *s, struct msgref *m) {
  struct queue_env *env = m->env;
  /* RFC 8689 §4.3: with REQUIRETLS the TLS-Required field is ignored. */
  bool trn = !env->tls_report && !env->requiretls && tls_required_no(s, m);
  size_t n = env->n_rcpts;
  unsigned *todo = malloc(n * sizeof *todo);
  struct job **jobs = calloc(n, sizeof *jobs);
  size_t njobs = 0, ntodo = 0;
  if (todo == NULL || jobs == NULL)
    goto oom;
  for (size_t i = 0; i < n; i++) {
    enum queue_rcpt_state st = env->rcpts[i].state;
    if (st == QUEUE_RCPT_PENDING || st == QUEUE_RCPT_DEFERRED)
      todo[ntodo++] = (unsigned)i;
  }
  /* Group by destination key; n is small (bounded by max_recipients), so
   * the quadratic grouping costs less than a hash table would. */
  for (size_t k = 0; k < ntodo; k++) {
    unsigned i = todo[k];
    const char *dom = rcpt_domain(env->rcpts[i].addr);
    /* Routes, lookups, policies and certificate names use the A-label form
     * of an internationalized domain (IDNA2008); the queue keeps what the
     * client sent. A name that is not valid IDNA2008 can never be
     * delivered: its recipients get a job of their own that bounces. */
    char adom[256];
    const char *idna_why = NULL;
    for (const char *c = dom; *c; c++)
      if ((unsigned char)*c >= 0x80) {
        if (postern_idna_to_ascii(dom, adom, sizeof adom, &idna_why) == 0) {
          dom = adom;
          idna_why = NULL;
        }
        break;
      }
    struct route_target rt;
    char key[300];
    bool routed = engine__dest_key(s->r, dom, &rt, key, sizeof key);
    if (idna_why != NULL)
      snprintf(key, sizeof key, "\tinvalid-idna\t%s", dom);
    /* A TLS report the relay made goes to a destination of its own: it is
     * delivered despite TLS failures (RFC 8460 §3), which the domain's
     * other mail never is. */
    if (env->requiretls)
      strncat(key, "\trequiretls", sizeof key - strlen(key) - 1);
    else if (env->tls_report)
      strncat(key, "\ttls-report", sizeof key - strlen(key) - 1);
    /* Likewise a message that waives MTA-STS and DANE (TLS-Required: No). */
    else if (trn)
      strncat(key, "\ttls-required-no", sizeof key - strlen(key) - 1);
    struct job *j = NULL;
    for (size_t x = 0; x < njobs; x++)
      if (strcmp(jobs[x]->dest_key, key) == 0)
        j = jobs[x];
    if (j == NULL) {
      j = engine__job_new(ntodo);
      if (j == NULL)
        goto oom;
      jobs[njobs++] = j;
      j->relay = s->r;
      j->m = m;
      snprintf(j->dest_key, sizeof j->dest_key, "%s", key);
      j->routed = routed;
      if (routed)
        j->route = rt;
      snprintf(j->domain, sizeof j->domain, "%s", dom);
      j->tls_report = env->tls_report;
      j->tls_required_no = trn;
      j->requiretls = env->requiretls;
      j->idna_why = idna_why;
      j->task.fn = engine__deliver_job;
    }
    j->idx[j->n++] = i;
  }
  free(todo);
  todo = NULL;
  if (njobs == 0) {
    /* Nothing open (a stale due entry): drop it from flight at once. */
    free(jobs);
    inflight_del(s, m);
    engine__msgref_free(m);
    return;
  }
  atomic_store(&m->jobs_left, (int)njobs);
  for (size_t x = 0; x < njobs; x++) {
    struct job *j = jobs[x];
    j->start_ms = relay_now_ms(s->r);
    if (j->idna_why != NULL) {
      /* RFC 5891 §5: not a name DNS can carry; permanent (RFC 3463
       * X.1.2: bad destination system address). */
      char reason[300];
      snprintf(reason, sizeof reason,
               "invalid internationalized domain name %s: %s", j->domain,
               j->idna_why);
      engine__job_fail_all(j, false, "5.1.2", reason, NULL); /* finishes j */
      continue;
    }
    struct worker *w = engine__dest_worker(s->r, j->dest_key);
    if (worker_post(w, &j->task) != 0) {
      /* Shutting down: leave the recipients queued and due. */
      engine__job_abandon(j);
    }
  }
  free(jobs);
  return;
oom:
  postern_log(POSTERN_LOG_ERROR, "schedule_failed", "id", m->id, "error",
              "out of memory", NULL);
  for (size_t x = 0; x < njobs; x++)
    engine__job_free(jobs[x]);
  free(jobs);
  free(todo);
  inflight_del(s, m);
  engine__msgref_free(m);
}

/* Puts a message in flight and hands its jobs out; `ready` is the message
 * as its submitter handed it on (taken over), or NULL to load it. */
static void dispatch(struct sched *s, const char *id, struct msgref *ready) {
  if (s->draining || postern_htab_get(s->inflight, id) != NULL ||
      inflight_full(s)) {
    /* Committed and due: a scan finds it again once there is room. */
    if (!s->draining && postern_htab_get(s->inflight, id) == NULL)
      s->scan_wanted = true;
    if (ready)
      engine__msgref_free(ready);
    return;
  }
  struct msgref *m = ready;
  if (m != NULL)
    goto in_flight;
  m = calloc(1, sizeof *m);
  if (m == NULL)
    return;
  memcpy(m->id, id, QUEUE_ID_LEN + 1);
  int rc =
      queue_msg_load(relay_queue(s->r), id, &m->env, &m->body, &m->body_len);
  if (rc != 0) {
    /* ENOENT: delivered or deleted meanwhile (qtool); nothing to do. */
    if (rc != POSTERN_ENOENT)
      postern_log(POSTERN_LOG_ERROR, "queue_load_failed", "id", id, "error",
                  postern_strerror(rc), NULL);
    free(m);
    return;
  }
  if (m->env->state == QUEUE_MSG_HELD) {
    engine__msgref_free(m);
    return;
  }
in_flight:
  if (postern_htab_put(s->inflight, m->id, m) != 0) {
    engine__msgref_free(m);
    return;
  }
  s->inflight_bytes += m->body_len;
  dispatch_msg(s, m);
}

/* Builds and queues one DSN for the recipients a message's attempt bounced
 * (or delayed), as RFC 3464 asks: one report per message per attempt. */
static void send_dsns(struct sched *s, struct msgref *m,
                      enum queue_dsn_event ev) {
  if (m->n_notes == 0)
    return;
  struct dsn_note *dn = calloc(m->n_notes, sizeof *dn);
  if (dn == NULL)
    return;
  for (size_t i = 0; i < m->n_notes; i++) {
    const struct msg_note *note = &m->notes[i];
    dn[i] = (struct dsn_note){.index = note->index,
                              .event = note->event,
                              .status = note->status,
                              .reply = note->reply,
                              .mx = note->mx,
                              .when_ms = note->when_ms};
  }
  char dsn_id[QUEUE_ID_LEN + 1];
  queue_id_new(dsn_id);
  char *msg;
  size_t len, nwanted;
  int rc = dsn_build_for(m->env, m->body, m->body_len, dn, m->n_notes, ev,
                         relay_hostname(s->r), relay_now_ms(s->r), dsn_id, &msg,
                         &len, &nwanted);
  if (rc == POSTERN_ESTATE) {
    /* RFC 3464 §2: never report on a report. */
    for (size_t i = 0; i < m->n_notes; i++) {
      if (dn[i].event != ev ||
          !dsn_notify_wants(m->env->rcpts[dn[i].index].notify, ev))
        continue;
      metrics_inc(METRICS_DOUBLE_BOUNCES);
      postern_log(POSTERN_LOG_WARN, "double_bounce", "id", m->id, "rcpt",
                  m->env->rcpts[dn[i].index].addr, "dsn", dn[i].status, NULL);
    }
  }
  free(dn);
  if (rc == POSTERN_ENOENT || rc == POSTERN_ESTATE)
    return;
  if (rc == 0) {
    rc = engine__ingress_local(s->r, dsn_id, "", m->env->sender, msg, len);
    if (rc != 0)
      free(msg);
  }
  if (rc != 0) {
    postern_log(POSTERN_LOG_ERROR, "dsn_failed", "id", m->id, "error",
                postern_strerror(rc), NULL);
    return;
  }
  metrics_inc(METRICS_DSN_QUEUED);
  postern_log(POSTERN_LOG_INFO, "dsn_queued", "id", m->id, "dsn_id", dsn_id,
              "kind", ev == QUEUE_DSN_BOUNCED ? "failure" : "delay", "to",
              m->env->sender, NULL);
}

static void finish_msg(struct sched *s, struct msgref *m) {
  inflight_del(s, m);
  if (m->result_failed)
    penalize(s, m->id, relay_now_ms(s->r));
  send_dsns(s, m, QUEUE_DSN_BOUNCED);
  send_dsns(s, m, QUEUE_DSN_DELAYED);
  engine__msgref_free(m);
}

static void maybe_drained(struct sched *s) {
  if (s->draining && postern_htab_count(s->inflight) == 0 && s->drain_cb) {
    void (*cb)(void *) = s->drain_cb;
    s->drain_cb = NULL;
    cb(s->drain_arg);
  }
}

static void on_wake(uv_async_t *a) {
  struct sched *s = a->data;
  pthread_mutex_lock(&s->mu);
  struct new_id *nl = s->new_head;
  struct msgref *dl = s->done_head;
  s->new_head = s->new_tail = NULL;
  s->done_head = NULL;
  pthread_mutex_unlock(&s->mu);
  bool freed = false;
  while (dl) {
    struct msgref *next = dl->next;
    finish_msg(s, dl);
    freed = true;
    dl = next;
  }
  while (nl) {
    struct new_id *next = nl->next;
    dispatch(s, nl->id, nl->m);
    free(nl);
    nl = next;
  }
  const struct config_delivery *dc = &s->r->cfg->delivery;
  if (freed && s->scan_wanted &&
      postern_htab_count(s->inflight) < dc->max_inflight / 2 &&
      s->inflight_bytes < dc->max_inflight_bytes / 2) {
    s->scan_wanted = false;
    sched_scan(s);
  }
  maybe_drained(s);
}

/* Walks the due index up to now, skipping what is in flight or penalized,
 * dispatching the rest until the in-flight set is full. Reads happen in
 * short transactions inside queue_due_scan; nothing is held across pages. */
static void sched_scan(struct sched *s) {
  if (s->draining)
    return;
  struct queue *q = relay_queue(s->r);
  uint64_t now = relay_now_ms(s->r);
  struct queue_due page[SCHED_SCAN_PAGE];
  struct queue_due after;
  bool have_after = false;
  for (;;) {
    size_t n = 0;
    int rc = queue_due_scan(q, now, have_after ? &after : NULL, page,
                            SCHED_SCAN_PAGE, &n);
    if (rc != 0) {
      postern_log(POSTERN_LOG_ERROR, "due_scan_failed", "error",
                  postern_strerror(rc), NULL);
      return;
    }
    for (size_t i = 0; i < n; i++) {
      if (inflight_full(s)) {
        s->scan_wanted = true;
        return;
      }
      if (postern_htab_get(s->inflight, page[i].id) == NULL &&
          !penalized(s, page[i].id, now))
        dispatch(s, page[i].id, NULL);
    }
    if (n < SCHED_SCAN_PAGE)
      break;
    after = page[n - 1];
    have_after = true;
  }
}

static void on_tick(uv_timer_t *t) {
  struct sched *s = t->data;
  sched_scan(s);
  /* Sleep until the next due time, but at most a second: qtool's changes
   * (release, retry) must be seen within a second. */
  uint64_t next = UINT64_MAX, now = relay_now_ms(s->r);
  uint64_t wait = SCHED_TICK_MS;
  if (queue_due_next(relay_queue(s->r), now, &next) == 0 && next > now &&
      next - now < wait)
    wait = next - now;
  uv_timer_start(&s->timer, on_tick, wait, 0);
}

int engine__sched_new(struct relay *r, uv_loop_t *loop, struct sched **out) {
  struct sched *s = calloc(1, sizeof *s);
  if (s == NULL)
    return POSTERN_ENOMEM;
  s->r = r;
  s->loop = loop;
  if (postern_htab_new(QUEUE_ID_LEN, &s->inflight) != 0 ||
      postern_htab_new(QUEUE_ID_LEN, &s->penalty_set) != 0) {
    postern_htab_free(s->inflight);
    free(s);
    return POSTERN_ENOMEM;
  }
  pthread_mutex_init(&s->mu, NULL);
  uv_async_init(loop, &s->wake, on_wake);
  s->wake.data = s;
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  /* The first scan picks up everything left from a previous run. */
  uv_timer_start(&s->timer, on_tick, 0, 0);
  *out = s;
  return 0;
}

void engine__sched_drain(struct sched *s, void (*cb)(void *), void *arg) {
  s->draining = true;
  s->drain_cb = cb;
  s->drain_arg = arg;
  uv_timer_stop(&s->timer);
  maybe_drained(s);
}

static void sched_closed(uv_handle_t *h) {
  struct sched *s = h->data;
  if (--s->closing == 0) {
    postern_htab_free(s->inflight);
    pthread_mutex_destroy(&s->mu);
    free(s);
  }
}

void engine__sched_close(struct sched *s) {
  /* Called after the workers and the queue's writer have stopped, so no
   * job or result callback can touch a msgref any more. Whatever was in
   * flight stays queued and due: the in-memory state is simply freed. */
  pthread_mutex_lock(&s->mu);
  struct new_id *nl = s->new_head;
  struct msgref *dl = s->done_head;
  s->new_head = s->new_tail = NULL;
  s->done_head = NULL;
  pthread_mutex_unlock(&s->mu);
  while (nl) {
    struct new_id *next = nl->next;
    if (nl->m)
      engine__msgref_free(nl->m);
    free(nl);
    nl = next;
  }
  while (dl) {
    struct msgref *next = dl->next;
    postern_htab_del(s->inflight, dl->id);
    engine__msgref_free(dl);
    dl = next;
  }
  /* Freeing a msgref leaves the table as it is (its key is only read by
   * lookups, and none follows): no collect-then-delete is needed. */
  size_t pos = 0;
  struct msgref *m;
  while ((m = postern_htab_next(s->inflight, &pos, NULL)) != NULL)
    engine__msgref_free(m);
  postern_htab_free(s->penalty_set);
  s->penalty_set = NULL;
  s->penalties_tail = NULL;
  while (s->penalties) {
    struct penalty *p = s->penalties;
    s->penalties = p->next;
    free(p);
  }
  s->closing = 2;
  uv_close((uv_handle_t *)&s->wake, sched_closed);
  uv_close((uv_handle_t *)&s->timer, sched_closed);
}
