/*
 * tests/redis/redis_drive.c - test driver for net/redis: one client on one
 * libuv loop, driven by lines on stdin, answering one JSON object per line
 * on stdout, for tests/redis/redis_client_test.py.
 *
 * usage: redis_drive URL [key_prefix] [command_timeout_ms]
 * stdin lines (an id first, echoed back):
 *   ID cmd ARG...                      raw command (argv form)
 *   ID acquire KEY HOLDER LIMIT TTL    redis_lease_acquire
 *   ID renew KEY HOLDER TTL            redis_lease_renew
 *   ID release KEY HOLDER              redis_lease_release
 *   ID gcra KEY RATE BURST             redis_gcra
 *   ID gcrarun KEY RATE BURST SECONDS  redis_gcra in a loop, honouring the
 *                                      wait; prints allowed and denied counts
 *   ID quit                            closes the client and exits
 * State changes print {"event":"state","up":BOOL}. Every answer carries
 * "sync": whether its callback ran inside the call that started it.
 */
#include "base/postern_err.h"
#include "net/redis.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

static uv_loop_t *loop;
static struct redis_client *client;
static uv_pipe_t in;
static char line[8192];
static size_t line_len;
static bool in_call; /* inside a call that starts an operation */

struct op {
  char id[32];
  bool sync;
  /* gcrarun */
  char key[256];
  double rate;
  unsigned burst;
  uint64_t end;
  long allowed, denied;
  uint64_t first, last;
  uv_timer_t t;
};

static void json_str(const char *s, size_t n) {
  putchar('"');
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20 || ch >= 0x7f)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

static void print_value(const struct redis_value *v) {
  size_t n;
  const char *s;
  switch (redis_value_type(v)) {
  case REDIS_V_INT:
    printf("%lld", redis_value_int(v));
    break;
  case REDIS_V_STR:
  case REDIS_V_STATUS:
  case REDIS_V_ERROR:
    s = redis_value_str(v, &n);
    json_str(s, n);
    break;
  case REDIS_V_ARRAY:
    putchar('[');
    for (size_t i = 0; i < redis_value_count(v); i++) {
      if (i)
        putchar(',');
      print_value(redis_value_at(v, i));
    }
    putchar(']');
    break;
  default:
    printf("null");
  }
}

static void head(struct op *o, int status) {
  printf("{\"id\":\"%s\",\"status\":\"%s\",\"sync\":%s", o->id,
         postern_err_name(status), o->sync ? "true" : "false");
}

static void cmd_cb(struct redis_client *c, const struct redis_result *r,
                   void *arg) {
  struct op *o = arg;
  o->sync = in_call;
  head(o, r->status);
  if (r->value) {
    printf(",\"value\":");
    print_value(r->value);
  }
  printf("}\n");
  fflush(stdout);
  free(o);
}

static void lease_cb(struct redis_client *c, const struct redis_lease_result *r,
                     void *arg) {
  struct op *o = arg;
  o->sync = in_call;
  head(o, r->status);
  printf(",\"granted\":%s,\"count\":%lld}\n", r->granted ? "true" : "false",
         r->count);
  fflush(stdout);
  free(o);
}

static void gcra_cb(struct redis_client *c, const struct redis_gcra_result *r,
                    void *arg) {
  struct op *o = arg;
  o->sync = in_call;
  head(o, r->status);
  printf(",\"allowed\":%s,\"wait_ms\":%lld}\n", r->allowed ? "true" : "false",
         r->wait_ms);
  fflush(stdout);
  free(o);
}

static void run_next(uv_timer_t *t);

static void run_closed(uv_handle_t *h) {
  free(h->data);
}

static void run_cb(struct redis_client *c, const struct redis_gcra_result *r,
                   void *arg) {
  struct op *o = arg;
  uint64_t now = uv_now(loop);
  unsigned delay = 0;
  if (in_call)
    o->sync = true;
  if (r->status == 0 && r->allowed) {
    if (o->allowed == 0)
      o->first = uv_hrtime();
    o->last = uv_hrtime();
    o->allowed++;
  } else if (r->status == 0) {
    o->denied++;
    delay = (unsigned)r->wait_ms;
  } else {
    delay = 10;
  }
  if (now >= o->end) {
    head(o, 0);
    printf(",\"allowed\":%ld,\"denied\":%ld,\"span_ms\":%.1f}\n", o->allowed,
           o->denied, (double)(o->last - o->first) / 1e6);
    fflush(stdout);
    uv_close((uv_handle_t *)&o->t, run_closed);
    return;
  }
  uv_timer_start(&o->t, run_next, delay, 0);
}

static void run_next(uv_timer_t *t) {
  struct op *o = t->data;
  in_call = true;
  int rc = redis_gcra(client, o->key, o->rate, o->burst, run_cb, o);
  in_call = false;
  if (rc != 0) {
    head(o, rc);
    printf("}\n");
    fflush(stdout);
    uv_close((uv_handle_t *)&o->t, run_closed);
  }
}

static void state_cb(struct redis_client *c, bool up, void *arg) {
  printf("{\"event\":\"state\",\"up\":%s,\"sync\":%s}\n", up ? "true" : "false",
         in_call ? "true" : "false");
  fflush(stdout);
}

static void closed_cb(void *arg) {
  printf("{\"event\":\"closed\"}\n");
  fflush(stdout);
}

static void in_closed(uv_handle_t *h) {}

static void do_line(char *s) {
  char *argv[64];
  int argc = 0;
  for (char *tok = strtok(s, " "); tok && argc < 64; tok = strtok(NULL, " "))
    argv[argc++] = tok;
  if (argc < 2)
    return;
  struct op *o = calloc(1, sizeof *o);
  snprintf(o->id, sizeof o->id, "%s", argv[0]);
  const char *verb = argv[1];
  int rc = POSTERN_EINVAL;
  in_call = true;
  if (strcmp(verb, "cmd") == 0 && argc >= 3) {
    rc = redis_command_argv(client, 0, cmd_cb, o, argc - 2,
                            (const char **)argv + 2, NULL);
  } else if (strcmp(verb, "acquire") == 0 && argc == 6) {
    rc = redis_lease_acquire(client, argv[2], argv[3], (unsigned)atoi(argv[4]),
                             (unsigned)atoi(argv[5]), lease_cb, o);
  } else if (strcmp(verb, "renew") == 0 && argc == 5) {
    rc = redis_lease_renew(client, argv[2], argv[3], (unsigned)atoi(argv[4]),
                           lease_cb, o);
  } else if (strcmp(verb, "release") == 0 && argc == 4) {
    rc = redis_lease_release(client, argv[2], argv[3], lease_cb, o);
  } else if (strcmp(verb, "gcra") == 0 && argc == 5) {
    rc = redis_gcra(client, argv[2], atof(argv[3]), (unsigned)atoi(argv[4]),
                    gcra_cb, o);
  } else if (strcmp(verb, "gcrarun") == 0 && argc == 6) {
    snprintf(o->key, sizeof o->key, "%s", argv[2]);
    o->rate = atof(argv[3]);
    o->burst = (unsigned)atoi(argv[4]);
    o->end = uv_now(loop) + (uint64_t)(atof(argv[5]) * 1000);
    uv_timer_init(loop, &o->t);
    o->t.data = o;
    uv_timer_start(&o->t, run_next, 0, 0);
    rc = 0;
  } else if (strcmp(verb, "quit") == 0) {
    free(o);
    in_call = false;
    redis_client_close(client, closed_cb, NULL);
    uv_close((uv_handle_t *)&in, in_closed);
    return;
  }
  in_call = false;
  if (rc != 0) {
    head(o, rc);
    printf("}\n");
    fflush(stdout);
    free(o);
  }
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  static char buf[4096];
  b->base = buf;
  b->len = sizeof buf;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  if (n < 0) {
    uv_read_stop(s);
    return;
  }
  for (ssize_t i = 0; i < n; i++) {
    char ch = b->base[i];
    if (ch == '\n') {
      line[line_len] = '\0';
      line_len = 0;
      do_line(line);
      if (uv_is_closing((uv_handle_t *)&in))
        return;
    } else if (line_len + 1 < sizeof line) {
      line[line_len++] = ch;
    }
  }
}

int main(int argc, char **argv) {
  struct redis_opts o;
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    fprintf(stderr, "usage: redis_drive URL [prefix] [timeout_ms]\n");
    return 2;
  }
  loop = uv_default_loop();
  redis_opts_init(&o);
  int rc = redis_url_parse(argv[1], &o.url);
  if (rc != 0) {
    printf("{\"event\":\"url\",\"status\":\"%s\"}\n", postern_err_name(rc));
    return 1;
  }
  if (argc > 2)
    snprintf(o.key_prefix, sizeof o.key_prefix, "%s", argv[2]);
  if (argc > 3)
    o.command_timeout_ms = (unsigned)atoi(argv[3]);
  o.connect_timeout_ms = 500;
  o.reconnect_min_ms = 50;
  o.reconnect_max_ms = 400;
  o.state_cb = state_cb;
  in_call = true;
  rc = redis_client_new(loop, &o, &client);
  in_call = false;
  if (rc != 0) {
    printf("{\"event\":\"new\",\"status\":\"%s\"}\n", postern_err_name(rc));
    return 1;
  }
  uv_pipe_init(loop, &in, 0);
  uv_pipe_open(&in, 0);
  uv_read_start((uv_stream_t *)&in, alloc_cb, read_cb);
  uv_run(loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(loop);
  printf("{\"event\":\"exit\",\"loop_close\":%d}\n", rc);
  return rc == 0 ? 0 : 1;
}
