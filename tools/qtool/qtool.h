/*
 * qtool.h - what qtool's command files share (qtool.c has main and the
 * queue commands; qtool_tlsrpt.c the TLS report commands).
 */
#ifndef POSTERN_TOOLS_QTOOL_H
#define POSTERN_TOOLS_QTOOL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#define QTOOL_EXIT_OK 0
#define QTOOL_EXIT_FAIL 1
#define QTOOL_EXIT_USAGE 2

struct queue;
struct postern_config;

/* Prints "qtool: " fmt (with arg) and the usage; returns QTOOL_EXIT_USAGE. */
int qtool_usage(const char *fmt, const char *arg);
/* Opens the existing queue under dir, or says why not (NULL). */
struct queue *qtool_open_queue(const char *dir);
/* Prints one JSON value and releases it; -1 when v is NULL (out of memory). */
int qtool_put_json(json_t *v, bool nl);
/* Prints s with non-printable bytes escaped. */
void qtool_put_text(FILE *f, const char *s);

/* The configuration given with -c, or NULL. */
const struct postern_config *qtool_config(void);

/* `qtool tlsrpt SUBCOMMAND ...`; argv[0] is "tlsrpt". */
int qtool_tlsrpt(const char *dir, int argc, char **argv);

/* `qtool -c CONFIG cluster [--json]`; argv[0] is "cluster". */
int qtool_cluster(int argc, char **argv);

#endif
