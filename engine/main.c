/*
 * main.c - the `postern` command: argument handling, configuration loading,
 * `--check`, and running the relay in the foreground (engine/relay.c).
 *
 * Exit status: 0 success, 1 configuration error (printed as
 * `file:line:col: message`) or failure to run, 2 usage error.
 */
#include "engine/config.h"
#include "engine/relay.h"
#include "base/postern_err.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef POSTERN_VERSION
#define POSTERN_VERSION "0.1.0"
#endif

static void usage(FILE *f) {
  fprintf(f,
          "usage: postern [-c FILE] [--check]\n"
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
          "\n"
          "Exit status: 0 success, 1 configuration or runtime error, 2 usage "
          "error.\n"
          "See postern.conf(5) for the configuration file.\n",
          CONFIG_DEFAULT_PATH);
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"check", no_argument, NULL, 'n'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {"directives", no_argument, NULL, 'D'},
      {NULL, 0, NULL, 0},
  };
  const char *path = CONFIG_DEFAULT_PATH;
  int check = 0;
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
