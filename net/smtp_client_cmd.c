/*
 * net/smtp_client_cmd.c - what the SMTP client says and hears, apart from
 * when: command formatting with the parameters the server offers (RFC
 * 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN, RFC 8689
 * REQUIRETLS), the checks of the caller's values (net/smtp_syntax.h: the
 * server's rules), the messages a server cannot take, the EHLO keywords,
 * the mapping of replies to results, and names.
 *
 * Invariants: nothing here does I/O or changes state; a value that could
 * break a command line (CR, LF, space where none belongs) never reaches
 * the command buffer, because smtp_client_send() checks every message
 * with smtp_client__msg_valid() first.
 */
#include "net/smtp_client_internal.h"
#include "net/smtp_syntax.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/postern_err.h"

static const char *const state_names[] = {
#define SMTP__STATE_NAME(name, str) str,
    SMTP_CLIENT_STATE_MAP(SMTP__STATE_NAME)
#undef SMTP__STATE_NAME
};

const char *smtp_client_state_name(enum smtp_client_state s) {
  if ((size_t)s >= sizeof state_names / sizeof state_names[0]) {
    return "unknown";
  }
  return state_names[s];
}

const char *smtp_tls_level_name(enum smtp_tls_level l) {
  switch (l) {
#define SMTP__TLS_NAME(name, str)                                              \
  case SMTP_TLS_##name:                                                        \
    return str;
    SMTP_TLS_LEVEL_MAP(SMTP__TLS_NAME)
#undef SMTP__TLS_NAME
  }
  return "unknown";
}

const char *smtp_starttls_name(enum smtp_starttls s) {
  switch (s) {
#define SMTP__STLS_NAME(name, str)                                             \
  case SMTP_STARTTLS_##name:                                                   \
    return str;
    SMTP_STARTTLS_MAP(SMTP__STLS_NAME)
#undef SMTP__STLS_NAME
  }
  return "unknown";
}

void smtp_client__make_reply(struct smtp_reply *r, int code, const char *enh,
                             const char *text) {
  memset(r, 0, sizeof *r);
  r->code = code;
  if (enh) {
    snprintf(r->enh, sizeof r->enh, "%s", enh);
    r->has_enh = true;
  }
  r->lines = 1;
  snprintf(r->text, sizeof r->text, "%s", text);
  r->text_len = strlen(r->text);
}

enum smtp_outcome smtp_client__outcome_of(const struct smtp_reply *r) {
  switch (smtp_reply_class(r)) {
  case 2:
    return SMTP_OUTCOME_OK;
  case 5:
    return SMTP_OUTCOME_PERM;
  default:
    return SMTP_OUTCOME_TEMP;
  }
}

const char *smtp_client__stage_of(enum smtp_client_state s) {
  switch (s) {
  case SMTP_CLIENT_RSET:
    return "RSET";
  case SMTP_CLIENT_MAIL:
    return "MAIL";
  case SMTP_CLIENT_RCPT:
    return "RCPT";
  case SMTP_CLIENT_DATA:
    return "DATA";
  case SMTP_CLIENT_BODY:
  case SMTP_CLIENT_DOT:
    return "end of DATA";
  default:
    return smtp_client_state_name(s);
  }
}

int smtp_client__cmd_append(struct smtp_client *c, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->cmd + c->cmdlen, c->cmdcap - c->cmdlen, fmt, ap);
    va_end(ap);
    if (n < 0) {
      return POSTERN_EINTERNAL;
    }
    if ((size_t)n < c->cmdcap - c->cmdlen) {
      c->cmdlen += (size_t)n;
      return 0;
    }
    size_t cap = c->cmdcap * 2 + (size_t)n;
    char *p = realloc(c->cmd, cap);
    if (!p) {
      return POSTERN_ENOMEM;
    }
    c->cmd = p;
    c->cmdcap = cap;
  }
}

bool smtp_client__param_ok(const char *s, size_t max) {
  if (!s) {
    return true;
  }
  size_t n = strlen(s);
  if (n > max) {
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch == 0x7f || ch == '<' || ch == '>') {
      return false;
    }
  }
  return true;
}

/* An optional esmtp-value: absent (NULL), or at most PARAM_MAX bytes that
 * `ok` accepts. ENVID is xtext (RFC 3461 §4.4), and so are the keywords of
 * RET and NOTIFY; ORCPT is addr-type ";" xtext (§4.2). */
static bool value_ok(const char *s, bool (*ok)(const char *, size_t)) {
  if (!s) {
    return true;
  }
  size_t n = strlen(s);
  return n <= PARAM_MAX && ok(s, n);
}

int smtp_client__append_mail(struct smtp_client *c,
                             const struct smtp_message *m) {
  unsigned caps = c->facts.caps;
  int rc = smtp_client__cmd_append(c, "MAIL FROM:<%s>", m->sender);
  if (rc == 0 && (caps & SMTP_CAP_SIZE)) {
    rc = smtp_client__cmd_append(c, " SIZE=%zu", m->body_len);
  }
  if (rc == 0 && m->body_8bit && (caps & SMTP_CAP_8BITMIME)) {
    rc = smtp_client__cmd_append(c, " BODY=8BITMIME");
  }
  if (rc == 0 && m->smtputf8 && (caps & SMTP_CAP_SMTPUTF8)) {
    rc = smtp_client__cmd_append(c, " SMTPUTF8");
  }
  if (rc == 0 && m->requiretls) {
    /* RFC 8689 §2: no value. Only reached when the server offers it
     * (smtp_client__refused_locally). */
    rc = smtp_client__cmd_append(c, " REQUIRETLS");
  }
  if (rc == 0 && (caps & SMTP_CAP_DSN) && m->ret) {
    rc = smtp_client__cmd_append(c, " RET=%s", m->ret);
  }
  if (rc == 0 && (caps & SMTP_CAP_DSN) && m->envid) {
    rc = smtp_client__cmd_append(c, " ENVID=%s", m->envid);
  }
  return rc == 0 ? smtp_client__cmd_append(c, "\r\n") : rc;
}

int smtp_client__append_rcpt(struct smtp_client *c,
                             const struct smtp_message *m, size_t i) {
  const struct smtp_rcpt *r = &m->rcpts[i];
  bool dsn = c->facts.caps & SMTP_CAP_DSN;
  int rc = smtp_client__cmd_append(c, "RCPT TO:<%s>", r->addr);
  if (rc == 0 && dsn && r->notify) {
    rc = smtp_client__cmd_append(c, " NOTIFY=%s", r->notify);
  }
  if (rc == 0 && dsn && r->orcpt) {
    rc = smtp_client__cmd_append(c, " ORCPT=%s", r->orcpt);
  }
  return rc == 0 ? smtp_client__cmd_append(c, "\r\n") : rc;
}

/* Appends m's MAIL, every RCPT and DATA: one pipelined group. */
int smtp_client__append_envelope(struct smtp_client *c,
                                 const struct smtp_message *m) {
  int rc = smtp_client__append_mail(c, m);
  for (size_t i = 0; i < m->nrcpts && rc == 0; i++) {
    rc = smtp_client__append_rcpt(c, m, i);
  }
  return rc == 0 ? smtp_client__cmd_append(c, "DATA\r\n") : rc;
}

bool smtp_client__refused_locally(const struct smtp_client *c,
                                  const struct smtp_message *msg,
                                  struct smtp_reply *why) {
  unsigned caps = c->facts.caps;
  if (msg->requiretls && !(caps & SMTP_CAP_REQUIRETLS)) {
    /* RFC 8689 §4.2.1: a REQUIRETLS message goes only to a server that
     * offers REQUIRETLS in its EHLO reply after TLS; §5 and §7: the
     * failure is 5.7.30, basic code 550. */
    smtp_client__make_reply(
        why, 550, "5.7.30",
        "REQUIRETLS support required, which the server does not offer");
    return true;
  }
  if (msg->smtputf8 && !(caps & SMTP_CAP_SMTPUTF8)) {
    smtp_client__make_reply(
        why, 553, "5.6.7",
        "message needs SMTPUTF8, which the server does not offer");
    return true;
  }
  if ((caps & SMTP_CAP_SIZE) && c->facts.size_limit > 0 &&
      msg->body_len > c->facts.size_limit) {
    char text[128];
    snprintf(text, sizeof text,
             "message size %zu exceeds the server's limit of %llu bytes",
             msg->body_len, (unsigned long long)c->facts.size_limit);
    smtp_client__make_reply(why, 552, "5.3.4", text);
    return true;
  }
  return false;
}

/* The checks both send calls make on the caller's message. */
int smtp_client__msg_valid(const struct smtp_message *msg) {
  if (!msg || !msg->sender || !msg->rcpts || msg->nrcpts == 0 ||
      (!msg->body && msg->body_len > 0)) {
    return POSTERN_EINVAL;
  }
  if (!smtp_client__param_ok(msg->sender, ADDR_MAX) ||
      !value_ok(msg->ret, smtp_syntax_xtext_ok) ||
      !value_ok(msg->envid, smtp_syntax_xtext_ok)) {
    return POSTERN_EINVAL;
  }
  for (size_t i = 0; i < msg->nrcpts; i++) {
    const struct smtp_rcpt *r = &msg->rcpts[i];
    if (!r->addr || !r->addr[0] || !smtp_client__param_ok(r->addr, ADDR_MAX) ||
        !value_ok(r->notify, smtp_syntax_xtext_ok) ||
        !value_ok(r->orcpt, smtp_syntax_orcpt_ok)) {
      return POSTERN_EINVAL;
    }
  }
  return 0;
}

/* Reads the EHLO keywords we care about (RFC 5321 §4.1.1.1: the first line
 * is the domain, every following line one extension). */
void smtp_client__parse_ehlo(struct smtp_client_facts *f, const char *raw,
                             size_t len) {
  f->caps = 0;
  f->size_limit = 0;
  size_t pos = 0;
  unsigned line = 0;
  while (pos < len) {
    const char *nl = memchr(raw + pos, '\n', len - pos);
    size_t end = nl ? (size_t)(nl - raw) : len;
    const char *kw = raw + pos + 4;
    size_t n = end > pos + 4 ? end - pos - 4 : 0;
    if (n > 0 && kw[n - 1] == '\r') {
      n--;
    }
    pos = end + 1;
    if (line++ == 0) {
      continue;
    }
    size_t kl = 0;
    while (kl < n && kw[kl] != ' ') {
      kl++;
    }
    static const struct {
      const char *name;
      unsigned flag;
    } known[] = {
        {"PIPELINING", SMTP_CAP_PIPELINING},
        {"STARTTLS", SMTP_CAP_STARTTLS},
        {"8BITMIME", SMTP_CAP_8BITMIME},
        {"SIZE", SMTP_CAP_SIZE},
        {"DSN", SMTP_CAP_DSN},
        {"SMTPUTF8", SMTP_CAP_SMTPUTF8},
        {"ENHANCEDSTATUSCODES", SMTP_CAP_ENHANCEDSTATUSCODES},
        {"CHUNKING", SMTP_CAP_CHUNKING},
        {"REQUIRETLS", SMTP_CAP_REQUIRETLS},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
      if (strlen(known[i].name) == kl &&
          strncasecmp(kw, known[i].name, kl) == 0) {
        f->caps |= known[i].flag;
        if (known[i].flag == SMTP_CAP_SIZE && kl < n) {
          /* RFC 1870: SIZE [number]; ignore values we cannot parse. */
          uint64_t v = 0;
          size_t j = kl + 1;
          bool ok = j < n;
          for (; j < n && ok; j++) {
            if (kw[j] < '0' || kw[j] > '9' || v > (UINT64_MAX - 9) / 10) {
              ok = false;
            } else {
              v = v * 10 + (uint64_t)(kw[j] - '0');
            }
          }
          f->size_limit = ok ? v : 0;
        }
      }
    }
  }
}
