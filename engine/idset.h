/*
 * idset.h - an open-addressing hash map from queue ids to pointers, for the
 * scheduler's in-flight set. Single-threaded; grows by doubling; deletes
 * use backward-shift so lookups never walk tombstones.
 */
#ifndef POSTERN_ENGINE_IDSET_H
#define POSTERN_ENGINE_IDSET_H

#include <stddef.h>

#include "queue/queue.h"

struct idset_slot {
  char id[QUEUE_ID_LEN + 1]; /* "" when empty */
  void *val;
};

struct idset {
  struct idset_slot *slots;
  size_t cap; /* power of two */
  size_t n;
};

/* Returns the value stored for id, or NULL. */
void *idset_get(const struct idset *s, const char *id);

/* Stores id -> val (val non-NULL), replacing any value. 0 or POSTERN_ENOMEM. */
int idset_put(struct idset *s, const char *id, void *val);

/* Removes id; returns its value or NULL when absent. */
void *idset_del(struct idset *s, const char *id);

void idset_free(struct idset *s);

#endif
