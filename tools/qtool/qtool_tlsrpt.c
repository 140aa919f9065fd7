/*
 * qtool_tlsrpt.c - `qtool tlsrpt ...`: the TLS report counts (RFC 8460)
 * the relay keeps in the queue (engine/tlsrpt.c), for operators.
 *
 *   tlsrpt list [--json] [--day YYYY-MM-DD]   domains with counts that day
 *   tlsrpt report DOMAIN [--day YYYY-MM-DD]  the report JSON that is sent
 *   tlsrpt send [--day YYYY-MM-DD] [DOMAIN]  ask the relay to send now
 *
 * The day defaults to today (UTC). The queue is opened like every other
 * qtool command: read transactions only here, so a running relay is not
 * disturbed.
 */
#include "tools/qtool/qtool.h"

#include "base/postern_err.h"
#include "base/postern_json.h"
#include "engine/config.h"
#include "engine/tlsrpt_store.h"
#include "policy/tlsrpt.h"
#include "queue/queue.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void today(char out[11]) {
  tlsrpt_store_day((uint64_t)time(NULL) * 1000, out);
}

/* A domain's policies as a report's "policies" entries (the report's own
 * builder); "failure-details" always present, empty when none failed. */
static json_t *policies_json(const struct tlsrpt_store_domain *d) {
  struct tlsrpt_store_view v;
  if (tlsrpt_store_view(d, &v) != 0)
    return NULL;
  json_t *pols = json_array();
  for (size_t k = 0; pols != NULL && k < v.n; k++) {
    json_t *o = policy_tlsrpt_policy_json(&v.pols[k]);
    if (o != NULL && json_object_get(o, "failure-details") == NULL)
      json_object_set_new(o, "failure-details", json_array());
    if (o == NULL || json_array_append_new(pols, o) != 0) {
      json_decref(pols);
      pols = NULL;
    }
  }
  tlsrpt_store_view_free(&v);
  return pols;
}

static int tlsrpt_list(const char *dir, int argc, char **argv) {
  bool json = false;
  char day[11];
  today(day);
  static const struct option lo[] = {{"json", no_argument, NULL, 'j'},
                                     {"day", required_argument, NULL, 'd'},
                                     {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (ch == 'j')
      json = true;
    else if (ch == 'd' && strlen(optarg) == 10)
      memcpy(day, optarg, 11);
    else
      return qtool_usage("tlsrpt list: bad option or --day (YYYY-MM-DD)", NULL);
  }
  if (optind != argc)
    return qtool_usage("unexpected argument '%s'", argv[optind]);
  struct queue *q = qtool_open_queue(dir);
  if (q == NULL)
    return QTOOL_EXIT_FAIL;
  struct tlsrpt_store_domain *d;
  size_t n;
  int rc = tlsrpt_store_load(q, day, NULL, &d, &n);
  queue_close(q);
  if (rc != 0) {
    fprintf(stderr, "qtool: tlsrpt list: %s%s\n", postern_strerror(rc),
            rc == POSTERN_EINVAL ? " (--day YYYY-MM-DD)" : "");
    return rc == POSTERN_EINVAL ? QTOOL_EXIT_USAGE : QTOOL_EXIT_FAIL;
  }
  int status = QTOOL_EXIT_OK;
  if (json) {
    json_t *all = json_array();
    for (size_t i = 0; all && i < n; i++) {
      json_t *pols = policies_json(&d[i]);
      json_array_append_new(
          all, json_pack("{s:s, s:o, s:o}", "day", d[i].day, "policy-domain",
                         postern_json_cstr(d[i].domain), "policies", pols));
    }
    if (qtool_put_json(all, true) != 0)
      status = QTOOL_EXIT_FAIL;
  } else {
    printf("%-10s  %-40s  %-15s  %10s  %10s\n", "DAY", "POLICY DOMAIN",
           "POLICY", "SUCCESSFUL", "FAILED");
    for (size_t i = 0; i < n; i++)
      for (size_t k = 0; k < d[i].npolicies; k++) {
        const struct tlsrpt_store_policy *p = &d[i].policies[k];
        printf("%-10s  ", d[i].day);
        qtool_put_text(stdout, d[i].domain);
        size_t w = strlen(d[i].domain);
        printf("%*s  %-15s  %10llu  %10llu\n", w < 40 ? (int)(40 - w) : 0, "",
               policy_tlsrpt_policy_name(p->type),
               (unsigned long long)p->successful,
               (unsigned long long)p->failed);
        for (size_t f = 0; f < p->nfailures; f++) {
          printf("%-12s  %s", "",
                 policy_tlsrpt_result_name(p->failures[f].result));
          if (p->failures[f].mx) {
            fputs(" mx=", stdout);
            qtool_put_text(stdout, p->failures[f].mx);
          }
          if (p->failures[f].receiving_ip)
            printf(" ip=%s", p->failures[f].receiving_ip);
          printf(" sessions=%llu\n", (unsigned long long)p->failures[f].count);
        }
      }
  }
  tlsrpt_store_free(d, n);
  return status;
}

/* --day D (default today) and the remaining arguments. */
static int day_opt(int argc, char **argv, char day[11]) {
  static const struct option lo[] = {{"day", required_argument, NULL, 'd'},
                                     {NULL, 0, NULL, 0}};
  today(day);
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (ch != 'd' || strlen(optarg) != 10)
      return -1;
    memcpy(day, optarg, 11);
  }
  return 0;
}

static void report_meta(struct tlsrpt_store_meta *meta, char contact[300],
                        char host[256]) {
  const struct postern_config *c = qtool_config();
  if (c != NULL) {
    tlsrpt_store_defaults(c->hostname, c->tlsrpt.organization,
                          c->tlsrpt.contact, c->tlsrpt.submitter, NULL, meta,
                          contact, NULL);
    return;
  }
  if (gethostname(host, 255) != 0)
    snprintf(host, 256, "localhost");
  host[255] = '\0';
  tlsrpt_store_defaults(host, NULL, NULL, NULL, NULL, meta, contact, NULL);
}

static int tlsrpt_report(const char *dir, int argc, char **argv) {
  char day[11];
  if (day_opt(argc, argv, day) != 0 || optind + 1 != argc)
    return qtool_usage("usage: tlsrpt report DOMAIN [--day YYYY-MM-DD]", NULL);
  const char *domain = argv[optind];
  struct queue *q = qtool_open_queue(dir);
  if (q == NULL)
    return QTOOL_EXIT_FAIL;
  struct tlsrpt_store_domain *d;
  size_t n;
  int rc = tlsrpt_store_load(q, day, domain, &d, &n);
  queue_close(q);
  if (rc == 0 && n != 1) {
    tlsrpt_store_free(d, n);
    fprintf(stderr, "qtool: tlsrpt report: no counts for %s on %s\n", domain,
            day);
    return QTOOL_EXIT_FAIL;
  }
  if (rc != 0) {
    fprintf(stderr, "qtool: tlsrpt report: %s\n", postern_strerror(rc));
    return rc == POSTERN_EINVAL ? QTOOL_EXIT_USAGE : QTOOL_EXIT_FAIL;
  }
  struct tlsrpt_store_meta meta;
  char contact[300], host[256];
  report_meta(&meta, contact, host);
  char *json = NULL;
  size_t len = 0;
  rc = tlsrpt_store_report(&d[0], &meta, &json, &len);
  tlsrpt_store_free(d, n);
  if (rc != 0) {
    fprintf(stderr, "qtool: tlsrpt report: %s\n", postern_strerror(rc));
    return QTOOL_EXIT_FAIL;
  }
  fwrite(json, 1, len, stdout);
  fputc('\n', stdout);
  free(json);
  return QTOOL_EXIT_OK;
}

static int tlsrpt_send(const char *dir, int argc, char **argv) {
  char day[11];
  if (day_opt(argc, argv, day) != 0 || optind + 1 < argc)
    return qtool_usage("usage: tlsrpt send [--day YYYY-MM-DD] [DOMAIN]", NULL);
  const char *only = optind < argc ? argv[optind] : NULL;
  struct queue *q = qtool_open_queue(dir);
  if (q == NULL)
    return QTOOL_EXIT_FAIL;
  struct tlsrpt_store_domain *d;
  size_t n;
  int rc = tlsrpt_store_load(q, day, only, &d, &n);
  size_t asked = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    /* Forget that it was sent, then ask: the relay's next check (within a
     * minute) sends it, whatever the send window. */
    char key[300];
    int kl = tlsrpt_store_key('R', day, d[i].domain, key, sizeof key);
    rc = queue_counters_delete(q, key, (size_t)kl, NULL);
    key[0] = 'Q';
    struct queue_counter_add a = {key, (size_t)kl, 1, NULL, 0};
    if (rc == 0)
      rc = queue_counters_submit(q, &a, 1, NULL, NULL);
    if (rc == 0)
      asked++;
  }
  tlsrpt_store_free(d, n);
  queue_close(q); /* waits for the writer: the requests are committed */
  if (rc != 0) {
    fprintf(stderr, "qtool: tlsrpt send: %s\n", postern_strerror(rc));
    return rc == POSTERN_EINVAL ? QTOOL_EXIT_USAGE : QTOOL_EXIT_FAIL;
  }
  if (asked == 0) {
    fprintf(stderr, "qtool: tlsrpt send: no counts on %s%s%s\n", day,
            only ? " for " : "", only ? only : "");
    return QTOOL_EXIT_FAIL;
  }
  printf("asked the relay to send %zu report%s for %s (within a minute)\n",
         asked, asked == 1 ? "" : "s", day);
  return QTOOL_EXIT_OK;
}

int qtool_tlsrpt(const char *dir, int argc, char **argv) {
  if (argc < 2)
    return qtool_usage("tlsrpt needs a subcommand (list, report, send)", NULL);
  const char *sub = argv[1];
  optind = 0;
  if (strcmp(sub, "list") == 0)
    return tlsrpt_list(dir, argc - 1, argv + 1);
  if (strcmp(sub, "report") == 0)
    return tlsrpt_report(dir, argc - 1, argv + 1);
  if (strcmp(sub, "send") == 0)
    return tlsrpt_send(dir, argc - 1, argv + 1);
  return qtool_usage("unknown tlsrpt subcommand '%s'", sub);
}
