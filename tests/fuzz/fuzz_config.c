/*
 * fuzz_config.c - libFuzzer target for config_parse() (engine/config.h).
 *
 * The input is the text of a configuration file. Beyond "no crash, no leak,
 * no undefined behaviour" it checks what config.h promises:
 *  - the result is 0 or one of the documented errors (ESYNTAX, ECONFIG,
 *    ETOOBIG, ENOMEM); on error *out stays NULL and the error has a
 *    non-empty, NUL-terminated message and file name, and
 *    config_error_format() NUL-terminates even into tiny buffers;
 *  - on success the configuration is complete (at least one listener,
 *    workers never 0, counts and arrays agree), and config_print()'s
 *    output parses again and prints byte for byte the same text ("parsing
 *    the output yields the same configuration");
 *  - parsing is deterministic: the same text gives the same answer twice.
 * A few environment variables are set so that {env:NAME} is exercised.
 */
#include "engine/config.h"
#include "base/postern_err.h"
#include "tests/fuzz/fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setenv("FUZZ_ADDR", "127.0.0.1:2525", 1);
  setenv("FUZZ_HOST", "mx.example.net", 1);
  setenv("FUZZ_EVIL", "a\n} listen [::1]:25 {\"\\", 1);
  setenv("FUZZ_EMPTY", "", 1);
  return 0;
}

/* Prints cfg into a new malloc'd buffer. */
static char *print_cfg(const struct postern_config *cfg, size_t *len) {
  char *buf = NULL;
  FILE *f = open_memstream(&buf, len);
  FUZZ_CHECK(f != NULL);
  FUZZ_CHECK(config_print(f, cfg) == 0);
  FUZZ_CHECK(fclose(f) == 0);
  return buf;
}

static void check_error(int rc, const struct config_error *err) {
  FUZZ_CHECK(rc == POSTERN_ESYNTAX || rc == POSTERN_ECONFIG ||
             rc == POSTERN_ETOOBIG || rc == POSTERN_ENOMEM);
  FUZZ_CHECK(memchr(err->message, '\0', sizeof err->message) != NULL);
  FUZZ_CHECK(memchr(err->file, '\0', sizeof err->file) != NULL);
  FUZZ_CHECK(err->message[0] != '\0');
  char small[8], big[2048];
  for (size_t cap = 1; cap <= sizeof small; cap++) {
    memset(small, 'x', sizeof small);
    size_t want = config_error_format(err, small, cap);
    FUZZ_CHECK(memchr(small, '\0', cap) != NULL);
    FUZZ_CHECK(strlen(small) == (want < cap ? want : cap - 1));
  }
  size_t want = config_error_format(err, big, sizeof big);
  FUZZ_CHECK(want < sizeof big && strlen(big) == want);
}

static void check_config(const struct postern_config *cfg) {
  FUZZ_CHECK(cfg->listen_count >= 1 && cfg->listens != NULL);
  FUZZ_CHECK(cfg->delivery.workers != 0);
  FUZZ_CHECK(cfg->hostname != NULL && cfg->state_dir != NULL);
  FUZZ_CHECK(cfg->delivery.route_count == 0 || cfg->delivery.routes != NULL);
  FUZZ_CHECK(cfg->dns.server_count == 0 || cfg->dns.servers != NULL);
  FUZZ_CHECK(cfg->policy_count == 0 || cfg->policy != NULL);
  for (size_t i = 0; i < cfg->listen_count; i++) {
    const struct config_listen *l = &cfg->listens[i];
    FUZZ_CHECK(l->addr.text != NULL);
    FUZZ_CHECK((l->tls_cert == NULL) == (l->tls_key == NULL));
    for (size_t k = 0; k < l->accept_from_count; k++) {
      const struct config_cidr *c = &l->accept_from[k];
      FUZZ_CHECK(c->family == AF_INET ? c->prefix <= 32 : c->prefix <= 128);
    }
  }
  FUZZ_CHECK(cfg->queue.retry_factor >= 1.0 && cfg->queue.retry_factor <= 10.0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct postern_config *cfg = (struct postern_config *)1;
  struct config_error err;
  memset(&err, 0, sizeof err);
  int rc = config_parse("fuzz.conf", (const char *)data, size, &cfg, &err);
  if (rc != 0) {
    FUZZ_CHECK(cfg == NULL);
    check_error(rc, &err);
    /* Deterministic: the same text fails the same way at the same place. */
    struct config_error err2;
    struct postern_config *cfg2 = NULL;
    int rc2 = config_parse("fuzz.conf", (const char *)data, size, &cfg2, &err2);
    FUZZ_CHECK(rc2 == rc && cfg2 == NULL);
    FUZZ_CHECK(err2.line == err.line && err2.col == err.col);
    FUZZ_CHECK(strcmp(err2.message, err.message) == 0);
    return 0;
  }
  FUZZ_CHECK(cfg != NULL);
  check_config(cfg);

  /* Round trip: print, parse the printout, print again: same text. */
  size_t len1 = 0, len2 = 0;
  char *text1 = print_cfg(cfg, &len1);
  struct postern_config *cfg2 = NULL;
  struct config_error err2;
  int rc2 = config_parse("fuzz.conf", text1, len1, &cfg2, &err2);
  if (rc2 != 0) {
    char msg[2048];
    config_error_format(&err2, msg, sizeof msg);
    fprintf(stderr, "config_print output does not parse: %s\n%.*s\n", msg,
            (int)len1, text1);
  }
  FUZZ_CHECK(rc2 == 0);
  check_config(cfg2);
  char *text2 = print_cfg(cfg2, &len2);
  if (len1 != len2 || memcmp(text1, text2, len1) != 0)
    fprintf(stderr, "first printout:\n%.*s\nsecond printout:\n%.*s\n",
            (int)len1, text1, (int)len2, text2);
  FUZZ_CHECK(len1 == len2 && memcmp(text1, text2, len1) == 0);
  free(text1);
  free(text2);
  config_free(cfg2);
  config_free(cfg);
  return 0;
}
