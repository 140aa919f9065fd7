/*
 * internal.h - helpers shared by the queue's .c files; not part of the API.
 */
#ifndef POSTERN_QUEUE_INTERNAL_H
#define POSTERN_QUEUE_INTERNAL_H

#include "queue/queue.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Envelope record codec (queue_rec.c). A record is a fixed header, the
 * message's strings (u32 length + bytes each), then per recipient a fixed
 * part and its strings. Native byte order: an LMDB file is not portable
 * across architectures anyway.
 */
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
