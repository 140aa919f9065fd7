/*
 * tests/https/https_util_test.c - table-driven unit tests for net/https's
 * pure helpers: the Content-Type check, a POST's media type check, the
 * MTA-STS policy URL for a
 * domain, the URL checks every fetch goes through (scheme, credentials, IP
 * literals, port), the CURLOPT_RESOLVE entry, and the mapping of curl's
 * codes to Postern's; and the client's refusals, its fetch limit and a
 * close with many fetches pending. No network.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/https.h"
#include "net/https_internal.h"
#include "base/postern_err.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- https_content_type_is ---- */

static const struct {
  const char *ct;
  bool want;
} ct_cases[] = {
    {"text/plain", true},
    {"text/plain; charset=utf-8", true},
    {"text/plain;charset=utf-8", true},
    {"text/plain ; charset=\"utf-8\"", true},
    {"text/plain\t;x=y", true},
    {"TEXT/PLAIN", true},
    {"Text/Plain; Charset=UTF-8", true},
    {"text/plain ", true},
    {"text/plainx", false},
    {"text/plain-extra", false},
    {"text/plain,text/html", false},
    {"text/html", false},
    {"text/html; x=text/plain", false},
    {"text/", false},
    {"text", false},
    {"", false},
    {" text/plain", false}, /* curl strips leading blanks; we see none */
    {"application/octet-stream", false},
    {NULL, false},
};

static void test_content_type(void **state) {
  for (size_t i = 0; i < N(ct_cases); i++) {
    bool got = https_content_type_is(ct_cases[i].ct, "text/plain");
    if (got != ct_cases[i].want)
      fail_msg("content type \"%s\": got %d, want %d",
               ct_cases[i].ct ? ct_cases[i].ct : "(null)", got,
               ct_cases[i].want);
  }
  assert_false(https_content_type_is("text/plain", NULL));
  assert_false(https_content_type_is("text/plain", ""));
}

/* ---- https__media_type_ok (a POST's Content-Type) ---- */

static const struct {
  const char *ct;
  bool want;
} mt_cases[] = {
    {"application/tlsrpt+gzip", true},
    {"application/tlsrpt+json", true},
    {"text/plain; charset=utf-8", true},
    {"text/plain;charset=\"utf-8\"", true},
    {"text/plain\t;\tx=y", true},
    {"a/b", true},
    {"x-!#$%&'*+-.^_`|~/y", true},
    {"application/json; a=b; c=\"d e\"", true},
    {NULL, false},
    {"", false},
    {"text", false},
    {"text/", false},
    {"/plain", false},
    {"text//plain", false},
    {"text/plain/x", false},
    {"text /plain", false},
    {"text/ plain", false},
    {" text/plain", false},
    {"text/plain ", false}, /* OWS only before a ';' */
    {"text/plain x", false},
    {"te(xt/plain", false},
    {"text/plain\r\nX-Evil: 1", false},
    {"text/plain; a=b\r\nX-Evil: 1", false},
    {"text/plain; a=b\n", false},
    {"text/plain; a=\x01", false},
    {"text/plain; a=\x7f", false},
    {"text/plain; a=\xc3\xa9", false},
};

static void test_media_type(void **state) {
  for (size_t i = 0; i < N(mt_cases); i++) {
    bool got = https__media_type_ok(mt_cases[i].ct);
    if (got != mt_cases[i].want)
      fail_msg("media type \"%s\": got %d, want %d",
               mt_cases[i].ct ? mt_cases[i].ct : "(null)", got,
               mt_cases[i].want);
  }
  /* The length bound: HTTPS_CONTENT_TYPE_MAX bytes pass, one more fails. */
  char ct[HTTPS_CONTENT_TYPE_MAX + 2];
  memset(ct, 'a', sizeof ct);
  ct[1] = '/';
  ct[HTTPS_CONTENT_TYPE_MAX] = '\0';
  assert_true(https__media_type_ok(ct));
  ct[HTTPS_CONTENT_TYPE_MAX] = 'a';
  ct[HTTPS_CONTENT_TYPE_MAX + 1] = '\0';
  assert_false(https__media_type_ok(ct));
}

/* ---- https_mta_sts_url ---- */

static const char LONG_LABEL[] =
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; /* 63 */

static const struct {
  const char *domain;
  int rc; /* 0: success with `url` */
  const char *url;
} url_cases[] = {
    {"example.org", 0, "https://mta-sts.example.org/.well-known/mta-sts.txt"},
    {"Example.ORG.", 0, "https://mta-sts.example.org/.well-known/mta-sts.txt"},
    {"xn--bcher-kva.example", 0,
     "https://mta-sts.xn--bcher-kva.example/.well-known/mta-sts.txt"},
    {"a-b_c.example", 0,
     "https://mta-sts.a-b_c.example/.well-known/mta-sts.txt"},
    {"localdomain", 0, "https://mta-sts.localdomain/.well-known/mta-sts.txt"},
    {"", POSTERN_EINVAL, NULL},
    {".", POSTERN_EINVAL, NULL},
    {"example..org", POSTERN_EINVAL, NULL},
    {".example.org", POSTERN_EINVAL, NULL},
    {"example.org..", POSTERN_EINVAL, NULL},
    {"exa mple.org", POSTERN_EINVAL, NULL},
    {"example.org/evil", POSTERN_EINVAL, NULL},
    {"user@example.org", POSTERN_EINVAL, NULL},
    {"example.org:8443", POSTERN_EINVAL, NULL},
    {"b\xc3\xbc"
     "cher.example",
     POSTERN_EINVAL, NULL},
    {"192.0.2.1", POSTERN_EINVAL, NULL},
    {"example.123", POSTERN_EINVAL, NULL},
    {"[::1]", POSTERN_EINVAL, NULL},
    {NULL, POSTERN_EINVAL, NULL},
};

static void test_mta_sts_url(void **state) {
  char buf[512];
  for (size_t i = 0; i < N(url_cases); i++) {
    int rc = https_mta_sts_url(url_cases[i].domain, buf, sizeof buf);
    if (url_cases[i].rc == 0) {
      if (rc < 0 || strcmp(buf, url_cases[i].url) != 0 ||
          (size_t)rc != strlen(url_cases[i].url))
        fail_msg("domain \"%s\": rc %d url %s", url_cases[i].domain, rc,
                 rc < 0 ? "-" : buf);
    } else if (rc != url_cases[i].rc) {
      fail_msg("domain \"%s\": rc %d, want %d",
               url_cases[i].domain ? url_cases[i].domain : "(null)", rc,
               url_cases[i].rc);
    }
  }
}

static void test_mta_sts_url_bounds(void **state) {
  char dom[300], buf[512];
  /* A 63-octet label is fine, 64 is not. */
  snprintf(dom, sizeof dom, "%s.example", LONG_LABEL);
  assert_true(https_mta_sts_url(dom, buf, sizeof buf) > 0);
  snprintf(dom, sizeof dom, "%sa.example", LONG_LABEL);
  assert_int_equal(https_mta_sts_url(dom, buf, sizeof buf), POSTERN_EINVAL);
  /* With "mta-sts." the name may be at most 253 octets: the domain 245. */
  snprintf(dom, sizeof dom, "%s.%s.%s.%.53s", LONG_LABEL, LONG_LABEL,
           LONG_LABEL, LONG_LABEL);
  assert_int_equal(strlen(dom), 245);
  assert_true(https_mta_sts_url(dom, buf, sizeof buf) > 0);
  strcat(dom, "a");
  assert_int_equal(https_mta_sts_url(dom, buf, sizeof buf), POSTERN_EINVAL);
  /* Output buffer: exactly enough, then one short. */
  int n = https_mta_sts_url("example.org", buf, sizeof buf);
  assert_true(n > 0);
  assert_int_equal(https_mta_sts_url("example.org", buf, (size_t)n + 1), n);
  assert_int_equal(https_mta_sts_url("example.org", buf, (size_t)n),
                   POSTERN_ETOOBIG);
}

/* ---- https__url_prepare ---- */

static const struct {
  const char *in;
  uint16_t port;
  int rc;
  const char *url; /* on success */
  const char *host;
  uint16_t port_out;
} prep_cases[] = {
    {"https://mta-sts.example.org/.well-known/mta-sts.txt", 0, 0,
     "https://mta-sts.example.org/.well-known/mta-sts.txt",
     "mta-sts.example.org", 443},
    {"https://mta-sts.example.org/.well-known/mta-sts.txt", 8443, 0,
     "https://mta-sts.example.org:8443/.well-known/mta-sts.txt",
     "mta-sts.example.org", 8443},
    {"https://mta-sts.example.org:8443/p", 8443, 0,
     "https://mta-sts.example.org:8443/p", "mta-sts.example.org", 8443},
    {"https://mta-sts.example.org:8443/p", 0, 0,
     "https://mta-sts.example.org:8443/p", "mta-sts.example.org", 8443},
    {"HTTPS://MTA-STS.Example.ORG/p", 0, 0, "https://mta-sts.example.org/p",
     "mta-sts.example.org", 443},
    {"https://mta-sts.example.org:8443/p", 443, POSTERN_EINVAL, NULL, NULL, 0},
    {"http://mta-sts.example.org/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"ftp://mta-sts.example.org/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"file:///etc/passwd", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"mta-sts.example.org/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://user@mta-sts.example.org/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://user:pw@mta-sts.example.org/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://127.0.0.1/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://127.1/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://0x7f.0.0.1/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://2130706433/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://[::1]/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://b\xc3\xbc"
     "cher.example/p",
     0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://mta-sts.example.org/a b", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://mta-sts.example.org/\r\nX: y", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://mta-sts.example.org:0/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https://mta-sts.example.org:99999/p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"https:///p", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {"", 0, POSTERN_EINVAL, NULL, NULL, 0},
    {NULL, 0, POSTERN_EINVAL, NULL, NULL, 0},
};

static void test_url_prepare(void **state) {
  for (size_t i = 0; i < N(prep_cases); i++) {
    char url[HTTPS_URL_MAX], host[HTTPS__HOST_MAX];
    uint16_t port = 0;
    int rc = https__url_prepare(prep_cases[i].in, prep_cases[i].port, url, host,
                                &port);
    const char *in = prep_cases[i].in ? prep_cases[i].in : "(null)";
    if (rc != prep_cases[i].rc)
      fail_msg("\"%s\" port %u: rc %d, want %d", in, prep_cases[i].port, rc,
               prep_cases[i].rc);
    if (rc != 0)
      continue;
    if (strcmp(url, prep_cases[i].url) != 0 ||
        strcmp(host, prep_cases[i].host) != 0 || port != prep_cases[i].port_out)
      fail_msg("\"%s\": got %s %s %u", in, url, host, port);
  }
}

static void test_url_prepare_length(void **state) {
  char in[HTTPS_URL_MAX + 16], url[HTTPS_URL_MAX], host[HTTPS__HOST_MAX];
  uint16_t port;
  int n = snprintf(in, sizeof in, "https://mta-sts.example.org/");
  memset(in + n, 'a', sizeof in - (size_t)n - 1);
  in[sizeof in - 1] = '\0';
  assert_int_equal(https__url_prepare(in, 0, url, host, &port), POSTERN_EINVAL);
  in[HTTPS_URL_MAX - 100] = '\0';
  assert_int_equal(https__url_prepare(in, 0, url, host, &port), 0);
}

/* ---- https__resolve_entry ---- */

static struct sockaddr_storage v4(const char *s) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  ss.ss_family = AF_INET;
  inet_pton(AF_INET, s, &((struct sockaddr_in *)&ss)->sin_addr);
  return ss;
}

static struct sockaddr_storage v6(const char *s) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  ss.ss_family = AF_INET6;
  inet_pton(AF_INET6, s, &((struct sockaddr_in6 *)&ss)->sin6_addr);
  return ss;
}

static void test_resolve_entry(void **state) {
  char buf[1024];
  struct sockaddr_storage a[HTTPS_ADDRS_MAX + 1];
  a[0] = v4("192.0.2.1");
  a[1] = v6("2001:db8::1");
  a[2] = v4("127.0.0.1");
  int n =
      https__resolve_entry("mta-sts.example.org", 443, a, 3, buf, sizeof buf);
  assert_int_equal(n, (int)strlen(buf));
  assert_string_equal(buf, "mta-sts.example.org:443:192.0.2.1,[2001:db8::1],"
                           "127.0.0.1");
  assert_int_equal(
      https__resolve_entry("h.example", 443, a, 0, buf, sizeof buf),
      POSTERN_EINVAL);
  assert_int_equal(
      https__resolve_entry("h.example", 443, NULL, 1, buf, sizeof buf),
      POSTERN_EINVAL);
  for (size_t i = 0; i < N(a); i++)
    a[i] = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
  assert_true(https__resolve_entry("h.example", 443, a, HTTPS_ADDRS_MAX, buf,
                                   sizeof buf) > 0);
  assert_int_equal(https__resolve_entry("h.example", 443, a,
                                        HTTPS_ADDRS_MAX + 1, buf, sizeof buf),
                   POSTERN_EINVAL);
  assert_int_equal(https__resolve_entry("h.example", 443, a, 2, buf, 20),
                   POSTERN_ETOOBIG);
  struct sockaddr_storage bad;
  memset(&bad, 0, sizeof bad);
  bad.ss_family = AF_UNIX;
  assert_int_equal(
      https__resolve_entry("h.example", 443, &bad, 1, buf, sizeof buf),
      POSTERN_EINVAL);
}

/* ---- https__err_from_curl ---- */

static const struct {
  CURLcode rc;
  long os_errno;
  int want;
} err_cases[] = {
    {CURLE_OPERATION_TIMEDOUT, 0, POSTERN_ETIMEOUT},
    {CURLE_PEER_FAILED_VERIFICATION, 0, POSTERN_ETLS_VERIFY},
    {CURLE_SSL_CONNECT_ERROR, 0, POSTERN_ETLS},
    {CURLE_SSL_CACERT_BADFILE, 0, POSTERN_ETLS},
    {CURLE_COULDNT_CONNECT, 0, POSTERN_ECONNREFUSED},
    {CURLE_COULDNT_CONNECT, ECONNREFUSED, POSTERN_ECONNREFUSED},
    {CURLE_COULDNT_CONNECT, ENETUNREACH, POSTERN_ENETUNREACH},
    {CURLE_FILESIZE_EXCEEDED, 0, POSTERN_ETOOBIG},
    {CURLE_TOO_MANY_REDIRECTS, 0, POSTERN_EHTTP},
    {CURLE_UNSUPPORTED_PROTOCOL, 0, POSTERN_EPROTO},
    {CURLE_URL_MALFORMAT, 0, POSTERN_EINVAL},
    {CURLE_GOT_NOTHING, 0, POSTERN_ECLOSED},
    {CURLE_WEIRD_SERVER_REPLY, 0, POSTERN_EPROTO},
    {CURLE_PARTIAL_FILE, 0, POSTERN_EPROTO},
    {CURLE_OUT_OF_MEMORY, 0, POSTERN_ENOMEM},
    {CURLE_COULDNT_RESOLVE_HOST, 0, POSTERN_EINTERNAL},
    {CURLE_RECV_ERROR, 0, POSTERN_EIO},
    {CURLE_OK, 0, POSTERN_EINTERNAL},
};

static void test_err_from_curl(void **state) {
  for (size_t i = 0; i < N(err_cases); i++) {
    int got = https__err_from_curl(err_cases[i].rc, err_cases[i].os_errno);
    if (got != err_cases[i].want)
      fail_msg("curl code %d errno %ld: got %s, want %s", err_cases[i].rc,
               err_cases[i].os_errno, postern_err_name(got),
               postern_err_name(err_cases[i].want));
  }
}

/* ---- client contract without network ---- */

static void never_cb(const struct https_result *res, void *arg) {
  fail_msg("callback ran for a fetch that was refused");
}

static void closed_cb(void *arg) {
  (*(int *)arg)++;
}

static void test_fetch_refusals(void **state) {
  uv_loop_t loop;
  struct https_client *c;
  struct sockaddr_storage a = v4("127.0.0.1");
  struct https_fetch *f = (struct https_fetch *)&a;
  assert_int_equal(https_global_init(), 0);
  assert_int_equal(https_global_init(), 0); /* idempotent */
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(https_client_new(&loop, &c), 0);
  struct https_request req = {
      .url = "https://mta-sts.example.org/.well-known/mta-sts.txt",
      .addrs = &a,
      .naddrs = 1,
  };
  /* No address. */
  req.naddrs = 0;
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, &f), POSTERN_EINVAL);
  assert_null(f);
  req.naddrs = 1;
  /* Cap over the limit. */
  req.body_max = HTTPS_BODY_MAX_LIMIT + 1;
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_EINVAL);
  req.body_max = 0;
  /* Not https. */
  req.url = "http://mta-sts.example.org/.well-known/mta-sts.txt";
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_EINVAL);
  /* No callback. */
  req.url = "https://mta-sts.example.org/.well-known/mta-sts.txt";
  assert_int_equal(https_fetch(c, &req, NULL, NULL, NULL), POSTERN_EINVAL);
  /* POST fields that do not go together. */
  static const char body[] = "report";
  req.post_len = 3; /* a length without a body */
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_EINVAL);
  req.post_len = 0;
  req.post_content_type = "application/tlsrpt+json"; /* a type, no body */
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_EINVAL);
  req.post_body = body;
  req.post_len = sizeof body - 1;
  req.post_content_type = NULL; /* a body, no type */
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_EINVAL);
  req.post_content_type = "application/tlsrpt+json\r\nX-Evil: 1";
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_EINVAL);
  req.post_content_type = "application/tlsrpt+json";
  req.require_text_plain = true; /* a GET's check on a POST */
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_EINVAL);
  req.require_text_plain = false;
  req.post_len = HTTPS_BODY_MAX_LIMIT + 1; /* checked before any read */
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_EINVAL);
  req.post_len = sizeof body - 1;
  req.url = "http://mta-sts.example.org/.well-known/mta-sts.txt";
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_EINVAL);
  req.url = "https://mta-sts.example.org/.well-known/mta-sts.txt";
  req.post_body = NULL;
  req.post_len = 0;
  req.post_content_type = NULL;
  int closed = 0;
  https_client_close(c, closed_cb, &closed);
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_ESTATE);
  assert_int_equal(closed, 0); /* never inside the call */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void count_cb(const struct https_result *res, void *arg) {
  int *n = arg;
  if (res->status != POSTERN_ECANCELED)
    fail_msg("pending fetch ended with %s", postern_err_name(res->status));
  (*n)++;
}

/* The client holds at most HTTPS_FETCHES_MAX fetches; closing it cancels
 * them all, asynchronously, before its close callback runs. No connection
 * is made: the loop only runs after the close. */
static void test_fetch_limit_and_close(void **state) {
  uv_loop_t loop;
  struct https_client *c;
  struct sockaddr_storage a = v4("127.0.0.1");
  int canceled = 0, closed = 0;
  assert_int_equal(https_global_init(), 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(https_client_new(&loop, &c), 0);
  struct https_request req = {
      .url = "https://mta-sts.example.org/.well-known/mta-sts.txt",
      .addrs = &a,
      .naddrs = 1,
  };
  for (int i = 0; i < HTTPS_FETCHES_MAX; i++)
    assert_int_equal(https_fetch(c, &req, count_cb, &canceled, NULL), 0);
  assert_int_equal(https_fetch(c, &req, never_cb, NULL, NULL), POSTERN_EBUSY);
  https_client_close(c, closed_cb, &closed);
  assert_int_equal(canceled, 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(canceled, HTTPS_FETCHES_MAX);
  assert_int_equal(closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A callback may start a fetch in the slot its own fetch frees: with the
 * client at HTTPS_FETCHES_MAX, the first callback's new fetch is accepted
 * (the mtasts module hands slots to fetches waiting for one this way). The
 * fetches go to a closed loopback port and fail fast. */
struct refill {
  struct https_client *c;
  struct https_request *req;
  int done, refill_rc, refilled_done;
};

static void refilled_cb(const struct https_result *res, void *arg) {
  struct refill *r = arg;
  r->refilled_done++;
}

static void refill_cb(const struct https_result *res, void *arg) {
  struct refill *r = arg;
  if (res->status == POSTERN_ECANCELED)
    fail_msg("fetch canceled");
  if (r->done++ == 0)
    r->refill_rc = https_fetch(r->c, r->req, refilled_cb, r, NULL);
}

static void test_callback_reuses_its_slot(void **state) {
  uv_loop_t loop;
  struct sockaddr_storage a = v4("127.0.0.1");
  /* A port nobody listens on (bound, then closed). */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sin;
  assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
  close(fd);
  assert_int_equal(https_global_init(), 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  struct https_request req = {
      .url = "https://mta-sts.example.org/.well-known/mta-sts.txt",
      .port = ntohs(sin.sin_port),
      .addrs = &a,
      .naddrs = 1,
      .timeout_ms = 5000,
  };
  struct refill r = {.req = &req, .refill_rc = 1};
  assert_int_equal(https_client_new(&loop, &r.c), 0);
  for (int i = 0; i < HTTPS_FETCHES_MAX; i++)
    assert_int_equal(https_fetch(r.c, &req, refill_cb, &r, NULL), 0);
  assert_int_equal(https_fetch(r.c, &req, never_cb, NULL, NULL), POSTERN_EBUSY);
  /* Every fetch fails fast; the loop ends when nothing is pending. */
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(r.done, HTTPS_FETCHES_MAX);
  assert_int_equal(r.refill_rc, 0);
  assert_int_equal(r.refilled_done, 1);
  int closed = 0;
  https_client_close(r.c, closed_cb, &closed);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(closed, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_content_type),
      cmocka_unit_test(test_media_type),
      cmocka_unit_test(test_mta_sts_url),
      cmocka_unit_test(test_mta_sts_url_bounds),
      cmocka_unit_test(test_url_prepare),
      cmocka_unit_test(test_url_prepare_length),
      cmocka_unit_test(test_resolve_entry),
      cmocka_unit_test(test_err_from_curl),
      cmocka_unit_test(test_fetch_refusals),
      cmocka_unit_test(test_fetch_limit_and_close),
      cmocka_unit_test(test_callback_reuses_its_slot),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
