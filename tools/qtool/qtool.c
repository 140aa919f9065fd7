/*
 * qtool - read and change Postern's queue, with or without a running relay.
 *
 *   qtool [-c CONFIG | -d STATE_DIR] COMMAND [ARGS]
 *
 * Every command opens the queue with no_create (a wrong path is an error,
 * never a new empty queue) and works through LMDB's multi-process locking,
 * so a running relay sees changes at its next due scan (within a second).
 * Listing reads pages of envelopes in short read transactions and prints
 * between them: no transaction is held while writing to a slow terminal.
 *
 * Exit status: 0 success, 1 an id is unknown or the queue cannot be opened
 * or changed, 2 usage error. Text from the network (addresses, replies) is
 * printed with non-printable bytes escaped, as \xHH. JSON output is built
 * with jansson (base/postern_json.h): valid UTF-8 passes through (an
 * SMTPUTF8 address stays readable), any other byte shows as \xHH, and the
 * output is valid JSON whatever the bytes. The running relay's counters
 * come from its metrics endpoint through libcurl.
 */
#include "engine/config.h"
#include "engine/dsn.h"
#include "policy/mtasts_cache.h"
#include "base/postern_err.h"
#include "base/postern_utf8.h"
#include "base/postern_json.h"
#include "base/postern_units.h"
#include "queue/queue.h"
#include "tools/qtool/qtool.h"

#include <curl/curl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_STATE_DIR "/var/lib/postern"
#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: qtool [-c CONFIG | -d STATE_DIR] COMMAND [ARGS]\n"
    "  list [--json] [--domain D] [--state active|deferred|held]\n"
    "       [--older-than DURATION] [--limit N]\n"
    "  show ID [--json] [--body]\n"
    "  stats [--json] [--top N]\n"
    "  hold|release|retry|delete ID...|--all|--domain D\n"
    "  bounce ID...|--domain D\n"
    "  tlsrpt list [--json] [--day YYYY-MM-DD]\n"
    "  tlsrpt report DOMAIN [--day YYYY-MM-DD]\n"
    "  tlsrpt send [--day YYYY-MM-DD] [DOMAIN]\n"
    "  cluster [--json]          (with -c: the fleet's nodes, leases, rates)\n";

/* Set by -c: the relay's configuration (state_dir, hostname, metrics). */
static struct postern_config *cfg;

static int usage(const char *fmt, const char *arg) {
  if (fmt) {
    fputs("qtool: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
  }
  fputs(usage_text, stderr);
  return EXIT_USAGE;
}

/* ---- Output helpers ----------------------------------------------------- */

/* Prints s for a terminal: well-formed UTF-8 (SMTPUTF8 addresses, U-labels)
 * as it is; control bytes (C0, DEL, C1), bytes that are not UTF-8 and the
 * backslash escaped, so that nothing from a client can move the cursor or
 * look like something else. */
static void put_text(FILE *f, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t left = strlen(s);
  while (left > 0) {
    size_t k = *p >= 0x80 ? postern_utf8_len(p, left) : 0;
    if (k > 0 && !(p[0] == 0xc2 && p[1] < 0xa0)) {
      fwrite(p, 1, k, f);
      p += k;
      left -= k;
      continue;
    }
    if (*p >= 0x20 && *p < 0x7f && *p != '\\')
      fputc(*p, f);
    else if (*p == '\\')
      fputs("\\\\", f);
    else
      fprintf(f, "\\x%02X", *p);
    p++;
    left--;
  }
}

/* Prints one JSON value and releases it. Out of memory while building a
 * value (NULL) is reported: output is never silently incomplete. */
static int put_json(json_t *v, bool nl) {
  if (v == NULL) {
    fputs("qtool: out of memory building JSON output\n", stderr);
    return -1;
  }
  int rc = postern_json_print(v, stdout, nl);
  json_decref(v);
  return rc;
}

static int parse_count(const char *s, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || *s == '-' || v > 100000000ull)
    return -1;
  *out = (size_t)v;
  return 0;
}

/* The most recent attempt's status among the recipients, "" if none. */
static const struct queue_rcpt *last_attempt(const struct queue_env *e) {
  const struct queue_rcpt *best = NULL;
  for (size_t i = 0; i < e->n_rcpts; i++) {
    if (e->rcpts[i].last_ms && (!best || e->rcpts[i].last_ms > best->last_ms))
      best = &e->rcpts[i];
  }
  return best;
}

static size_t rcpts_left(const struct queue_env *e) {
  size_t n = 0;
  for (size_t i = 0; i < e->n_rcpts; i++) {
    if (e->rcpts[i].state == QUEUE_RCPT_PENDING ||
        e->rcpts[i].state == QUEUE_RCPT_DEFERRED)
      n++;
  }
  return n;
}

static struct queue *open_queue(const char *dir) {
  struct queue_opts o = {.state_dir = dir, .no_create = true};
  struct queue *q;
  int rc = queue_open(&o, &q);
  if (rc) {
    fprintf(stderr, "qtool: cannot open the queue in %s/queue: %s\n", dir,
            postern_strerror(rc));
    return NULL;
  }
  return q;
}

/* For the other command files (qtool.h). */
int qtool_usage(const char *fmt, const char *arg) {
  return usage(fmt, arg);
}
struct queue *qtool_open_queue(const char *dir) {
  return open_queue(dir);
}
int qtool_put_json(json_t *v, bool nl) {
  return put_json(v, nl);
}
void qtool_put_text(FILE *f, const char *s) {
  put_text(f, s);
}
const struct postern_config *qtool_config(void) {
  return cfg;
}

/* ---- list --------------------------------------------------------------- */

struct list_ctx {
  bool json;
  bool have_state;
  enum queue_msg_state state;
  uint64_t cutoff; /* arrival must be <= this; UINT64_MAX = no filter */
  size_t limit;    /* 0 = no limit */
  size_t printed;
  uint64_t now;
  bool failed; /* the JSON output could not be made */
};

static int list_one(void *arg, const struct queue_env *e) {
  struct list_ctx *c = arg;
  if (c->cutoff != UINT64_MAX && queue_id_time_ms(e->id) > c->cutoff)
    return 1; /* ids are time-ordered: nothing later can match */
  if (c->cutoff != UINT64_MAX && e->arrival_ms > c->cutoff)
    return 0;
  if (c->have_state && e->state != c->state)
    return 0;
  const struct queue_rcpt *la = last_attempt(e);
  uint64_t age = c->now > e->arrival_ms ? c->now - e->arrival_ms : 0;
  if (c->json) {
    /* One object per message, printed as it comes (a queue of a million
     * messages is never held in memory as one array). */
    fputs(c->printed ? ",\n" : "\n", stdout);
    json_t *o = json_pack(
        "{s:s, s:s, s:o, s:o, s:o, s:o, s:I, s:I, s:o, s:o, s:o}", "id", e->id,
        "state", queue_msg_state_name(e->state), "arrival_ms",
        postern_json_u64(e->arrival_ms), "age_s", postern_json_u64(age / 1000),
        "size", postern_json_u64(e->size), "sender",
        postern_json_cstr(e->sender), "recipients", (json_int_t)e->n_rcpts,
        "recipients_left", (json_int_t)rcpts_left(e), "next_attempt_ms",
        postern_json_u64(e->next_ms), "last_status",
        postern_json_cstr(la ? la->status : ""), "last_reply",
        postern_json_cstr(la ? la->reply : ""));
    if (put_json(o, false) != 0) {
      c->failed = true;
      return 1;
    }
  } else {
    char agebuf[32], nextbuf[40];
    postern_duration_format(age, POSTERN_DURATION_COARSE, agebuf,
                            sizeof agebuf);
    if (e->state == QUEUE_MSG_HELD) {
      snprintf(nextbuf, sizeof nextbuf, "held");
    } else if (e->next_ms <= c->now) {
      snprintf(nextbuf, sizeof nextbuf, "now");
    } else {
      char d[32];
      postern_duration_format(e->next_ms - c->now, POSTERN_DURATION_COARSE, d,
                              sizeof d);
      snprintf(nextbuf, sizeof nextbuf, "in-%s", d);
    }
    printf("%s %-8s %9" PRIu64 " <", e->id, agebuf, e->size);
    put_text(stdout, e->sender);
    printf("> %zu %s %s\n", e->n_rcpts, nextbuf,
           la && la->status[0] ? la->status : "-");
  }
  c->printed++;
  return c->limit && c->printed >= c->limit;
}

static int cmd_list(const char *dir, int argc, char **argv) {
  struct queue *q = NULL;
  struct list_ctx c = {.cutoff = UINT64_MAX};
  uint64_t older = 0;
  bool have_older = false;
  const char *domain = NULL;
  static const struct option lo[] = {
      {"json", no_argument, NULL, 'j'},
      {"domain", required_argument, NULL, 'D'},
      {"state", required_argument, NULL, 's'},
      {"older-than", required_argument, NULL, 'o'},
      {"limit", required_argument, NULL, 'l'},
      {NULL, 0, NULL, 0}};
  int ch;
  uint64_t d;
  const char *why;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (ch) {
    case 'j':
      c.json = true;
      break;
    case 'D':
      domain = optarg;
      break;
    case 's':
      if (queue_msg_state_parse(optarg, &c.state))
        return usage("unknown state '%s'", optarg);
      c.have_state = true;
      break;
    case 'o':
      if (postern_duration_parse(optarg, strlen(optarg),
                                 POSTERN_DURATION_BARE_SECONDS, &d, &why))
        return usage("bad duration '%s' (use 30s, 5m, 2h, 5d)", optarg);
      older = d;
      have_older = true;
      break;
    case 'l':
      if (parse_count(optarg, &c.limit))
        return usage("bad limit '%s'", optarg);
      break;
    default:
      return usage(NULL, NULL);
    }
  }
  if (optind != argc)
    return usage("unexpected argument '%s'", argv[optind]);
  if (!(q = open_queue(dir)))
    return EXIT_FAIL;
  c.now = queue_now_ms(q);
  if (have_older)
    c.cutoff = c.now > older ? c.now - older : 0;
  if (c.json)
    fputs("[", stdout);
  int rc = queue_list(q, NULL, domain, 1000, list_one, &c);
  if (c.json)
    fputs("\n]\n", stdout);
  queue_close(q);
  if (rc) {
    fprintf(stderr, "qtool: list: %s\n", postern_strerror(rc));
    return EXIT_FAIL;
  }
  return c.failed ? EXIT_FAIL : EXIT_OK;
}

/* ---- show --------------------------------------------------------------- */

static const char *ret_name(enum queue_ret r) {
  return r == QUEUE_RET_FULL ? "FULL" : r == QUEUE_RET_HDRS ? "HDRS" : "";
}

static void notify_str(char *buf, size_t cap, unsigned n) {
  buf[0] = '\0';
  static const struct {
    unsigned bit;
    const char *name;
  } names[] = {{QUEUE_NOTIFY_NEVER, "NEVER"},
               {QUEUE_NOTIFY_SUCCESS, "SUCCESS"},
               {QUEUE_NOTIFY_FAILURE, "FAILURE"},
               {QUEUE_NOTIFY_DELAY, "DELAY"}};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    if (n & names[i].bit) {
      size_t l = strlen(buf);
      snprintf(buf + l, cap - l, "%s%s", l ? "," : "", names[i].name);
    }
  }
}

static int cmd_show(const char *dir, int argc, char **argv) {
  struct queue *q = NULL;
  bool json = false, body = false;
  static const struct option lo[] = {{"json", no_argument, NULL, 'j'},
                                     {"body", no_argument, NULL, 'b'},
                                     {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (ch == 'j')
      json = true;
    else if (ch == 'b')
      body = true;
    else
      return usage(NULL, NULL);
  }
  if (optind + 1 != argc)
    return usage("show takes exactly one ID", NULL);
  const char *id = argv[optind];
  if (!queue_id_valid(id)) {
    fputs("qtool: unknown id ", stderr);
    put_text(stderr, id);
    fputc('\n', stderr);
    return EXIT_FAIL;
  }
  if (!(q = open_queue(dir)))
    return EXIT_FAIL;
  struct queue_env *e;
  void *b = NULL;
  size_t blen = 0;
  int rc = queue_msg_load(q, id, &e, body ? &b : NULL, &blen);
  uint64_t now = queue_now_ms(q);
  queue_close(q); /* everything needed was copied out */
  if (rc == POSTERN_ENOENT) {
    fprintf(stderr, "qtool: unknown id %s\n", id);
    return EXIT_FAIL;
  }
  if (rc) {
    fprintf(stderr, "qtool: show %s: %s\n", id, postern_strerror(rc));
    return EXIT_FAIL;
  }
  if (body && !json) {
    fwrite(b, 1, blen, stdout);
    free(b);
    queue_env_free(e);
    return EXIT_OK;
  }
  char nb[64];
  if (json) {
    int bad = 0;
    json_t *o = json_pack(
        "{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:b, s:b}",
        "id", e->id, "state", queue_msg_state_name(e->state), "arrival_ms",
        postern_json_u64(e->arrival_ms), "age_s",
        postern_json_u64(now > e->arrival_ms ? (now - e->arrival_ms) / 1000
                                             : 0),
        "size", postern_json_u64(e->size), "next_attempt_ms",
        postern_json_u64(e->next_ms), "sender", postern_json_cstr(e->sender),
        "ret", postern_json_cstr(ret_name(e->ret)), "envid",
        postern_json_cstr(e->envid), "client_addr",
        postern_json_cstr(e->client_addr), "client_helo",
        postern_json_cstr(e->client_helo), "delay_warned", e->delay_warned,
        "requiretls", e->requiretls);
    json_t *rcpts = json_array();
    for (size_t i = 0; o && rcpts && i < e->n_rcpts; i++) {
      const struct queue_rcpt *r = &e->rcpts[i];
      notify_str(nb, sizeof nb, r->notify);
      json_t *ro = json_pack(
          "{s:o, s:s, s:I, s:o, s:o, s:o, s:o, s:o, s:o}", "addr",
          postern_json_cstr(r->addr), "state", queue_rcpt_state_name(r->state),
          "attempts", (json_int_t)r->attempts, "next_attempt_ms",
          postern_json_u64(r->next_ms), "last_attempt_ms",
          postern_json_u64(r->last_ms), "status", postern_json_cstr(r->status),
          "reply", postern_json_cstr(r->reply), "notify", postern_json_cstr(nb),
          "orcpt", postern_json_cstr(r->orcpt));
      bad |= ro == NULL || json_array_append_new(rcpts, ro) != 0;
    }
    if (o == NULL || rcpts == NULL) {
      bad = 1;
      json_decref(rcpts);
    } else {
      bad |= postern_json_set(o, "recipients", rcpts) != 0;
    }
    if (o && body && !bad)
      bad |= postern_json_set(o, "body", postern_json_str(b, blen)) != 0;
    if (bad) {
      json_decref(o);
      o = NULL;
    }
    if (put_json(o, true) != 0) {
      free(b);
      queue_env_free(e);
      return EXIT_FAIL;
    }
  } else {
    char age[32];
    postern_duration_format(now > e->arrival_ms ? now - e->arrival_ms : 0,
                            POSTERN_DURATION_COARSE, age, sizeof age);
    printf("id: %s\nstate: %s\nage: %s\nsize: %" PRIu64 "\nsender: <", e->id,
           queue_msg_state_name(e->state), age, e->size);
    put_text(stdout, e->sender);
    printf(">\nclient: ");
    put_text(stdout, e->client_addr[0] ? e->client_addr : "-");
    printf(" helo=");
    put_text(stdout, e->client_helo[0] ? e->client_helo : "-");
    printf("\nret: %s\nenvid: ", e->ret ? ret_name(e->ret) : "-");
    put_text(stdout, e->envid[0] ? e->envid : "-");
    /* RFC 8689: sent with MAIL ... REQUIRETLS. */
    printf("\nrequiretls: %s", e->requiretls ? "yes" : "no");
    printf("\nrecipients: %zu\n", e->n_rcpts);
    for (size_t i = 0; i < e->n_rcpts; i++) {
      const struct queue_rcpt *r = &e->rcpts[i];
      printf("  <");
      put_text(stdout, r->addr);
      printf("> %s attempts=%u", queue_rcpt_state_name(r->state), r->attempts);
      if (r->state == QUEUE_RCPT_DEFERRED || r->state == QUEUE_RCPT_PENDING) {
        char d[32];
        if (e->state == QUEUE_MSG_HELD)
          printf(" next=held");
        else if (r->next_ms <= now)
          printf(" next=now");
        else {
          postern_duration_format(r->next_ms - now, POSTERN_DURATION_COARSE, d,
                                  sizeof d);
          printf(" next=in-%s", d);
        }
      }
      notify_str(nb, sizeof nb, r->notify);
      if (nb[0])
        printf(" notify=%s", nb);
      if (r->status[0] || r->reply[0]) {
        printf(" status=%s reply=\"", r->status[0] ? r->status : "-");
        put_text(stdout, r->reply);
        putchar('"');
      }
      putchar('\n');
    }
  }
  free(b);
  queue_env_free(e);
  return EXIT_OK;
}

/* ---- the running relay's counters ------------------------------------ */

struct relay_counters {
  uint64_t accepted, sent, deferred, bounced, inflight;
};

/* Sums the samples of one metric family ("name" or "name{...}"). */
static uint64_t metric_sum(const char *text, const char *name,
                           const char *label) {
  uint64_t sum = 0;
  size_t nl = strlen(name);
  for (const char *l = text; l && *l;
       l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
    if (strncmp(l, name, nl) != 0 || (l[nl] != ' ' && l[nl] != '{'))
      continue;
    const char *end = strchr(l, '\n');
    size_t len = end ? (size_t)(end - l) : strlen(l);
    char line[512];
    if (len >= sizeof line)
      continue;
    memcpy(line, l, len);
    line[len] = 0;
    if (label && strstr(line, label) == NULL)
      continue;
    const char *sp = strrchr(line, ' ');
    if (sp)
      sum += strtoull(sp + 1, NULL, 10);
  }
  return sum;
}

/* The metrics page as libcurl receives it, capped at 1 MiB. */
struct page {
  char *buf;
  size_t len;
};

static size_t page_write(char *p, size_t size, size_t n, void *arg) {
  struct page *pg = arg;
  size_t add = size * n;
  if (pg->len + add > (1u << 20))
    return 0; /* too big for a metrics page: curl fails the transfer */
  char *nb = realloc(pg->buf, pg->len + add + 1);
  if (nb == NULL)
    return 0;
  memcpy(nb + pg->len, p, add);
  pg->len += add;
  nb[pg->len] = '\0';
  pg->buf = nb;
  return add;
}

/* With -c and a `metrics { listen }` block, asks the running relay for its
 * counters (GET /metrics over HTTP, 2 s at most, no proxy). False when
 * there is no relay to ask. */
static bool relay_counters_get(struct relay_counters *out) {
  if (cfg == NULL || !cfg->metrics.enabled)
    return false;
  const char *addr =
      cfg->metrics.listen.text; /* "127.0.0.1:9025", "[::1]:9025" */
  char url[128];
  snprintf(url, sizeof url, "http://%s/metrics", addr);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return false;
  CURL *h = curl_easy_init();
  struct page pg = {0};
  long code = 0;
  bool ok = false;
  if (h != NULL) {
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never a proxy from the env */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, page_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &pg);
    ok = curl_easy_perform(h) == CURLE_OK &&
         curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
         code == 200 && pg.buf != NULL;
    curl_easy_cleanup(h);
  }
  if (ok) {
    out->accepted = metric_sum(pg.buf, "postern_messages_accepted_total", NULL);
    out->sent =
        metric_sum(pg.buf, "postern_deliveries_total", "status=\"sent\"");
    out->deferred =
        metric_sum(pg.buf, "postern_deliveries_total", "status=\"deferred\"");
    out->bounced =
        metric_sum(pg.buf, "postern_deliveries_total", "status=\"bounced\"");
    out->inflight = metric_sum(pg.buf, "postern_inflight_messages", NULL);
  }
  free(pg.buf);
  curl_global_cleanup();
  return ok;
}

/* ---- bounce ------------------------------------------------------------- */

/* The writer thread completes result and submit callbacks; qtool waits. */
struct waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  int status;
  struct dsn_note *notes;
  size_t n_notes;
  char (*status_txt)[QUEUE_STATUS_MAX + 1];
};

static void wait_done(struct waiter *w) {
  pthread_mutex_lock(&w->mu);
  while (!w->done)
    pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
}

static void on_bounce_result(void *arg, int status,
                             const struct queue_env *env) {
  struct waiter *w = arg;
  pthread_mutex_lock(&w->mu);
  w->status = status;
  if (status == 0) {
    for (size_t i = 0; i < env->n_rcpts && w->n_notes < env->n_rcpts; i++) {
      if (env->rcpts[i].event != QUEUE_DSN_BOUNCED)
        continue;
      struct dsn_note *n = &w->notes[w->n_notes];
      snprintf(w->status_txt[w->n_notes], sizeof w->status_txt[0], "%s",
               env->rcpts[i].status);
      *n = (struct dsn_note){.index = (unsigned)i,
                             .event = QUEUE_DSN_BOUNCED,
                             .status = w->status_txt[w->n_notes],
                             .reply = "",
                             .mx = "",
                             .when_ms = env->rcpts[i].last_ms};
      w->n_notes++;
    }
  }
  w->done = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static void on_dsn_committed(void *arg, int status) {
  struct waiter *w = arg;
  pthread_mutex_lock(&w->mu);
  w->status = status;
  w->done = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static const char bounce_reason[] = "bounced by the operator (qtool bounce)";

static bool domain_is(const char *addr, const char *domain) {
  const char *at = strrchr(addr, '@');
  return at && strcasecmp(at + 1, domain) == 0;
}

/* Fails the open recipients of one message (those of `domain` only, when
 * given) with 5.0.0 and queues one DSN to its sender. 0 when done, 1 when
 * the id is unknown or a step failed (said on stderr). */
static int bounce_one(struct queue *q, const char *id, const char *domain,
                      size_t *nrcpts, size_t *ndsn) {
  struct queue_env *e;
  void *body = NULL;
  size_t blen = 0;
  int rc = queue_id_valid(id) ? queue_msg_load(q, id, &e, &body, &blen)
                              : POSTERN_ENOENT;
  if (rc) {
    fprintf(stderr, "qtool: bounce: ");
    put_text(stderr, id);
    fprintf(stderr, ": %s\n",
            rc == POSTERN_ENOENT ? "unknown id" : postern_strerror(rc));
    return EXIT_FAIL;
  }
  struct queue_rcpt_result *res = calloc(e->n_rcpts, sizeof *res);
  struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                     .cv = PTHREAD_COND_INITIALIZER};
  w.notes = calloc(e->n_rcpts, sizeof *w.notes);
  w.status_txt = calloc(e->n_rcpts, sizeof *w.status_txt);
  int status = EXIT_FAIL;
  if (!res || !w.notes || !w.status_txt)
    goto out;
  size_t n = 0;
  for (size_t i = 0; i < e->n_rcpts; i++) {
    const struct queue_rcpt *r = &e->rcpts[i];
    if (r->state != QUEUE_RCPT_PENDING && r->state != QUEUE_RCPT_DEFERRED)
      continue;
    if (domain && !domain_is(r->addr, domain))
      continue;
    res[n++] = (struct queue_rcpt_result){.index = (unsigned)i,
                                          .outcome = QUEUE_OUTCOME_BOUNCED,
                                          .status = "5.0.0",
                                          .reply = bounce_reason};
  }
  if (n == 0) {
    status = EXIT_OK;
    goto out;
  }
  struct queue_result_in in = {.id = e->id, .results = res, .n_results = n};
  rc = queue_result_submit(q, &in, on_bounce_result, &w);
  if (rc == 0) {
    wait_done(&w);
    rc = w.status;
  }
  if (rc) {
    fprintf(stderr, "qtool: bounce: %s: %s\n", e->id, postern_strerror(rc));
    goto out;
  }
  *nrcpts += n;
  for (size_t i = 0; i < w.n_notes; i++)
    w.notes[i].reply = bounce_reason;
  char dsn_id[QUEUE_ID_LEN + 1];
  queue_id_new(dsn_id);
  char *msg;
  size_t mlen, nwanted;
  const char *host = cfg ? cfg->hostname : "localhost";
  rc = dsn_build_for(e, body, blen, w.notes, w.n_notes, QUEUE_DSN_BOUNCED, host,
                     queue_now_ms(q), dsn_id, &msg, &mlen, &nwanted);
  if (rc == POSTERN_ENOENT || rc == POSTERN_ESTATE) {
    /* NOTIFY asked for no report, or the sender is null (a bounce
     * itself): RFC 3461 §4.1, RFC 3464 §2. */
    status = EXIT_OK;
    goto out;
  }
  if (rc) {
    fprintf(stderr, "qtool: bounce: %s: DSN: %s\n", e->id,
            postern_strerror(rc));
    goto out;
  }
  struct queue_rcpt_in to = {.addr = e->sender};
  struct iovec iov = {.iov_base = msg, .iov_len = mlen};
  struct queue_msg_in m = {.id = dsn_id,
                           .sender = "",
                           .rcpts = &to,
                           .n_rcpts = 1,
                           .client_addr = "qtool",
                           .body = &iov,
                           .body_iovcnt = 1};
  w.done = false;
  rc = queue_msg_submit(q, &m, on_dsn_committed, &w);
  if (rc == 0) {
    wait_done(&w);
    rc = w.status;
  }
  free(msg);
  if (rc) {
    fprintf(stderr, "qtool: bounce: %s: queueing the DSN: %s\n", e->id,
            postern_strerror(rc));
    goto out;
  }
  (*ndsn)++;
  status = EXIT_OK;
out:
  free(res);
  free(w.notes);
  free(w.status_txt);
  free(body);
  queue_env_free(e);
  return status;
}

struct id_list {
  char **ids;
  size_t n, cap;
};

static int collect_id(void *arg, const struct queue_env *env) {
  struct id_list *l = arg;
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 64;
    char **ni = realloc(l->ids, nc * sizeof *ni);
    if (ni == NULL)
      return 1;
    l->ids = ni;
    l->cap = nc;
  }
  l->ids[l->n] = strdup(env->id);
  if (l->ids[l->n] == NULL)
    return 1;
  l->n++;
  return 0;
}

static int cmd_bounce(const char *dir, int argc, char **argv) {
  const char *domain = NULL;
  static const struct option lo[] = {{"domain", required_argument, NULL, 'D'},
                                     {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (ch == 'D')
      domain = optarg;
    else
      return usage(NULL, NULL);
  }
  size_t nids = (size_t)(argc - optind);
  if ((domain ? 1 : 0) + (nids ? 1 : 0) != 1)
    return usage("bounce takes IDs, or --domain D (one of them)", NULL);
  struct queue *q = open_queue(dir);
  if (q == NULL)
    return EXIT_FAIL;
  struct id_list l = {0};
  if (domain) {
    int rc = queue_list(q, NULL, domain, 512, collect_id, &l);
    if (rc) {
      fprintf(stderr, "qtool: bounce: %s\n", postern_strerror(rc));
      queue_close(q);
      return EXIT_FAIL;
    }
  }
  int status = EXIT_OK;
  size_t nrcpts = 0, ndsn = 0, nmsgs = domain ? l.n : nids;
  for (size_t i = 0; i < nmsgs; i++) {
    const char *id = domain ? l.ids[i] : argv[optind + (int)i];
    if (bounce_one(q, id, domain, &nrcpts, &ndsn) != EXIT_OK)
      status = EXIT_FAIL;
  }
  queue_close(q);
  for (size_t i = 0; i < l.n; i++)
    free(l.ids[i]);
  free(l.ids);
  printf("bounced %zu recipient%s, %zu DSN%s queued\n", nrcpts,
         nrcpts == 1 ? "" : "s", ndsn, ndsn == 1 ? "" : "s");
  return status;
}

/* ---- stats -------------------------------------------------------------- */

static int cmd_stats(const char *dir, int argc, char **argv) {
  struct queue *q = NULL;
  bool json = false;
  size_t top = 10;
  static const struct option lo[] = {{"json", no_argument, NULL, 'j'},
                                     {"top", required_argument, NULL, 't'},
                                     {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (ch == 'j')
      json = true;
    else if (ch == 't') {
      if (parse_count(optarg, &top) || top > 10000)
        return usage("bad --top '%s'", optarg);
    } else
      return usage(NULL, NULL);
  }
  if (optind != argc)
    return usage("unexpected argument '%s'", argv[optind]);
  if (!(q = open_queue(dir)))
    return EXIT_FAIL;
  struct queue_stats st;
  int rc = queue_stats_get(q, top, &st);
  uint64_t now = queue_now_ms(q);
  queue_close(q);
  if (rc) {
    fprintf(stderr, "qtool: stats: %s\n", postern_strerror(rc));
    return EXIT_FAIL;
  }
  uint64_t oldest = st.oldest_arrival_ms && now > st.oldest_arrival_ms
                        ? now - st.oldest_arrival_ms
                        : 0;
  struct relay_counters rc_relay = {0};
  bool have_relay = relay_counters_get(&rc_relay);
  /* The MTA-STS policy cache, read-only; absent when the relay never
   * fetched a policy (or runs without mtasts). */
  struct policy_mtasts_cache_stat mst;
  int mrc = policy_mtasts_cache_stat_dir(dir, &mst);
  if (mrc != 0 && mrc != POSTERN_ENOENT)
    fprintf(stderr, "qtool: stats: MTA-STS cache: %s\n", postern_strerror(mrc));
  if (json) {
    json_t *o = json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "messages",
        postern_json_u64(st.messages), "active",
        postern_json_u64(st.by_state[QUEUE_MSG_ACTIVE]), "deferred",
        postern_json_u64(st.by_state[QUEUE_MSG_DEFERRED]), "held",
        postern_json_u64(st.by_state[QUEUE_MSG_HELD]), "recipients",
        postern_json_u64(st.recipients), "bytes", postern_json_u64(st.bytes),
        "oldest_age_s", postern_json_u64(oldest / 1000), "domain_count",
        postern_json_u64(st.domains), "db_used_bytes",
        postern_json_u64(st.db_used_bytes), "map_size",
        postern_json_u64(st.map_size));
    json_t *doms = json_array();
    int bad = o == NULL || doms == NULL;
    for (size_t i = 0; !bad && i < st.n_top; i++)
      bad |=
          json_array_append_new(
              doms, json_pack("{s:o, s:o}", "domain",
                              postern_json_cstr(st.top[i].domain), "messages",
                              postern_json_u64(st.top[i].messages))) != 0;
    if (bad)
      json_decref(doms);
    else
      bad |= postern_json_set(o, "domains", doms) != 0;
    if (!bad && have_relay)
      bad |= postern_json_set(
                 o, "relay",
                 json_pack("{s:o, s:o, s:o, s:o, s:o}", "accepted",
                           postern_json_u64(rc_relay.accepted), "sent",
                           postern_json_u64(rc_relay.sent), "deferred",
                           postern_json_u64(rc_relay.deferred), "bounced",
                           postern_json_u64(rc_relay.bounced), "inflight",
                           postern_json_u64(rc_relay.inflight))) != 0;
    if (!bad)
      bad |=
          postern_json_set(
              o, "mtasts_cache",
              mrc == 0 ? json_pack("{s:o, s:o, s:o}", "entries",
                                   postern_json_u64(mst.entries), "used_bytes",
                                   postern_json_u64(mst.used_bytes), "map_size",
                                   postern_json_u64(mst.map_size))
                       : json_null()) != 0;
    if (bad) {
      json_decref(o);
      o = NULL;
    }
    if (put_json(o, true) != 0) {
      free(st.top);
      return EXIT_FAIL;
    }
  } else {
    char age[32];
    postern_duration_format(oldest, POSTERN_DURATION_COARSE, age, sizeof age);
    printf("messages: %" PRIu64 "\n  active: %" PRIu64 "\n  deferred: %" PRIu64
           "\n  held: %" PRIu64 "\nrecipients left: %" PRIu64
           "\nbytes: %" PRIu64 "\noldest: %s\n"
           "database: %" PRIu64 " of %" PRIu64 " bytes used\n"
           "domains: %" PRIu64 "\n",
           st.messages, st.by_state[QUEUE_MSG_ACTIVE],
           st.by_state[QUEUE_MSG_DEFERRED], st.by_state[QUEUE_MSG_HELD],
           st.recipients, st.bytes, st.messages ? age : "-", st.db_used_bytes,
           st.map_size, st.domains);
    for (size_t i = 0; i < st.n_top; i++) {
      printf("  %8" PRIu64 " ", st.top[i].messages);
      put_text(stdout, st.top[i].domain);
      putchar('\n');
    }
    if (have_relay)
      printf("relay since start: accepted %" PRIu64 ", sent %" PRIu64
             ", deferred %" PRIu64 ", bounced %" PRIu64 ", in flight %" PRIu64
             "\n",
             rc_relay.accepted, rc_relay.sent, rc_relay.deferred,
             rc_relay.bounced, rc_relay.inflight);
    if (mrc == 0)
      printf("mtasts cache: %" PRIu64 " policies, %" PRIu64 " of %" PRIu64
             " bytes used (%" PRIu64 "%%)\n",
             mst.entries, mst.used_bytes, mst.map_size,
             mst.map_size ? mst.used_bytes * 100 / mst.map_size : 0);
    else
      printf("mtasts cache: none\n");
  }
  free(st.top);
  return EXIT_OK;
}

/* ---- hold / release / retry / delete ------------------------------------ */

static int cmd_admin(const char *dir, enum queue_admin_op op, const char *name,
                     int argc, char **argv) {
  struct queue *q = NULL;
  struct queue_select sel = {0};
  static const struct option lo[] = {{"all", no_argument, NULL, 'a'},
                                     {"domain", required_argument, NULL, 'D'},
                                     {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (ch == 'a')
      sel.all = true;
    else if (ch == 'D')
      sel.domain = optarg;
    else
      return usage(NULL, NULL);
  }
  size_t nids = (size_t)(argc - optind);
  if ((sel.all ? 1 : 0) + (sel.domain ? 1 : 0) + (nids ? 1 : 0) != 1)
    return usage("%s takes IDs, or --all, or --domain D (one of them)", name);
  sel.ids = (const char *const *)argv + optind;
  sel.n_ids = nids;
  if (!(q = open_queue(dir)))
    return EXIT_FAIL;
  int status = EXIT_OK;
  /* Name unknown ids before changing anything, so the message is useful. */
  for (size_t i = 0; i < nids; i++) {
    struct queue_env *e;
    int rc = queue_id_valid(sel.ids[i])
                 ? queue_msg_load(q, sel.ids[i], &e, NULL, NULL)
                 : POSTERN_ENOENT;
    if (rc == 0) {
      queue_env_free(e);
    } else {
      fprintf(stderr, "qtool: %s: ", name);
      put_text(stderr, sel.ids[i]);
      fprintf(stderr, ": %s\n",
              rc == POSTERN_ENOENT ? "unknown id" : postern_strerror(rc));
      status = EXIT_FAIL;
    }
  }
  size_t changed = 0, unknown = 0;
  int rc = queue_admin(q, op, &sel, &changed, &unknown);
  queue_close(q);
  if (rc) {
    fprintf(stderr, "qtool: %s: %s (%zu changed before the error)\n", name,
            postern_strerror(rc), changed);
    return EXIT_FAIL;
  }
  static const char *const past[] = {"held", "released", "made due", "deleted"};
  printf("%s %zu message%s\n", past[op], changed, changed == 1 ? "" : "s");
  if (unknown)
    status = EXIT_FAIL;
  return status;
}

int main(int argc, char **argv) {
  const char *dir = DEFAULT_STATE_DIR;
  int ch;
  while ((ch = getopt(argc, argv, "+d:c:h")) != -1) {
    switch (ch) {
    case 'd':
      dir = optarg;
      break;
    case 'c': {
      struct config_error err;
      if (config_load(optarg, &cfg, &err) != 0) {
        char msg[2048];
        config_error_format(&err, msg, sizeof msg);
        fprintf(stderr, "qtool: %s\n", msg);
        return EXIT_FAIL;
      }
      dir = cfg->state_dir;
      break;
    }
    case 'h':
      fputs(usage_text, stdout);
      return EXIT_OK;
    default:
      return usage(NULL, NULL);
    }
  }
  if (optind >= argc)
    return usage("no command given", NULL);
  const char *cmd = argv[optind];
  int sub_argc = argc - optind;
  char **sub_argv = argv + optind;

  enum queue_admin_op op;
  enum { LIST, SHOW, STATS, ADMIN, BOUNCE, TLSRPT, CLUSTER } kind;
  if (strcmp(cmd, "list") == 0)
    kind = LIST;
  else if (strcmp(cmd, "show") == 0)
    kind = SHOW;
  else if (strcmp(cmd, "stats") == 0)
    kind = STATS;
  else if (strcmp(cmd, "hold") == 0)
    kind = ADMIN, op = QUEUE_ADMIN_HOLD;
  else if (strcmp(cmd, "release") == 0)
    kind = ADMIN, op = QUEUE_ADMIN_RELEASE;
  else if (strcmp(cmd, "retry") == 0)
    kind = ADMIN, op = QUEUE_ADMIN_RETRY;
  else if (strcmp(cmd, "delete") == 0)
    kind = ADMIN, op = QUEUE_ADMIN_DELETE;
  else if (strcmp(cmd, "bounce") == 0)
    kind = BOUNCE;
  else if (strcmp(cmd, "tlsrpt") == 0)
    kind = TLSRPT;
  else if (strcmp(cmd, "cluster") == 0)
    kind = CLUSTER;
  else
    return usage("unknown command '%s'", cmd);

  optind = 0; /* GNU: reinitialize; each command parses its own options from
                 argv[0] = name */
  int rc;
  switch (kind) {
  case LIST:
    rc = cmd_list(dir, sub_argc, sub_argv);
    break;
  case SHOW:
    rc = cmd_show(dir, sub_argc, sub_argv);
    break;
  case STATS:
    rc = cmd_stats(dir, sub_argc, sub_argv);
    break;
  case TLSRPT:
    rc = qtool_tlsrpt(dir, sub_argc, sub_argv);
    break;
  case CLUSTER:
    rc = qtool_cluster(sub_argc, sub_argv);
    break;
  case BOUNCE:
    rc = cmd_bounce(dir, sub_argc, sub_argv);
    break;
  case ADMIN:
  default:
    rc = cmd_admin(dir, op, cmd, sub_argc, sub_argv);
    break;
  }
  if (fflush(stdout) != 0 && rc == EXIT_OK)
    rc = EXIT_FAIL;
  config_free(cfg);
  return rc;
}
