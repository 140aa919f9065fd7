/*
 * smtp_server_addr_test.c - table test of smtp_server_addr_parse(), the
 * parser of `listen ADDR:PORT`.
 */
#include "net/smtp_server.h"
#include "base/postern_err.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static const struct {
  const char *in;
  int family; /* 0: must be refused */
  unsigned port;
} cases[] = {
    {"127.0.0.1:2525", AF_INET, 2525},
    {"0.0.0.0:25", AF_INET, 25},
    {"127.0.0.1:0", AF_INET, 0},
    {"[::1]:2525", AF_INET6, 2525},
    {"[::]:25", AF_INET6, 25},
    {"[2001:db8::1]:65535", AF_INET6, 65535},
    {"127.0.0.1", 0, 0},
    {"127.0.0.1:", 0, 0},
    {"127.0.0.1:65536", 0, 0},
    {"127.0.0.1:123456", 0, 0},
    {"127.0.0.1:-1", 0, 0},
    {"127.0.0.1:25x", 0, 0},
    {"::1:25", 0, 0},
    {"[::1]", 0, 0},
    {"[::1]25", 0, 0},
    {"[127.0.0.1]:25", 0, 0},
    {"localhost:25", 0, 0},
    {":25", 0, 0},
    {"", 0, 0},
};

static void test_addr_table(void **state) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct sockaddr_storage ss;
    int r = smtp_server_addr_parse(cases[i].in, &ss);
    if (cases[i].family == 0) {
      if (r != POSTERN_ESYNTAX)
        fail_msg("%s: accepted", cases[i].in);
      continue;
    }
    if (r != 0 || ss.ss_family != cases[i].family)
      fail_msg("%s: r=%d family=%d", cases[i].in, r, ss.ss_family);
    unsigned port = ntohs(ss.ss_family == AF_INET
                              ? ((struct sockaddr_in *)&ss)->sin_port
                              : ((struct sockaddr_in6 *)&ss)->sin6_port);
    assert_int_equal(port, cases[i].port);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_addr_table)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
