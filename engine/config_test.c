/*
 * config_test.c - unit tests for the configuration module: the value
 * parsers, good configurations (checked through the printer and the
 * struct), and loading and formatting. Errors and hostile input are in
 * config_errors_test.c.
 */
#include "engine/config_test_util.h"

#include <arpa/inet.h>
#include <unistd.h>

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
      {"delivery { per_domain_connections local:4; per_domain_rate local:7 }",
       {"  per_domain_connections local:4\n", "  per_domain_rate local:7\n"}},
      {"destination a.test { connections local:3; rate 9 }",
       {"  connections local:3\n", "  rate 9\n"}},
      /* U-labels become A-labels (IDNA2008): lookups, MX names and
       * certificates carry that form. */
      {"destination \".B\xc3\xbc"
       "cher.Example.\" { tls_names \"mx.b\xc3\xbc"
       "cher.example\" }",
       {"destination .xn--bcher-kva.example {\n",
        "  tls_names mx.xn--bcher-kva.example\n"}},
      {"delivery { route \"b\xc3\xbc"
       "cher.example\" \"[relay.m\xc3\xbc"
       ".example]:25\" }",
       {"  route xn--bcher-kva.example [relay.xn--m-eha.example]:25\n"}},
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
        "  }\n  dnssec\n  honour_tls_required_no yes\n}\n"}},
      {"policy { dnssec {} ; dane { } }",
       {"policy {\n  dnssec\n  dane\n  honour_tls_required_no yes\n}\n"}},
      {"policy { dane; honour_tls_required_no no }",
       {"policy {\n  dane\n  honour_tls_required_no no\n}\n"}},
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
  assert_int_equal(d->per_domain_connections.n, 20);
  assert_false(d->per_domain_connections.local);
  assert_int_equal(d->per_domain_rate.n, 0);
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
  assert_false(cfg->cluster.enabled);
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  assert_string_equal(cfg->hostname, host);
  config_free(cfg);

  /* cluster { }: defaults, a percentage share. */
  t = "listen 127.0.0.1:25\n"
      "cluster { redis redis://:pw@10.0.0.5:6380/2; node n-1 }\n";
  assert_int_equal(config_parse("c.conf", t, strlen(t), &cfg, &err), 0);
  assert_true(cfg->cluster.enabled);
  assert_string_equal(cfg->cluster.redis, "redis://:pw@10.0.0.5:6380/2");
  assert_string_equal(cfg->cluster.node, "n-1");
  assert_string_equal(cfg->cluster.key_prefix, "postern:");
  assert_int_equal(cfg->cluster.lease_ttl_ms, 30000);
  assert_true(cfg->cluster.local_share == 0.5);
  /* --check output never shows the password. */
  char *printed = print_to_string(cfg);
  assert_non_null(strstr(printed, "redis redis://:***@10.0.0.5:6380/2\n"));
  assert_null(strstr(printed, "pw@"));
  free(printed);
  config_free(cfg);
  /* A password with a raw '@' is hidden whole (the parser takes the last
   * '@'); rediss:// with its files. */
  t = "listen 127.0.0.1:25\n"
      "cluster { redis rediss://u:se@cr@t@r.example:6380; node n; "
      "redis_ca_file /ca.pem; redis_cert_file /c.pem; redis_key_file /k.pem "
      "}\n";
  assert_int_equal(config_parse("c.conf", t, strlen(t), &cfg, &err), 0);
  assert_string_equal(cfg->cluster.redis_ca_file, "/ca.pem");
  printed = print_to_string(cfg);
  assert_non_null(strstr(printed, "redis rediss://u:***@r.example:6380\n"));
  assert_null(strstr(printed, "cr@"));
  free(printed);
  config_free(cfg);
  t = "listen 127.0.0.1:25\n"
      "cluster { redis unix:///run/r.sock; node a; local_share 25%; "
      "lease_ttl 9s; key_prefix eu1: }\n";
  assert_int_equal(config_parse("c.conf", t, strlen(t), &cfg, &err), 0);
  assert_true(cfg->cluster.local_share == 0.25);
  assert_int_equal(cfg->cluster.lease_ttl_ms, 9000);
  assert_string_equal(cfg->cluster.key_prefix, "eu1:");
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
      cmocka_unit_test(test_load_and_format),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
