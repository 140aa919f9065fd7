/*
 * smtp_auth_limit.c - the limiter of failed SMTP AUTH attempts
 * (smtp_auth.h): failures counted per client address and per user name in
 * a fixed window that starts with the first failure; past a few, each
 * attempt waits (a tarpit doubling up to a cap), and past more, attempts
 * from the address are refused.
 *
 * Invariants: both tables are bounded (max_entries each; when one is full,
 * expired entries go first, then the one whose window started first: a
 * list in window order makes that cost what it frees, not a walk of the
 * whole table, which under an attack from many addresses would run for
 * every new one); one
 * mutex guards both, held only for a lookup. The clock is the caller's
 * (now_ms), so the unit tests drive it.
 */
#include "net/smtp_auth.h"

#include "base/postern_err.h"
#include "base/postern_htab.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
  char key[SMTP_AUTH_NAME_MAX + 1];
  unsigned fails;
  uint64_t first_ms;
  struct entry *prev, *next; /* the table's list, by first_ms */
};

/* The entries by key, and in the order their windows started: expired
 * ones are always at the head, so making room never walks the table. */
struct table {
  struct postern_htab *h;
  struct entry *head, *tail;
};

static void list_del(struct table *t, struct entry *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    t->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    t->tail = e->prev;
  e->prev = e->next = NULL;
}

static void list_append(struct table *t, struct entry *e) {
  e->prev = t->tail;
  e->next = NULL;
  if (t->tail)
    t->tail->next = e;
  else
    t->head = e;
  t->tail = e;
}

struct smtp_auth_limit {
  struct smtp_auth_limit_opts o;
  pthread_mutex_t mu;
  struct table addr, user;
};

void smtp_auth_limit_defaults(struct smtp_auth_limit_opts *o) {
  *o = (struct smtp_auth_limit_opts){
      .addr_free = 3,
      .addr_refuse = 10,
      .user_free = 5,
      .window_ms = 15 * 60 * 1000,
      .delay_ms = 500,
      .max_delay_ms = 8000,
      .max_entries = 8192,
  };
}

int smtp_auth_limit_new(const struct smtp_auth_limit_opts *o,
                        struct smtp_auth_limit **out) {
  struct smtp_auth_limit *l = calloc(1, sizeof *l);
  if (l == NULL)
    return POSTERN_ENOMEM;
  l->o = *o;
  if (l->o.max_entries == 0)
    l->o.max_entries = 1;
  if (postern_htab_new(0, &l->addr.h) != 0 ||
      postern_htab_new(0, &l->user.h) != 0) {
    postern_htab_free(l->addr.h);
    free(l);
    return POSTERN_ENOMEM;
  }
  pthread_mutex_init(&l->mu, NULL);
  *out = l;
  return 0;
}

static void table_clear(struct table *t) {
  size_t pos = 0;
  struct entry *e;
  /* Nothing is deleted during the walk: freeing the values is safe (the
   * table goes right after, as engine/sched.c frees its jobs). */
  while ((e = postern_htab_next(t->h, &pos, NULL)) != NULL)
    free(e);
  postern_htab_free(t->h);
}

void smtp_auth_limit_free(struct smtp_auth_limit *l) {
  if (l == NULL)
    return;
  table_clear(&l->addr);
  table_clear(&l->user);
  pthread_mutex_destroy(&l->mu);
  free(l);
}

static bool expired(const struct smtp_auth_limit *l, const struct entry *e,
                    uint64_t now) {
  return now >= e->first_ms && now - e->first_ms >= l->o.window_ms;
}

/* The entry's failures still in the window (0 when it has expired). */
static unsigned live_fails(const struct smtp_auth_limit *l,
                           const struct entry *e, uint64_t now) {
  return e == NULL || expired(l, e, now) ? 0 : e->fails;
}

static void drop(struct table *t, struct entry *e) {
  list_del(t, e);
  postern_htab_del(t->h, e->key);
  free(e);
}

/* Makes room for one more entry: expired ones first, then the oldest. */
static void make_room(struct smtp_auth_limit *l, struct table *t,
                      uint64_t now) {
  if (postern_htab_count(t->h) < l->o.max_entries)
    return;
  bool freed = false;
  while (t->head != NULL && expired(l, t->head, now)) {
    drop(t, t->head);
    freed = true;
  }
  if (!freed && t->head != NULL)
    drop(t, t->head);
}

static void count(struct smtp_auth_limit *l, struct table *t, const char *key,
                  uint64_t now) {
  struct entry *e = postern_htab_get(t->h, key);
  if (e != NULL && expired(l, e, now)) {
    e->fails = 0;
    e->first_ms = now;
    list_del(t, e); /* its window starts now: the newest */
    list_append(t, e);
  }
  if (e == NULL) {
    make_room(l, t, now);
    e = calloc(1, sizeof *e);
    if (e == NULL)
      return;
    snprintf(e->key, sizeof e->key, "%s", key);
    e->first_ms = now;
    if (postern_htab_put(t->h, e->key, e) != 0) {
      free(e);
      return;
    }
    list_append(t, e);
  }
  if (e->fails < UINT32_MAX)
    e->fails++;
}

/* The tarpit after `fails` failures where `free_n` are free. */
static uint64_t delay_for(const struct smtp_auth_limit *l, unsigned fails,
                          unsigned free_n) {
  if (fails == 0 || fails < free_n)
    return 0;
  uint64_t d = l->o.delay_ms;
  for (unsigned i = free_n; i < fails && d < l->o.max_delay_ms; i++)
    d *= 2;
  return d < l->o.max_delay_ms ? d : l->o.max_delay_ms;
}

enum smtp_auth_verdict smtp_auth_limit_check(struct smtp_auth_limit *l,
                                             const char *addr, const char *user,
                                             uint64_t now_ms,
                                             uint64_t *delay_ms) {
  *delay_ms = 0;
  pthread_mutex_lock(&l->mu);
  unsigned fa = live_fails(l, postern_htab_get(l->addr.h, addr), now_ms);
  unsigned fu =
      user ? live_fails(l, postern_htab_get(l->user.h, user), now_ms) : 0;
  pthread_mutex_unlock(&l->mu);
  if (fa >= l->o.addr_refuse)
    return SMTP_AUTH_REFUSE;
  uint64_t da = delay_for(l, fa, l->o.addr_free);
  uint64_t du = user ? delay_for(l, fu, l->o.user_free) : 0;
  *delay_ms = da > du ? da : du;
  return *delay_ms > 0 ? SMTP_AUTH_DELAY : SMTP_AUTH_ALLOW;
}

void smtp_auth_limit_fail(struct smtp_auth_limit *l, const char *addr,
                          const char *user, uint64_t now_ms) {
  pthread_mutex_lock(&l->mu);
  count(l, &l->addr, addr, now_ms);
  if (user != NULL && user[0] != '\0')
    count(l, &l->user, user, now_ms);
  pthread_mutex_unlock(&l->mu);
}
