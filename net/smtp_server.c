/*
 * smtp_server.c - the SMTP server's entry: options and their defaults,
 * smtp_server_start(), and what the server tells about itself.
 *
 * The server is spread over files with one job each, listed in
 * smtp_server_session.h with the objects they share: listening sockets
 * (smtp_server_listen.c), loop contexts and cross-thread calls
 * (smtp_server_loop.c), a session's connection (smtp_server_conn.c) and
 * its protocol (smtp_server_session.c, with the legal state transitions in
 * smtp_server_state.c), and the pure parsers (smtp_server_parse.c).
 *
 * Invariant: smtp_server_start() fails before creating any libuv handle,
 * or not at all.
 */
#include "net/smtp_server_session.h"

#include "base/postern_err.h"
#include "base/postern_log.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int smtp_server_start(uv_loop_t **loops, unsigned nloops,
                      const struct smtp_server_opts *o,
                      const struct smtp_server_handlers *h, void *ud,
                      struct smtp_server **out) {
  if (loops == NULL || nloops == 0 || o == NULL || h == NULL ||
      h->assign_id == NULL || h->message == NULL || o->listen == NULL)
    return POSTERN_EINVAL;
  struct smtp_server *srv = calloc(1, sizeof *srv);
  if (srv == NULL)
    return POSTERN_ENOMEM;
  int r = smtp_server_addr_parse(o->listen, &srv->addr);
  if (r < 0) {
    free(srv);
    return r;
  }
  srv->h = *h;
  srv->ud = ud;
  srv->tls = o->tls;
  srv->max_size = o->max_message_size ? o->max_message_size : 32u << 20;
  srv->max_rcpt = o->max_recipients ? o->max_recipients : 1000;
  srv->max_sessions = o->max_sessions ? o->max_sessions : 2000;
  srv->timeout_ms = o->timeout_ms ? o->timeout_ms : 5 * 60 * 1000;
  srv->session_timeout_ms =
      o->session_timeout_ms ? o->session_timeout_ms : 60 * 60 * 1000;
  srv->max_commands = o->max_commands ? o->max_commands : 100000;
  srv->max_junk = o->max_junk_commands ? o->max_junk_commands : 100;
  srv->max_errors = o->max_errors ? o->max_errors : 20;
  srv->greet_delay_ms = o->greet_delay_ms;
  srv->auth_mode = o->auth_mode;
  atomic_store(&srv->users, o->users);
  if (o->auth_mode != SMTP_AUTH_OFF) {
    /* AUTH only under TLS, and against a users table. */
    if (o->tls == NULL || o->users == NULL) {
      free(srv);
      return POSTERN_EINVAL;
    }
    struct smtp_auth_limit_opts lo;
    smtp_auth_limit_defaults(&lo);
    if (o->auth_max_failures)
      lo.addr_refuse = o->auth_max_failures;
    if (smtp_auth_limit_new(&lo, &srv->limit) != 0) {
      free(srv);
      return POSTERN_ENOMEM;
    }
  }
  if (o->hostname) {
    if (strlen(o->hostname) >= sizeof srv->hostname ||
        !smtp_server__helo_ok(o->hostname, strlen(o->hostname))) {
      smtp_auth_limit_free(srv->limit);
      free(srv);
      return POSTERN_EINVAL;
    }
    strcpy(srv->hostname, o->hostname);
  } else if (gethostname(srv->hostname, sizeof srv->hostname - 1) < 0 ||
             srv->hostname[0] == '\0') {
    strcpy(srv->hostname, "localhost");
  }
  size_t na = o->naccept_from ? o->naccept_from : 2;
  srv->accept = calloc(na, sizeof *srv->accept);
  srv->lcs = calloc(nloops, sizeof *srv->lcs);
  int *fds = calloc(nloops, sizeof *fds);
  if (srv->accept == NULL || srv->lcs == NULL || fds == NULL) {
    smtp_auth_limit_free(srv->limit);
    free(fds);
    free(srv->accept);
    free(srv->lcs);
    free(srv);
    return POSTERN_ENOMEM;
  }
  if (o->naccept_from) {
    memcpy(srv->accept, o->accept_from, na * sizeof *srv->accept);
  } else {
    cidr_parse("127.0.0.0/8", &srv->accept[0]);
    cidr_parse("::1", &srv->accept[1]);
  }
  srv->naccept = na;
  srv->nloops = nloops;

  /* Every fallible socket step first, so a failure leaves no uv handle. */
  struct sockaddr_storage a = srv->addr;
  r = smtp_server__open_listeners(&a, fds, nloops, &srv->port);
  if (r < 0) {
    smtp_auth_limit_free(srv->limit);
    free(fds);
    free(srv->accept);
    free(srv->lcs);
    free(srv);
    return r;
  }
  for (unsigned i = 0; i < nloops; i++) {
    smtp_server__loop_init(srv, i, loops[i]);
    smtp_server__listen(&srv->lcs[i], fds[i]);
  }
  free(fds);
  {
    struct postern_log_rec lr;
    postern_log_begin(&lr, POSTERN_LOG_INFO, "smtpd_listen");
    postern_log_str(&lr, "listen", o->listen);
    postern_log_uint(&lr, "port", srv->port);
    postern_log_uint(&lr, "loops", nloops);
    postern_log_end(&lr);
  }
  *out = srv;
  return 0;
}

void smtp_server_set_users(struct smtp_server *srv,
                           const struct smtp_auth_users *users) {
  atomic_store(&srv->users, users);
}

unsigned smtp_server_sessions(const struct smtp_server *srv) {
  return atomic_load(&((struct smtp_server *)srv)->nsessions);
}

unsigned smtp_server_port(const struct smtp_server *srv) {
  return srv->port;
}
