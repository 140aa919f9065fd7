/*
 * tests/dns/dns_opts_test.c - unit tests for the resolver's option helpers:
 * server addresses as the config writes them, and the defaults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/dns.h"
#include "base/postern_err.h"

#include <arpa/inet.h>
#include <string.h>

struct scase {
  const char *in;
  int rc;
  int family;
  const char *addr;
  unsigned port;
};

static const struct scase scases[] = {
    {"127.0.0.1", 0, AF_INET, "127.0.0.1", 53},
    {"127.0.0.1:5353", 0, AF_INET, "127.0.0.1", 5353},
    {"192.0.2.1:65535", 0, AF_INET, "192.0.2.1", 65535},
    {"::1", 0, AF_INET6, "::1", 53},
    {"[::1]", 0, AF_INET6, "::1", 53},
    {"[::1]:5353", 0, AF_INET6, "::1", 5353},
    {"[2001:db8::53]:53", 0, AF_INET6, "2001:db8::53", 53},
    {"127.0.0.1:0", POSTERN_EINVAL, 0, NULL, 0},
    {"127.0.0.1:65536", POSTERN_EINVAL, 0, NULL, 0},
    {"127.0.0.1:", POSTERN_EINVAL, 0, NULL, 0},
    {"127.0.0.1:53x", POSTERN_EINVAL, 0, NULL, 0},
    {"[127.0.0.1]:53", POSTERN_EINVAL, 0, NULL, 0},
    {"[::1]x", POSTERN_EINVAL, 0, NULL, 0},
    {"[::1", POSTERN_EINVAL, 0, NULL, 0},
    {"localhost", POSTERN_EINVAL, 0, NULL, 0},
    {"ns.example.org:53", POSTERN_EINVAL, 0, NULL, 0},
    {"", POSTERN_EINVAL, 0, NULL, 0},
    {"1.2.3.4.5", POSTERN_EINVAL, 0, NULL, 0},
};

static void test_server_parse(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof scases / sizeof scases[0]; i++) {
    const struct scase *c = &scases[i];
    struct sockaddr_storage ss;
    char buf[INET6_ADDRSTRLEN];
    int rc = dns_server_parse(c->in, &ss);
    if (rc != c->rc)
      fail_msg("%s: rc %d, want %d", c->in, rc, c->rc);
    if (rc != 0)
      continue;
    assert_int_equal(ss.ss_family, c->family);
    if (c->family == AF_INET) {
      struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
      inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
      assert_int_equal(ntohs(sin->sin_port), c->port);
    } else {
      struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
      inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
      assert_int_equal(ntohs(sin6->sin6_port), c->port);
    }
    assert_string_equal(buf, c->addr);
  }
  struct sockaddr_storage ss;
  assert_int_equal(dns_server_parse(NULL, &ss), POSTERN_EINVAL);
}

static void test_defaults(void **state) {
  (void)state;
  struct dns_opts o;
  memset(&o, 0xff, sizeof o);
  dns_opts_init(&o);
  assert_int_equal(o.nservers, 0);
  assert_int_equal(o.timeout_ms, 5000);
  assert_int_equal(o.attempts, 2);
  assert_false(o.trust_ad);
}

/* A resolver that was never used closes cleanly on a loop, and a resolver
 * with too many servers or an unusable address is refused. */
static int closed;
static void on_close(void *arg) {
  closed = *(int *)arg;
}

static void test_new_close(void **state) {
  (void)state;
  uv_loop_t loop;
  struct dns_resolver *r;
  struct dns_opts o;
  uv_loop_init(&loop);
  dns_opts_init(&o);
  assert_int_equal(dns_server_parse("192.0.2.1", &o.servers[0]), 0);
  o.nservers = 1;
  assert_int_equal(dns_resolver_new(&loop, &o, &r), 0);
  assert_false(dns_resolver_trusts_ad(r));
  int token = 7;
  dns_resolver_close(r, on_close, &token);
  assert_int_equal(closed, 0); /* only from the loop */
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 7);
  o.nservers = DNS_MAX_SERVERS + 1;
  assert_int_equal(dns_resolver_new(&loop, &o, &r), POSTERN_EINVAL);
  o.nservers = 1;
  o.servers[0].ss_family = AF_UNIX;
  assert_int_equal(dns_resolver_new(&loop, &o, &r), POSTERN_EINVAL);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_server_parse),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_new_close),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
