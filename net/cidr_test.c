/*
 * cidr_test.c - table-driven tests of net/cidr: parsing (good and bad
 * prefixes) and matching IPv4, IPv6 and IPv4-mapped IPv6 client addresses.
 */
#include "net/cidr.h"

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
  bool ok;
  const char *canon; /* cidr_format output when ok */
} parse_cases[] = {
    {"127.0.0.1", true, "127.0.0.1/32"},
    {"127.0.0.0/8", true, "127.0.0.0/8"},
    {"0.0.0.0/0", true, "0.0.0.0/0"},
    {"10.1.0.0/16", true, "10.1.0.0/16"},
    {"192.168.1.128/25", true, "192.168.1.128/25"},
    {"::1", true, "::1/128"},
    {"2001:db8::/32", true, "2001:db8::/32"},
    {"::/0", true, "::/0"},
    {"", false, NULL},
    {"/8", false, NULL},
    {"127.0.0.1/", false, NULL},
    {"127.0.0.1/33", false, NULL},
    {"127.0.0.1/08", false, NULL},
    {"127.0.0.1/-1", false, NULL},
    {"127.0.0.1/8x", false, NULL},
    {"10.1.2.3/8", false, NULL}, /* host bits set */
    {"::1/129", false, NULL},
    {"2001:db8::1/32", false, NULL},
    {"localhost", false, NULL},
    {"256.0.0.1", false, NULL},
    {"1.2.3", false, NULL},
};

static void test_parse(void **state) {
  for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
    struct cidr c;
    char buf[64];
    int r = cidr_parse(parse_cases[i].in, &c);
    if ((r == 0) != parse_cases[i].ok)
      fail_msg("%s: got %d", parse_cases[i].in, r);
    if (r == 0)
      assert_string_equal(cidr_format(&c, buf, sizeof buf),
                          parse_cases[i].canon);
  }
}

static void addr(const char *ip, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *in = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
  } else {
    assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
    in6->sin6_family = AF_INET6;
  }
}

static const struct {
  const char *prefix, *ip;
  bool match;
} match_cases[] = {
    {"127.0.0.1", "127.0.0.1", true},
    {"127.0.0.1", "127.0.0.2", false},
    {"127.0.0.0/8", "127.255.0.1", true},
    {"127.0.0.0/8", "128.0.0.1", false},
    {"192.168.1.128/25", "192.168.1.200", true},
    {"192.168.1.128/25", "192.168.1.127", false},
    {"0.0.0.0/0", "203.0.113.9", true},
    {"0.0.0.0/0", "::1", false},
    {"127.0.0.1", "::ffff:127.0.0.1", true}, /* dual-stack socket */
    {"127.0.0.1", "::ffff:127.0.0.2", false},
    {"::1", "::1", true},
    {"::1", "127.0.0.1", false},
    {"2001:db8::/32", "2001:db8:ffff::1", true},
    {"2001:db8::/33", "2001:db8:8000::1", false},
    {"::/0", "127.0.0.1", false},
};

static void test_match(void **state) {
  for (size_t i = 0; i < sizeof match_cases / sizeof match_cases[0]; i++) {
    struct cidr c;
    struct sockaddr_storage ss;
    assert_int_equal(cidr_parse(match_cases[i].prefix, &c), 0);
    addr(match_cases[i].ip, &ss);
    if (cidr_match(&c, (struct sockaddr *)&ss) != match_cases[i].match)
      fail_msg("%s vs %s", match_cases[i].prefix, match_cases[i].ip);
  }
}

static void test_list(void **state) {
  struct cidr l[2];
  struct sockaddr_storage ss;
  assert_int_equal(cidr_parse("10.0.0.0/8", &l[0]), 0);
  assert_int_equal(cidr_parse("::1", &l[1]), 0);
  addr("::1", &ss);
  assert_true(cidr_list_match(l, 2, (struct sockaddr *)&ss));
  addr("10.9.9.9", &ss);
  assert_true(cidr_list_match(l, 2, (struct sockaddr *)&ss));
  addr("11.0.0.1", &ss);
  assert_false(cidr_list_match(l, 2, (struct sockaddr *)&ss));
  assert_false(cidr_list_match(l, 0, (struct sockaddr *)&ss));
  ss.ss_family = AF_UNIX;
  assert_false(cidr_list_match(l, 2, (struct sockaddr *)&ss));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_match),
      cmocka_unit_test(test_list),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
