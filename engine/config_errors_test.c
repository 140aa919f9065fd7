/*
 * config_errors_test.c - the configuration module against bad input: every
 * error with its exact position and message, hostile input (huge lines,
 * NUL bytes, deep nesting, overflow, garbage, random mutations of the
 * example), and {env:} substitution.
 */
#include "engine/config_test_util.h"

#include <unistd.h>

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
    E("cluster { node n1 }\n", 1, CONFIG, 2, 1,
      "the cluster block needs 'redis' and 'node'"),
    E("cluster { redis http://x; node n1 }\n", 1, CONFIG, 2, 17,
      "'redis': invalid Redis URL 'http://x': expected "
      "redis[s]://[[user]:password@]host[:port][/db] or unix:///path[?db=N]"),
    E("cluster { redis redis://h; node n1; redis_ca_file /x }\n", 1, CONFIG, 2,
      1,
      "'redis_ca_file', 'redis_cert_file' and 'redis_key_file' need a "
      "rediss:// URL"),
    E("cluster { redis rediss://h; node n1; redis_cert_file /x }\n", 1, CONFIG,
      2, 1, "'redis_cert_file' and 'redis_key_file' go together"),
    E("cluster { redis redis://h:0; node n1 }\n", 1, CONFIG, 2, 17,
      "'redis': invalid Redis URL 'redis://h:0': expected "
      "redis[s]://[[user]:password@]host[:port][/db] or unix:///path[?db=N]"),
    E("cluster { redis redis://h; node \"a b\" }\n", 1, CONFIG, 2, 33,
      "'node': invalid name 'a b': 1 to 64 letters, digits, '.', '_', '-' or "
      "':'"),
    E("cluster { redis redis://h; node a; local_share 150% }\n", 1, CONFIG, 2,
      48, "'local_share' must be between 0 and 1, got 1.5"),
    E("cluster { redis redis://h; node a; local_share x% }\n", 1, CONFIG, 2, 48,
      "'local_share': invalid share 'x%': expected a decimal number like 2 or "
      "1.5"),
    E("destination \"\xe2\x98\x83.example\" { }\n", 0, CONFIG, 1, 13,
      "'destination' wants a domain, .domain or *; '\\xe2\\x98\\x83.example': "
      "string contains a disallowed character"),
    E("delivery { route a.test \"[b\xe2\x98\x83.test]:25\" }\n", 1, CONFIG, 2,
      25,
      "'route': invalid target '[b\\xe2\\x98\\x83.test]:25': string contains "
      "a disallowed character"),
    E("delivery { per_domain_connections local:x }\n", 1, CONFIG, 2, 35,
      "'per_domain_connections': invalid limit 'local:x': expected a whole "
      "number, or local: and one"),
    E("delivery { per_domain_connections local:0 }\n", 1, CONFIG, 2, 35,
      "'per_domain_connections' must be between 1 and 100000, got 0"),
    E("destination a.test { rate loc:5 }\n", 0, CONFIG, 1, 27,
      "'rate': invalid limit 'loc:5': expected a whole number, or local: and "
      "one"),
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
    E("policy { honour_tls_required_no no }\n", 1, CONFIG, 2, 1,
      "the policy block names no module: list the chain (local, mtasts, "
      "dnssec, dane) with its settings, or write an empty policy { } to turn "
      "policy off"),
    E("policy { min_tls_level encrypted }\n", 1, CONFIG, 2, 10,
      "'min_tls_level' is not allowed in the policy block; it belongs in the "
      "local block or in the destination block"),
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
      "non-ASCII byte 0xc3 outside a quoted string (quote a word with UTF-8 "
      "in it)"),
    E("state_dir /a\rqueue { }\n", 1, SYNTAX, 2, 13,
      "control character 0x0d outside a quoted string"),
    E("\x7f"
      "ELF\x02\x01\x01",
      0, SYNTAX, 1, 1, "control character 0x7f outside a quoted string"),
    E("\xff\xfe\x00\x00", 0, SYNTAX, 1, 3, "NUL byte in the file"),
    E("\xef\xbb\xbflisten 127.0.0.1:25\n", 0, SYNTAX, 1, 1,
      "non-ASCII byte 0xef outside a quoted string (quote a word with UTF-8 "
      "in it)"),
};

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
                  "tlsrpt { }\n"
                  "cluster { redis redis://127.0.0.1; node n1 }\n"
                  "destination example.com { tls_fingerprint sha256:"
                  "0000000000000000000000000000000000000000000000000000000000"
                  "000000; tls_names mx.example.com }\n"
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_errors),  cmocka_unit_test(test_hostile),
      cmocka_unit_test(test_garbage), cmocka_unit_test(test_example),
      cmocka_unit_test(test_env),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
