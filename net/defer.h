/*
 * net/defer.h - "run this callback later": the one way code on a libuv loop
 * calls back once the current call has returned.
 *
 * The rule it serves (GUIDE.md): a callback never runs inside the call that
 * started the operation. When an operation can finish at once (a cache hit,
 * nothing to look up, a message that needs no network), or a callback must
 * not start new work from inside another module's callback, the owner arms
 * its struct net_defer and the callback runs on a later turn of the same
 * loop, from the loop itself.
 *
 * A struct net_defer is embedded in its owner (no allocation per use) and
 * holds one libuv handle: it is initialised once, armed any number of
 * times, and closed once; the owner's memory may be freed only in the close
 * callback. One thread: the loop's.
 *
 * Order: deferred callbacks run in the order they were armed, from the
 * loop once the current callback has returned, before the loop blocks for
 * I/O again.
 */
#ifndef NET_DEFER_H
#define NET_DEFER_H

#include <stdbool.h>

#include <uv.h>

struct net_defer;

typedef void (*net_defer_cb)(struct net_defer *d);

struct net_defer {
  uv_timer_t h;                        /* private: a zero-delay timer */
  net_defer_cb cb;                     /* private: what runs next */
  void (*closed)(struct net_defer *d); /* private */
  void *data;                          /* the owner's */
};

/* Prepares `d` on `loop`, not armed. Cannot fail once the loop exists. */
void net_defer_init(uv_loop_t *loop, struct net_defer *d, void *data);

/*
 * Arms `d`: `cb` runs once, later, from the loop. Arming a pending defer
 * only replaces its callback: it still runs once, in its first place.
 * Never runs `cb` inside this call.
 */
void net_defer_arm(struct net_defer *d, net_defer_cb cb);

/* Disarms `d`: a pending callback does not run. */
void net_defer_cancel(struct net_defer *d);

/* Whether a callback is pending. */
bool net_defer_pending(const struct net_defer *d);

/*
 * Closes `d` (a pending callback does not run). `closed` (may be NULL)
 * runs later, from the loop, once the handle is released: the memory that
 * holds `d` may be freed there and not before.
 */
void net_defer_close(struct net_defer *d, void (*closed)(struct net_defer *d));

#endif
