/*
 * smtpd_driver.c - test driver for net/smtp_server: the real server on N
 * libuv loops (one thread each) with a trivial engine behind it.
 *
 * The "engine" here writes each message to a spool directory and reports the
 * outcome with smtp_server_txn_done() from a separate worker thread, after
 * an optional delay, the way the queue's writer thread will. When the file
 * <spool>/QFULL exists, the next message fails with POSTERN_EQFULL (and the
 * file is removed), so tests can check the 452 path.
 *
 * For every message it writes <spool>/<id>.eml (the body exactly as handed
 * over, Received: header included) and <spool>/<id>.env (one "key value"
 * line per envelope item), each atomically through a rename.
 *
 * SIGUSR1 calls smtp_server_stop() (no new sessions, the others go on).
 * Prints "PORT <n>" on stdout once listening; SIGTERM or SIGINT closes the
 * server (smtp_server_close) and the process exits 0 when every handle is
 * closed, so ASan's leak check covers the whole shutdown path.
 */
#include "net/smtp_server.h"
#include "net/tls.h"
#include "base/postern_err.h"
#include "base/postern_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_LOOPS 16

struct job {
  struct smtp_server_txn *txn;
  const struct smtp_server_envelope *env;
  const char *body;
  size_t len;
  struct job *next;
};

static const char *spool;
static unsigned delay_ms;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct job *head, *tail;
static bool worker_stop;
static atomic_ulong id_counter;

static uv_loop_t loops[MAX_LOOPS];
static uv_async_t quit[MAX_LOOPS];
static unsigned nloops = 2;
static uv_signal_t sigterm, sigint, sigusr1;
static struct smtp_server *srv;

static int assign_id(void *ud, char *id) {
  unsigned long n = atomic_fetch_add(&id_counter, 1) + 1;
  snprintf(id, SMTP_SERVER_ID_MAX + 1, "T%06lu%04X", n,
           (unsigned)getpid() & 0xffff);
  return 0;
}

static void on_message(void *ud, struct smtp_server_txn *txn,
                       const struct smtp_server_envelope *env, const char *body,
                       size_t len) {
  struct job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    smtp_server_txn_done(txn, POSTERN_ENOMEM, NULL);
    return;
  }
  j->txn = txn;
  j->env = env;
  j->body = body;
  j->len = len;
  pthread_mutex_lock(&mu);
  if (tail)
    tail->next = j;
  else
    head = j;
  tail = j;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
}

static int write_file(const char *name, const char *data, size_t len) {
  char tmp[4096], dst[4096];
  snprintf(tmp, sizeof tmp, "%s/.%s.tmp", spool, name);
  snprintf(dst, sizeof dst, "%s/%s", spool, name);
  FILE *f = fopen(tmp, "wb");
  if (f == NULL)
    return POSTERN_EIO;
  size_t w = fwrite(data, 1, len, f);
  if (fclose(f) != 0 || w != len || rename(tmp, dst) != 0)
    return POSTERN_EIO;
  return 0;
}

static int store(const struct job *j) {
  const struct smtp_server_envelope *e = j->env;
  char name[128];
  size_t cap = 4096 + e->nrcpt * 1200, n = 0;
  char *env = malloc(cap);
  if (env == NULL)
    return POSTERN_ENOMEM;
#define PUT(...) n += (size_t)snprintf(env + n, cap - n, __VA_ARGS__)
  PUT("id %s\n", e->id);
  PUT("from %s\n", e->mail_from);
  for (size_t i = 0; i < e->nrcpt; i++)
    PUT("rcpt %s notify=%u orcpt=%s\n", e->rcpt[i].addr, e->rcpt[i].notify,
        e->rcpt[i].orcpt ? e->rcpt[i].orcpt : "-");
  PUT("body %d\nsmtputf8 %d\nret %d\nenvid %s\n", (int)e->body_type,
      (int)e->smtputf8, (int)e->ret, e->envid ? e->envid : "-");
  PUT("helo %s\nclient %s\ntls %d\nloop %u\nsize %zu\n", e->helo, e->client_ip,
      (int)e->tls, e->loop_index, j->len);
  PUT("requiretls %d\n", (int)e->requiretls);
#undef PUT
  snprintf(name, sizeof name, "%s.eml", e->id);
  int r = write_file(name, j->body, j->len);
  if (r == 0) {
    snprintf(name, sizeof name, "%s.env", e->id);
    r = write_file(name, env, n);
  }
  free(env);
  return r;
}

static void *worker(void *arg) {
  for (;;) {
    pthread_mutex_lock(&mu);
    while (head == NULL && !worker_stop)
      pthread_cond_wait(&cv, &mu);
    struct job *j = head;
    if (j) {
      head = j->next;
      if (head == NULL)
        tail = NULL;
    }
    pthread_mutex_unlock(&mu);
    if (j == NULL)
      return NULL;
    if (delay_ms) {
      struct timespec ts = {delay_ms / 1000,
                            (long)(delay_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
    char qfull[4096];
    snprintf(qfull, sizeof qfull, "%s/QFULL", spool);
    int status;
    if (unlink(qfull) == 0)
      status = POSTERN_EQFULL;
    else
      status = store(j);
    smtp_server_txn_done(j->txn, status, NULL);
    free(j);
  }
}

static void on_quit(uv_async_t *a) {
  uv_close((uv_handle_t *)a, NULL);
}

static void on_closed(void *ud) {
  for (unsigned i = 0; i < nloops; i++)
    uv_async_send(&quit[i]);
}

static void on_signal(uv_signal_t *s, int sig) {
  if (sig == SIGUSR1) {
    smtp_server_stop(srv); /* stop accepting, keep sessions */
    return;
  }
  uv_close((uv_handle_t *)&sigterm, NULL);
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sigusr1, NULL);
  smtp_server_close(srv, on_closed, NULL);
}

static void *run_loop(void *arg) {
  uv_run(arg, UV_RUN_DEFAULT);
  return NULL;
}

static uint64_t num(const char *s) {
  return strtoull(s, NULL, 10);
}

int main(int argc, char **argv) {
  struct smtp_server_opts o = {.listen = "127.0.0.1:0",
                               .hostname = "mx.test.example"};
  struct cidr acl[16];
  size_t nacl = 0;
  const char *cert = NULL, *key = NULL;
  postern_log_set_level(POSTERN_LOG_INFO);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--debug") == 0) {
      postern_log_set_level(POSTERN_LOG_DEBUG);
      continue;
    }
    if (v == NULL) {
      fprintf(stderr, "missing value for %s\n", a);
      return 2;
    }
    i++;
    if (strcmp(a, "--listen") == 0)
      o.listen = v;
    else if (strcmp(a, "--loops") == 0)
      nloops = (unsigned)num(v);
    else if (strcmp(a, "--accept") == 0) {
      if (nacl == 16 || cidr_parse(v, &acl[nacl++]) < 0) {
        fprintf(stderr, "bad --accept %s\n", v);
        return 2;
      }
    } else if (strcmp(a, "--spool") == 0)
      spool = v;
    else if (strcmp(a, "--delay-ms") == 0)
      delay_ms = (unsigned)num(v);
    else if (strcmp(a, "--max-sessions") == 0)
      o.max_sessions = (uint32_t)num(v);
    else if (strcmp(a, "--max-recipients") == 0)
      o.max_recipients = (uint32_t)num(v);
    else if (strcmp(a, "--max-size") == 0)
      o.max_message_size = num(v);
    else if (strcmp(a, "--timeout-ms") == 0)
      o.timeout_ms = num(v);
    else if (strcmp(a, "--session-timeout-ms") == 0)
      o.session_timeout_ms = num(v);
    else if (strcmp(a, "--greet-delay-ms") == 0)
      o.greet_delay_ms = num(v);
    else if (strcmp(a, "--max-errors") == 0)
      o.max_errors = (uint32_t)num(v);
    else if (strcmp(a, "--max-junk") == 0)
      o.max_junk_commands = (uint32_t)num(v);
    else if (strcmp(a, "--hostname") == 0)
      o.hostname = v;
    else if (strcmp(a, "--tls-cert") == 0)
      cert = v;
    else if (strcmp(a, "--tls-key") == 0)
      key = v;
    else {
      fprintf(stderr, "unknown option %s\n", a);
      return 2;
    }
  }
  if (spool == NULL || nloops == 0 || nloops > MAX_LOOPS) {
    fprintf(stderr, "usage: smtpd_driver --spool DIR [--loops N] ...\n");
    return 2;
  }
  o.accept_from = acl;
  o.naccept_from = nacl;
  struct tls_ctx *tls = NULL;
  if (cert != NULL) {
    char err[256] = "";
    if (tls_ctx_new_server(&tls, cert, key, NULL, err, sizeof err) < 0) {
      fprintf(stderr, "tls: %s\n", err);
      return 1;
    }
    o.tls = tls;
  }

  uv_loop_t *lp[MAX_LOOPS];
  for (unsigned i = 0; i < nloops; i++) {
    uv_loop_init(&loops[i]);
    uv_async_init(&loops[i], &quit[i], on_quit);
    lp[i] = &loops[i];
  }
  struct smtp_server_handlers h = {.assign_id = assign_id,
                                   .message = on_message};
  int r = smtp_server_start(lp, nloops, &o, &h, NULL, &srv);
  if (r < 0) {
    fprintf(stderr, "smtp_server_start: %s\n", postern_strerror(r));
    return 1;
  }
  uv_signal_init(&loops[0], &sigterm);
  uv_signal_init(&loops[0], &sigint);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_init(&loops[0], &sigusr1);
  uv_signal_start(&sigusr1, on_signal, SIGUSR1);
  printf("PORT %u\n", smtp_server_port(srv));
  fflush(stdout);

  pthread_t wt, lt[MAX_LOOPS];
  pthread_create(&wt, NULL, worker, NULL);
  for (unsigned i = 1; i < nloops; i++)
    pthread_create(&lt[i], NULL, run_loop, &loops[i]);
  run_loop(&loops[0]);
  for (unsigned i = 1; i < nloops; i++)
    pthread_join(lt[i], NULL);
  pthread_mutex_lock(&mu);
  worker_stop = true;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
  pthread_join(wt, NULL);
  for (unsigned i = 0; i < nloops; i++)
    uv_loop_close(&loops[i]);
  tls_ctx_free(tls);
  fprintf(stderr, "smtpd_driver: closed\n");
  return 0;
}
