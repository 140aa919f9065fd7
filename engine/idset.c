/*
 * idset.c - see idset.h. Keys are fixed-size queue ids; the hash is FNV-1a
 * over the random tail of the id (its first 10 characters are a timestamp
 * shared by every id of the same millisecond).
 */
#include "engine/idset.h"

#include "base/postern_err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t id_hash(const char *id) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < QUEUE_ID_LEN && id[i]; i++) {
    h ^= (unsigned char)id[i];
    h *= 1099511628211ull;
  }
  return (size_t)(h ^ (h >> 29));
}

static size_t find(const struct idset *s, const char *id) {
  size_t m = s->cap - 1;
  for (size_t i = id_hash(id) & m;; i = (i + 1) & m) {
    if (s->slots[i].id[0] == '\0' || strcmp(s->slots[i].id, id) == 0)
      return i;
  }
}

void *idset_get(const struct idset *s, const char *id) {
  if (s->cap == 0)
    return NULL;
  size_t i = find(s, id);
  return s->slots[i].id[0] ? s->slots[i].val : NULL;
}

static int grow(struct idset *s) {
  size_t ncap = s->cap ? s->cap * 2 : 1024;
  struct idset_slot *ns = calloc(ncap, sizeof *ns);
  if (ns == NULL)
    return POSTERN_ENOMEM;
  struct idset old = *s;
  s->slots = ns;
  s->cap = ncap;
  s->n = 0;
  for (size_t i = 0; i < old.cap; i++)
    if (old.slots[i].id[0])
      idset_put(s, old.slots[i].id, old.slots[i].val);
  free(old.slots);
  return 0;
}

int idset_put(struct idset *s, const char *id, void *val) {
  if ((s->n + 1) * 4 > s->cap * 3) {
    int rc = grow(s);
    if (rc < 0)
      return rc;
  }
  size_t i = find(s, id);
  if (s->slots[i].id[0] == '\0') {
    memcpy(s->slots[i].id, id, QUEUE_ID_LEN);
    s->slots[i].id[QUEUE_ID_LEN] = '\0';
    s->n++;
  }
  s->slots[i].val = val;
  return 0;
}

void *idset_del(struct idset *s, const char *id) {
  if (s->cap == 0)
    return NULL;
  size_t m = s->cap - 1;
  size_t i = find(s, id);
  if (s->slots[i].id[0] == '\0')
    return NULL;
  void *val = s->slots[i].val;
  /* Backward-shift deletion: move later members of the cluster up so that
   * no lookup ever stops early at the hole. */
  size_t j = i;
  for (;;) {
    j = (j + 1) & m;
    if (s->slots[j].id[0] == '\0')
      break;
    size_t home = id_hash(s->slots[j].id) & m;
    /* slot j may move to i when its home is not in (i, j] cyclically */
    if ((i <= j) ? (home <= i || home > j) : (home <= i && home > j)) {
      s->slots[i] = s->slots[j];
      i = j;
    }
  }
  s->slots[i].id[0] = '\0';
  s->slots[i].val = NULL;
  s->n--;
  return val;
}

void idset_free(struct idset *s) {
  free(s->slots);
  s->slots = NULL;
  s->cap = s->n = 0;
}
