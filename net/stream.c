/*
 * net/stream.c - the write path over plaintext or TLS (see stream.h).
 *
 * Invariants:
 *  - a plaintext write tries uv_try_write() first; whatever the kernel did
 *    not take goes into one uv_write request (struct stream_req), which
 *    owns a copy of those bytes (STREAM_COPY) or points into the caller's
 *    buffers (STREAM_BORROW). uv_try_write() refuses (UV_EAGAIN) while
 *    anything is queued, so bytes never overtake each other;
 *  - `pending` counts the requests (plaintext or TLS) whose completion has
 *    not run; it is decremented before the owner's callback runs;
 *  - the stream never closes its handle and never frees its owner: libuv
 *    completes the queued requests (UV_ECANCELED) before the handle's close
 *    callback, in which the owner calls stream_free().
 */
#include "net/stream.h"

#include "base/postern_err.h"
#include "net/tls.h"

#include <stdlib.h>
#include <string.h>

struct stream_req {
  uv_write_t req;
  struct stream *st;
  int tag;
  char data[]; /* STREAM_COPY: the bytes not yet written */
};

int stream_init(struct stream *st, uv_loop_t *loop, stream_write_cb cb,
                void *arg) {
  st->tls = NULL;
  st->cb = cb;
  st->arg = arg;
  st->pending = 0;
  int rc = uv_tcp_init(loop, &st->tcp);
  return rc < 0 ? postern_err_from_errno(-rc) : 0;
}

void stream_set_tls(struct stream *st, struct tls_conn *t) {
  st->tls = t;
}

void stream_free(struct stream *st) {
  tls_conn_free(st->tls);
  st->tls = NULL;
}

static void plain_done(uv_write_t *req, int status) {
  struct stream_req *w = (struct stream_req *)req;
  struct stream *st = w->st;
  int tag = w->tag;
  free(w);
  st->pending--;
  st->cb(st->arg, status < 0 ? postern_err_from_errno(-status) : 0, tag);
}

/* A TLS write reports through tls_conn_write()'s one callback argument,
 * which is the stream; the tag is told by which of these runs, so a write
 * needs no allocation of its own for it. */
static void tls_done(struct stream *st, int status, int tag) {
  st->pending--;
  st->cb(st->arg, status, tag);
}

static void tls_done_0(struct tls_conn *t, int status, void *arg) {
  tls_done(arg, status, 0);
}

static void tls_done_1(struct tls_conn *t, int status, void *arg) {
  tls_done(arg, status, 1);
}

static const tls_write_cb tls_done_by_tag[STREAM_TAGS] = {tls_done_0,
                                                          tls_done_1};

int stream_write(struct stream *st, const uv_buf_t *bufs, unsigned nbufs,
                 enum stream_mode mode, int tag) {
  if (nbufs == 0 || nbufs > STREAM_BUFS_MAX || tag < 0 || tag >= STREAM_TAGS)
    return POSTERN_EINVAL;
  if (st->tls != NULL) {
    int rc = tls_conn_write(st->tls, bufs, nbufs, tls_done_by_tag[tag], st);
    if (rc < 0)
      return rc;
    st->pending++;
    return 0;
  }
  size_t total = 0;
  for (unsigned i = 0; i < nbufs; i++)
    total += bufs[i].len;
  int n = uv_try_write((uv_stream_t *)&st->tcp, bufs, nbufs);
  if (n < 0 && n != UV_EAGAIN)
    return postern_err_from_errno(-n);
  size_t done = n > 0 ? (size_t)n : 0;
  if (done == total)
    return 1;
  /* What is left: the tail of the buffer where the kernel stopped. */
  uv_buf_t rest[STREAM_BUFS_MAX];
  unsigned nrest = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    if (done >= bufs[i].len) {
      done -= bufs[i].len;
      continue;
    }
    rest[nrest++] =
        uv_buf_init(bufs[i].base + done, (unsigned)(bufs[i].len - done));
    done = 0;
  }
  size_t left = 0;
  for (unsigned i = 0; i < nrest; i++)
    left += rest[i].len;
  bool copy = mode == STREAM_COPY;
  struct stream_req *w = malloc(sizeof *w + (copy ? left : 0));
  if (w == NULL)
    return POSTERN_ENOMEM;
  w->st = st;
  w->tag = tag;
  int rc;
  if (copy) {
    size_t off = 0;
    for (unsigned i = 0; i < nrest; i++) {
      memcpy(w->data + off, rest[i].base, rest[i].len);
      off += rest[i].len;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)left);
    rc = uv_write(&w->req, (uv_stream_t *)&st->tcp, &b, 1, plain_done);
  } else {
    rc = uv_write(&w->req, (uv_stream_t *)&st->tcp, rest, nrest, plain_done);
  }
  if (rc < 0) {
    free(w);
    return postern_err_from_errno(-rc);
  }
  st->pending++;
  return 0;
}
