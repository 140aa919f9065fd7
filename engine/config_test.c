/*
 * config_test.c - unit tests for the configuration module: the value
 * parsers, good configurations (checked through the printer and the struct),
 * every error with its exact position and message, hostile input (huge
 * lines, NUL bytes, deep nesting, overflow, garbage, random mutations of the
 * example), {env:} substitution, and the printer's round trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/config_internal.h"
#include "base/postern_err.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N(a) (sizeof a / sizeof a[0])

/* ------------------------------------------------------------ helpers */

static char *print_to_string(const struct postern_config *cfg) {
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  assert_non_null(f);
  assert_int_equal(config_print(f, cfg), 0);
  fclose(f);
  return out;
}

/* Prints cfg, parses the output, prints again: both prints must be equal,
 * i.e. the printed text describes the configuration completely. */
static void assert_round_trip(const struct postern_config *cfg) {
  char *first = print_to_string(cfg);
  struct postern_config *again;
  struct config_error err;
  int rc = config_parse(cfg->path, first, strlen(first), &again, &err);
  if (rc != 0) {
    char msg[2048];
    config_error_format(&err, msg, sizeof msg);
    fail_msg("printed config does not parse: %s\n%s", msg, first);
  }
  char *second = print_to_string(again);
  assert_string_equal(first, second);
  free(first);
  free(second);
  config_free(again);
}

static const char *base_listen = "listen 127.0.0.1:2525\n";

/* Parses `text` (with a listen line prepended when `with_listen`). */
static int parse_text(const char *text, size_t len, bool with_listen,
                      struct postern_config **cfg, struct config_error *err) {
  if (!with_listen)
    return config_parse("t.conf", text, len, cfg, err);
  size_t bl = strlen(base_listen);
  char *buf = malloc(bl + len);
  assert_non_null(buf);
  memcpy(buf, base_listen, bl);
  memcpy(buf + bl, text, len);
  int rc = config_parse("t.conf", buf, bl + len, cfg, err);
  free(buf);
  return rc;
}

/* ----------------------------------------------------- value parsers */

struct num_case {
  const char *in;
  int rc;
  uint64_t out;
  const char *canon; /* printed form, when rc == 0 */
};

static void test_duration(void **state) {
  (void)state;
  static const struct num_case cases[] = {
      {"0", 0, 0, "0"},
      {"00", 0, 0, "0"},
      {"0s", 0, 0, "0"},
      {"250ms", 0, 250, "250ms"},
      {"30s", 0, 30000, "30s"},
      {"5m", 0, 300000, "5m"},
      {"2h", 0, 7200000, "2h"},
      {"5d", 0, 432000000, "5d"},
      {"1h30m", 0, 5400000, "1h30m"},
      {"1d2h3m4s5ms", 0, 93784005, "1d2h3m4s5ms"},
      {"90m", 0, 5400000, "1h30m"},
      {"1500ms", 0, 1500, "1s500ms"},
      {"213503982334d", 0, UINT64_C(18446744073657600000), NULL},
      {"", POSTERN_ECONFIG, 0, NULL},
      {"30", POSTERN_ECONFIG, 0, NULL},
      {"1h30", POSTERN_ECONFIG, 0, NULL},
      {"5x", POSTERN_ECONFIG, 0, NULL},
      {"5 m", POSTERN_ECONFIG, 0, NULL},
      {"5M", POSTERN_ECONFIG, 0, NULL},
      {"m", POSTERN_ECONFIG, 0, NULL},
      {"-5s", POSTERN_ECONFIG, 0, NULL},
      {"1.5h", POSTERN_ECONFIG, 0, NULL},
      {"30m1h", POSTERN_ECONFIG, 0, NULL},
      {"1m1m", POSTERN_ECONFIG, 0, NULL},
      {"0ms0", POSTERN_ECONFIG, 0, NULL},
      {"99999999999999999999s", POSTERN_ERANGE, 0, NULL},
      {"18446744073709551615d", POSTERN_ERANGE, 0, NULL},
      {"213503982335d", POSTERN_ERANGE, 0, NULL},
      {"213503982334d15h", POSTERN_ERANGE, 0, NULL},
      {"213503982334d14h", 0, UINT64_C(18446744073708000000), NULL},
  };
  for (size_t i = 0; i < N(cases); i++) {
    uint64_t v = 12345;
    const char *why = NULL;
    int rc = config__duration_parse(cases[i].in, strlen(cases[i].in), &v, &why);
    if (rc != cases[i].rc)
      fail_msg("duration '%s': rc %d, want %d", cases[i].in, rc, cases[i].rc);
    if (rc) {
      assert_non_null(why);
      continue;
    }
    assert_int_equal(v, cases[i].out);
    if (cases[i].canon) {
      char buf[64];
      config__duration_format(v, buf, sizeof buf);
      assert_string_equal(buf, cases[i].canon);
    }
  }
}

static void test_size(void **state) {
  (void)state;
  static const struct num_case cases[] = {
      {"0", 0, 0, "0"},
      {"512", 0, 512, "512"},
      {"1536", 0, 1536, "1536"},
      {"512K", 0, 524288, "512K"},
      {"512k", 0, 524288, "512K"},
      {"32M", 0, 33554432, "32M"},
      {"16G", 0, UINT64_C(17179869184), "16G"},
      {"1T", 0, UINT64_C(1099511627776), "1T"},
      {"1024M", 0, UINT64_C(1073741824), "1G"},
      {"16777215T", 0, UINT64_C(16777215) << 40, "16777215T"},
      {"18446744073709551615", 0, UINT64_MAX, "18446744073709551615"},
      {"16777216T", POSTERN_ERANGE, 0, NULL},
      {"18446744073709551616", POSTERN_ERANGE, 0, NULL},
      {"99999999999999999999999K", POSTERN_ERANGE, 0, NULL},
      {"", POSTERN_ECONFIG, 0, NULL},
      {"K", POSTERN_ECONFIG, 0, NULL},
      {"32MB", POSTERN_ECONFIG, 0, NULL},
      {"32X", POSTERN_ECONFIG, 0, NULL},
      {"1.5M", POSTERN_ECONFIG, 0, NULL},
      {"-1", POSTERN_ECONFIG, 0, NULL},
      {"32@", POSTERN_ECONFIG, 0, NULL},
      {"32\xcb", POSTERN_ECONFIG, 0, NULL},
  };
  for (size_t i = 0; i < N(cases); i++) {
    uint64_t v = 0;
    const char *why = NULL;
    int rc = config__size_parse(cases[i].in, strlen(cases[i].in), &v, &why);
    if (rc != cases[i].rc)
      fail_msg("size '%s': rc %d, want %d", cases[i].in, rc, cases[i].rc);
    if (rc) {
      assert_non_null(why);
      continue;
    }
    assert_int_equal(v, cases[i].out);
    char buf[64];
    config__size_format(v, buf, sizeof buf);
    assert_string_equal(buf, cases[i].canon);
  }
}

static void test_uint_decimal(void **state) {
  (void)state;
  static const struct num_case uints[] = {
      {"0", 0, 0, NULL},
      {"1000", 0, 1000, NULL},
      {"18446744073709551615", 0, UINT64_MAX, NULL},
      {"18446744073709551616", POSTERN_ERANGE, 0, NULL},
      {"", POSTERN_ECONFIG, 0, NULL},
      {"+1", POSTERN_ECONFIG, 0, NULL},
      {"-1", POSTERN_ECONFIG, 0, NULL},
      {"1e3", POSTERN_ECONFIG, 0, NULL},
      {"0x10", POSTERN_ECONFIG, 0, NULL},
  };
  for (size_t i = 0; i < N(uints); i++) {
    uint64_t v = 0;
    const char *why;
    int rc = config__uint_parse(uints[i].in, strlen(uints[i].in), &v, &why);
    if (rc != uints[i].rc)
      fail_msg("uint '%s': rc %d", uints[i].in, rc);
    if (rc == 0)
      assert_int_equal(v, uints[i].out);
  }
  static const struct num_case decs[] = {
      {"2", 0, 2000000, "2"},
      {"1.5", 0, 1500000, "1.5"},
      {"1.50", 0, 1500000, "1.5"},
      {"1.000001", 0, 1000001, "1.000001"},
      {"10.0", 0, 10000000, "10"},
      {"0.25", 0, 250000, "0.25"},
      {"1.0000001", POSTERN_ECONFIG, 0, NULL},
      {"1.", POSTERN_ECONFIG, 0, NULL},
      {".5", POSTERN_ECONFIG, 0, NULL},
      {"1,5", POSTERN_ECONFIG, 0, NULL},
      {"2x", POSTERN_ECONFIG, 0, NULL},
      {"18446744073709551615", POSTERN_ERANGE, 0, NULL},
      {"99999999999999999999999", POSTERN_ERANGE, 0, NULL},
  };
  for (size_t i = 0; i < N(decs); i++) {
    uint64_t v = 0;
    const char *why;
    int rc = config__decimal_parse(decs[i].in, strlen(decs[i].in), &v, &why);
    if (rc != decs[i].rc)
      fail_msg("decimal '%s': rc %d", decs[i].in, rc);
    if (rc)
      continue;
    assert_int_equal(v, decs[i].out);
    char buf[64];
    config__decimal_format(v, buf, sizeof buf);
    assert_string_equal(buf, decs[i].canon);
  }
}

struct addr_case {
  const char *in;
  int default_port;
  int rc;
  const char *canon;
};

static void test_addr(void **state) {
  (void)state;
  static const struct addr_case cases[] = {
      {"127.0.0.1:2525", -1, 0, "127.0.0.1:2525"},
      {"[::1]:2525", -1, 0, "[::1]:2525"},
      {"[0:0::0:1]:25", -1, 0, "[::1]:25"},
      {"[127.0.0.1]:25", -1, 0, "127.0.0.1:25"},
      {"0.0.0.0:0", -1, 0, "0.0.0.0:0"},
      {"127.0.0.1:65535", -1, 0, "127.0.0.1:65535"},
      {"127.0.0.1", 53, 0, "127.0.0.1:53"},
      {"::1", 53, 0, "[::1]:53"},
      {"[::1]", 53, 0, "[::1]:53"},
      {"127.0.0.1", -1, POSTERN_ECONFIG, NULL},
      {"::1", -1, POSTERN_ECONFIG, NULL},
      {"::1:25", -1, POSTERN_ECONFIG, NULL},
      {"[::1]", -1, POSTERN_ECONFIG, NULL},
      {"[::1]25", -1, POSTERN_ECONFIG, NULL},
      {"[::1:25", -1, POSTERN_ECONFIG, NULL},
      {"localhost:25", -1, POSTERN_ECONFIG, NULL},
      {"127.0.0.1:65536", -1, POSTERN_ECONFIG, NULL},
      {"127.0.0.1:999999999999999999999", -1, POSTERN_ECONFIG, NULL},
      {"127.0.0.1:", -1, POSTERN_ECONFIG, NULL},
      {"127.0.0.1:-1", -1, POSTERN_ECONFIG, NULL},
      {"127.1:25", -1, POSTERN_ECONFIG, NULL},
      {"256.0.0.1:25", -1, POSTERN_ECONFIG, NULL},
      {":25", -1, POSTERN_ECONFIG, NULL},
      {"", -1, POSTERN_ECONFIG, NULL},
      {"[fe80::1%eth0]:25", -1, POSTERN_ECONFIG, NULL},
  };
  for (size_t i = 0; i < N(cases); i++) {
    struct sockaddr_storage sa;
    socklen_t salen;
    const char *why = NULL;
    int rc = config__addr_parse(cases[i].in, strlen(cases[i].in),
                                cases[i].default_port, &sa, &salen, &why);
    if (rc != cases[i].rc)
      fail_msg("addr '%s': rc %d", cases[i].in, rc);
    if (rc) {
      assert_non_null(why);
      continue;
    }
    char buf[64];
    config__addr_format(&sa, buf, sizeof buf);
    assert_string_equal(buf, cases[i].canon);
    assert_int_equal(salen, sa.ss_family == AF_INET
                                ? sizeof(struct sockaddr_in)
                                : sizeof(struct sockaddr_in6));
  }
}

struct cidr_case {
  const char *in;
  int rc;
  int family;
  unsigned prefix;
  const char *net; /* inet_ntop of the (masked) address */
};

static void test_cidr(void **state) {
  (void)state;
  static const struct cidr_case cases[] = {
      {"127.0.0.1/32", 0, AF_INET, 32, "127.0.0.1"},
      {"127.0.0.1", 0, AF_INET, 32, "127.0.0.1"},
      {"10.0.0.0/8", 0, AF_INET, 8, "10.0.0.0"},
      {"0.0.0.0/0", 0, AF_INET, 0, "0.0.0.0"},
      {"::1/128", 0, AF_INET6, 128, "::1"},
      {"2001:db8::/32", 0, AF_INET6, 32, "2001:db8::"},
      {"::/0", 0, AF_INET6, 0, "::"},
      {"10.1.2.3/8", POSTERN_ECONFIG, AF_INET, 8, "10.0.0.0"},
      {"2001:db8::1/64", POSTERN_ECONFIG, AF_INET6, 64, "2001:db8::"},
      {"10.0.0.0/33", POSTERN_ECONFIG, 0, 0, NULL},
      {"::/129", POSTERN_ECONFIG, 0, 0, NULL},
      {"10.0.0.0/", POSTERN_ECONFIG, 0, 0, NULL},
      {"10.0.0.0/-1", POSTERN_ECONFIG, 0, 0, NULL},
      {"10.0.0.0/0008", POSTERN_ECONFIG, 0, 0, NULL},
      {"example.com/8", POSTERN_ECONFIG, 0, 0, NULL},
      {"/8", POSTERN_ECONFIG, 0, 0, NULL},
  };
  for (size_t i = 0; i < N(cases); i++) {
    struct config_cidr c;
    const char *why = NULL;
    int rc = config__cidr_parse(cases[i].in, strlen(cases[i].in), &c, &why);
    if (rc != cases[i].rc)
      fail_msg("cidr '%s': rc %d", cases[i].in, rc);
    if (cases[i].net == NULL)
      continue;
    assert_int_equal(c.family, cases[i].family);
    assert_int_equal(c.prefix, cases[i].prefix);
    char buf[64];
    inet_ntop(c.family, c.addr, buf, sizeof buf);
    assert_string_equal(buf, cases[i].net);
  }
}

static void test_hostname_and_distance(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int rc;
  } cases[] = {
      {"mail.example.net", 0},
      {"mail.example.net.", 0},
      {"localhost", 0},
      {"a-b.c1", 0},
      {"xn--bcher-kva.example", 0},
      {"", POSTERN_ECONFIG},
      {".", POSTERN_ECONFIG},
      {"a..b", POSTERN_ECONFIG},
      {"-a.b", POSTERN_ECONFIG},
      {"a-.b", POSTERN_ECONFIG},
      {"a_b.example", POSTERN_ECONFIG},
      {"a b", POSTERN_ECONFIG},
      {"a.b..", POSTERN_ECONFIG},
      {"1234567890123456789012345678901234567890123456789012345678901234.x",
       POSTERN_ECONFIG},
  };
  for (size_t i = 0; i < N(cases); i++) {
    const char *why;
    int rc = config__hostname_check(cases[i].in, strlen(cases[i].in), &why);
    if (rc != cases[i].rc)
      fail_msg("hostname '%s': rc %d", cases[i].in, rc);
  }
  char longname[300];
  memset(longname, 'a', sizeof longname);
  for (int i = 60; i < 300; i += 61)
    longname[i] = '.';
  const char *why;
  assert_int_equal(config__hostname_check(longname, 253, &why), 0);
  assert_int_equal(config__hostname_check(longname, 254, &why),
                   POSTERN_ECONFIG);

  assert_int_equal(config__edit_distance("max_sesions", "max_sessions", 2), 1);
  assert_int_equal(config__edit_distance("hostname", "hostname", 2), 0);
  assert_int_equal(config__edit_distance("abc", "xyz", 2), 3);
  assert_int_equal(config__edit_distance("kitten", "sitting", 5), 3);
}

/* -------------------------------------------------------- good configs */

struct good_case {
  const char *text;
  const char *expect[6]; /* lines (or fragments) the printed config holds */
};

static void test_good_configs(void **state) {
  (void)state;
  static const struct good_case cases[] = {
      {"",
       {"listen 127.0.0.1:2525 {\n", "  accept_from 127.0.0.1/32 ::1/128\n",
        "  max_message_size 32M\n", "policy {\n  local {\n",
        "state_dir /var/lib/postern\n", "  timeout 5m\n"}},
      {"listen [::1]:2526 { accept_from ::1 10.0.0.0/8; max_sessions 5 }\n",
       {"listen [::1]:2526 {\n  accept_from ::1/128 10.0.0.0/8\n",
        "  max_sessions 5\n"}},
      {"listen [0:0::1]:2527\n", {"listen [::1]:2527 {\n"}},
      {"listen 0.0.0.0:0\nlisten 0.0.0.0:0\n", {"listen 0.0.0.0:0 {\n"}},
      {"listen 127.0.0.2:25 {\n tls_cert /etc/c.pem\n tls_key /etc/k.pem\n}\n",
       {"  tls_cert /etc/c.pem\n  tls_key /etc/k.pem\n"}},
      {"queue { retry_factor 1.5; retry_initial 1h30m; retry_max 2h }",
       {"  retry_factor 1.5\n", "  retry_initial 1h30m\n", "  retry_max 2h\n"}},
      {"queue { map_size 1024M; max_age 90000s; delay_warning 4h }",
       {"  map_size 1G\n", "  max_age 1d1h\n", "  delay_warning 4h\n"}},
      {"queue { retry_initial 1500ms; retry_max 1500ms }",
       {"  retry_initial 1s500ms\n  retry_factor 2\n  retry_max 1s500ms\n"}},
      {"queue { map_size 64K; retry_factor 10; max_age 365d }",
       {"  map_size 64K\n", "  retry_factor 10\n", "  max_age 365d\n"}},
      {"delivery {\n"
       "  route example.test 127.0.0.1:2526\n"
       "  route * [relay.example.net]:587\n"
       "  route Other.Test. Relay.Example.NET.:25\n"
       "  route v6.test [::1]:25\n"
       "  route b.test [192.0.2.1]:25\n"
       "}\n",
       {"  route example.test 127.0.0.1:2526\n"
        "  route * [relay.example.net]:587\n"
        "  route other.test relay.example.net:25\n"
        "  route v6.test [::1]:25\n"
        "  route b.test 192.0.2.1:25\n"}},
      {"delivery { workers 3; local_ip 2001:DB8::1; per_domain_rate 50 }",
       {"  workers 3\n", "  local_ip 2001:db8::1\n", "  per_domain_rate 50\n"}},
      {"delivery { idle_timeout 0; shutdown_timeout 0; port 2525 }",
       {"  idle_timeout 0\n", "  shutdown_timeout 0\n", "  port 2525\n"}},
      {"dns { servers 127.0.0.1 [::1]:5353 192.0.2.1:53; trust_ad on }",
       {"  servers 127.0.0.1:53 [::1]:5353 192.0.2.1:53\n",
        "  trust_ad yes\n"}},
      {"dns { trust_ad true; timeout 250ms; attempts 10 }",
       {"  trust_ad yes\n", "  timeout 250ms\n", "  attempts 10\n"}},
      {"tls { min_version 1.3; ca_file \"/etc/my ca.pem\" }",
       {"  min_version 1.3\n", "  ca_file \"/etc/my ca.pem\"\n"}},
      {"policy {\n dane\n mtasts { fetch_timeout 5s; https_port 8443 }\n"
       " local { min_tls_level encrypted; min_mx_level dnssec }\n dnssec\n}",
       {"policy {\n  dane\n  mtasts {\n    fetch_timeout 5s\n"
        "    https_port 8443\n    max_policy_size 64K\n"
        "    cache_size 64M\n    refresh_interval 1d\n  }\n"
        "  local {\n    min_tls_level encrypted\n    min_mx_level dnssec\n"
        "  }\n  dnssec\n}\n"}},
      {"policy { dnssec {} ; dane { } }", {"policy {\n  dnssec\n  dane\n}\n"}},
      {"policy { }", {"policy {\n}\n"}},
      {"policy { dnssec; local { min_mx_level mtasts } }",
       {"policy {\n  dnssec\n  local {\n"}},
      {"policy { mtasts; local { min_mx_level mtasts } }",
       {"policy {\n  mtasts {\n", "    min_mx_level mtasts\n"}},
      {"log { level debug; format json; file \"/var/log/postern log\" }",
       {"  level debug\n", "  format json\n",
        "  file \"/var/log/postern log\"\n"}},
      {"state_dir \"/tmp/a\\\"b\\\\c{x} y\"\n",
       {"state_dir \"/tmp/a\\\"b\\\\c\\x7bx} y\"\n"}},
      {"state_dir \"/srv/caf\xc3\xa9\"\n",
       {"state_dir \"/srv/caf\xc3\xa9\"\n"}},
      {"state_dir \"\\x41\\x7e\"\n", {"state_dir A~\n"}},
      {"state_dir /var/a#b\n", {"state_dir \"/var/a#b\"\n"}},
      {"metrics { listen 127.0.0.1:9025 }",
       {"metrics {\n  listen 127.0.0.1:9025\n}\n"}},
      {"hostname Mail.Example.NET.\nuser postern\n",
       {"hostname Mail.Example.NET\n", "user postern\n"}},
      {"state_dir /x\r\nqueue {\r\n retry_max 2h\r\n}\r\n",
       {"state_dir /x\n", "  retry_max 2h\n"}},
      {"# comment only\n\n  ;;; \nqueue{retry_max 2h}log{level warn};# c",
       {"  retry_max 2h\n", "  level warn\n"}},
      {"queue { retry_max 2h } log { level error }",
       {"  retry_max 2h\n", "  level error\n"}},
      {"\"state_dir\" \"/q\"\n", {"state_dir /q\n"}},
  };
  for (size_t i = 0; i < N(cases); i++) {
    const char *t = cases[i].text;
    bool with_listen = strncmp(t, "listen", 6) != 0;
    struct postern_config *cfg;
    struct config_error err;
    int rc = parse_text(t, strlen(t), with_listen, &cfg, &err);
    if (rc != 0) {
      char msg[2048];
      config_error_format(&err, msg, sizeof msg);
      fail_msg("case %zu: %s", i, msg);
    }
    char *out = print_to_string(cfg);
    for (size_t k = 0; k < N(cases[i].expect) && cases[i].expect[k]; k++)
      if (strstr(out, cases[i].expect[k]) == NULL)
        fail_msg("case %zu: missing\n%s\nin\n%s", i, cases[i].expect[k], out);
    free(out);
    assert_round_trip(cfg);
    config_free(cfg);
  }
}

/* The struct itself: addresses, routes, the chain, defaults. */
static void test_struct_fields(void **state) {
  (void)state;
  const char *t = "hostname relay.example.net\n"
                  "listen 127.0.0.1:2525 { max_message_size 1M }\n"
                  "listen [::1]:2526 { accept_from 10.0.0.0/8 }\n"
                  "delivery {\n"
                  "  route example.test 127.0.0.1:2526\n"
                  "  route * [relay.example.net]:587\n"
                  "  route plain.test mx.example.net:25\n"
                  "}\n"
                  "policy { mtasts; local { min_tls_level authenticated } }\n"
                  "metrics { listen [::1]:9025 }\n";
  struct postern_config *cfg;
  struct config_error err;
  assert_int_equal(config_parse("s.conf", t, strlen(t), &cfg, &err), 0);
  assert_string_equal(cfg->path, "s.conf");
  assert_string_equal(cfg->hostname, "relay.example.net");
  assert_string_equal(cfg->state_dir, "/var/lib/postern");
  assert_null(cfg->user);
  assert_int_equal(cfg->listen_count, 2);
  const struct config_listen *l = &cfg->listens[0];
  assert_int_equal(l->addr.sa.ss_family, AF_INET);
  assert_int_equal(ntohs(((struct sockaddr_in *)&l->addr.sa)->sin_port), 2525);
  assert_int_equal(l->addr.salen, sizeof(struct sockaddr_in));
  assert_int_equal(l->max_message_size, 1048576);
  assert_int_equal(l->max_recipients, 1000);
  assert_int_equal(l->max_sessions, 2000);
  assert_int_equal(l->timeout_ms, 300000);
  assert_null(l->tls_cert);
  assert_int_equal(l->accept_from_count, 2);
  assert_int_equal(l->accept_from[0].family, AF_INET);
  assert_int_equal(l->accept_from[0].prefix, 32);
  assert_memory_equal(l->accept_from[0].addr, "\x7f\0\0\x01", 4);
  assert_string_equal(l->accept_from[1].text, "::1/128");
  assert_int_equal(l->line, 2);
  assert_int_equal(l->col, 1);
  l = &cfg->listens[1];
  assert_int_equal(l->addr.sa.ss_family, AF_INET6);
  assert_int_equal(ntohs(((struct sockaddr_in6 *)&l->addr.sa)->sin6_port),
                   2526);
  assert_int_equal(l->accept_from_count, 1);
  assert_int_equal(l->accept_from[0].prefix, 8);

  const struct config_queue *q = &cfg->queue;
  assert_int_equal(q->map_size, UINT64_C(16) << 30);
  assert_int_equal(q->retry_initial_ms, 300000);
  assert_true(q->retry_factor == 2.0);
  assert_int_equal(q->retry_max_ms, 3600000);
  assert_int_equal(q->max_age_ms, 5 * 86400000ULL);
  assert_int_equal(q->delay_warning_ms, 0);

  const struct config_delivery *d = &cfg->delivery;
  assert_int_equal(d->workers, (uint32_t)sysconf(_SC_NPROCESSORS_ONLN));
  assert_int_equal(d->max_connections, 2000);
  assert_int_equal(d->per_domain_connections, 20);
  assert_int_equal(d->per_domain_rate, 0);
  assert_int_equal(d->reuse_limit, 100);
  assert_int_equal(d->idle_timeout_ms, 30000);
  assert_int_equal(d->connect_timeout_ms, 30000);
  assert_int_equal(d->command_timeout_ms, 300000);
  assert_int_equal(d->data_timeout_ms, 600000);
  assert_int_equal(d->port, 25);
  assert_null(d->local_ip.text);
  assert_int_equal(d->shutdown_timeout_ms, 30000);
  assert_int_equal(d->route_count, 3);
  assert_string_equal(d->routes[0].domain, "example.test");
  assert_string_equal(d->routes[0].host, "127.0.0.1");
  assert_true(d->routes[0].is_ip && d->routes[0].no_mx);
  assert_int_equal(d->routes[0].port, 2526);
  assert_int_equal(ntohs(((struct sockaddr_in *)&d->routes[0].sa)->sin_port),
                   2526);
  assert_string_equal(d->routes[1].domain, "*");
  assert_string_equal(d->routes[1].host, "relay.example.net");
  assert_true(d->routes[1].no_mx && !d->routes[1].is_ip);
  assert_int_equal(d->routes[1].port, 587);
  assert_false(d->routes[2].no_mx);
  assert_int_equal(d->routes[2].line, 7);

  assert_int_equal(cfg->dns.server_count, 0);
  assert_int_equal(cfg->dns.timeout_ms, 5000);
  assert_int_equal(cfg->dns.attempts, 2);
  assert_false(cfg->dns.trust_ad);
  assert_string_equal(cfg->tls.ca_file, "/etc/ssl/certs/ca-certificates.crt");
  assert_int_equal(cfg->tls.min_version, CONFIG_TLS_1_2);

  assert_int_equal(cfg->policy_count, 2);
  assert_int_equal(cfg->policy[0].kind, CONFIG_POLICY_MTASTS);
  assert_int_equal(cfg->policy[0].mtasts.fetch_timeout_ms, 60000);
  assert_int_equal(cfg->policy[0].mtasts.https_port, 443);
  assert_int_equal(cfg->policy[0].mtasts.max_policy_size, 65536);
  assert_int_equal(cfg->policy[0].mtasts.cache_size, 64u << 20);
  assert_int_equal(cfg->policy[0].mtasts.refresh_interval_ms, 86400000);
  assert_int_equal(cfg->policy[1].kind, CONFIG_POLICY_LOCAL);
  assert_int_equal(cfg->policy[1].local.min_tls_level,
                   CONFIG_TLS_LEVEL_AUTHENTICATED);
  assert_int_equal(cfg->policy[1].local.min_mx_level, CONFIG_MX_LEVEL_NONE);

  assert_int_equal(cfg->log.level, CONFIG_LOG_INFO);
  assert_int_equal(cfg->log.format, CONFIG_LOG_LOGFMT);
  assert_string_equal(cfg->log.file, "-");
  assert_true(cfg->metrics.enabled);
  assert_string_equal(cfg->metrics.listen.text, "[::1]:9025");
  config_free(cfg);

  /* No policy block: security on by default, the chain `local, mtasts,
   * dnssec, dane` with their defaults; no metrics. */
  t = "listen 127.0.0.1:25\n";
  assert_int_equal(config_parse("s.conf", t, strlen(t), &cfg, &err), 0);
  assert_int_equal(cfg->policy_count, 4);
  assert_int_equal(cfg->policy[0].kind, CONFIG_POLICY_LOCAL);
  assert_int_equal(cfg->policy[0].local.min_tls_level, CONFIG_TLS_LEVEL_NONE);
  assert_int_equal(cfg->policy[0].local.min_mx_level, CONFIG_MX_LEVEL_NONE);
  assert_int_equal(cfg->policy[1].kind, CONFIG_POLICY_MTASTS);
  assert_int_equal(cfg->policy[1].mtasts.fetch_timeout_ms, 60000);
  assert_int_equal(cfg->policy[1].mtasts.https_port, 443);
  assert_int_equal(cfg->policy[2].kind, CONFIG_POLICY_DNSSEC);
  assert_int_equal(cfg->policy[3].kind, CONFIG_POLICY_DANE);
  assert_false(cfg->metrics.enabled);
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  assert_string_equal(cfg->hostname, host);
  config_free(cfg);

  assert_string_equal(config_policy_kind_name(CONFIG_POLICY_DANE), "dane");
  assert_string_equal(config_tls_level_name(CONFIG_TLS_LEVEL_ENCRYPTED),
                      "encrypted");
  assert_string_equal(config_mx_level_name(CONFIG_MX_LEVEL_MTASTS), "mtasts");
  assert_string_equal(config_log_level_name(CONFIG_LOG_DEBUG), "debug");
  assert_string_equal(config_log_format_name(CONFIG_LOG_JSON), "json");
  assert_string_equal(config_tls_version_name(CONFIG_TLS_1_3), "1.3");
  assert_string_equal(config_tls_version_name((enum config_tls_version)7), "?");
}

/* ------------------------------------------------------------- errors */

struct err_case {
  const char *text;
  bool with_listen; /* prepend a listen line (then errors are on line 2+) */
  int rc;
  unsigned line, col;
  const char *msg;
};

#define E(t, wl, rc, l, c, m)                                                  \
  { t, wl, POSTERN_E##rc, l, c, m }

static const struct err_case err_cases[] = {
    /* names, arity, blocks */
    E("bogus 1\n", 1, CONFIG, 2, 1,
      "unknown directive 'bogus' at the top level"),
    E("hostnam x\n", 1, CONFIG, 2, 1,
      "unknown directive 'hostnam' at the top level; did you mean "
      "'hostname'?"),
    E("listen 127.0.0.1:25 {\n  max_sesions 5\n}\n", 0, CONFIG, 2, 3,
      "unknown directive 'max_sesions' in the listen block; did you mean "
      "'max_sessions'?"),
    E("retry_max 1h\n", 1, CONFIG, 2, 1,
      "'retry_max' is not allowed at the top level; it belongs in the queue "
      "block"),
    E("dns { port 53 }\n", 1, CONFIG, 2, 7,
      "'port' is not allowed in the dns block; it belongs in the delivery "
      "block"),
    E("queue { timeout 5s }\n", 1, CONFIG, 2, 9,
      "'timeout' is not allowed in the queue block; it belongs in the listen "
      "block or in the dns block"),
    E("state_dir /a\nstate_dir /b\n", 1, CONFIG, 3, 1,
      "duplicate 'state_dir' (first at line 2)"),
    E("queue { }\nqueue { }\n", 1, CONFIG, 3, 1,
      "duplicate 'queue' (first at line 2)"),
    E("state_dir\n", 1, CONFIG, 2, 1,
      "missing argument (usage: state_dir PATH)"),
    E("state_dir /a /b\n", 1, CONFIG, 2, 14,
      "too many arguments (usage: state_dir PATH)"),
    E("state_dir /a { }\n", 1, CONFIG, 2, 14,
      "unexpected block (usage: state_dir PATH)"),
    E("queue\n", 1, CONFIG, 2, 1, "missing block (usage: queue { ... })"),
    E("queue 5 { }\n", 1, CONFIG, 2, 7,
      "too many arguments (usage: queue { ... })"),
    E("listen { }\n", 0, CONFIG, 1, 1,
      "missing argument (usage: listen ADDR:PORT [{ ... }])"),
    E("delivery { route a.test }\n", 1, CONFIG, 2, 12,
      "missing argument (usage: route DOMAIN TARGET)"),
    /* values */
    E("queue { retry_max 5x }\n", 1, CONFIG, 2, 19,
      "'retry_max': invalid duration '5x': unknown unit (use ms, s, m, h or "
      "d)"),
    E("queue { retry_max 30 }\n", 1, CONFIG, 2, 19,
      "'retry_max': invalid duration '30': missing unit (use ms, s, m, h or "
      "d)"),
    E("queue { retry_max 30m1h }\n", 1, CONFIG, 2, 19,
      "'retry_max': invalid duration '30m1h': units must go from the largest "
      "to the smallest, each once"),
    E("queue { retry_max 99999999999999999999s }\n", 1, CONFIG, 2, 19,
      "'retry_max': invalid duration '99999999999999999999s': number too "
      "large"),
    E("queue { max_age 18446744073709551615d }\n", 1, CONFIG, 2, 17,
      "'max_age': invalid duration '18446744073709551615d': duration too "
      "large"),
    E("queue { retry_max 31d }\n", 1, CONFIG, 2, 19,
      "'retry_max' must be between 1ms and 30d, got 31d"),
    E("queue { retry_initial 0 }\n", 1, CONFIG, 2, 23,
      "'retry_initial' must be between 1ms and 30d, got 0"),
    E("queue {\n retry_initial 2h\n}\n", 1, CONFIG, 3, 2,
      "retry_initial (2h) is longer than retry_max (1h)"),
    E("queue { map_size 1K }\n", 1, CONFIG, 2, 18,
      "'map_size' must be between 64K and 64T, got 1K"),
    E("listen 127.0.0.1:25 { max_sessions 0 }\n", 0, CONFIG, 1, 36,
      "'max_sessions' must be between 1 and 1000000, got 0"),
    E("listen 127.0.0.1:25 { max_message_size 99999999999T }\n", 0, CONFIG, 1,
      40, "'max_message_size': invalid size '99999999999T': size too large"),
    E("listen 127.0.0.1:25 { max_message_size 2G }\n", 0, CONFIG, 1, 40,
      "'max_message_size' must be between 1K and 1G, got 2G"),
    E("listen 127.0.0.1:25 { max_message_size 32MB }\n", 0, CONFIG, 1, 40,
      "'max_message_size': invalid size '32MB': unknown unit (use K, M, G or "
      "T, or none for bytes)"),
    E("queue { retry_factor 0.5 }\n", 1, CONFIG, 2, 22,
      "'retry_factor' must be between 1 and 10, got 0.5"),
    E("queue { retry_factor 10.000001 }\n", 1, CONFIG, 2, 22,
      "'retry_factor' must be between 1 and 10, got 10.000001"),
    E("queue { retry_factor 1.1234567 }\n", 1, CONFIG, 2, 22,
      "'retry_factor': invalid decimal number '1.1234567': at most 6 "
      "decimals"),
    E("delivery { workers -1 }\n", 1, CONFIG, 2, 20,
      "'workers': invalid number '-1': expected a whole number (digits only)"),
    E("delivery { workers 99999999999999999999999 }\n", 1, CONFIG, 2, 20,
      "'workers': invalid number '99999999999999999999999': number too large"),
    E("delivery { workers 4294967297 }\n", 1, CONFIG, 2, 20,
      "'workers' must be between 0 and 256, got 4294967297"),
    E("delivery { port 0 }\n", 1, CONFIG, 2, 17,
      "'port' must be between 1 and 65535, got 0"),
    E("delivery { local_ip mx.example.net }\n", 1, CONFIG, 2, 21,
      "'local_ip': invalid IP address 'mx.example.net': not an IP address"),
    E("log { level verbose }\n", 1, CONFIG, 2, 13,
      "'level' must be one of error, warn, info, debug; got 'verbose'"),
    E("tls { min_version 1.4 }\n", 1, CONFIG, 2, 19,
      "'min_version' must be one of 1.2, 1.3; got '1.4'"),
    E("policy { local { min_tls_level high } }\n", 1, CONFIG, 2, 32,
      "'min_tls_level' must be one of none, encrypted, authenticated; got "
      "'high'"),
    E("dns { trust_ad maybe }\n", 1, CONFIG, 2, 16,
      "'trust_ad' must be yes or no (or on/off, true/false); got 'maybe'"),
    E("dns { servers 127.0.0.1:0 }\n", 1, CONFIG, 2, 15,
      "'servers': invalid address '127.0.0.1:0': port must be from 1 to "
      "65535"),
    E("dns { servers 127.0.0.1 dns.example }\n", 1, CONFIG, 2, 25,
      "'servers': invalid address 'dns.example': not an IP address (host "
      "names are not allowed here)"),
    E("user -root\n", 1, CONFIG, 2, 6,
      "'user': invalid user name '-root': a user name has 1 to 32 characters "
      "and does not start with '-'"),
    E("hostname -bad.example\n", 1, CONFIG, 2, 10,
      "'hostname': invalid host name '-bad.example': a label must not start "
      "or end with '-'"),
    E("state_dir \"\"\n", 1, CONFIG, 2, 11,
      "'state_dir': invalid path '': empty path"),
    E("state_dir \"/a\\nb\"\n", 1, CONFIG, 2, 11,
      "'state_dir': invalid path '/a\\x0ab': control characters are not "
      "allowed in a path"),
    /* addresses */
    E("listen localhost:25\n", 0, CONFIG, 1, 8,
      "'listen': invalid address 'localhost:25': not an IP address (host "
      "names are not allowed here)"),
    E("listen 127.0.0.1\n", 0, CONFIG, 1, 8,
      "'listen': invalid address '127.0.0.1': missing ':PORT'"),
    E("listen ::1:25\n", 0, CONFIG, 1, 8,
      "'listen': invalid address '::1:25': write an IPv6 address with its "
      "port as [ADDR]:PORT"),
    E("listen 127.0.0.1:65536\n", 0, CONFIG, 1, 8,
      "'listen': invalid address '127.0.0.1:65536': port must be a number "
      "from 0 to 65535"),
    E("listen 127.0.0.1:25\nlisten 127.0.0.1:25\n", 0, CONFIG, 2, 8,
      "duplicate listen address 127.0.0.1:25 (first at line 1)"),
    E("listen 127.0.0.1:25 { accept_from 10.1.2.3/8 }\n", 0, CONFIG, 1, 35,
      "'accept_from': invalid network '10.1.2.3/8': host bits are set (did "
      "you mean 10.0.0.0/8?)"),
    E("listen 127.0.0.1:25 { accept_from ::1/129 }\n", 0, CONFIG, 1, 35,
      "'accept_from': invalid network '::1/129': prefix length must be 0 to "
      "128"),
    E("listen 127.0.0.1:25 { accept_from any }\n", 0, CONFIG, 1, 35,
      "'accept_from': invalid network 'any': not an address or network (like "
      "192.0.2.0/24 or 2001:db8::/32)"),
    E("listen 127.0.0.1:25 {\n tls_cert /c\n}\n", 0, CONFIG, 2, 2,
      "'tls_cert' needs 'tls_key' in the same listen block"),
    E("listen 127.0.0.1:25 {\n tls_key /k\n}\n", 0, CONFIG, 2, 2,
      "'tls_key' needs 'tls_cert' in the same listen block"),
    E("metrics { }\n", 1, CONFIG, 2, 1,
      "'metrics' needs 'listen ADDR:PORT' in its block"),
    E("metrics { listen 127.0.0.1 }\n", 1, CONFIG, 2, 18,
      "'listen': invalid address '127.0.0.1': missing ':PORT'"),
    /* routes */
    E("delivery { route example.test relay }\n", 1, CONFIG, 2, 31,
      "'route': invalid target 'relay': missing ':PORT'"),
    E("delivery { route * ::1:25 }\n", 1, CONFIG, 2, 20,
      "'route': invalid target '::1:25': write an IPv6 address as "
      "[ADDR]:PORT"),
    E("delivery { route * [relay.example]587 }\n", 1, CONFIG, 2, 20,
      "'route': invalid target '[relay.example]587': expected [HOST]:PORT, "
      "HOST:PORT or IP:PORT"),
    E("delivery { route * relay.example:0 }\n", 1, CONFIG, 2, 20,
      "'route': invalid target 'relay.example:0': port must be from 1 to "
      "65535"),
    E("delivery { route * bad_host:25 }\n", 1, CONFIG, 2, 20,
      "'route': invalid target 'bad_host:25': not a host name or IP address"),
    E("delivery { route exa_mple.test 1.2.3.4:25 }\n", 1, CONFIG, 2, 18,
      "'route': invalid domain 'exa_mple.test': a host name has only "
      "letters, digits, '-' and '.'"),
    E("delivery {\nroute a.test 1.2.3.4:25\nroute A.test. [b.test]:25\n}\n", 1,
      CONFIG, 4, 7, "duplicate route for 'A.test.' (first at line 3)"),
    /* policy */
    E("policy { local\n local }\n", 1, CONFIG, 3, 2,
      "duplicate 'local' (first at line 2)"),
    E("policy { dkim }\n", 1, CONFIG, 2, 10,
      "unknown directive 'dkim' in the policy block"),
    E("policy { dnssec { foo 1 } }\n", 1, CONFIG, 2, 19,
      "unknown directive 'foo' in the dnssec block"),
    E("policy { mtasts { fetch_timeout 11m } }\n", 1, CONFIG, 2, 33,
      "'fetch_timeout' must be between 1ms and 10m, got 11m"),
    E("policy { mtasts { cache_size 512K } }\n", 1, CONFIG, 2, 30,
      "'cache_size' must be between 1M and 64G, got 512K"),
    E("policy { mtasts { refresh_interval 500ms } }\n", 1, CONFIG, 2, 36,
      "'refresh_interval' must be between 1s and 30d, got 500ms"),
    /* A minimum MX level no module of the chain can grant. */
    E("policy { local { min_mx_level dnssec } }\n", 1, CONFIG, 2, 31,
      "min_mx_level dnssec needs the dnssec module in the policy chain: no "
      "other module can raise an MX host to that level, so every message "
      "would be deferred"),
    E("policy {\n mtasts\n dane\n local {\n  min_mx_level dnssec\n }\n}\n", 1,
      CONFIG, 6, 16,
      "min_mx_level dnssec needs the dnssec module in the policy chain: no "
      "other module can raise an MX host to that level, so every message "
      "would be deferred"),
    E("policy { dane; local { min_mx_level mtasts } }\n", 1, CONFIG, 2, 37,
      "min_mx_level mtasts needs the mtasts or the dnssec module in the "
      "policy chain: no other module can raise an MX host to that level, so "
      "every message would be deferred"),
    E("policy { min_tls_level encrypted }\n", 1, CONFIG, 2, 10,
      "'min_tls_level' is not allowed in the policy block; it belongs in the "
      "local block"),
    /* the whole file */
    E("", 0, CONFIG, 1, 1,
      "no 'listen' directive: at least one listener is required"),
    E("state_dir /x\n", 0, CONFIG, 2, 1,
      "no 'listen' directive: at least one listener is required"),
    E("state_dir /x", 0, CONFIG, 1, 13,
      "no 'listen' directive: at least one listener is required"),
    /* environment */
    E("state_dir {env:POSTERN_TEST_UNSET}\n", 1, CONFIG, 2, 11,
      "environment variable POSTERN_TEST_UNSET is not set"),
    E("state_dir \"/a/{env:POSTERN_TEST_UNSET}\"\n", 1, CONFIG, 2, 15,
      "environment variable POSTERN_TEST_UNSET is not set"),
    E("state_dir {env:1X}\n", 1, SYNTAX, 2, 11,
      "malformed {env:NAME} (NAME is letters, digits and _, not starting "
      "with a digit)"),
    E("state_dir /a{env:X\n", 1, SYNTAX, 2, 13,
      "malformed {env:NAME} (NAME is letters, digits and _, not starting "
      "with a digit)"),
    E("state_dir {env:}\n", 1, SYNTAX, 2, 11,
      "malformed {env:NAME} (NAME is letters, digits and _, not starting "
      "with a digit)"),
    /* lexical */
    E("hostname \"abc\n", 1, SYNTAX, 2, 10,
      "unterminated string (strings end on the same line)"),
    E("hostname \"abc", 1, SYNTAX, 2, 10,
      "unterminated string (strings end on the same line)"),
    E("hostname \"abc\\", 1, SYNTAX, 2, 10,
      "unterminated string (strings end on the same line)"),
    E("hostname \"abc\\\n\"\n", 1, SYNTAX, 2, 10,
      "unterminated string (strings end on the same line)"),
    E("queue {\n retry_max 1h\n", 1, SYNTAX, 2, 7,
      "block opened here is never closed (missing '}')"),
    E("policy { local {\n", 1, SYNTAX, 2, 16,
      "block opened here is never closed (missing '}')"),
    E("}\n", 1, SYNTAX, 2, 1, "unexpected '}' (no block is open)"),
    E("queue { } }\n", 1, SYNTAX, 2, 11, "unexpected '}' (no block is open)"),
    E("{\n", 1, SYNTAX, 2, 1, "'{' must follow a directive name"),
    E("queue { { } }\n", 1, SYNTAX, 2, 9, "'{' must follow a directive name"),
    E("hostname a\0b\n", 1, SYNTAX, 2, 11, "NUL byte in the file"),
    E("hostname \"a\\qb\"\n", 1, SYNTAX, 2, 12,
      "unknown escape '\\q' (use \\\" \\\\ \\n \\t \\r \\xHH)"),
    E("hostname \"a\\x00b\"\n", 1, SYNTAX, 2, 12,
      "\\x00 is not allowed (no NUL bytes in values)"),
    E("hostname \"a\\xZZ\"\n", 1, SYNTAX, 2, 12,
      "\\x needs two hexadecimal digits"),
    E("hostname \"a\\x4\"\n", 1, SYNTAX, 2, 12,
      "\\x needs two hexadecimal digits"),
    E("state_dir a\"b\"\n", 1, SYNTAX, 2, 12,
      "unexpected '\"' inside a word (quote the whole word)"),
    E("state_dir \"a\"b\n", 1, SYNTAX, 2, 14,
      "unexpected character after a closing quote"),
    E("state_dir \"a\"{env:HOME}\n", 1, SYNTAX, 2, 14,
      "unexpected character after a closing quote"),
    E("state_dir /a\x01z\n", 1, SYNTAX, 2, 13,
      "control character 0x01 outside a quoted string"),
    E("state_dir \"/a\x1b[31m\"\n", 1, SYNTAX, 2, 14,
      "control character 0x1b in a string (write it as \\x1b)"),
    E("state_dir \"/a\x7f\"\n", 1, SYNTAX, 2, 14,
      "control character 0x7f in a string (write it as \\x7f)"),
    E("state_dir /caf\xc3\xa9\n", 1, SYNTAX, 2, 15,
      "non-ASCII byte 0xc3 outside a quoted string"),
    E("state_dir /a\rqueue { }\n", 1, SYNTAX, 2, 13,
      "control character 0x0d outside a quoted string"),
    E("\x7f"
      "ELF\x02\x01\x01",
      0, SYNTAX, 1, 1, "control character 0x7f outside a quoted string"),
    E("\xff\xfe\x00\x00", 0, SYNTAX, 1, 3, "NUL byte in the file"),
    E("\xef\xbb\xbflisten 127.0.0.1:25\n", 0, SYNTAX, 1, 1,
      "non-ASCII byte 0xef outside a quoted string"),
};

static void check_error(const char *text, size_t len, bool with_listen,
                        int want_rc, unsigned line, unsigned col,
                        const char *msg) {
  struct postern_config *cfg = (void *)1;
  struct config_error err;
  int rc = parse_text(text, len, with_listen, &cfg, &err);
  if (want_rc == 0) {
    assert_int_equal(rc, 0);
    config_free(cfg);
    return;
  }
  char got[2048];
  config_error_format(&err, got, sizeof got);
  if (rc != want_rc || err.line != line || err.col != col ||
      strcmp(err.message, msg) != 0)
    fail_msg("input %.60s\n got: %s (%s)\nwant: t.conf:%u:%u: %s (%s)", text,
             got, postern_err_name(rc), line, col, msg,
             postern_err_name(want_rc));
  assert_null(cfg);
  assert_string_equal(err.file, "t.conf");
}

static void test_errors(void **state) {
  (void)state;
  unsetenv("POSTERN_TEST_UNSET");
  for (size_t i = 0; i < N(err_cases); i++) {
    const struct err_case *c = &err_cases[i];
    /* Inputs with NUL bytes: measure up to the last non-NUL plus the known
     * embedded ones, i.e. use the literal's full length. */
    size_t len = strlen(c->text);
    if (strcmp(c->msg, "NUL byte in the file") == 0)
      len = strlen(c->text) + 1 + strlen(c->text + strlen(c->text) + 1);
    check_error(c->text, len, c->with_listen, c->rc, c->line, c->col, c->msg);
  }
}

/* ------------------------------------------------------ hostile input */

static char *repeat(const char *unit, size_t times, const char *suffix) {
  size_t ul = strlen(unit), sl = strlen(suffix);
  char *s = malloc(ul * times + sl + 1);
  assert_non_null(s);
  for (size_t i = 0; i < times; i++)
    memcpy(s + i * ul, unit, ul);
  memcpy(s + ul * times, suffix, sl + 1);
  return s;
}

static void test_hostile(void **state) {
  (void)state;
  /* A line just at the limit is fine; one byte more is an error there. */
  char *s = repeat("#", CONFIG_LINE_MAX, "\nlisten 127.0.0.1:25\n");
  check_error(s, strlen(s), 0, 0, 0, 0, NULL);
  free(s);
  s = repeat("#", CONFIG_LINE_MAX + 1, "\n");
  check_error(s, strlen(s), 1, POSTERN_ETOOBIG, 2, CONFIG_LINE_MAX + 1,
              "line longer than 65536 bytes");
  free(s);
  s = repeat("a", 1000000, "");
  check_error(s, strlen(s), 1, POSTERN_ETOOBIG, 2, CONFIG_LINE_MAX + 1,
              "line longer than 65536 bytes");
  free(s);
  /* Many lines, each under the limit: only the token limit applies. */
  s = repeat("x", CONFIG_TOKEN_MAX + 1, "\n");
  check_error(s, strlen(s), 1, POSTERN_ETOOBIG, 2, 1,
              "word longer than 4096 bytes");
  free(s);
  /* A word at the limit is fine; messages show only its start. */
  s = repeat("a", CONFIG_TOKEN_MAX, " 1\n");
  char *a60 = repeat("a", 60, "");
  char msg[256];
  snprintf(msg, sizeof msg, "unknown directive '%s...' at the top level", a60);
  check_error(s, strlen(s), 1, POSTERN_ECONFIG, 2, 1, msg);
  free(a60);
  free(s);
  /* A word grown past the limit by {env:} substitution. */
  char *big = repeat("v", 3000, "");
  setenv("POSTERN_TEST_BIG", big, 1);
  free(big);
  const char *t = "state_dir /{env:POSTERN_TEST_BIG}{env:POSTERN_TEST_BIG}\n";
  check_error(t, strlen(t), 1, POSTERN_ETOOBIG, 2, 11,
              "word longer than 4096 bytes");
  t = "state_dir \"{env:POSTERN_TEST_BIG}{env:POSTERN_TEST_BIG}\"\n";
  check_error(t, strlen(t), 1, POSTERN_ETOOBIG, 2, 11,
              "word longer than 4096 bytes");
  unsetenv("POSTERN_TEST_BIG");
  /* 10,000 braces, bare and nested behind names. */
  s = repeat("{", 10000, "");
  check_error(s, strlen(s), 0, POSTERN_ESYNTAX, 1, 1,
              "'{' must follow a directive name");
  free(s);
  s = repeat("a{", 10000, "");
  check_error(s, strlen(s), 0, POSTERN_ETOOBIG, 1, 18,
              "blocks nested more than 8 deep");
  free(s);
  s = repeat("}", 10000, "");
  check_error(s, strlen(s), 0, POSTERN_ESYNTAX, 1, 1,
              "unexpected '}' (no block is open)");
  free(s);
  /* Eight levels are syntactically fine (the schema then rejects them). */
  s = repeat("a{", 8, "}}}}}}}}");
  check_error(s, strlen(s), 0, POSTERN_ECONFIG, 1, 1,
              "unknown directive 'a' at the top level");
  free(s);
  /* Arguments: the limit itself is fine, one more is not. */
  s = repeat(" 10.0.0.0/8", CONFIG_ARGS_MAX, " }\n");
  char *t2 = malloc(strlen(s) + 64);
  sprintf(t2, "listen 127.0.0.1:25 { accept_from%s", s);
  check_error(t2, strlen(t2), 0, 0, 0, 0, NULL);
  free(t2);
  free(s);
  s = repeat(" x", CONFIG_ARGS_MAX + 2, "\n"); /* a name and 1025 args */
  check_error(s + 1, strlen(s + 1), 1, POSTERN_ETOOBIG, 2,
              2 * CONFIG_ARGS_MAX + 3, "more than 1024 arguments");
  free(s);
  /* Words in the file, listeners and routes are bounded too. */
  s = repeat("a\n", CONFIG_WORDS_MAX + 1, "");
  check_error(s, strlen(s), 0, POSTERN_ETOOBIG, CONFIG_WORDS_MAX + 1, 1,
              "more than 262144 words in the file");
  free(s);
  s = repeat("listen 0.0.0.0:0\n", CONFIG_LISTEN_MAX, "");
  check_error(s, strlen(s), 0, 0, 0, 0, NULL);
  free(s);
  s = repeat("listen 0.0.0.0:0\n", CONFIG_LISTEN_MAX + 1, "");
  check_error(s, strlen(s), 0, POSTERN_ETOOBIG, CONFIG_LISTEN_MAX + 1, 1,
              "more than 256 listen directives");
  free(s);
  {
    size_t cap = (CONFIG_ROUTE_MAX + 1) * 40 + 64, o = 0;
    char *r = malloc(cap);
    o += (size_t)snprintf(r + o, cap - o, "listen 127.0.0.1:1\ndelivery {\n");
    for (unsigned i = 0; i <= CONFIG_ROUTE_MAX; i++)
      o += (size_t)snprintf(r + o, cap - o, "route d%u.test 127.0.0.1:25\n", i);
    snprintf(r + o, cap - o, "}\n");
    check_error(r, strlen(r), 0, POSTERN_ETOOBIG, CONFIG_ROUTE_MAX + 3, 1,
                "more than 1000 routes");
    /* Exactly the limit is fine: drop the last route. */
    char *last = strstr(r, "route d1000.test");
    memcpy(last, "}\n", 3);
    check_error(r, strlen(r), 0, 0, 0, 0, NULL);
    free(r);
  }
  /* Only NUL bytes. */
  char zeros[64] = {0};
  check_error(zeros, sizeof zeros, 0, POSTERN_ESYNTAX, 1, 1,
              "NUL byte in the file");
  /* A file over the size limit is refused before it is scanned. */
  size_t huge = CONFIG_FILE_MAX + 1;
  char *h = malloc(huge);
  memset(h, '\n', huge);
  struct postern_config *cfg;
  struct config_error err;
  assert_int_equal(config_parse("t.conf", h, huge, &cfg, &err),
                   POSTERN_ETOOBIG);
  assert_int_equal(err.line, 0);
  assert_string_equal(err.message, "file larger than 16777216 bytes");
  free(h);
}

/* xorshift: deterministic pseudo-random input. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Whatever the input, loading ends in a config that round-trips or in an
 * error with a sane position and a message. Run under ASan for teeth. */
static void check_any(const char *buf, size_t len) {
  struct postern_config *cfg;
  struct config_error err;
  int rc = config_parse("f.conf", buf, len, &cfg, &err);
  if (rc == 0) {
    assert_round_trip(cfg);
    config_free(cfg);
    return;
  }
  assert_null(cfg);
  assert_true(rc < 0);
  assert_true(strlen(err.message) > 0);
  assert_true(err.line >= 1 || strstr(err.message, "host name") ||
              strstr(err.message, "larger"));
  if (err.line >= 1) {
    assert_true(err.col >= 1);
    assert_true(err.col <= CONFIG_LINE_MAX + 1);
    /* The position is inside the input (or just past its end). */
    unsigned lines = 1;
    for (size_t i = 0; i < len; i++)
      lines += buf[i] == '\n';
    assert_true(err.line <= lines);
  }
}

static void test_garbage(void **state) {
  (void)state;
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz_0123456789 "
                                 "\t\n\n;;{}{}\"\"\\#:./[]*-\r\x01\x80\xff";
  char buf[512];
  for (int round = 0; round < 3000; round++) {
    size_t len = rnd() % sizeof buf;
    for (size_t i = 0; i < len; i++)
      buf[i] =
          (round & 1) ? (char)rnd() : alphabet[rnd() % (sizeof alphabet - 1)];
    check_any(buf, len);
  }
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    fail_msg("cannot open %s (run from the workspace root)", path);
  char *buf = malloc((1 << 20) + 1);
  *len = fread(buf, 1, 1 << 20, f);
  fclose(f);
  buf[*len] = 0;
  return buf;
}

/* The documented example: loads, round-trips, mentions every directive,
 * and survives thousands of random edits. */
static void test_example(void **state) {
  (void)state;
  size_t len;
  char *ex = read_file("docs/examples/postern.conf", &len);
  check_any(ex, len);
  struct postern_config *cfg;
  struct config_error err;
  assert_int_equal(config_load("docs/examples/postern.conf", &cfg, &err), 0);
  assert_string_equal(cfg->state_dir, "/var/tmp/postern");
  assert_string_equal(cfg->listens[0].addr.text, "127.0.0.1:2525");
  config_free(cfg);
  /* Every directive of every block appears in the example, and in the
   * printer's output for a default configuration. */
  const char *t = "listen 127.0.0.1:25\nmetrics { listen 127.0.0.1:26 }\n"
                  "policy { local; mtasts; dnssec; dane }\n";
  assert_int_equal(config_parse("d.conf", t, strlen(t), &cfg, &err), 0);
  char *printed = print_to_string(cfg);
  for (size_t b = 0; config__blocks[b]; b++) {
    const struct config__block *blk = config__blocks[b];
    for (size_t i = 0; i < blk->ndirs; i++) {
      if (strstr(ex, blk->dirs[i].name) == NULL)
        fail_msg("example does not mention '%s'", blk->dirs[i].name);
      if (strstr(printed, blk->dirs[i].name) == NULL)
        fail_msg("printer does not show '%s'", blk->dirs[i].name);
      assert_non_null(blk->dirs[i].synopsis);
      assert_non_null(blk->dirs[i].type);
    }
  }
  free(printed);
  config_free(cfg);
  /* Random edits: delete, duplicate or replace a byte, a few per round. */
  static const char edits[] = "{}\";#\\\n 0x:[]";
  char *m = malloc(len + 64);
  for (int round = 0; round < 2000; round++) {
    memcpy(m, ex, len);
    size_t n = len;
    for (int e = 0; e < 1 + (int)(rnd() % 4); e++) {
      size_t at = rnd() % n;
      switch (rnd() % 3) {
      case 0:
        memmove(m + at, m + at + 1, n - at - 1);
        n--;
        break;
      case 1:
        memmove(m + at + 1, m + at, n - at);
        n++;
        break;
      default:
        m[at] = edits[rnd() % (sizeof edits - 1)];
      }
    }
    check_any(m, n);
  }
  free(m);
  free(ex);
}

/* ---------------------------------------------------------- env, load */

static void test_env(void **state) {
  (void)state;
  setenv("POSTERN_TEST_DIR", "/srv/x", 1);
  setenv("POSTERN_TEST_SPACE", "a b\"c", 1);
  setenv("POSTERN_TEST_TRICKY", "{env:NOPE}", 1);
  setenv("POSTERN_TEST_EMPTY", "", 1);
  setenv("POSTERN_TEST_PORT", "2599", 1);
  static const struct {
    const char *in;
    const char *state_dir;
  } cases[] = {
      {"state_dir {env:POSTERN_TEST_DIR}/q\n", "/srv/x/q"},
      {"state_dir \"{env:POSTERN_TEST_DIR} and {env:POSTERN_TEST_DIR}\"\n",
       "/srv/x and /srv/x"},
      {"state_dir /{env:POSTERN_TEST_SPACE}\n", "/a b\"c"},
      {"state_dir /a{env:POSTERN_TEST_TRICKY}\n", "/a{env:NOPE}"},
      {"state_dir /a{env:POSTERN_TEST_EMPTY}b\n", "/ab"},
      {"state_dir \"/a\\x7benv:POSTERN_TEST_DIR}\"\n",
       "/a{env:POSTERN_TEST_DIR}"},
  };
  for (size_t i = 0; i < N(cases); i++) {
    struct postern_config *cfg;
    struct config_error err;
    int rc = parse_text(cases[i].in, strlen(cases[i].in), true, &cfg, &err);
    if (rc != 0)
      fail_msg("%s: %s", cases[i].in, err.message);
    assert_string_equal(cfg->state_dir, cases[i].state_dir);
    assert_round_trip(cfg);
    config_free(cfg);
  }
  /* Substitution works in any word, including addresses and numbers. */
  const char *t = "listen 127.0.0.1:{env:POSTERN_TEST_PORT}\n";
  struct postern_config *cfg;
  struct config_error err;
  assert_int_equal(config_parse("t.conf", t, strlen(t), &cfg, &err), 0);
  assert_string_equal(cfg->listens[0].addr.text, "127.0.0.1:2599");
  config_free(cfg);
  /* The value of a substitution is data, never syntax. */
  setenv("POSTERN_TEST_SYNTAX", "/x; hostname evil", 1);
  t = "listen 127.0.0.1:1\nstate_dir {env:POSTERN_TEST_SYNTAX}\n";
  assert_int_equal(config_parse("t.conf", t, strlen(t), &cfg, &err), 0);
  assert_string_equal(cfg->state_dir, "/x; hostname evil");
  assert_round_trip(cfg);
  config_free(cfg);
}

static void test_load_and_format(void **state) {
  (void)state;
  struct postern_config *cfg = (void *)1;
  struct config_error err;
  assert_int_equal(config_load("/nonexistent/postern.conf", &cfg, &err),
                   POSTERN_ENOENT);
  assert_null(cfg);
  char buf[2048];
  config_error_format(&err, buf, sizeof buf);
  assert_string_equal(buf, "/nonexistent/postern.conf: cannot open: No such "
                           "file or directory");
  assert_int_equal(config_load("/", &cfg, &err), POSTERN_EIO);
  config_error_format(&err, buf, sizeof buf);
  assert_string_equal(buf, "/: cannot read: Is a directory");

  char path[] = "/tmp/postern_config_testXXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  const char *t = "# line 1\n\n\n\n\nlisten 127.0.0.1:25 {\n  bogus 1\n}\n";
  assert_int_equal(write(fd, t, strlen(t)), (ssize_t)strlen(t));
  close(fd);
  assert_int_equal(config_load(path, &cfg, &err), POSTERN_ECONFIG);
  config_error_format(&err, buf, sizeof buf);
  char want[2048];
  snprintf(want, sizeof want,
           "%s:7:3: unknown directive 'bogus' in the listen block", path);
  assert_string_equal(buf, want);
  unlink(path);

  /* A tiny buffer is always terminated. */
  char small[8];
  assert_true(config_error_format(&err, small, sizeof small) > sizeof small);
  assert_int_equal(strlen(small), 7);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_duration),
      cmocka_unit_test(test_size),
      cmocka_unit_test(test_uint_decimal),
      cmocka_unit_test(test_addr),
      cmocka_unit_test(test_cidr),
      cmocka_unit_test(test_hostname_and_distance),
      cmocka_unit_test(test_good_configs),
      cmocka_unit_test(test_struct_fields),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_hostile),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_example),
      cmocka_unit_test(test_env),
      cmocka_unit_test(test_load_and_format),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
