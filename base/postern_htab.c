/*
 * base/postern_htab.c - see postern_htab.h.
 *
 * Layout: a power-of-two array of slots {hash, key, value}; value NULL
 * marks an empty slot. The load factor stays below 3/4: the array doubles
 * before a put would pass it. Deletion is Knuth's algorithm R for linear
 * probing: the entries after the hole that could have lived in it move
 * back, so a lookup stops at the first empty slot and is exact.
 *
 * The hash key is process-wide, seeded once (pthread_once) from
 * getrandom(); SipHash-1-3 as Redis uses it for its dictionaries.
 */
#include "base/postern_htab.h"

#include "base/postern_err.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- SipHash-1-3 ---- */

static uint64_t sip_k0, sip_k1;
static pthread_once_t sip_once = PTHREAD_ONCE_INIT;

static void sip_seed(void) {
  uint64_t k[2];
  if (getrandom(k, sizeof k, 0) != (ssize_t)sizeof k) {
    /* Without the kernel's randomness (very early boot), a clock-based
     * key still differs per process; it is a defence, not a secret. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    k[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
    k[1] = (uint64_t)(uintptr_t)&ts ^ 0xbf58476d1ce4e5b9ull;
  }
  sip_k0 = k[0];
  sip_k1 = k[1];
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
  do {                                                                         \
    v0 += v1;                                                                  \
    v1 = ROTL(v1, 13);                                                         \
    v1 ^= v0;                                                                  \
    v0 = ROTL(v0, 32);                                                         \
    v2 += v3;                                                                  \
    v3 = ROTL(v3, 16);                                                         \
    v3 ^= v2;                                                                  \
    v0 += v3;                                                                  \
    v3 = ROTL(v3, 21);                                                         \
    v3 ^= v0;                                                                  \
    v2 += v1;                                                                  \
    v1 = ROTL(v1, 17);                                                         \
    v1 ^= v2;                                                                  \
    v2 = ROTL(v2, 32);                                                         \
  } while (0)

uint64_t postern_hash(const void *p, size_t len) {
  pthread_once(&sip_once, sip_seed);
  const unsigned char *in = p;
  uint64_t v0 = 0x736f6d6570736575ull ^ sip_k0;
  uint64_t v1 = 0x646f72616e646f6dull ^ sip_k1;
  uint64_t v2 = 0x6c7967656e657261ull ^ sip_k0;
  uint64_t v3 = 0x7465646279746573ull ^ sip_k1;
  uint64_t b = (uint64_t)len << 56;
  size_t full = len & ~(size_t)7;
  for (size_t i = 0; i < full; i += 8) {
    uint64_t m;
    memcpy(&m, in + i, 8); /* little-endian hosts only: x86_64, arm64 */
    v3 ^= m;
    SIPROUND;
    v0 ^= m;
  }
  for (size_t i = full; i < len; i++)
    b |= (uint64_t)in[i] << (8 * (i - full));
  v3 ^= b;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- the table ---- */

struct slot {
  uint64_t hash;
  const void *key;
  void *value; /* NULL: empty */
};

struct postern_htab {
  size_t key_len; /* 0: strings */
  size_t mask;    /* capacity - 1 */
  size_t count;
  struct slot *s;
};

#define MIN_CAP 16

static uint64_t key_hash(const struct postern_htab *t, const void *key) {
  return postern_hash(key, t->key_len ? t->key_len : strlen(key));
}

static bool key_eq(const struct postern_htab *t, const void *a, const void *b) {
  return t->key_len ? memcmp(a, b, t->key_len) == 0 : strcmp(a, b) == 0;
}

int postern_htab_new(size_t key_len, struct postern_htab **out) {
  struct postern_htab *t = calloc(1, sizeof *t);
  if (t == NULL)
    return POSTERN_ENOMEM;
  t->s = calloc(MIN_CAP, sizeof *t->s);
  if (t->s == NULL) {
    free(t);
    return POSTERN_ENOMEM;
  }
  t->key_len = key_len;
  t->mask = MIN_CAP - 1;
  *out = t;
  return 0;
}

void postern_htab_free(struct postern_htab *t) {
  if (t == NULL)
    return;
  free(t->s);
  free(t);
}

size_t postern_htab_count(const struct postern_htab *t) {
  return t->count;
}

/* The slot holding `key`, or the empty slot where it would go. */
static size_t find(const struct postern_htab *t, const void *key, uint64_t h) {
  size_t i = (size_t)h & t->mask;
  while (t->s[i].value && !(t->s[i].hash == h && key_eq(t, t->s[i].key, key)))
    i = (i + 1) & t->mask;
  return i;
}

void *postern_htab_get(const struct postern_htab *t, const void *key) {
  return t->s[find(t, key, key_hash(t, key))].value;
}

static int grow(struct postern_htab *t) {
  size_t ncap = (t->mask + 1) * 2;
  struct slot *ns = calloc(ncap, sizeof *ns);
  if (ns == NULL)
    return POSTERN_ENOMEM;
  struct slot *old = t->s;
  size_t ocap = t->mask + 1;
  t->s = ns;
  t->mask = ncap - 1;
  for (size_t i = 0; i < ocap; i++) {
    if (old[i].value == NULL)
      continue;
    size_t j = (size_t)old[i].hash & t->mask;
    while (t->s[j].value)
      j = (j + 1) & t->mask;
    t->s[j] = old[i];
  }
  free(old);
  return 0;
}

int postern_htab_put(struct postern_htab *t, const void *key, void *value) {
  if (value == NULL)
    return POSTERN_EINVAL;
  uint64_t h = key_hash(t, key);
  size_t i = find(t, key, h);
  if (t->s[i].value) {
    t->s[i].key = key;
    t->s[i].value = value;
    return 0;
  }
  if ((t->count + 1) * 4 > (t->mask + 1) * 3) {
    int rc = grow(t);
    if (rc != 0)
      return rc;
    i = find(t, key, h);
  }
  t->s[i] = (struct slot){.hash = h, .key = key, .value = value};
  t->count++;
  return 0;
}

/* Empties slot i and moves back the entries of its cluster that may live
 * there (Knuth, TAOCP vol. 3, algorithm 6.4R). */
static void remove_slot(struct postern_htab *t, size_t i) {
  size_t j = i;
  for (;;) {
    t->s[i].value = NULL;
    for (;;) {
      j = (j + 1) & t->mask;
      if (t->s[j].value == NULL) {
        t->count--;
        return;
      }
      size_t home = (size_t)t->s[j].hash & t->mask;
      /* Entry j may move to i unless its home lies cyclically in (i, j]. */
      bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
      if (!stays)
        break;
    }
    t->s[i] = t->s[j];
    i = j;
  }
}

void *postern_htab_del(struct postern_htab *t, const void *key) {
  size_t i = find(t, key, key_hash(t, key));
  void *v = t->s[i].value;
  if (v)
    remove_slot(t, i);
  return v;
}

void *postern_htab_next(const struct postern_htab *t, size_t *pos,
                        const void **key) {
  for (size_t i = *pos; i <= t->mask; i++) {
    if (t->s[i].value) {
      *pos = i + 1;
      if (key)
        *key = t->s[i].key;
      return t->s[i].value;
    }
  }
  *pos = t->mask + 1;
  return NULL;
}
