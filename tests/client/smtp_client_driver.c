/*
 * tests/client/smtp_client_driver.c - a small command-line driver of the
 * SMTP client for the integration tests: it opens one or more sessions on a
 * libuv loop, sends the given messages on each, and prints one JSON object
 * per event on standard output (ready, sent, closed), which the Python test
 * checks against what the peer received.
 *
 *   smtp_client_driver --connect 127.0.0.1:PORT --mx mx.test
 *       [--ca FILE] [--no-starttls] [--local-ip IP] [--helo NAME]
 *       [--from ADDR] [--rcpt ADDR [--notify N] [--orcpt O]]...
 *       [--ret FULL|HDRS] [--envid ID] [--smtputf8] [--requiretls]
 *       [--body-file F]...
 *       [--sessions N] [--chain]
 *       [--connect-timeout MS] [--command-timeout MS] [--data-timeout MS]
 *       [--debug]
 *
 * Each --body-file is one message; they go out in order on one session
 * (connection reuse). --sessions N repeats the whole session N times with
 * one TLS context (session resumption). --chain queues each message behind
 * the one in progress with smtp_client_send_next (the first one with
 * smtp_client_send); after a failure the driver waits for the chained
 * message's callback before closing. Exits 0 unless the driver itself
 * failed (bad arguments, unreadable files); delivery outcomes are output.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "net/smtp_client.h"
#include "net/tls.h"
#include "base/postern_err.h"
#include "base/postern_json.h"
#include "base/postern_log.h"

#define MAX_RCPTS 64
#define MAX_BODIES 16

struct body {
  char *data;
  size_t len;
};

static struct {
  uv_loop_t loop;
  struct sockaddr_storage addr, local;
  bool has_local;
  const char *mx, *helo, *ca, *from, *ret, *envid;
  bool starttls, smtputf8, requiretls, chain;
  struct smtp_rcpt rcpts[MAX_RCPTS];
  size_t nrcpts;
  struct body bodies[MAX_BODIES];
  size_t nbodies;
  int sessions;
  struct smtp_client_opts opts;
  struct tls_ctx *tls;
  /* progress */
  int session;
  size_t next_body; /* messages handed to the client so far */
  struct smtp_message msg[MAX_BODIES];
} g;

/* Output is one JSON object per line (jansson, base/postern_json.h). */
static void put_line(json_t *o) {
  if (o == NULL) {
    fputs("smtp_client_driver: out of memory building JSON\n", stderr);
    exit(1);
  }
  postern_json_print(o, stdout, 1);
  fflush(stdout);
  json_decref(o);
}

static json_t *json_reply(const struct smtp_reply *r) {
  return json_pack("{s:i, s:o, s:o, s:I}", "code", r->code, "enh",
                   postern_json_cstr(r->enh), "text",
                   postern_json_cstr(r->text), "lines", (json_int_t)r->lines);
}

static void start_session(void);

static void on_closed(struct smtp_client *c, void *arg) {
  put_line(json_pack("{s:s, s:i}", "event", "closed", "session", g.session));
  if (++g.session < g.sessions) {
    start_session();
  }
}

static const char *outcome_name(enum smtp_outcome o) {
  return o == SMTP_OUTCOME_OK ? "ok" : o == SMTP_OUTCOME_TEMP ? "temp" : "perm";
}

static void send_next(struct smtp_client *c);

static void on_sent(struct smtp_client *c, int status,
                    const struct smtp_send_result *res, void *arg) {
  size_t index = (size_t)(uintptr_t)arg;
  json_t *rcpts = json_array();
  for (size_t i = 0; rcpts && i < res->nrcpts; i++) {
    const struct smtp_result *r = &res->rcpt[i];
    json_array_append_new(rcpts, json_pack("{s:o, s:s, s:b, s:o, s:o}", "addr",
                                           postern_json_cstr(g.rcpts[i].addr),
                                           "outcome", outcome_name(r->outcome),
                                           "remote", r->remote, "stage",
                                           postern_json_cstr(r->stage), "reply",
                                           json_reply(&r->reply)));
  }
  put_line(json_pack("{s:s, s:i, s:I, s:s, s:I, s:I, s:o}", "event", "sent",
                     "session", g.session, "message", (json_int_t)index,
                     "status", postern_err_name(status), "accepted",
                     (json_int_t)res->accepted, "messages",
                     (json_int_t)smtp_client_messages(c), "rcpts", rcpts));
  if (status < 0) {
    /* A chained message still gets its own (failed) callback. */
    if (!(g.chain && index + 1 < g.next_body)) {
      smtp_client_close(c, on_closed, NULL);
    }
    return;
  }
  if (g.chain && index + 1 < g.next_body) {
    /* The chained message is now in progress: chain the one after it. */
    if (g.next_body < g.nbodies) {
      send_next(c);
    }
    return;
  }
  send_next(c);
}

static void send_next(struct smtp_client *c) {
  if (g.next_body >= g.nbodies) {
    smtp_client_close(c, on_closed, NULL);
    return;
  }
  size_t index = g.next_body++;
  struct body *b = &g.bodies[index];
  g.msg[index] = (struct smtp_message){
      .sender = g.from,
      .ret = g.ret,
      .envid = g.envid,
      .smtputf8 = g.smtputf8,
      .requiretls = g.requiretls,
      .rcpts = g.rcpts,
      .nrcpts = g.nrcpts,
      .body = b->data,
      .body_len = b->len,
  };
  bool chained =
      g.chain && index > 0 && smtp_client_state(c) != SMTP_CLIENT_READY;
  int rc = chained ? smtp_client_send_next(c, &g.msg[index], on_sent,
                                           (void *)(uintptr_t)index)
                   : smtp_client_send(c, &g.msg[index], on_sent,
                                      (void *)(uintptr_t)index);
  if (rc < 0) {
    put_line(json_pack("{s:s, s:s}", "event", "send_error", "status",
                       postern_err_name(rc)));
    smtp_client_close(c, on_closed, NULL);
    return;
  }
  if (g.chain && !chained && g.next_body < g.nbodies) {
    send_next(c); /* chain the second behind the first */
  }
}

static void on_ready(struct smtp_client *c, int status,
                     const struct smtp_client_facts *f, void *arg) {
  size_t chain = f->tls ? tls_conn_peer_chain_len(f->tls) : 0;
  size_t leaf_len = 0;
  if (chain > 0) {
    const uint8_t *der;
    if (tls_conn_peer_cert_der(f->tls, 0, &der, &leaf_len) < 0 ||
        leaf_len < 16 || der[0] != 0x30) {
      leaf_len = 0; /* not DER: the test will notice */
    }
  }
  put_line(json_pack(
      "{s:s, s:i, s:s, s:s, s:s, s:o, s:b, s:b, s:b, s:o, s:I, s:I, s:b, s:I, "
      "s:s, s:o}",
      "event", "ready", "session", g.session, "status",
      postern_err_name(status), "tls", smtp_tls_level_name(f->tls_level),
      "starttls", smtp_starttls_name(f->starttls), "tls_error",
      postern_json_cstr(f->tls_error), "pkix_ok", f->verify.pkix_ok, "name_ok",
      f->verify.name_ok, "resumed", f->tls_resumed, "version",
      postern_json_cstr(f->tls_version ? f->tls_version : ""), "chain_len",
      (json_int_t)chain, "leaf_der_len", (json_int_t)leaf_len, "esmtp",
      f->esmtp, "caps", (json_int_t)f->caps, "failed_state",
      smtp_client_state_name(f->failed_state), "last_reply",
      json_reply(f->last_reply)));
  if (status < 0) {
    smtp_client_close(c, on_closed, NULL);
    return;
  }
  send_next(c);
}

static void start_session(void) {
  g.next_body = 0;
  struct smtp_client *c;
  int rc = smtp_client_connect(&c, &g.loop, &g.opts,
                               (const struct sockaddr *)&g.addr, g.mx, on_ready,
                               NULL);
  if (rc < 0) {
    fprintf(stderr, "smtp_client_connect: %s\n", postern_strerror(rc));
    exit(2);
  }
}

static int parse_addr(const char *s, struct sockaddr_storage *out,
                      bool with_port) {
  char host[64];
  int port = 0;
  if (with_port) {
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) {
      return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    port = atoi(colon + 1);
  } else {
    snprintf(host, sizeof host, "%s", s);
  }
  char *h = host;
  size_t hl = strlen(h);
  if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
    h[hl - 1] = '\0';
    h++;
  }
  if (uv_ip4_addr(h, port, (struct sockaddr_in *)out) == 0) {
    return 0;
  }
  return uv_ip6_addr(h, port, (struct sockaddr_in6 *)out) == 0 ? 0 : -1;
}

static int read_file(const char *path, struct body *b) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    return -1;
  }
  size_t cap = 4096;
  b->data = malloc(cap);
  b->len = 0;
  size_t n;
  while ((n = fread(b->data + b->len, 1, cap - b->len, f)) > 0) {
    b->len += n;
    if (b->len == cap) {
      cap *= 2;
      b->data = realloc(b->data, cap);
    }
  }
  fclose(f);
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: smtp_client_driver --connect IP:PORT --mx NAME "
                  "[options] (see the source)\n");
  exit(2);
}

int main(int argc, char **argv) {
  g.helo = "driver.test";
  g.from = "sender@driver.test";
  g.starttls = true;
  g.sessions = 1;
  bool have_addr = false, debug = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, true))
    if (ARG("--connect")) {
      if (parse_addr(v, &g.addr, true) < 0) {
        usage();
      }
      have_addr = true;
    } else if (ARG("--local-ip")) {
      if (parse_addr(v, &g.local, false) < 0) {
        usage();
      }
      g.has_local = true;
    } else if (ARG("--mx")) {
      g.mx = v;
    } else if (ARG("--helo")) {
      g.helo = v;
    } else if (ARG("--ca")) {
      g.ca = v;
    } else if (ARG("--from")) {
      g.from = v;
    } else if (ARG("--rcpt")) {
      if (g.nrcpts == MAX_RCPTS) {
        usage();
      }
      g.rcpts[g.nrcpts++].addr = v;
    } else if (ARG("--notify")) {
      if (g.nrcpts == 0) {
        usage();
      }
      g.rcpts[g.nrcpts - 1].notify = v;
    } else if (ARG("--orcpt")) {
      if (g.nrcpts == 0) {
        usage();
      }
      g.rcpts[g.nrcpts - 1].orcpt = v;
    } else if (ARG("--ret")) {
      g.ret = v;
    } else if (ARG("--envid")) {
      g.envid = v;
    } else if (ARG("--body-file")) {
      if (g.nbodies == MAX_BODIES || read_file(v, &g.bodies[g.nbodies]) < 0) {
        fprintf(stderr, "cannot read %s\n", v);
        return 2;
      }
      g.nbodies++;
    } else if (ARG("--sessions")) {
      g.sessions = atoi(v);
    } else if (ARG("--connect-timeout")) {
      g.opts.connect_timeout_ms = strtoull(v, NULL, 10);
    } else if (ARG("--command-timeout")) {
      g.opts.command_timeout_ms = strtoull(v, NULL, 10);
    } else if (ARG("--data-timeout")) {
      g.opts.data_timeout_ms = strtoull(v, NULL, 10);
    } else if (strcmp(a, "--no-starttls") == 0) {
      g.starttls = false;
    } else if (strcmp(a, "--chain") == 0) {
      g.chain = true;
    } else if (strcmp(a, "--smtputf8") == 0) {
      g.smtputf8 = true;
    } else if (strcmp(a, "--requiretls") == 0) {
      g.requiretls = true;
    } else if (strcmp(a, "--debug") == 0) {
      debug = true;
    } else {
      usage();
    }
#undef ARG
  }
  if (!have_addr || !g.mx || (g.nbodies > 0 && g.nrcpts == 0)) {
    usage();
  }
  postern_log_configure(debug ? POSTERN_LOG_DEBUG : POSTERN_LOG_WARN,
                        POSTERN_LOG_LOGFMT, NULL);
  if (g.ca) {
    char err[256] = "";
    int rc = tls_ctx_new_client(&g.tls, g.ca, NULL, err, sizeof err);
    if (rc < 0) {
      fprintf(stderr, "tls_ctx_new_client: %s: %s\n", postern_strerror(rc),
              err);
      return 2;
    }
  }
  g.opts.helo_name = g.helo;
  g.opts.tls_ctx = g.tls;
  g.opts.starttls = g.starttls && g.tls;
  if (g.has_local) {
    g.opts.local_addr = (const struct sockaddr *)&g.local;
  }
  /* libuv writes with write(2): a peer that hangs up mid-body would kill
   * us with SIGPIPE. Every process using the client must ignore it. */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_init(&g.loop);
  start_session();
  uv_run(&g.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&g.loop) != 0) {
    fprintf(stderr, "loop still has handles\n");
    return 3;
  }
  put_line(json_pack("{s:s, s:I}", "event", "done", "cached_sessions",
                     (json_int_t)(g.tls ? tls_ctx_session_count(g.tls) : 0)));
  tls_ctx_free(g.tls);
  for (size_t i = 0; i < g.nbodies; i++) {
    free(g.bodies[i].data);
  }
  return 0;
}
