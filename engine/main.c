/*
 * main.c - the `postern` command: argument handling, configuration loading,
 * `--check`, `--hash-password` (a users file line's hash for SMTP AUTH),
 * and running the relay in the foreground (engine/relay.c).
 *
 * Exit status: 0 success, 1 configuration error (printed as
 * `file:line:col: message`) or failure to run, 2 usage error.
 */
#include "engine/config.h"
#include "engine/relay.h"
#include "base/postern_err.h"
#include "net/smtp_auth.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#ifndef POSTERN_VERSION
#define POSTERN_VERSION "0.1.0"
#endif

static void usage(FILE *f) {
  fprintf(f,
          "usage: postern [-c FILE] [--check]\n"
          "       postern --hash-password [--hash-method METHOD]\n"
          "       postern --version | --help | --directives\n"
          "\n"
          "Postern is an outbound mail relay: it accepts mail over SMTP from\n"
          "trusted clients, queues it durably and delivers it with the\n"
          "strongest transport security the destination supports.\n"
          "\n"
          "  -c, --config FILE  configuration file (default %s)\n"
          "  -n, --check        validate the configuration, print it with\n"
          "                     defaults filled in, and exit\n"
          "  -V, --version      print the version and exit\n"
          "  -h, --help         print this help and exit\n"
          "      --directives   list every configuration directive with its\n"
          "                     arguments, default, range and purpose\n"
          "      --hash-password  read a password from standard input (not\n"
          "                     echoed on a terminal) and print its hash for\n"
          "                     a users file line name:HASH\n"
          "      --hash-method METHOD  yescrypt (default), bcrypt or\n"
          "                     sha512-crypt\n"
          "\n"
          "Exit status: 0 success, 1 configuration or runtime error, 2 usage "
          "error.\n"
          "See postern.conf(5) for the configuration file.\n",
          CONFIG_DEFAULT_PATH);
}

/* Reads one line from stdin into buf without its line end; on a terminal
 * with echo off. Returns its length or -1. */
static int read_secret(const char *prompt, char *buf, size_t cap) {
  struct termios old, quiet;
  bool tty = isatty(0) && tcgetattr(0, &old) == 0;
  if (tty) {
    fprintf(stderr, "%s", prompt);
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(0, TCSAFLUSH, &quiet);
  }
  char *r = fgets(buf, (int)cap, stdin);
  if (tty) {
    tcsetattr(0, TCSAFLUSH, &old);
    fputc('\n', stderr);
  }
  if (r == NULL)
    return -1;
  size_t n = strlen(buf);
  if (n > 0 && buf[n - 1] == '\n')
    buf[--n] = '\0';
  else if (n + 1 == cap)
    return -1; /* longer than a password may be */
  if (n > 0 && buf[n - 1] == '\r')
    buf[--n] = '\0';
  return (int)n;
}

/* postern --hash-password: libxcrypt's crypt_gensalt_rn and crypt_rn
 * (net/smtp_auth.h), so an operator needs no other tool. */
static int hash_password(const char *method) {
  const char *prefix = smtp_auth_method_prefix(method);
  if (prefix == NULL) {
    fprintf(stderr, "postern: --hash-method must be yescrypt, bcrypt or "
                    "sha512-crypt\n");
    return 2;
  }
  char pw[SMTP_AUTH_PASS_MAX + 2], again[SMTP_AUTH_PASS_MAX + 2];
  int n = read_secret("Password: ", pw, sizeof pw);
  if (n <= 0) {
    fprintf(stderr, "postern: no password read (1 to %d bytes, one line)\n",
            SMTP_AUTH_PASS_MAX);
    return 1;
  }
  if (isatty(0)) {
    int k = read_secret("Again: ", again, sizeof again);
    bool same = k == n && memcmp(pw, again, (size_t)n) == 0;
    smtp_auth_wipe(again, sizeof again);
    if (!same) {
      smtp_auth_wipe(pw, sizeof pw);
      fprintf(stderr, "postern: the passwords differ\n");
      return 1;
    }
  }
  char out[512];
  int rc = smtp_auth_hash_password(pw, prefix, out, sizeof out);
  smtp_auth_wipe(pw, sizeof pw);
  if (rc != 0) {
    fprintf(stderr, "postern: hashing failed: %s\n", postern_strerror(rc));
    return 1;
  }
  printf("%s\n", out);
  return 0;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"check", no_argument, NULL, 'n'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {"directives", no_argument, NULL, 'D'},
      {"hash-password", no_argument, NULL, 'P'},
      {"hash-method", required_argument, NULL, 'M'},
      {NULL, 0, NULL, 0},
  };
  const char *path = CONFIG_DEFAULT_PATH;
  int check = 0, hash = 0;
  const char *method = "yescrypt";
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":c:nVh", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      path = optarg;
      break;
    case 'n':
      check = 1;
      break;
    case 'V':
      printf("postern %s\n", POSTERN_VERSION);
      return 0;
    case 'h':
      usage(stdout);
      return 0;
    case 'D':
      return config_schema_print(stdout) == 0 ? 0 : 1;
    case 'P':
      hash = 1;
      break;
    case 'M':
      method = optarg;
      break;
    case ':':
      fprintf(stderr, "postern: option %s needs an argument\n",
              argv[optind - 1]);
      usage(stderr);
      return 2;
    default:
      fprintf(stderr, "postern: unknown option %s\n", argv[optind - 1]);
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "postern: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  if (hash)
    return hash_password(method);

  struct postern_config *cfg;
  struct config_error err;
  if (config_load(path, &cfg, &err) != 0) {
    char msg[sizeof err.file + sizeof err.message + 32];
    config_error_format(&err, msg, sizeof msg);
    fprintf(stderr, "%s\n", msg);
    return 1;
  }
  if (check) {
    int rc = config_print(stdout, cfg);
    config_free(cfg);
    return rc == 0 ? 0 : 1;
  }
  /* relay_run owns cfg from here on (it also sets up libcurl before any
   * thread starts). */
  return relay_run(cfg, path);
}
