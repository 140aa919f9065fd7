/*
 * smtp_server_listen.c - the SMTP server's listening sockets: the listen
 * address, one socket per group of loops bound with SO_REUSEPORT, and
 * accepting a connection into a session (smtp_server_conn.c).
 *
 * Invariants: every fallible socket step (socket, bind, listen) happens in
 * smtp_server__open_listeners(), before any libuv handle exists, so that
 * smtp_server_start() can fail without leaving a handle behind; a loop's
 * listening handle is closed once (smtp_server__stop_listening).
 */
#include "net/smtp_server_session.h"

#include "base/postern_err.h"
#include "base/postern_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int smtp_server_addr_parse(const char *s, struct sockaddr_storage *out) {
  char host[INET6_ADDRSTRLEN + 1];
  const char *port;
  memset(out, 0, sizeof *out);
  if (s[0] == '[') {
    const char *e = strchr(s, ']');
    if (e == NULL || e[1] != ':' || (size_t)(e - s - 1) >= sizeof host)
      return POSTERN_ESYNTAX;
    memcpy(host, s + 1, (size_t)(e - s - 1));
    host[e - s - 1] = '\0';
    port = e + 2;
  } else {
    const char *c = strrchr(s, ':');
    if (c == NULL || (size_t)(c - s) >= sizeof host ||
        memchr(s, ':', (size_t)(c - s)))
      return POSTERN_ESYNTAX;
    memcpy(host, s, (size_t)(c - s));
    host[c - s] = '\0';
    port = c + 1;
  }
  size_t pn = strspn(port, "0123456789");
  if (pn == 0 || pn > 5 || port[pn] != '\0')
    return POSTERN_ESYNTAX;
  unsigned long p = strtoul(port, NULL, 10);
  if (p > 65535)
    return POSTERN_ESYNTAX;
  struct sockaddr_in *in = (struct sockaddr_in *)out;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
  if (s[0] != '[' && inet_pton(AF_INET, host, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)p);
    return 0;
  }
  if (s[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)p);
    return 0;
  }
  return POSTERN_ESYNTAX;
}

/* One listening socket, bound with SO_REUSEPORT (see
 * smtp_server__open_listeners). IPv6 sockets are IPv6-only: listening on both
 * families takes two `listen` lines, and a [::] socket never silently takes
 * over IPv4. */
static int open_listener(const struct sockaddr_storage *addr, int *out) {
  int fd =
      socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return postern_err_from_errno(errno);
  int one = 1;
  socklen_t alen = addr->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                              : sizeof(struct sockaddr_in6);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
      (addr->ss_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
      bind(fd, (const struct sockaddr *)addr, alen) < 0 ||
      listen(fd, 511) < 0) {
    int e = postern_err_from_errno(errno);
    close(fd);
    return e;
  }
  *out = fd;
  return 0;
}

/*
 * Gives each of the n loops a listening descriptor in fds. Loops share
 * sockets in groups of at most LOOPS_PER_LISTENER (loop i uses socket
 * i % groups, through its own dup), and the groups share the port through
 * SO_REUSEPORT. Within a group the connection goes to whichever loop
 * accepts first, i.e. to a loop that is free: SO_REUSEPORT alone hashes
 * connections evenly over the loops whatever their load, and a loop that
 * also carries a busy destination's deliveries then holds its sessions
 * back while the others idle (about 10% of the throughput on two cores
 * with lock-step clients). Bounding the group keeps the wake-ups per
 * connection (every loop of the group is woken) small on big machines.
 * On failure nothing is left open. Returns 0 or a POSTERN code.
 */
int smtp_server__open_listeners(struct sockaddr_storage *a, int *fds,
                                unsigned n, unsigned *port) {
  unsigned groups = (n + LOOPS_PER_LISTENER - 1) / LOOPS_PER_LISTENER;
  unsigned made = 0;
  int r = 0;
  for (; made < n; made++) {
    if (made < groups) {
      r = open_listener(a, &fds[made]);
      if (r == 0 && made == 0) {
        /* Port 0 asks for any port: the other sockets take the same. */
        socklen_t sl = sizeof *a;
        getsockname(fds[0], (struct sockaddr *)a, &sl);
        *port = ntohs(a->ss_family == AF_INET
                          ? ((struct sockaddr_in *)a)->sin_port
                          : ((struct sockaddr_in6 *)a)->sin6_port);
      }
    } else {
      fds[made] = fcntl(fds[made % groups], F_DUPFD_CLOEXEC, 0);
      r = fds[made] < 0 ? postern_err_from_errno(errno) : 0;
    }
    if (r < 0)
      break;
  }
  if (r < 0) {
    while (made > 0)
      close(fds[--made]);
  }
  return r;
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) {
    postern_log(POSTERN_LOG_WARN, "smtpd_accept_failed", "error",
                uv_strerror(status), NULL);
    return;
  }
  smtp_server__session_accept(server->data, server);
}

void smtp_server__listen(struct loop_ctx *lc, int fd) {
  uv_tcp_init(lc->loop, &lc->listener);
  lc->listener.data = lc;
  uv_tcp_open(&lc->listener, fd);
  lc->listener_open = true;
  int r = uv_listen((uv_stream_t *)&lc->listener, 511, on_connection);
  if (r < 0) {
    /* listen(2) already succeeded above, so this is not expected; the
     * handles are closed by the usual path once the loops run. */
    postern_log(POSTERN_LOG_ERROR, "smtpd_listen_failed", "error",
                uv_strerror(r), NULL);
  }
}

static void on_listener_close(uv_handle_t *h) {
  struct loop_ctx *lc = h->data;
  lc->listener_open = false;
  smtp_server__loop_maybe_finish(lc);
}

void smtp_server__stop_listening(struct loop_ctx *lc) {
  if (lc->listener_open && !lc->listener_closing) {
    lc->listener_closing = true;
    uv_close((uv_handle_t *)&lc->listener, on_listener_close);
  }
}
