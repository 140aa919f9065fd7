/*
 * slots.c - waking destinations when an outbound connection slot frees.
 *
 * max_connections caps the relay's outbound connections over all workers.
 * A destination that has waiting jobs but no connection or attempt because
 * the cap is reached registers here (engine__slot_wait); every release of a
 * slot (a client of any worker closing) wakes the oldest waiter by posting
 * a task to the worker that owns it, which looks the destination up by key
 * and kicks it. It used to poll every 100 ms instead.
 *
 * A waiter whose destination is gone (or no longer needs a slot) passes
 * the wake-up on, so a free slot is never lost on a stale entry. A wake-up
 * lost between a destination's check of the cap and its registration is
 * caught by re-checking after registering, and, as a last resort, by the
 * destination's slow fallback timer (dest.c).
 *
 * Idle connections hold slots too: an idle session kept for idle_timeout
 * (30 s by default) would make waiters wait that long. So when the first
 * destination starts waiting, every worker is asked to close its idle
 * connections (each close releases a slot and wakes a waiter), and while
 * anyone waits, a connection that runs out of work closes instead of
 * idling (conn.c).
 *
 * Ownership: waiters are the relay's (slot_mu) until popped; a popped
 * waiter becomes the posted task and is freed by it (or at once when the
 * worker no longer takes tasks).
 */
#include "engine/dest.h"

#include "base/postern_htab.h"
#include "base/postern_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct slot_waiter {
  struct worker_task task; /* first: the task is the waiter */
  struct slot_waiter *next;
  struct relay *r;
  struct worker *w;
  char key[300];
};

static void kick_task(struct worker *w, struct worker_task *t);

/* Wakes the oldest waiter, if any (any thread). */
static void wake_one(struct relay *r) {
  pthread_mutex_lock(&r->slot_mu);
  struct slot_waiter *sw = r->slot_head;
  if (sw) {
    r->slot_head = sw->next;
    if (r->slot_head == NULL)
      r->slot_tail = NULL;
    atomic_fetch_sub(&r->slot_waiters, 1);
  }
  pthread_mutex_unlock(&r->slot_mu);
  if (sw == NULL)
    return;
  sw->task.fn = kick_task;
  if (worker_post(sw->w, &sw->task) != 0)
    free(sw); /* the worker is stopping: nobody to wake there */
}

void engine__slots_freed(void *arg) {
  wake_one(arg);
}

static void kick_task(struct worker *w, struct worker_task *t) {
  struct slot_waiter *sw = (struct slot_waiter *)t;
  struct relay *r = sw->r;
  struct dwork *dw = w->ud2;
  struct dest *d = dw ? postern_htab_get(dw->dests, sw->key) : NULL;
  free(sw);
  if (d == NULL || d->freeing || !d->slot_waiting) {
    wake_one(r); /* stale: the slot is someone else's */
    return;
  }
  d->slot_waiting = false;
  postern_log(POSTERN_LOG_DEBUG, "connection_slot_woken", "dest", d->key, NULL);
  engine__dest_kick(d);
}

/* A worker's part of freeing slots: close its idle connections. */
static void trim_task(struct worker *w, struct worker_task *t) {
  free(t);
  struct dwork *dw = w->ud2;
  if (dw != NULL)
    engine__conns_trim_idle(dw);
}

static void trim_all(struct relay *r) {
  for (int i = 0; i < r->pool.n; i++) {
    struct worker_task *t = calloc(1, sizeof *t);
    if (t == NULL)
      return;
    t->fn = trim_task;
    if (worker_post(&r->pool.w[i], t) != 0)
      free(t);
  }
}

void engine__slot_wait(struct dest *d) {
  struct relay *r = d->dw->env.r;
  if (d->slot_waiting)
    return;
  struct slot_waiter *sw = calloc(1, sizeof *sw);
  if (sw == NULL)
    return; /* the fallback timer still looks again */
  sw->r = r;
  sw->w = d->dw->w;
  snprintf(sw->key, sizeof sw->key, "%s", d->key);
  pthread_mutex_lock(&r->slot_mu);
  bool first = r->slot_head == NULL;
  if (r->slot_tail)
    r->slot_tail->next = sw;
  else
    r->slot_head = sw;
  r->slot_tail = sw;
  atomic_fetch_add(&r->slot_waiters, 1);
  pthread_mutex_unlock(&r->slot_mu);
  d->slot_waiting = true;
  if (first)
    trim_all(r);
  /* A slot freed between the caller's check and the registration above
   * woke nobody: wake the oldest waiter now. */
  if (atomic_load(&r->out_conns) < r->cfg->delivery.max_connections)
    wake_one(r);
}

void engine__slots_init(struct relay *r) {
  r->slots = (struct mx_slots){
      .count = &r->out_conns, .freed = engine__slots_freed, .arg = r};
  pthread_mutex_init(&r->slot_mu, NULL);
}

void engine__slots_free(struct relay *r) {
  struct slot_waiter *sw = r->slot_head;
  while (sw) {
    struct slot_waiter *next = sw->next;
    free(sw);
    sw = next;
  }
  r->slot_head = r->slot_tail = NULL;
  pthread_mutex_destroy(&r->slot_mu);
}
