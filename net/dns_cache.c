/*
 * net/dns_cache.c - the resolver's answer cache (c-ares 1.18 has none).
 *
 * One cache per resolver, so per libuv loop: every delivery of a worker
 * shares it, and nothing is locked. An entry is a deep copy of a parsed
 * answer with its expiry time; a lookup hands out another copy with the
 * remaining TTL, so no caller ever holds memory the cache may free.
 *
 * What is kept (RFC 2181 §5.2 / RFC 2308):
 *  - ANSWER for the minimum TTL of the records (and CNAME links) used,
 *    capped at max_ttl;
 *  - NXDOMAIN and NODATA for the negative TTL of the SOA in the authority
 *    section, capped at max_ttl and at DNS__NEG_TTL_MAX (RFC 2308 §5: one
 *    to three hours work well); a denial without an SOA is not cached;
 *  - never TEMPFAIL, MALFORMED or CANCELED: a failure is asked again.
 * The AD bit is part of the answer and is kept with it: a cached answer is
 * exactly as authenticated as the one that was received.
 *
 * Bounds: at most max_entries entries; the least recently used one is
 * dropped first (an intrusive list, most recent at the head). Lookups are
 * through base/postern_htab, keyed by "type/name".
 */
#include "net/dns_internal.h"

#include "base/postern_err.h"
#include "base/postern_htab.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
  char key[DNS_NAME_MAX + 8]; /* "type/name", the table's key */
  uint64_t expires_ms;
  struct dns_answer ans;
  struct entry *prev, *next; /* recency list */
};

/* Counters are written by the resolver's thread only and read by any
 * (a metrics scrape on the main loop): relaxed atomics. */
struct counters {
  _Atomic uint64_t hits, misses, stored, evicted, entries;
};

struct dns__cache {
  struct postern_htab *t;
  size_t max;
  uint32_t max_ttl;
  struct entry *head, *tail;
  struct counters st;
};

static void bump(_Atomic uint64_t *c, int64_t by) {
  atomic_fetch_add_explicit(c, (uint64_t)by, memory_order_relaxed);
}

int dns__cache_new(size_t max_entries, uint32_t max_ttl,
                   struct dns__cache **out) {
  *out = NULL;
  if (max_entries == 0)
    return 0;
  struct dns__cache *c = calloc(1, sizeof *c);
  if (c == NULL || postern_htab_new(0, &c->t) != 0) {
    free(c);
    return POSTERN_ENOMEM;
  }
  c->max = max_entries;
  c->max_ttl = max_ttl;
  *out = c;
  return 0;
}

static void unlink_entry(struct dns__cache *c, struct entry *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    c->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    c->tail = e->prev;
  e->prev = e->next = NULL;
}

static void push_front(struct dns__cache *c, struct entry *e) {
  e->prev = NULL;
  e->next = c->head;
  if (c->head)
    c->head->prev = e;
  c->head = e;
  if (c->tail == NULL)
    c->tail = e;
}

static void drop(struct dns__cache *c, struct entry *e) {
  postern_htab_del(c->t, e->key);
  unlink_entry(c, e);
  dns_answer_free(&e->ans);
  free(e);
  bump(&c->st.entries, -1);
}

void dns__cache_free(struct dns__cache *c) {
  if (c == NULL)
    return;
  while (c->head)
    drop(c, c->head);
  postern_htab_free(c->t);
  free(c);
}

static int make_key(char *key, size_t cap, const char *name, uint16_t type) {
  int n = snprintf(key, cap, "%u/%s", (unsigned)type, name);
  return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int dns__cache_get(struct dns__cache *c, const char *name, uint16_t type,
                   uint64_t now_ms, struct dns_answer *out) {
  char key[DNS_NAME_MAX + 8];
  if (c == NULL || make_key(key, sizeof key, name, type) != 0)
    return POSTERN_ENOENT;
  struct entry *e = postern_htab_get(c->t, key);
  if (e == NULL) {
    bump(&c->st.misses, 1);
    return POSTERN_ENOENT;
  }
  if (e->expires_ms <= now_ms) {
    drop(c, e);
    bump(&c->st.misses, 1);
    return POSTERN_ENOENT;
  }
  int rc = dns__answer_copy(&e->ans, out);
  if (rc != 0)
    return rc;
  out->ttl = (uint32_t)((e->expires_ms - now_ms + 999) / 1000);
  unlink_entry(c, e);
  push_front(c, e);
  bump(&c->st.hits, 1);
  return 0;
}

void dns__cache_put(struct dns__cache *c, const char *name, uint16_t type,
                    const struct dns_answer *a, uint64_t now_ms) {
  if (c == NULL)
    return;
  uint32_t ttl = a->ttl;
  switch (a->status) {
  case DNS_ANSWER:
    break;
  case DNS_NXDOMAIN:
  case DNS_NODATA:
    if (ttl > DNS__NEG_TTL_MAX)
      ttl = DNS__NEG_TTL_MAX;
    break;
  default:
    return;
  }
  if (ttl > c->max_ttl)
    ttl = c->max_ttl;
  if (ttl == 0)
    return;
  struct entry *e = calloc(1, sizeof *e);
  if (e == NULL)
    return;
  if (make_key(e->key, sizeof e->key, name, type) != 0 ||
      dns__answer_copy(a, &e->ans) != 0) {
    free(e);
    return;
  }
  e->expires_ms = now_ms + (uint64_t)ttl * 1000;
  struct entry *old = postern_htab_get(c->t, e->key);
  if (old)
    drop(c, old);
  if (postern_htab_put(c->t, e->key, e) != 0) {
    dns_answer_free(&e->ans);
    free(e);
    return;
  }
  push_front(c, e);
  bump(&c->st.entries, 1);
  bump(&c->st.stored, 1);
  while (atomic_load_explicit(&c->st.entries, memory_order_relaxed) > c->max) {
    drop(c, c->tail);
    bump(&c->st.evicted, 1);
  }
}

void dns__cache_stats(const struct dns__cache *c, struct dns_cache_stats *st) {
  memset(st, 0, sizeof *st);
  if (c == NULL)
    return;
  st->hits = atomic_load_explicit(&c->st.hits, memory_order_relaxed);
  st->misses = atomic_load_explicit(&c->st.misses, memory_order_relaxed);
  st->stored = atomic_load_explicit(&c->st.stored, memory_order_relaxed);
  st->evicted = atomic_load_explicit(&c->st.evicted, memory_order_relaxed);
  st->entries = atomic_load_explicit(&c->st.entries, memory_order_relaxed);
}
