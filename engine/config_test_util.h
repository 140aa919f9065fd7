/*
 * config_test_util.h - what engine/config_test.c and config_errors_test.c
 * share: printing a configuration to a string, the printer's round trip,
 * parsing a text with a listen line in front, and checking one error's
 * exact position and message. Test code only (static inline: each test
 * binary takes what it uses).
 */
#ifndef POSTERN_ENGINE_CONFIG_TEST_UTIL_H
#define POSTERN_ENGINE_CONFIG_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/postern_err.h"
#include "engine/config_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) (sizeof a / sizeof a[0])

static inline char *print_to_string(const struct postern_config *cfg) {
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
static inline void assert_round_trip(const struct postern_config *cfg) {
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

static const char *const base_listen = "listen 127.0.0.1:2525\n";

/* Parses `text` (with a listen line prepended when `with_listen`). */
static inline int parse_text(const char *text, size_t len, bool with_listen,
                             struct postern_config **cfg,
                             struct config_error *err) {
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

/* Parses `text` and checks the outcome: success when want_rc is 0, else
 * exactly that code, position and message. */
static inline void check_error(const char *text, size_t len, bool with_listen,
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

#endif
