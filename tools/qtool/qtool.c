/*
 * qtool - read and change Postern's queue, with or without a running relay.
 *
 *   qtool [-d STATE_DIR] COMMAND [ARGS]
 *
 * Every command opens the queue with no_create (a wrong path is an error,
 * never a new empty queue) and works through LMDB's multi-process locking,
 * so a running relay sees changes at its next due scan (within a second).
 * Listing reads pages of envelopes in short read transactions and prints
 * between them: no transaction is held while writing to a slow terminal.
 *
 * Exit status: 0 success, 1 an id is unknown or the queue cannot be opened
 * or changed, 2 usage error. Text from the network (addresses, replies) is
 * printed with non-printable bytes escaped, as \xHH, and JSON strings are
 * escaped so the output is valid JSON whatever the bytes.
 */
#include "postern_err.h"
#include "queue/queue.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_STATE_DIR "/var/lib/postern"
#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: qtool [-d STATE_DIR] COMMAND [ARGS]\n"
    "  list [--json] [--domain D] [--state active|deferred|held]\n"
    "       [--older-than DURATION] [--limit N]\n"
    "  show ID [--json] [--body]\n"
    "  stats [--json] [--top N]\n"
    "  hold|release|retry|delete ID...|--all|--domain D\n";

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

static void put_text(FILE *f, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p >= 0x20 && *p < 0x7f && *p != '\\')
      fputc(*p, f);
    else if (*p == '\\')
      fputs("\\\\", f);
    else
      fprintf(f, "\\x%02X", *p);
  }
}

static void put_json_str(const char *s) {
  putchar('"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"':
      fputs("\\\"", stdout);
      break;
    case '\\':
      fputs("\\\\", stdout);
      break;
    default:
      /* Control bytes and bytes >= 0x80 (maybe not UTF-8) as \u00XX. */
      if (*p < 0x20 || *p >= 0x7f)
        printf("\\u%04x", *p);
      else
        putchar(*p);
    }
  }
  putchar('"');
}

/* "3d4h", "12m", "45s", "0s"; ms rounded down to seconds. */
static void fmt_duration(char *buf, size_t cap, uint64_t ms) {
  uint64_t s = ms / 1000;
  if (s >= 86400)
    snprintf(buf, cap, "%" PRIu64 "d%" PRIu64 "h", s / 86400, s % 86400 / 3600);
  else if (s >= 3600)
    snprintf(buf, cap, "%" PRIu64 "h%" PRIu64 "m", s / 3600, s % 3600 / 60);
  else if (s >= 60)
    snprintf(buf, cap, "%" PRIu64 "m%" PRIu64 "s", s / 60, s % 60);
  else
    snprintf(buf, cap, "%" PRIu64 "s", s);
}

/* Parses "90", "30s", "5m", "2h", "5d" into ms. Returns 0 or -1. */
static int parse_duration(const char *s, uint64_t *ms) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *s == '-')
    return -1;
  uint64_t unit = 1000;
  if (*end) {
    switch (*end) {
    case 's':
      unit = 1000;
      break;
    case 'm':
      unit = 60000;
      break;
    case 'h':
      unit = 3600000;
      break;
    case 'd':
      unit = 86400000;
      break;
    default:
      return -1;
    }
    if (end[1])
      return -1;
  }
  if (v > UINT64_MAX / unit / 1000)
    return -1;
  *ms = v * unit;
  return 0;
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

/* ---- list --------------------------------------------------------------- */

struct list_ctx {
  bool json;
  bool have_state;
  enum queue_msg_state state;
  uint64_t cutoff; /* arrival must be <= this; UINT64_MAX = no filter */
  size_t limit;    /* 0 = no limit */
  size_t printed;
  uint64_t now;
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
    printf("%s{\"id\":\"%s\",\"state\":\"%s\",\"arrival_ms\":%" PRIu64
           ",\"age_s\":%" PRIu64 ",\"size\":%" PRIu64 ",\"sender\":",
           c->printed ? ",\n" : "", e->id, queue_msg_state_name(e->state),
           e->arrival_ms, age / 1000, e->size);
    put_json_str(e->sender);
    printf(",\"recipients\":%zu,\"recipients_left\":%zu,\"next_attempt_ms\":"
           "%" PRIu64 ",\"last_status\":",
           e->n_rcpts, rcpts_left(e), e->next_ms);
    put_json_str(la ? la->status : "");
    fputs(",\"last_reply\":", stdout);
    put_json_str(la ? la->reply : "");
    putchar('}');
  } else {
    char agebuf[32], nextbuf[40];
    fmt_duration(agebuf, sizeof agebuf, age);
    if (e->state == QUEUE_MSG_HELD) {
      snprintf(nextbuf, sizeof nextbuf, "held");
    } else if (e->next_ms <= c->now) {
      snprintf(nextbuf, sizeof nextbuf, "now");
    } else {
      char d[32];
      fmt_duration(d, sizeof d, e->next_ms - c->now);
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
      if (parse_duration(optarg, &d))
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
    fputs(c.printed ? "\n]\n" : "]\n", stdout);
  queue_close(q);
  if (rc) {
    fprintf(stderr, "qtool: list: %s\n", postern_strerror(rc));
    return EXIT_FAIL;
  }
  return EXIT_OK;
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
    printf("{\"id\":\"%s\",\"state\":\"%s\",\"arrival_ms\":%" PRIu64
           ",\"age_s\":%" PRIu64 ",\"size\":%" PRIu64
           ",\"next_attempt_ms\":%" PRIu64 ",\"sender\":",
           e->id, queue_msg_state_name(e->state), e->arrival_ms,
           now > e->arrival_ms ? (now - e->arrival_ms) / 1000 : 0, e->size,
           e->next_ms);
    put_json_str(e->sender);
    fputs(",\"ret\":", stdout);
    put_json_str(ret_name(e->ret));
    fputs(",\"envid\":", stdout);
    put_json_str(e->envid);
    fputs(",\"client_addr\":", stdout);
    put_json_str(e->client_addr);
    fputs(",\"client_helo\":", stdout);
    put_json_str(e->client_helo);
    printf(",\"delay_warned\":%s,\"recipients\":[",
           e->delay_warned ? "true" : "false");
    for (size_t i = 0; i < e->n_rcpts; i++) {
      const struct queue_rcpt *r = &e->rcpts[i];
      notify_str(nb, sizeof nb, r->notify);
      printf("%s{\"addr\":", i ? "," : "");
      put_json_str(r->addr);
      printf(",\"state\":\"%s\",\"attempts\":%u,\"next_attempt_ms\":%" PRIu64
             ",\"last_attempt_ms\":%" PRIu64 ",\"status\":",
             queue_rcpt_state_name(r->state), r->attempts, r->next_ms,
             r->last_ms);
      put_json_str(r->status);
      fputs(",\"reply\":", stdout);
      put_json_str(r->reply);
      fputs(",\"notify\":", stdout);
      put_json_str(nb);
      fputs(",\"orcpt\":", stdout);
      put_json_str(r->orcpt);
      putchar('}');
    }
    putchar(']');
    if (body) {
      /* The body as a JSON string (bytes >= 0x80 as \u00XX). */
      char *z = malloc(blen + 1);
      if (z) {
        memcpy(z, b, blen);
        z[blen] = '\0';
        fputs(",\"body\":", stdout);
        put_json_str(z);
        free(z);
      }
    }
    puts("}");
  } else {
    char age[32];
    fmt_duration(age, sizeof age,
                 now > e->arrival_ms ? now - e->arrival_ms : 0);
    printf("id: %s\nstate: %s\nage: %s\nsize: %" PRIu64 "\nsender: <", e->id,
           queue_msg_state_name(e->state), age, e->size);
    put_text(stdout, e->sender);
    printf(">\nclient: ");
    put_text(stdout, e->client_addr[0] ? e->client_addr : "-");
    printf(" helo=");
    put_text(stdout, e->client_helo[0] ? e->client_helo : "-");
    printf("\nret: %s\nenvid: ", e->ret ? ret_name(e->ret) : "-");
    put_text(stdout, e->envid[0] ? e->envid : "-");
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
          fmt_duration(d, sizeof d, r->next_ms - now);
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
  if (json) {
    printf(
        "{\"messages\":%" PRIu64 ",\"active\":%" PRIu64 ",\"deferred\":%" PRIu64
        ",\"held\":%" PRIu64 ",\"recipients\":%" PRIu64 ",\"bytes\":%" PRIu64
        ",\"oldest_age_s\":%" PRIu64 ",\"domain_count\":%" PRIu64
        ",\"db_used_bytes\":%" PRIu64 ",\"map_size\":%" PRIu64 ",\"domains\":[",
        st.messages, st.by_state[QUEUE_MSG_ACTIVE],
        st.by_state[QUEUE_MSG_DEFERRED], st.by_state[QUEUE_MSG_HELD],
        st.recipients, st.bytes, oldest / 1000, st.domains, st.db_used_bytes,
        st.map_size);
    for (size_t i = 0; i < st.n_top; i++) {
      printf("%s{\"domain\":", i ? "," : "");
      put_json_str(st.top[i].domain);
      printf(",\"messages\":%" PRIu64 "}", st.top[i].messages);
    }
    puts("]}");
  } else {
    char age[32];
    fmt_duration(age, sizeof age, oldest);
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
    case 'c':
      return usage("-c CONFIG is not available yet; use -d STATE_DIR", NULL);
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
  enum { LIST, SHOW, STATS, ADMIN } kind;
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
  case ADMIN:
  default:
    rc = cmd_admin(dir, op, cmd, sub_argc, sub_argv);
    break;
  }
  if (fflush(stdout) != 0 && rc == EXIT_OK)
    rc = EXIT_FAIL;
  return rc;
}
