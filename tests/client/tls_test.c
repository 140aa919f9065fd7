/*
 * tests/client/tls_test.c - cmocka tests of net/tls over real loopback TCP:
 * both roles of our own TLS layer talk to each other on one libuv loop
 * (handshake, data both ways, verification verdicts, the peer chain in DER,
 * session resumption, a garbage ClientHello, context errors).
 *
 * Certificates come from tests/peers/pki.py through the environment, set
 * by tls_test.py: TLS_TEST_CA, TLS_TEST_CERT/KEY (mx.test), and from a
 * second, unrelated CA: TLS_TEST_OTHER_CA and TLS_TEST_OTHER_KEY (a key
 * that does not match TLS_TEST_CERT), and TLS_TEST_CN_ONLY_CERT/KEY (from
 * the first CA, "cnonly.test" in the subject CN only, no subjectAltName).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/x509.h>
#include <uv.h>

#include "net/tls.h"
#include "base/postern_err.h"

struct side {
  uv_tcp_t tcp;
  struct tls_conn *t;
  struct tls_ctx *ctx;
  const char *name; /* client: verification name */
  const char *sni;  /* client: SNI when not the name (tls_conn_set_sni) */
  bool is_client;
  bool raw_garbage; /* client: send plaintext instead of TLS */
  bool forget;      /* client: tls_conn_forget_session after the handshake */
  int hs_status;
  bool hs_done;
  char got[256];
  size_t got_len;
  int closed;
  struct tls_verify verify;
  size_t chain_len;
  bool leaf_parses;
  bool resumed;
  char version[16];
  char error[TLS_ERROR_MAX];
};

static struct {
  uv_loop_t loop;
  uv_tcp_t listener;
  struct side server, client;
  int port;
} h;

static char buf_store[65536];

static void on_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *b) {
  *b = uv_buf_init(buf_store, sizeof buf_store);
}

static void on_closed(uv_handle_t *hd) {
  struct side *s = hd->data;
  s->closed++;
}

static void finish(struct side *s) {
  if (!uv_is_closing((uv_handle_t *)&s->tcp)) {
    uv_close((uv_handle_t *)&s->tcp, on_closed);
  }
}

static void send_text(struct side *s, const char *text) {
  uv_buf_t b = uv_buf_init((char *)text, (unsigned)strlen(text));
  assert_int_equal(tls_conn_write(s->t, &b, 1, NULL, NULL), 0);
}

static void on_hs(struct tls_conn *t, int status, void *arg) {
  struct side *s = arg;
  s->hs_done = true;
  s->hs_status = status;
  snprintf(s->error, sizeof s->error, "%s", tls_conn_error(t));
  if (status < 0) {
    finish(s);
    return;
  }
  snprintf(s->version, sizeof s->version, "%s", tls_conn_version(t));
  if (s->is_client) {
    assert_int_equal(tls_conn_peer_verify(t, &s->verify), 0);
    s->chain_len = tls_conn_peer_chain_len(t);
    const uint8_t *der;
    size_t len;
    if (tls_conn_peer_cert_der(t, 0, &der, &len) == 0) {
      const uint8_t *p = der;
      X509 *x = d2i_X509(NULL, &p, (long)len);
      s->leaf_parses = x != NULL && p == der + len;
      X509_free(x);
    }
    assert_int_equal(tls_conn_peer_cert_der(t, s->chain_len, &der, &len),
                     POSTERN_ERANGE);
    s->resumed = tls_conn_session_reused(t);
    if (s->forget) {
      /* As the engine does when the policy rejects the session: TLS 1.3
       * tickets still to come must not be stored either. */
      tls_conn_forget_session(t);
    }
    send_text(s, "ping\n");
  } else {
    /* Servers have no verdict to give. */
    struct tls_verify v;
    assert_int_equal(tls_conn_peer_verify(t, &v), POSTERN_ESTATE);
  }
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  struct side *s = st->data;
  if (n < 0) {
    finish(s);
    return;
  }
  if (!s->t) {
    return; /* the garbage client ignores whatever comes back */
  }
  if (tls_conn_feed(s->t, b->base, (size_t)n) < 0) {
    return; /* reported to on_hs, which closed */
  }
  char out[128];
  ssize_t r;
  while ((r = tls_conn_read(s->t, out, sizeof out)) > 0) {
    size_t room = sizeof s->got - s->got_len - 1;
    size_t k = (size_t)r < room ? (size_t)r : room;
    memcpy(s->got + s->got_len, out, k);
    s->got_len += k;
    s->got[s->got_len] = '\0';
  }
  if (r == POSTERN_ECLOSED) {
    finish(s);
    return;
  }
  if (!s->is_client && strstr(s->got, "ping\n")) {
    s->got_len = 0;
    strcpy(s->got, "(answered)");
    send_text(s, "pong\n");
  }
  if (s->is_client && strcmp(s->got, "pong\n") == 0) {
    tls_conn_shutdown(s->t);
    finish(s);
  }
}

static void on_connection(uv_stream_t *l, int status) {
  assert_int_equal(status, 0);
  struct side *s = &h.server;
  uv_tcp_init(&h.loop, &s->tcp);
  s->tcp.data = s;
  assert_int_equal(uv_accept(l, (uv_stream_t *)&s->tcp), 0);
  assert_int_equal(
      tls_conn_new(&s->t, s->ctx, (uv_stream_t *)&s->tcp, NULL, NULL), 0);
  assert_int_equal(tls_conn_handshake(s->t, on_hs, s), 0);
  assert_int_equal(tls_conn_handshake(s->t, on_hs, s), POSTERN_ESTATE);
  uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
  uv_close((uv_handle_t *)&h.listener, NULL);
}

static bool next_skip_pkix; /* the next run_pair's client skips PKIX */

static void garbage_written(uv_write_t *req, int status) {
  free(req);
}

static void on_connect(uv_connect_t *req, int status) {
  struct side *s = req->data;
  free(req);
  assert_int_equal(status, 0);
  uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
  if (s->raw_garbage) {
    static char junk[] = "EHLO this is not a TLS ClientHello\r\n";
    uv_write_t *w = malloc(sizeof *w);
    uv_buf_t b = uv_buf_init(junk, sizeof junk - 1);
    uv_write(w, (uv_stream_t *)&s->tcp, &b, 1, garbage_written);
    /* The client never speaks TLS; fake a finished handshake. */
    s->hs_done = true;
    return;
  }
  char key[64];
  /* A fixed port in the key: every run listens on a new port. */
  size_t nl = strlen(s->name);
  if (nl > 0 && s->name[nl - 1] == '.') {
    nl--; /* "mx.test." and "mx.test" share a session */
  }
  snprintf(key, sizeof key, "%.*s:25", (int)nl, s->name);
  assert_int_equal(
      tls_conn_new(&s->t, s->ctx, (uv_stream_t *)&s->tcp, s->name, key), 0);
  if (s->sni) {
    assert_int_equal(tls_conn_set_sni(s->t, s->sni), 0);
  }
  if (next_skip_pkix) {
    next_skip_pkix = false;
    assert_int_equal(tls_conn_skip_pkix(s->t), 0);
  }
  assert_int_equal(tls_conn_handshake(s->t, on_hs, s), 0);
  assert_int_equal(tls_conn_skip_pkix(s->t), POSTERN_ESTATE);
  /* The SNI is fixed once the ClientHello is out. */
  assert_int_equal(tls_conn_set_sni(s->t, "late.test"), POSTERN_ESTATE);
  /* Never synchronous: the server has not even answered yet. */
  assert_false(s->hs_done);
}

static const char *next_sni; /* the SNI of the next run_pair, or NULL */
static bool next_forget;     /* the next run_pair's client forgets */

/* One client/server exchange on a fresh loop. */
static void run_pair(struct tls_ctx *sctx, struct tls_ctx *cctx,
                     const char *name, bool garbage) {
  memset(&h, 0, sizeof h);
  assert_int_equal(uv_loop_init(&h.loop), 0);
  h.server.ctx = sctx;
  h.client.ctx = cctx;
  h.client.name = name;
  h.client.sni = next_sni;
  next_sni = NULL;
  h.client.forget = next_forget;
  next_forget = false;
  h.client.is_client = true;
  h.client.raw_garbage = garbage;
  uv_tcp_init(&h.loop, &h.listener);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  assert_int_equal(uv_tcp_bind(&h.listener, (struct sockaddr *)&a, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&h.listener, 4, on_connection), 0);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&h.listener, (struct sockaddr *)&ss, &len);
  h.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  a.sin_port = htons((uint16_t)h.port);
  uv_tcp_init(&h.loop, &h.client.tcp);
  h.client.tcp.data = &h.client;
  uv_connect_t *req = malloc(sizeof *req);
  req->data = &h.client;
  assert_int_equal(
      uv_tcp_connect(req, &h.client.tcp, (struct sockaddr *)&a, on_connect), 0);
  uv_run(&h.loop, UV_RUN_DEFAULT);
  assert_int_equal(h.client.closed, 1);
  assert_int_equal(h.server.closed, 1);
  tls_conn_free(h.client.t);
  tls_conn_free(h.server.t);
  assert_int_equal(uv_loop_close(&h.loop), 0);
}

static const char *env(const char *name) {
  const char *v = getenv(name);
  if (!v) {
    fail_msg("%s is not set (run through tls_test.py)", name);
  }
  return v;
}

static void test_handshake_verify_resume(void **state) {
  struct tls_ctx *sctx, *cctx;
  char err[256];
  assert_int_equal(tls_ctx_new_server(&sctx, env("TLS_TEST_CERT"),
                                      env("TLS_TEST_KEY"), NULL, err,
                                      sizeof err),
                   0);
  assert_int_equal(
      tls_ctx_new_client(&cctx, env("TLS_TEST_CA"), NULL, err, sizeof err), 0);

  run_pair(sctx, cctx, "mx.test.", false);
  assert_int_equal(h.client.hs_status, 0);
  assert_int_equal(h.server.hs_status, 0);
  assert_true(h.client.verify.has_cert);
  assert_true(h.client.verify.pkix_ok);
  assert_true(h.client.verify.name_ok);
  assert_string_equal(h.client.verify.error, "");
  assert_int_equal(h.client.chain_len, 1);
  assert_true(h.client.leaf_parses);
  assert_false(h.client.resumed);
  assert_string_equal(h.client.got, "pong\n");
  assert_string_equal(h.server.got, "(answered)");
  assert_true(strcmp(h.client.version, "TLSv1.3") == 0 ||
              strcmp(h.client.version, "TLSv1.2") == 0);
  assert_int_equal(tls_ctx_session_count(cctx), 1);

  /* Same session key: the cached session is offered and accepted, and
   * the certificate verdict is still computed. */
  run_pair(sctx, cctx, "mx.test", false);
  assert_int_equal(h.client.hs_status, 0);
  assert_true(h.client.resumed);
  assert_true(h.client.verify.pkix_ok && h.client.verify.name_ok);
  assert_int_equal(h.client.chain_len, 1);

  /* Another name: PKIX holds, the name does not. */
  run_pair(sctx, cctx, "other.test", false);
  assert_int_equal(h.client.hs_status, 0);
  assert_false(h.client.resumed);
  assert_true(h.client.verify.pkix_ok);
  assert_false(h.client.verify.name_ok);
  assert_non_null(strstr(h.client.verify.error, "does not match other.test"));
  assert_string_equal(h.client.got, "pong\n");

  tls_ctx_free(cctx);
  tls_ctx_free(sctx);
}

static void test_sni_apart_from_name(void **state) {
  /* Under DANE the SNI is the TLSA base domain (RFC 7672 §8.1) while the
   * certificate is still checked against the MX host name. */
  struct tls_ctx *sctx, *cctx;
  assert_int_equal(tls_ctx_new_server(&sctx, env("TLS_TEST_CERT"),
                                      env("TLS_TEST_KEY"), NULL, NULL, 0),
                   0);
  assert_int_equal(tls_ctx_new_client(&cctx, env("TLS_TEST_CA"), NULL, NULL, 0),
                   0);
  next_sni = "base.other.test.";
  run_pair(sctx, cctx, "mx.test", false);
  assert_int_equal(h.client.hs_status, 0);
  assert_true(h.client.verify.pkix_ok);
  assert_true(h.client.verify.name_ok);
  next_sni = "mx.test";
  run_pair(sctx, cctx, "other.test", false);
  assert_int_equal(h.client.hs_status, 0);
  assert_false(h.client.verify.name_ok);
  assert_non_null(strstr(h.client.verify.error, "does not match other.test"));
  tls_ctx_free(cctx);
  tls_ctx_free(sctx);
}

static void test_pkix_verdicts(void **state) {
  /* The same chain and name are verified once and then remembered; a new
   * name is verified on its own; under DANE nothing is verified. */
  struct tls_ctx *sctx, *cctx, *other;
  assert_int_equal(tls_ctx_new_server(&sctx, env("TLS_TEST_CERT"),
                                      env("TLS_TEST_KEY"), NULL, NULL, 0),
                   0);
  assert_int_equal(tls_ctx_new_client(&cctx, env("TLS_TEST_CA"), NULL, NULL, 0),
                   0);
  struct tls_pkix_stats st;
  next_forget = true; /* the next handshake is a full one: the chain is
                         presented again */
  run_pair(sctx, cctx, "mx.test", false);
  assert_true(h.client.verify.pkix_ok && h.client.verify.name_ok);
  run_pair(sctx, cctx, "mx.test", false);
  assert_false(h.client.resumed);
  assert_true(h.client.verify.pkix_ok && h.client.verify.name_ok);
  assert_string_equal(h.client.verify.error, "");
  tls_ctx_pkix_stats(cctx, &st);
  assert_int_equal(st.verified, 1);
  assert_int_equal(st.cached, 1);
  /* Another name: its own verdict, also remembered with its error. */
  run_pair(sctx, cctx, "other.test", false);
  run_pair(sctx, cctx, "other.test", false);
  assert_true(h.client.verify.pkix_ok);
  assert_false(h.client.verify.name_ok);
  assert_non_null(strstr(h.client.verify.error, "does not match other.test"));
  tls_ctx_pkix_stats(cctx, &st);
  assert_int_equal(st.verified, 2);
  assert_int_equal(st.cached, 2);
  /* DANE governs: not checked at all, and said so. */
  next_skip_pkix = true;
  run_pair(sctx, cctx, "mx.test", false);
  assert_int_equal(h.client.hs_status, 0);
  assert_true(h.client.verify.has_cert);
  assert_false(h.client.verify.pkix_ok);
  assert_false(h.client.verify.name_ok);
  assert_non_null(strstr(h.client.verify.error, "DANE governs"));
  assert_int_equal(h.client.chain_len, 1); /* the chain is there for DANE */
  tls_ctx_pkix_stats(cctx, &st);
  assert_int_equal(st.skipped, 1);
  assert_int_equal(st.verified, 2);
  /* A context with other roots verifies for itself: verdicts are per
   * context, never shared across trust stores. */
  assert_int_equal(
      tls_ctx_new_client(&other, env("TLS_TEST_OTHER_CA"), NULL, NULL, 0), 0);
  run_pair(sctx, other, "mx.test", false);
  assert_false(h.client.verify.pkix_ok);
  tls_ctx_pkix_stats(other, &st);
  assert_int_equal(st.verified, 1);
  assert_int_equal(st.cached, 0);
  tls_ctx_free(other);
  tls_ctx_free(cctx);
  tls_ctx_free(sctx);
}

static void test_session_key(void **state) {
  /* The cache key holds everything the certificate verdict depends on. */
  static const struct {
    const char *name;
    unsigned port;
    const char *sni, *policy;
    const char *key; /* NULL: error */
  } cases[] = {
      {"mx.test", 25, NULL, NULL, "mx.test|25|mx.test|pkix"},
      {"MX.Test.", 25, "", "", "mx.test|25|mx.test|pkix"},
      {"mx.test", 25, "mx.test", NULL, "mx.test|25|mx.test|pkix"},
      {"mx.test", 2525, NULL, NULL, "mx.test|2525|mx.test|pkix"},
      {"alias.test", 25, "Base.Test.", NULL, "alias.test|25|base.test|pkix"},
      {"mx.test", 25, NULL, "dane:00ff", "mx.test|25|mx.test|dane:00ff"},
      {"mx.test", 25, NULL, "dane:00FF", "mx.test|25|mx.test|dane:00FF"},
      {"", 25, NULL, NULL, NULL},
      {"mx|test", 25, NULL, NULL, NULL},
      {"mx.test", 25, "a b", NULL, NULL},
      {"mx.test", 25, NULL, "dane:\n", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct tls_session_id id = {.name = cases[i].name,
                                .port = (uint16_t)cases[i].port,
                                .sni = cases[i].sni,
                                .policy = cases[i].policy};
    char key[TLS_SESSION_KEY_MAX];
    int rc = tls_session_key(&id, key, sizeof key);
    if (cases[i].key == NULL) {
      assert_int_equal(rc, POSTERN_EINVAL);
    } else {
      assert_int_equal(rc, 0);
      assert_string_equal(key, cases[i].key);
    }
  }
  struct tls_session_id id = {.name = "mx.test", .port = 25};
  char small[8];
  assert_int_equal(tls_session_key(&id, small, sizeof small), POSTERN_ERANGE);
  assert_int_equal(tls_session_key(NULL, small, sizeof small), POSTERN_EINVAL);
}

static void test_session_drop(void **state) {
  struct tls_ctx *sctx, *cctx;
  assert_int_equal(tls_ctx_new_server(&sctx, env("TLS_TEST_CERT"),
                                      env("TLS_TEST_KEY"), NULL, NULL, 0),
                   0);
  assert_int_equal(tls_ctx_new_client(&cctx, env("TLS_TEST_CA"), NULL, NULL, 0),
                   0);
  /* A session is cached and offered again... */
  run_pair(sctx, cctx, "mx.test", false);
  assert_int_equal(tls_ctx_session_count(cctx), 1);
  run_pair(sctx, cctx, "mx.test", false);
  assert_true(h.client.resumed);
  /* ...until it is dropped: the next handshake is a full one. */
  tls_ctx_session_drop(cctx, "other.test:25");
  assert_int_equal(tls_ctx_session_count(cctx), 1);
  tls_ctx_session_drop(cctx, "mx.test:25");
  assert_int_equal(tls_ctx_session_count(cctx), 0);
  run_pair(sctx, cctx, "mx.test", false);
  assert_false(h.client.resumed);
  assert_int_equal(tls_ctx_session_count(cctx), 1);
  /* A connection whose session the policy rejected: resumed from the
   * cache, it forgets; neither the offered session nor any ticket that
   * arrives afterwards is kept, and the next handshake is a full one. */
  next_forget = true;
  run_pair(sctx, cctx, "mx.test", false);
  assert_true(h.client.resumed);
  assert_int_equal(tls_ctx_session_count(cctx), 0);
  run_pair(sctx, cctx, "mx.test", false);
  assert_false(h.client.resumed);
  /* The same for a full handshake that forgets at once. */
  tls_ctx_session_drop(cctx, "mx.test:25");
  next_forget = true;
  run_pair(sctx, cctx, "mx.test", false);
  assert_false(h.client.resumed);
  assert_int_equal(tls_ctx_session_count(cctx), 0);
  tls_ctx_free(cctx);
  tls_ctx_free(sctx);
}

static void test_untrusted_root(void **state) {
  /* A client trusting an unrelated root: encrypted, PKIX fails, the name
   * still matches, and the session is usable. */
  struct tls_ctx *sctx, *cctx;
  assert_int_equal(tls_ctx_new_server(&sctx, env("TLS_TEST_CERT"),
                                      env("TLS_TEST_KEY"), NULL, NULL, 0),
                   0);
  assert_int_equal(
      tls_ctx_new_client(&cctx, env("TLS_TEST_OTHER_CA"), NULL, NULL, 0), 0);
  run_pair(sctx, cctx, "mx.test", false);
  assert_int_equal(h.client.hs_status, 0);
  assert_false(h.client.verify.pkix_ok);
  assert_true(h.client.verify.name_ok);
  assert_true(strlen(h.client.verify.error) > 0);
  assert_string_equal(h.client.got, "pong\n");
  tls_ctx_free(cctx);
  tls_ctx_free(sctx);
}

static void test_cn_only_certificate(void **state) {
  /* RFC 8461 §4.2 and RFC 6125 §6.4.4: the name must be a DNS-ID in
   * subjectAltName. A certificate naming the host only in its subject CN
   * is PKIX-valid but does not match (BoringSSL would fall back to the CN
   * without X509_CHECK_FLAG_NEVER_CHECK_SUBJECT). */
  struct tls_ctx *sctx, *cctx;
  assert_int_equal(tls_ctx_new_server(&sctx, env("TLS_TEST_CN_ONLY_CERT"),
                                      env("TLS_TEST_CN_ONLY_KEY"), NULL, NULL,
                                      0),
                   0);
  assert_int_equal(tls_ctx_new_client(&cctx, env("TLS_TEST_CA"), NULL, NULL, 0),
                   0);
  static const char *const names[] = {"cnonly.test", "CNONLY.test.",
                                      "other.test"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    run_pair(sctx, cctx, names[i], false);
    assert_int_equal(h.client.hs_status, 0);
    assert_true(h.client.verify.has_cert);
    assert_true(h.client.verify.pkix_ok);
    assert_false(h.client.verify.name_ok);
    assert_non_null(strstr(h.client.verify.error, "does not match"));
    assert_string_equal(h.client.got, "pong\n");
  }
  tls_ctx_free(cctx);
  tls_ctx_free(sctx);
}

static void test_garbage_client_hello(void **state) {
  struct tls_ctx *sctx;
  assert_int_equal(tls_ctx_new_server(&sctx, env("TLS_TEST_CERT"),
                                      env("TLS_TEST_KEY"), NULL, NULL, 0),
                   0);
  run_pair(sctx, NULL, "mx.test", true);
  assert_true(h.server.hs_done);
  assert_int_equal(h.server.hs_status, POSTERN_ETLS);
  assert_non_null(strstr(h.server.error, "handshake failed"));
  tls_ctx_free(sctx);
}

static void test_ctx_errors(void **state) {
  struct tls_ctx *ctx = NULL;
  char err[256] = "";
  assert_int_equal(tls_ctx_new_server(&ctx, "/nonexistent.crt",
                                      env("TLS_TEST_KEY"), NULL, err,
                                      sizeof err),
                   POSTERN_ECONFIG);
  assert_non_null(strstr(err, "/nonexistent.crt"));
  assert_int_equal(tls_ctx_new_server(&ctx, env("TLS_TEST_CERT"),
                                      env("TLS_TEST_OTHER_KEY"), NULL, err,
                                      sizeof err),
                   POSTERN_ECONFIG);
  assert_non_null(strstr(err, env("TLS_TEST_OTHER_KEY")));
  assert_int_equal(
      tls_ctx_new_client(&ctx, "/nonexistent-ca.pem", NULL, err, sizeof err),
      POSTERN_ECONFIG);
  struct tls_ctx_opts old = {.min_version = 0x0302};
  assert_int_equal(
      tls_ctx_new_client(&ctx, env("TLS_TEST_CA"), &old, err, sizeof err),
      POSTERN_EINVAL);
  assert_int_equal(tls_ctx_new_server(&ctx, NULL, NULL, NULL, NULL, 0),
                   POSTERN_EINVAL);
  /* Roles are checked: a server connection takes no name. */
  struct tls_ctx *sctx;
  assert_int_equal(tls_ctx_new_server(&sctx, env("TLS_TEST_CERT"),
                                      env("TLS_TEST_KEY"), NULL, NULL, 0),
                   0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_tcp_t tcp;
  uv_tcp_init(&loop, &tcp);
  struct tls_conn *t;
  assert_int_equal(tls_conn_new(&t, sctx, (uv_stream_t *)&tcp, "x", NULL),
                   POSTERN_EINVAL);
  assert_int_equal(tls_conn_new(&t, sctx, (uv_stream_t *)&tcp, NULL, NULL), 0);
  assert_int_equal(tls_conn_set_sni(t, "mx.test"), POSTERN_EINVAL);
  uv_buf_t b = uv_buf_init("x", 1);
  assert_int_equal(tls_conn_write(t, &b, 1, NULL, NULL), POSTERN_ESTATE);
  assert_int_equal(tls_conn_peer_chain_len(t), 0);
  tls_conn_free(t);
  uv_close((uv_handle_t *)&tcp, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  tls_ctx_free(sctx);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* as every libuv program writing to peers */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handshake_verify_resume),
      cmocka_unit_test(test_sni_apart_from_name),
      cmocka_unit_test(test_pkix_verdicts),
      cmocka_unit_test(test_session_key),
      cmocka_unit_test(test_session_drop),
      cmocka_unit_test(test_untrusted_root),
      cmocka_unit_test(test_cn_only_certificate),
      cmocka_unit_test(test_garbage_client_hello),
      cmocka_unit_test(test_ctx_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
