/*
 * net/stream.h - one TCP connection that carries plaintext or, after
 * STARTTLS, TLS (net/tls.h): the write path the SMTP client and the SMTP
 * server share.
 *
 * A struct stream is embedded in its owner (an SMTP client, a server
 * session) and used on the owner's loop thread only. It holds the libuv
 * TCP handle and, once TLS is on, the tls_conn whose records go over it.
 * The owner does the rest:
 *  - it sets st->tcp.data (its own pointer, for its libuv callbacks) and
 *    connects or accepts on &st->tcp;
 *  - it reads: uv_read_start(&st->tcp, ...); while stream_tls(st) is NULL
 *    the bytes are plaintext, afterwards ciphertext for tls_conn_feed() and
 *    tls_conn_read() on stream_tls(st). The two owners buffer their input
 *    too differently (the server reads in place and stops reading when its
 *    buffer is full; the client parses every decrypted chunk at once) for a
 *    shared read path to be simpler than the two;
 *  - it closes the handle (uv_close on &st->tcp, which completes every
 *    queued write with UV_ECANCELED first) and calls stream_free() from
 *    the close callback.
 *
 * Writes keep their order on the wire whatever their mode. In plaintext
 * stream_write() first tries write(2) (uv_try_write): a request that libuv
 * would complete at once still costs two epoll_ctl calls for the POLLOUT
 * interest it never needed (docs/benchmarks.md). Only what the kernel did
 * not take is queued with uv_write. Under TLS the plaintext is encrypted
 * (copied) at once and the records are queued (tls_conn_write).
 *
 * Errors are negative POSTERN_E* codes (base/postern_err.h).
 */
#ifndef POSTERN_NET_STREAM_H
#define POSTERN_NET_STREAM_H

#include <stdbool.h>

#include <uv.h>

struct tls_conn;

/* Most buffers one stream_write() takes. */
#define STREAM_BUFS_MAX 64
/* Tags a write may carry: 0 .. STREAM_TAGS - 1 (the client tells its
 * command writes from its body writes). */
#define STREAM_TAGS 2

/*
 * A queued write completed: status 0, or a negative POSTERN_E* code
 * (POSTERN_ECANCELED when the handle was closed first). `tag` is the one
 * given to stream_write(). Runs on the loop, never from inside
 * stream_write(); stream_writes_pending() already counts it as done.
 */
typedef void (*stream_write_cb)(void *arg, int status, int tag);

struct stream {
  uv_tcp_t tcp;         /* tcp.data is the owner's */
  struct tls_conn *tls; /* NULL: plaintext; owned (stream_free) */
  stream_write_cb cb;
  void *arg;
  unsigned pending; /* queued writes whose callback has not run */
};

/* Initialises the stream and its TCP handle on `loop`; `cb(arg, ...)`
 * reports every queued write. Returns 0 or a mapped libuv error (none is
 * known for a TCP handle without a socket). */
int stream_init(struct stream *st, uv_loop_t *loop, stream_write_cb cb,
                void *arg);

/*
 * From now on writes go through `t` (made by tls_conn_new() on &st->tcp),
 * which the stream owns from this call on. Plaintext queued before (the
 * 220 to STARTTLS) still goes out first: libuv keeps one write queue per
 * handle.
 */
void stream_set_tls(struct stream *st, struct tls_conn *t);

/* The TLS connection, or NULL in plaintext. */
static inline struct tls_conn *stream_tls(const struct stream *st) {
  return st->tls;
}

/* Writes queued and not yet reported to the callback. */
static inline unsigned stream_writes_pending(const struct stream *st) {
  return st->pending;
}

/* What stream_write() does with bytes it cannot send at once. */
enum stream_mode {
  STREAM_COPY,   /* copied: bufs may be reused when the call returns */
  STREAM_BORROW, /* referenced: they stay valid until the callback runs */
};

/*
 * Writes bufs[0..nbufs) (1 <= nbufs <= STREAM_BUFS_MAX, 0 <= tag <
 * STREAM_TAGS) in order.
 * Returns
 *   1  every byte went to the kernel at once; no callback follows;
 *   0  a write was queued; its callback follows (tagged `tag`). Under TLS
 *      the plaintext was encrypted, so `mode` does not matter;
 *   <0 POSTERN_EINVAL, POSTERN_ENOMEM, POSTERN_ESTATE / POSTERN_ETLS
 *      (TLS not open), or a mapped libuv error; no callback follows.
 */
int stream_write(struct stream *st, const uv_buf_t *bufs, unsigned nbufs,
                 enum stream_mode mode, int tag);

/* Frees what the stream owns (the tls_conn). Call it from the TCP
 * handle's close callback, or when the handle was never initialised with a
 * connection (st zeroed). The struct itself is the owner's memory. */
void stream_free(struct stream *st);

#endif
