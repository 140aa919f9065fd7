/*
 * net/defer.c - see defer.h.
 *
 * A zero-delay timer: libuv runs due timers first on every turn of the
 * loop, in the order they were started, and a timer never fires inside
 * uv_timer_start(). It also makes the loop poll without blocking while a
 * callback is pending, as an idle handle would. Ownership: the handle is
 * the owner's (embedded); it is released in close_cb, which hands control
 * back to the owner's `closed` callback.
 */
#include "net/defer.h"

#include <stddef.h>

static void fire(uv_timer_t *t) {
  struct net_defer *d = t->data;
  d->cb(d);
}

static void handle_closed(uv_handle_t *h) {
  struct net_defer *d = h->data;
  if (d->closed)
    d->closed(d);
}

void net_defer_init(uv_loop_t *loop, struct net_defer *d, void *data) {
  uv_timer_init(loop, &d->h);
  d->h.data = d;
  d->cb = NULL;
  d->closed = NULL;
  d->data = data;
}

void net_defer_arm(struct net_defer *d, net_defer_cb cb) {
  d->cb = cb;
  if (!uv_is_active((uv_handle_t *)&d->h))
    uv_timer_start(&d->h, fire, 0, 0);
}

void net_defer_cancel(struct net_defer *d) {
  uv_timer_stop(&d->h);
}

bool net_defer_pending(const struct net_defer *d) {
  return uv_is_active((const uv_handle_t *)&d->h) != 0;
}

void net_defer_close(struct net_defer *d, void (*closed)(struct net_defer *d)) {
  d->closed = closed;
  uv_close((uv_handle_t *)&d->h, handle_closed);
}
