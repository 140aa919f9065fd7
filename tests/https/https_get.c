/*
 * tests/https/https_get.c - test driver for net/https: runs GETs (or POSTs)
 * on one libuv loop and prints one JSON object per URL, in argument order,
 * for tests/https/https_fetch_test.py to check.
 *
 *   https_get [--resolve ADDR]... [--port N] [--ca FILE] [--timeout MS]
 *             [--max BYTES] [--text-plain] [--cancel-first]
 *             [--close-after MS] [--post FILE] [--content-type TYPE] URL...
 *
 * --post makes every request a POST of FILE's bytes (an empty file: an
 * empty body), with --content-type as its media type (passed as given, so
 * a test can try a bad one; --content-type alone sets it on a GET, which
 * must be refused).
 *
 * Every URL is fetched at once with the same options. --resolve gives the
 * addresses (IPv4 or IPv6 literals) the URL's host stands for; without one
 * the fetch is started with no address. --cancel-first cancels the first
 * fetch right after starting it; --close-after closes the client MS
 * milliseconds after the start, with whatever is still pending.
 *
 * A fetch that fails to start prints {"start":"NAME"}; one that completes
 * prints its result: {"status":"OK"|"TIMEOUT"|..., "code":200, ...}.
 *
 * The driver also checks the event-loop contract itself: it exits 3 if a
 * callback runs inside https_fetch()/https_fetch_cancel() or twice for one
 * fetch, and 4 if the client's close callback never ran.
 */
#include "net/https.h"

#include "base/postern_err.h"
#include "base/postern_json.h"
#include "base/postern_log.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_URLS 16
#define BODY_PRINT_MAX 1024
#define POST_FILE_MAX (HTTPS_BODY_MAX_LIMIT + 1)

struct job {
  const char *url;
  int start_rc;
  int done;
  char *json;
};

static int in_call;
static int closed;
static int bad;
static struct https_client *client;

/* A string or JSON null (jansson, base/postern_json.h). */
static json_t *jcstr(const char *s) {
  return s ? postern_json_cstr(s) : json_null();
}

static void fetch_cb(const struct https_result *res, void *arg) {
  struct job *j = arg;
  if (in_call || j->done)
    bad = 1;
  j->done++;
  json_t *o = json_pack(
      "{s:o, s:I, s:o, s:I, s:o, s:b, s:o, s:o, s:o}", "status",
      jcstr(postern_err_name(res->status)), "code", (json_int_t)res->http_code,
      "content_type", jcstr(res->content_type), "body_len",
      (json_int_t)res->body_len, "body",
      postern_json_str((const char *)res->body, res->body_len < BODY_PRINT_MAX
                                                    ? res->body_len
                                                    : BODY_PRINT_MAX),
      "nul_terminated", res->body[res->body_len] == '\0', "error",
      jcstr(res->error), "url", jcstr(res->url), "ip", jcstr(res->ip));
  j->json = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
}

static void closed_cb(void *arg) {
  closed++;
}

static void close_timer_cb(uv_timer_t *t) {
  if (!closed)
    https_client_close(client, closed_cb, NULL);
  client = NULL;
  uv_close((uv_handle_t *)t, NULL);
}

static int add_addr(struct sockaddr_storage *a, const char *s) {
  memset(a, 0, sizeof *a);
  struct sockaddr_in *s4 = (struct sockaddr_in *)a;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)a;
  if (inet_pton(AF_INET, s, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    return 0;
  }
  if (inet_pton(AF_INET6, s, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    return 0;
  }
  return -1;
}

static int usage(void) {
  fprintf(stderr, "usage: https_get [--resolve ADDR]... [--port N] "
                  "[--ca FILE] [--timeout MS] [--max BYTES] [--text-plain] "
                  "[--cancel-first] [--close-after MS] [--post FILE] "
                  "[--content-type TYPE] URL...\n");
  return 2;
}

/* Reads all of `path` (at most POST_FILE_MAX bytes, one over the limit so
 * that a test can see a too large body refused) into a new buffer, never
 * NULL on success, even for an empty file. Returns 0 or -1. */
static int read_file(const char *path, unsigned char **out, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (fp == NULL)
    return -1;
  unsigned char *b = malloc(POST_FILE_MAX + 1);
  size_t n = b ? fread(b, 1, POST_FILE_MAX + 1, fp) : 0;
  int bad = b == NULL || ferror(fp) || n > POST_FILE_MAX;
  fclose(fp);
  if (bad) {
    free(b);
    return -1;
  }
  *out = b;
  *len = n;
  return 0;
}

int main(int argc, char **argv) {
  struct sockaddr_storage addrs[HTTPS_ADDRS_MAX + 2];
  struct job jobs[MAX_URLS];
  struct https_fetch *handles[MAX_URLS];
  struct https_request req;
  size_t naddrs = 0, njobs = 0;
  unsigned char *post = NULL;
  int cancel_first = 0;
  long close_after = -1;
  memset(&req, 0, sizeof req);
  memset(jobs, 0, sizeof jobs);

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--resolve") == 0 && v) {
      if (naddrs == sizeof addrs / sizeof addrs[0] ||
          add_addr(&addrs[naddrs++], v) != 0)
        return usage();
      i++;
    } else if (strcmp(a, "--port") == 0 && v) {
      req.port = (uint16_t)atoi(v);
      i++;
    } else if (strcmp(a, "--ca") == 0 && v) {
      req.ca_file = v;
      i++;
    } else if (strcmp(a, "--timeout") == 0 && v) {
      req.timeout_ms = (unsigned)atol(v);
      i++;
    } else if (strcmp(a, "--max") == 0 && v) {
      req.body_max = (size_t)atol(v);
      i++;
    } else if (strcmp(a, "--text-plain") == 0) {
      req.require_text_plain = true;
    } else if (strcmp(a, "--post") == 0 && v) {
      free(post);
      if (read_file(v, &post, &req.post_len) != 0) {
        fprintf(stderr, "https_get: cannot read %s\n", v);
        return 2;
      }
      req.post_body = post;
      i++;
    } else if (strcmp(a, "--content-type") == 0 && v) {
      req.post_content_type = v;
      i++;
    } else if (strcmp(a, "--cancel-first") == 0) {
      cancel_first = 1;
    } else if (strcmp(a, "--close-after") == 0 && v) {
      close_after = atol(v);
      i++;
    } else if (a[0] == '-' && a[1] == '-') {
      return usage();
    } else if (njobs < MAX_URLS) {
      jobs[njobs++].url = a;
    } else {
      return usage();
    }
  }
  if (njobs == 0)
    return usage();
  req.addrs = naddrs ? addrs : NULL;
  req.naddrs = naddrs;

  postern_log_configure(POSTERN_LOG_DEBUG, POSTERN_LOG_LOGFMT, NULL);
  int rc = https_global_init();
  if (rc != 0) {
    fprintf(stderr, "https_global_init: %s\n", postern_strerror(rc));
    return 1;
  }
  uv_loop_t *loop = uv_default_loop();
  rc = https_client_new(loop, &client);
  if (rc != 0) {
    fprintf(stderr, "https_client_new: %s\n", postern_strerror(rc));
    return 1;
  }
  in_call = 1;
  for (size_t i = 0; i < njobs; i++) {
    req.url = jobs[i].url;
    handles[i] = NULL;
    jobs[i].start_rc =
        https_fetch(client, &req, fetch_cb, &jobs[i], &handles[i]);
  }
  /* https_fetch() copies the body: free it now, so that a fetch still
   * reading it is a use after free (seen under --config=asan). */
  free(post);
  post = NULL;
  if (cancel_first && jobs[0].start_rc == 0) {
    https_fetch_cancel(handles[0]);
    https_fetch_cancel(handles[0]); /* twice is harmless */
  }
  in_call = 0;

  uv_timer_t close_timer;
  if (close_after >= 0) {
    uv_timer_init(loop, &close_timer);
    uv_timer_start(&close_timer, close_timer_cb, (uint64_t)close_after, 0);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  if (client != NULL) {
    https_client_close(client, closed_cb, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
  }

  for (size_t i = 0; i < njobs; i++) {
    json_t *o = NULL;
    if (jobs[i].start_rc != 0) {
      o = json_pack("{s:s}", "start", postern_err_name(jobs[i].start_rc));
    } else if (jobs[i].json) {
      printf("%s\n", jobs[i].json);
      free(jobs[i].json);
    } else {
      o = json_pack("{s:s, s:n}", "start", "OK", "status");
      bad = 1;
    }
    if (o)
      postern_json_print(o, stdout, 1);
    json_decref(o);
  }
  fflush(stdout);
  uv_loop_close(loop);
  https_global_cleanup();
  if (bad)
    return 3;
  if (closed != 1)
    return 4;
  return 0;
}
