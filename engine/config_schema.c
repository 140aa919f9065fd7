/*
 * config_schema.c - the directives of postern.conf: one table per block
 * (the top level, listen, queue, delivery, dns, tls, policy and its
 * modules, log, metrics) giving each directive its type, arity, range,
 * default, field, synopsis and one line of help; the names of enumerated
 * values; and the rules one table row cannot say: cross-field checks
 * (tls_cert needs tls_key, retry_initial <= retry_max, a min_mx_level that
 * some module of the chain can grant, at least one listener) and computed
 * defaults (the host name, the number of workers, the default chain).
 *
 * Adding a directive is one row here, its field in config.h and its entry
 * in docs/postern.conf.5; config_test.c checks that every row has a valid
 * default and help, and appears in the example and in the printer's
 * output. Everything here is constant data plus functions called by the
 * walk (config.c); no state.
 */
#include "engine/config_internal.h"

#include "base/postern_err.h"
#include "net/smtp_auth.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------- enum names */

/* The names of enumerated values as written in the file, NULL-terminated
 * for config__t_enum, generated from the X-macro that defines each enum
 * (policy/levels.h, base/postern_log.h, config.h). */
#define NAME(name, str) str,
static const char *const log_level_names[] = {POSTERN_LOG_LEVEL_MAP(NAME) NULL};
static const char *const log_format_names[] = {POSTERN_LOG_FORMAT_MAP(NAME)
                                                   NULL};
static const char *const tls_level_names[] = {POLICY_TLS_LEVEL_MAP(NAME) NULL};
static const char *const mx_level_names[] = {POLICY_MX_LEVEL_MAP(NAME) NULL};
static const char *const tls_version_names[] = {CONFIG_TLS_VERSION_MAP(NAME)
                                                    NULL};
static const char *const auth_mode_names[] = {SMTP_AUTH_MODE_MAP(NAME) NULL};
#undef NAME

/* config__t_enum reads and writes an enum field as an int. */
_Static_assert(sizeof(enum postern_log_level) == sizeof(int) &&
                   sizeof(enum postern_log_format) == sizeof(int) &&
                   sizeof(enum policy_tls_level) == sizeof(int) &&
                   sizeof(enum policy_mx_level) == sizeof(int) &&
                   sizeof(enum config_tls_version) == sizeof(int) &&
                   sizeof(enum smtp_auth_mode) == sizeof(int),
               "enum fields are int-sized");

static const char *name_of(const char *const *names, size_t n, unsigned v) {
  return v < n ? names[v] : "?";
}
#define NAME_OF(arr, v)                                                        \
  name_of(arr, sizeof arr / sizeof arr[0] - 1, (unsigned)(v))

const char *config_tls_level_name(enum policy_tls_level l) {
  return NAME_OF(tls_level_names, l);
}
const char *config_mx_level_name(enum policy_mx_level l) {
  return NAME_OF(mx_level_names, l);
}
const char *config_log_level_name(enum postern_log_level l) {
  return NAME_OF(log_level_names, l);
}
const char *config_log_format_name(enum postern_log_format f) {
  return NAME_OF(log_format_names, f);
}
const char *config_tls_version_name(enum config_tls_version v) {
  return NAME_OF(tls_version_names, v);
}
const char *config_auth_mode_name(int mode) {
  return NAME_OF(auth_mode_names, mode);
}

/* ------------------------------------------------------------ the schema */

#define ONE .min_args = 1, .max_args = 1
#define SEC(ms) ((uint64_t)(ms)*1000)
#define MIN(m) ((uint64_t)(m)*60000)
#define HOUR(h) ((uint64_t)(h)*3600000)
#define DAY(d) ((uint64_t)(d)*86400000)
#define KIB(k) ((uint64_t)(k) << 10)
#define MIB(m) ((uint64_t)(m) << 20)
#define GIB(g) ((uint64_t)(g) << 30)
#define TIB(t) ((uint64_t)(t) << 40)
#define NDIRS(a) (sizeof a / sizeof a[0])

#define L(f) offsetof(struct config_listen, f)
static const struct config__dir listen_dirs[] = {
    {.name = "accept_from",
     .type = &config__t_cidrs,
     .min_args = 1,
     .max_args = CONFIG_ARGS_MAX,
     .def = "127.0.0.1/32 ::1/128",
     .off = L(accept_from),
     .synopsis = "CIDR...",
     .help = "clients allowed to relay through this listener"},
    {.name = "max_message_size",
     .type = &config__t_size,
     ONE,
     .min = KIB(1),
     .max = GIB(1),
     .def = "32M",
     .off = L(max_message_size),
     .synopsis = "SIZE",
     .help = "largest message accepted"},
    {.name = "max_recipients",
     .type = &config__t_u32,
     ONE,
     .min = 1,
     .max = 100000,
     .def = "1000",
     .off = L(max_recipients),
     .synopsis = "NUMBER",
     .help = "recipients per message"},
    {.name = "max_sessions",
     .type = &config__t_u32,
     ONE,
     .min = 1,
     .max = 1000000,
     .def = "2000",
     .off = L(max_sessions),
     .synopsis = "NUMBER",
     .help = "concurrent SMTP sessions on this listener"},
    {.name = "tls_cert",
     .type = &config__t_path,
     ONE,
     .off = L(tls_cert),
     .synopsis = "FILE",
     .help = "PEM certificate chain for STARTTLS",
     .unset = "no STARTTLS"},
    {.name = "tls_key",
     .type = &config__t_path,
     ONE,
     .off = L(tls_key),
     .synopsis = "FILE",
     .help = "PEM private key for STARTTLS",
     .unset = "no STARTTLS"},
    {.name = "timeout",
     .type = &config__t_duration,
     ONE,
     .min = 1,
     .max = DAY(1),
     .def = "5m",
     .off = L(timeout_ms),
     .synopsis = "DURATION",
     .help = "idle time allowed for each command or data"},
    {.name = "auth",
     .type = &config__t_enum,
     ONE,
     .names = auth_mode_names,
     .def = "off",
     .off = L(auth),
     .synopsis = "off|optional|required",
     .help = "SMTP AUTH over TLS: optional relays for a login or accept_from, "
             "required for both"},
    {.name = "users",
     .type = &config__t_path,
     ONE,
     .off = L(users_file),
     .synopsis = "FILE",
     .help = "SMTP AUTH users, name:crypt-hash lines",
     .unset = "no users"},
    {.name = "auth_max_failures",
     .type = &config__t_u32,
     ONE,
     .min = 1,
     .max = 1000,
     .def = "10",
     .off = L(auth_max_failures),
     .synopsis = "NUMBER",
     .help = "failed logins of one client address in 15 minutes before 421"},
};
#undef L

/* The last statement named `name` in the block, or NULL. */
static const struct config__node *child(const struct config__node *st,
                                        const char *name) {
  for (size_t i = st->nchildren; i-- > 0;)
    if (strcmp(st->children[i].name.s, name) == 0)
      return &st->children[i];
  return NULL;
}

/* The SMTP AUTH rules of a listen block: a mode other than off needs a
 * users file, the users file needs TLS (RFC 4954 §4: we offer AUTH only
 * under TLS, so plaintext passwords are never invited), and the users
 * file is read here so that --check and a reload judge it, with its own
 * file:line:col. With `auth required` and no accept_from, everyone may
 * connect: the login is what is checked. */
static int check_listen_auth(struct config__walk *w, struct config_listen *l,
                             const struct config__node *st) {
  const struct config__node *a = child(st, "auth"), *u = child(st, "users");
  if (l->auth != SMTP_AUTH_OFF && l->users_file == NULL)
    return config__fail(w, a->name.line, a->name.col, POSTERN_ECONFIG,
                        "'auth %s' needs 'users FILE' in the same listen block",
                        auth_mode_names[l->auth]);
  if (l->users_file == NULL)
    return 0;
  if (l->tls_cert == NULL)
    return config__fail(w, u->name.line, u->name.col, POSTERN_ECONFIG,
                        "'users' needs 'tls_cert' and 'tls_key' in the same "
                        "listen block: AUTH is offered only over TLS");
  struct smtp_auth_error e;
  int rc = smtp_auth_users_load(l->users_file, &l->users, &e);
  if (rc == POSTERN_ECONFIG) {
    config__error_set(w->err, l->users_file, e.line, e.col, "%s", e.msg);
    return rc;
  }
  if (rc != 0)
    return config__fail(w, u->args[0].line, u->args[0].col, POSTERN_ECONFIG,
                        "'users': %s: %s", l->users_file,
                        e.msg[0] ? e.msg : postern_strerror(rc));
  if (l->auth == SMTP_AUTH_REQUIRED && child(st, "accept_from") == NULL) {
    static const char *const any[] = {"0.0.0.0/0", "::/0"};
    struct config__word words[2];
    for (int i = 0; i < 2; i++)
      words[i] = (struct config__word){.s = (char *)any[i],
                                       .len = strlen(any[i]),
                                       .line = st->name.line,
                                       .col = st->name.col};
    struct config__node fake = {.name = st->name, .args = words, .nargs = 2};
    for (size_t i = 0; i < NDIRS(listen_dirs); i++)
      if (strcmp(listen_dirs[i].name, "accept_from") == 0)
        return config__t_cidrs.parse(w, &listen_dirs[i], l, &fake);
  }
  return 0;
}

static int check_listen(struct config__walk *w, void *obj,
                        const struct config__node *st) {
  struct config_listen *l = obj;
  if ((l->tls_cert == NULL) != (l->tls_key == NULL)) {
    const char *have = l->tls_cert ? "tls_cert" : "tls_key";
    const char *miss = l->tls_cert ? "tls_key" : "tls_cert";
    const struct config__node *c = child(st, have);
    return config__fail(w, c->name.line, c->name.col, POSTERN_ECONFIG,
                        "'%s' needs '%s' in the same listen block", have, miss);
  }
  return check_listen_auth(w, l, st);
}

static const struct config__block listen_block = {
    "listen", listen_dirs, NDIRS(listen_dirs), check_listen};

#define Q(f) offsetof(struct config_queue, f)
static const struct config__dir queue_dirs[] = {
    {.name = "map_size",
     .type = &config__t_size,
     ONE,
     .min = KIB(64),
     .max = TIB(64),
     .def = "16G",
     .off = Q(map_size),
     .synopsis = "SIZE",
     .help = "largest size of the queue database"},
    {.name = "retry_initial",
     .type = &config__t_duration,
     ONE,
     .min = 1,
     .max = DAY(30),
     .def = "5m",
     .off = Q(retry_initial_ms),
     .synopsis = "DURATION",
     .help = "wait before the first retry"},
    {.name = "retry_factor",
     .type = &config__t_decimal,
     ONE,
     .min = 1000000,
     .max = 10000000,
     .def = "2",
     .off = Q(retry_factor),
     .synopsis = "DECIMAL",
     .help = "each wait is this many times the previous one"},
    {.name = "retry_max",
     .type = &config__t_duration,
     ONE,
     .min = 1,
     .max = DAY(30),
     .def = "1h",
     .off = Q(retry_max_ms),
     .synopsis = "DURATION",
     .help = "longest wait between two attempts"},
    {.name = "max_age",
     .type = &config__t_duration,
     ONE,
     .min = 1,
     .max = DAY(365),
     .def = "5d",
     .off = Q(max_age_ms),
     .synopsis = "DURATION",
     .help = "undelivered recipients bounce at this age"},
    {.name = "delay_warning",
     .type = &config__t_duration,
     ONE,
     .min = 0,
     .max = DAY(365),
     .def = "0",
     .off = Q(delay_warning_ms),
     .synopsis = "DURATION",
     .help = "warn the sender after this delay; 0 is never"},
    {.name = "commit_interval",
     .type = &config__t_duration,
     ONE,
     .min = 0,
     .max = 100,
     .def = "1ms",
     .off = Q(commit_interval_ms),
     .synopsis = "DURATION",
     .help = "under load, shortest time between two queue commits; 0 is "
             "none"},
};
#undef Q

static int check_queue(struct config__walk *w, void *obj,
                       const struct config__node *st) {
  struct config_queue *q = obj;
  if (q->retry_initial_ms > q->retry_max_ms) {
    char a[64], b[64];
    config__duration_format(q->retry_initial_ms, a, sizeof a);
    config__duration_format(q->retry_max_ms, b, sizeof b);
    unsigned line = st->name.line, col = st->name.col;
    for (size_t i = 0; i < st->nchildren; i++)
      if (strcmp(st->children[i].name.s, "retry_initial") == 0 ||
          strcmp(st->children[i].name.s, "retry_max") == 0) {
        line = st->children[i].name.line;
        col = st->children[i].name.col;
      }
    return config__fail(w, line, col, POSTERN_ECONFIG,
                        "retry_initial (%s) is longer than retry_max (%s)", a,
                        b);
  }
  return 0;
}

static const struct config__block queue_block = {
    "queue", queue_dirs, NDIRS(queue_dirs), check_queue};

#define D(f) offsetof(struct config_delivery, f)
static const struct config__dir delivery_dirs[] = {
    {.name = "workers",
     .type = &config__t_u32,
     ONE,
     .min = 0,
     .max = 256,
     .def = "0",
     .off = D(workers),
     .synopsis = "NUMBER",
     .help = "worker threads; 0 is one per CPU core"},
    {.name = "max_connections",
     .type = &config__t_u32,
     ONE,
     .min = 1,
     .max = 1000000,
     .def = "2000",
     .off = D(max_connections),
     .synopsis = "NUMBER",
     .help = "outgoing SMTP connections in total"},
    {.name = "per_domain_connections",
     .type = &config__t_limit,
     ONE,
     .min = 1,
     .max = 100000,
     .def = "20",
     .off = D(per_domain_connections),
     .synopsis = "[local:]NUMBER",
     .help = "outgoing connections per destination domain"},
    {.name = "initial_connections",
     .type = &config__t_u32,
     ONE,
     .min = 1,
     .max = 100000,
     .def = "2",
     .off = D(initial_connections),
     .synopsis = "NUMBER",
     .help = "attempts at once to a destination with no connection yet"},
    {.name = "max_inflight",
     .type = &config__t_u32,
     ONE,
     .min = 1,
     .max = 10000000,
     .def = "50000",
     .off = D(max_inflight),
     .synopsis = "NUMBER",
     .help = "messages being delivered at once; the rest wait in the "
             "queue"},
    {.name = "max_inflight_bytes",
     .type = &config__t_size,
     ONE,
     .min = KIB(1),
     .max = GIB(64),
     .def = "64M",
     .off = D(max_inflight_bytes),
     .synopsis = "SIZE",
     .help = "bodies of the messages being delivered, in total"},
    {.name = "per_domain_rate",
     .type = &config__t_limit,
     ONE,
     .min = 0,
     .max = 1000000,
     .def = "0",
     .off = D(per_domain_rate),
     .synopsis = "[local:]NUMBER",
     .help = "deliveries per second per domain; 0 is no limit"},
    {.name = "reuse_limit",
     .type = &config__t_u32,
     ONE,
     .min = 1,
     .max = 1000000,
     .def = "100",
     .off = D(reuse_limit),
     .synopsis = "NUMBER",
     .help = "messages sent over one connection"},
    {.name = "chain_threshold",
     .type = &config__t_duration,
     ONE,
     .min = 0,
     .max = MIN(1),
     .def = "20ms",
     .off = D(chain_threshold_ms),
     .synopsis = "DURATION",
     .help = "chain messages on connections whose last message took at "
             "most this long; 0 is never"},
    {.name = "idle_timeout",
     .type = &config__t_duration,
     ONE,
     .min = 0,
     .max = HOUR(1),
     .def = "30s",
     .off = D(idle_timeout_ms),
     .synopsis = "DURATION",
     .help = "how long an idle connection is kept for reuse"},
    {.name = "connect_timeout",
     .type = &config__t_duration,
     ONE,
     .min = 1,
     .max = HOUR(1),
     .def = "30s",
     .off = D(connect_timeout_ms),
     .synopsis = "DURATION",
     .help = "time to connect and receive the greeting"},
    {.name = "command_timeout",
     .type = &config__t_duration,
     ONE,
     .min = 1,
     .max = HOUR(1),
     .def = "5m",
     .off = D(command_timeout_ms),
     .synopsis = "DURATION",
     .help = "time for the reply to each SMTP command"},
    {.name = "data_timeout",
     .type = &config__t_duration,
     ONE,
     .min = 1,
     .max = HOUR(2),
     .def = "10m",
     .off = D(data_timeout_ms),
     .synopsis = "DURATION",
     .help = "time to send the message and get the final reply"},
    {.name = "port",
     .type = &config__t_u16,
     ONE,
     .min = 1,
     .max = 65535,
     .def = "25",
     .off = D(port),
     .synopsis = "PORT",
     .help = "TCP port of MX hosts"},
    {.name = "local_ip",
     .type = &config__t_ip,
     ONE,
     .off = D(local_ip),
     .synopsis = "IP",
     .help = "source address of outgoing connections",
     .unset = "the kernel chooses the source address"},
    {.name = "shutdown_timeout",
     .type = &config__t_duration,
     ONE,
     .min = 0,
     .max = HOUR(1),
     .def = "30s",
     .off = D(shutdown_timeout_ms),
     .synopsis = "DURATION",
     .help = "time allowed for attempts in flight at shutdown"},
    {.name = "route",
     .type = &config__t_route,
     .min_args = 2,
     .max_args = 2,
     .off = D(routes),
     .flags = CONFIG__REPEAT,
     .synopsis = "DOMAIN TARGET",
     .help = "send DOMAIN's mail to TARGET instead of its MX hosts",
     .unset = "every domain goes to its MX hosts"},
};
#undef D

static const struct config__block delivery_block = {"delivery", delivery_dirs,
                                                    NDIRS(delivery_dirs), NULL};

#define N(f) offsetof(struct config_dns, f)
static const struct config__dir dns_dirs[] = {
    {.name = "servers",
     .type = &config__t_servers,
     .min_args = 1,
     .max_args = CONFIG_ARGS_MAX,
     .off = N(servers),
     .synopsis = "ADDR[:PORT]...",
     .help = "resolvers to ask",
     .unset = "the nameservers in /etc/resolv.conf"},
    {.name = "timeout",
     .type = &config__t_duration,
     ONE,
     .min = 1,
     .max = SEC(60),
     .def = "5s",
     .off = N(timeout_ms),
     .synopsis = "DURATION",
     .help = "time to wait for one answer"},
    {.name = "attempts",
     .type = &config__t_u32,
     ONE,
     .min = 1,
     .max = 10,
     .def = "2",
     .off = N(attempts),
     .synopsis = "NUMBER",
     .help = "tries per query"},
    {.name = "trust_ad",
     .type = &config__t_bool,
     ONE,
     .def = "no",
     .off = N(trust_ad),
     .synopsis = "yes|no",
     .help = "trust the AD bit from non-loopback servers"},
    {.name = "cache_size",
     .type = &config__t_u32,
     ONE,
     .min = 0,
     .max = 10000000,
     .def = "10000",
     .off = N(cache_size),
     .synopsis = "NUMBER",
     .help = "answers each worker keeps for their TTL; 0 = no cache"},
    {.name = "cache_max_ttl",
     .type = &config__t_duration,
     ONE,
     .min = SEC(1),
     .max = DAY(7),
     .def = "1d",
     .off = N(cache_max_ttl_ms),
     .synopsis = "DURATION",
     .help = "longest time an answer is kept, whatever its TTL"},
    {.name = "max_inflight",
     .type = &config__t_u32,
     ONE,
     .min = 1,
     .max = 10000,
     .def = "100",
     .off = N(max_inflight),
     .synopsis = "NUMBER",
     .help = "queries each worker has at the resolvers at once; more wait"},
};
#undef N

static const struct config__block dns_block = {"dns", dns_dirs, NDIRS(dns_dirs),
                                               NULL};

static const struct config__dir tls_dirs[] = {
    {.name = "ca_file",
     .type = &config__t_path,
     ONE,
     .def = "/etc/ssl/certs/ca-certificates.crt",
     .off = offsetof(struct config_tls, ca_file),
     .synopsis = "FILE",
     .help = "trusted root certificates for outgoing TLS"},
    {.name = "min_version",
     .type = &config__t_enum,
     ONE,
     .def = "1.2",
     .off = offsetof(struct config_tls, min_version),
     .names = tls_version_names,
     .synopsis = "1.2|1.3",
     .help = "oldest TLS version spoken"},
};

static const struct config__block tls_block = {"tls", tls_dirs, NDIRS(tls_dirs),
                                               NULL};

static const struct config__dir local_dirs[] = {
    {.name = "min_tls_level",
     .type = &config__t_enum,
     ONE,
     .def = "none",
     .off = offsetof(struct config_policy_local, min_tls_level),
     .names = tls_level_names,
     .synopsis = "none|encrypted|authenticated",
     .help = "lowest TLS level accepted for any connection"},
    {.name = "min_mx_level",
     .type = &config__t_enum,
     ONE,
     .def = "none",
     .off = offsetof(struct config_policy_local, min_mx_level),
     .names = mx_level_names,
     .synopsis = "none|mtasts|dnssec",
     .help = "lowest MX level accepted for any MX host"},
};

static const struct config__block local_block = {"local", local_dirs,
                                                 NDIRS(local_dirs), NULL};

#define M(f) offsetof(struct config_policy_mtasts, f)
static const struct config__dir mtasts_dirs[] = {
    {.name = "fetch_timeout",
     .type = &config__t_duration,
     ONE,
     .min = 1,
     .max = MIN(10),
     .def = "60s",
     .off = M(fetch_timeout_ms),
     .synopsis = "DURATION",
     .help = "time allowed to fetch a policy"},
    {.name = "https_port",
     .type = &config__t_u16,
     ONE,
     .min = 1,
     .max = 65535,
     .def = "443",
     .off = M(https_port),
     .synopsis = "PORT",
     .help = "port of the policy web server"},
    {.name = "max_policy_size",
     .type = &config__t_size,
     ONE,
     .min = KIB(1),
     .max = MIB(1),
     .def = "64K",
     .off = M(max_policy_size),
     .synopsis = "SIZE",
     .help = "largest policy body accepted"},
    {.name = "cache_size",
     .type = &config__t_size,
     ONE,
     .min = MIB(1),
     .max = GIB(64),
     .def = "64M",
     .off = M(cache_size),
     .synopsis = "SIZE",
     .help = "largest size of the policy cache (<state_dir>/mtasts)"},
    {.name = "refresh_interval",
     .type = &config__t_duration,
     ONE,
     .min = SEC(1),
     .max = DAY(30),
     .def = "1d",
     .off = M(refresh_interval_ms),
     .synopsis = "DURATION",
     .help = "age at which a policy in use is fetched again"},
};
#undef M

static const struct config__block mtasts_block = {"mtasts", mtasts_dirs,
                                                  NDIRS(mtasts_dirs), NULL};
static const struct config__block dnssec_block = {"dnssec", NULL, 0, NULL};
static const struct config__block dane_block = {"dane", NULL, 0, NULL};

/* Indexed by enum config_policy_kind (print_policy and
 * config_policy_kind_name rely on it); `min` is the kind again, for
 * config__t_module. */
#define MODULE(kind, mname, block, text)                                       \
  [kind] = {.name = mname,                                                     \
            .type = &config__t_module,                                         \
            .min = kind,                                                       \
            .sub = &block,                                                     \
            .flags = CONFIG__BLOCK_OPT,                                        \
            .synopsis = "",                                                    \
            .help = text}
static const char *const yes_no_names[] = {"yes", "no", NULL};

static const struct config__dir policy_dirs[] = {
    MODULE(CONFIG_POLICY_LOCAL, "local", local_block,
           "the operator's minimum levels"),
    MODULE(CONFIG_POLICY_MTASTS, "mtasts", mtasts_block, "MTA-STS, RFC 8461"),
    MODULE(CONFIG_POLICY_DNSSEC, "dnssec", dnssec_block,
           "MX level dnssec for authenticated MX answers"),
    MODULE(CONFIG_POLICY_DANE, "dane", dane_block, "DANE for SMTP, RFC 7672"),
    /* Not a module: a setting of the chain, stored next to it. The block
     * is walked with the chain's array as its object, hence the offset
     * from `policy`. */
    {.name = "honour_tls_required_no",
     .type = &config__t_enum,
     ONE,
     .def = "yes",
     .off = offsetof(struct postern_config, tls_required_no) -
            offsetof(struct postern_config, policy),
     .names = yes_no_names,
     .synopsis = "yes|no",
     .help = "let TLS-Required: No (RFC 8689) waive MTA-STS and DANE"},
};
#undef MODULE

_Static_assert(NDIRS(policy_dirs) == CONFIG_POLICY_KIND_COUNT + 1,
               "one directive in the policy block per module kind, and "
               "honour_tls_required_no");

const char *config_policy_kind_name(enum config_policy_kind k) {
  return (unsigned)k < NDIRS(policy_dirs) ? policy_dirs[k].name : "?";
}

/* A minimum MX level that no module of the chain can grant would defer
 * every message without a word: `mtasts` is granted by the mtasts module
 * (an enforce policy the MX matches) and, being below `dnssec`, by the
 * dnssec module too; `dnssec` only by the dnssec module. */
static int check_policy(struct config__walk *w, void *obj,
                        const struct config__node *st) {
  const struct config_policy_module *m = config__arr_items(obj);
  size_t n = config__arr_count(obj);
  /* Settings without a module would leave an empty chain: security off,
   * which only an empty block may say. */
  if (n == 0 && st != NULL && st->nchildren > 0)
    return config__fail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                        "the policy block names no module: list the chain "
                        "(local, mtasts, dnssec, dane) with its settings, or "
                        "write an empty policy { } to turn policy off");
  bool have[CONFIG_POLICY_KIND_COUNT] = {false};
  for (size_t i = 0; i < n; i++)
    have[m[i].kind] = true;
  for (size_t i = 0; i < n; i++) {
    if (m[i].kind != CONFIG_POLICY_LOCAL)
      continue;
    enum policy_mx_level min = m[i].local.min_mx_level;
    const char *needs = NULL;
    if (min == POLICY_MX_LEVEL_DNSSEC && !have[CONFIG_POLICY_DNSSEC])
      needs = "the dnssec module";
    else if (min == POLICY_MX_LEVEL_MTASTS && !have[CONFIG_POLICY_MTASTS] &&
             !have[CONFIG_POLICY_DNSSEC])
      needs = "the mtasts or the dnssec module";
    if (needs == NULL)
      continue;
    /* Point at the level itself: policy -> local -> min_mx_level. */
    unsigned line = m[i].line, col = m[i].col;
    for (size_t c = 0; c < st->nchildren; c++) {
      const struct config__node *lm = &st->children[c];
      if (strcmp(lm->name.s, "local") != 0)
        continue;
      for (size_t k = 0; k < lm->nchildren; k++)
        if (strcmp(lm->children[k].name.s, "min_mx_level") == 0 &&
            lm->children[k].nargs > 0) {
          line = lm->children[k].args[0].line;
          col = lm->children[k].args[0].col;
        }
    }
    return config__fail(
        w, line, col, POSTERN_ECONFIG,
        "min_mx_level %s needs %s in the policy chain: no other "
        "module can raise an MX host to that level, so every "
        "message would be deferred",
        config_mx_level_name(min), needs);
  }
  return 0;
}

static const struct config__block policy_block = {
    "policy", policy_dirs, NDIRS(policy_dirs), check_policy};

static const struct config__dir log_dirs[] = {
    {.name = "level",
     .type = &config__t_enum,
     ONE,
     .def = "info",
     .off = offsetof(struct config_log, level),
     .names = log_level_names,
     .synopsis = "error|warn|info|debug",
     .help = "least important events written"},
    {.name = "format",
     .type = &config__t_enum,
     ONE,
     .def = "logfmt",
     .off = offsetof(struct config_log, format),
     .names = log_format_names,
     .synopsis = "logfmt|json",
     .help = "line format"},
    {.name = "file",
     .type = &config__t_path,
     ONE,
     .def = "-",
     .off = offsetof(struct config_log, file),
     .synopsis = "PATH|-",
     .help = "file the log is appended to; - is standard error"},
};

static const struct config__block log_block = {"log", log_dirs, NDIRS(log_dirs),
                                               NULL};

static const struct config__dir metrics_dirs[] = {
    {.name = "listen",
     .type = &config__t_addr,
     ONE,
     .off = offsetof(struct config_metrics, listen),
     .synopsis = "ADDR:PORT",
     .help = "address of the Prometheus HTTP endpoint",
     .unset = "required"},
};

static int check_metrics(struct config__walk *w, void *obj,
                         const struct config__node *st) {
  const struct config_metrics *m = obj;
  if (m->listen.text == NULL)
    return config__fail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                        "'metrics' needs 'listen ADDR:PORT' in its block");
  return 0;
}

static const struct config__block metrics_block = {
    "metrics", metrics_dirs, NDIRS(metrics_dirs), check_metrics};

static const char *const dest_tls_names[] = {"inherit", "none", "encrypted",
                                             "authenticated", NULL};
static const char *const dest_mx_names[] = {"inherit", "none", "mtasts",
                                            "dnssec", NULL};
static const char *const dest_dane_names[] = {"inherit", "on", "off",
                                              "required", NULL};
static const char *const dest_mtasts_names[] = {"inherit", "on", "off", NULL};

#define DS(f) offsetof(struct config_destination, f)
static const struct config__dir destination_dirs[] = {
    {.name = "min_tls_level",
     .type = &config__t_enum,
     ONE,
     .def = "inherit",
     .off = DS(min_tls_level),
     .names = dest_tls_names,
     .synopsis = "inherit|none|encrypted|authenticated",
     .help = "lowest TLS level for this destination, instead of local's"},
    {.name = "min_mx_level",
     .type = &config__t_enum,
     ONE,
     .def = "inherit",
     .off = DS(min_mx_level),
     .names = dest_mx_names,
     .synopsis = "inherit|none|mtasts|dnssec",
     .help = "lowest MX level for this destination, instead of local's"},
    {.name = "dane",
     .type = &config__t_enum,
     ONE,
     .def = "inherit",
     .off = DS(dane),
     .names = dest_dane_names,
     .synopsis = "inherit|on|off|required",
     .help = "DANE for this destination; required: no usable TLSA, no mail"},
    {.name = "mtasts",
     .type = &config__t_enum,
     ONE,
     .def = "inherit",
     .off = DS(mtasts),
     .names = dest_mtasts_names,
     .synopsis = "inherit|on|off",
     .help = "MTA-STS for this destination; off ignores its policy"},
    {.name = "tls_fingerprint",
     .type = &config__t_pins,
     .min_args = 1,
     .max_args = CONFIG_DEST_PINS,
     .synopsis = "sha256:HEX...",
     .help = "pinned certificate or public-key digests: a match is "
             "authenticated",
     .unset = "no pins"},
    {.name = "tls_names",
     .type = &config__t_dest_names,
     .min_args = 1,
     .max_args = CONFIG_DEST_NAMES,
     .synopsis = "NAME...",
     .help = "names accepted in the certificate besides the MX host name",
     .unset = "the MX host name only"},
    {.name = "connections",
     .type = &config__t_limit,
     ONE,
     .min = 0,
     .max = 100000,
     .def = "0",
     .off = DS(connections),
     .synopsis = "[local:]NUMBER",
     .help = "connections to this destination; 0 inherits "
             "per_domain_connections"},
    {.name = "rate",
     .type = &config__t_limit,
     ONE,
     .min = 0,
     .max = 1000000,
     .def = "0",
     .off = DS(rate),
     .synopsis = "[local:]NUMBER",
     .help = "deliveries per second to this destination; 0 inherits "
             "per_domain_rate"},
    {.name = "reuse_limit",
     .type = &config__t_u32,
     ONE,
     .min = 0,
     .max = 1000000,
     .def = "0",
     .off = DS(reuse_limit),
     .synopsis = "NUMBER",
     .help = "messages per connection to this destination; 0 inherits"},
};
#undef DS

static const struct config__block destination_block = {
    "destination", destination_dirs, NDIRS(destination_dirs), NULL};

#define TR(f) offsetof(struct config_tlsrpt, f)
static const struct config__dir tlsrpt_dirs[] = {
    {.name = "organization",
     .type = &config__t_text,
     ONE,
     .off = TR(organization),
     .synopsis = "TEXT",
     .help = "organization-name in reports",
     .unset = "the hostname"},
    {.name = "contact",
     .type = &config__t_text,
     ONE,
     .off = TR(contact),
     .synopsis = "TEXT",
     .help = "contact-info in reports",
     .unset = "postmaster@ the submitter"},
    {.name = "submitter",
     .type = &config__t_hostname,
     ONE,
     .off = TR(submitter),
     .synopsis = "DOMAIN",
     .help = "the domain that submits the reports",
     .unset = "the hostname"},
    {.name = "from",
     .type = &config__t_mailbox,
     ONE,
     .off = TR(from),
     .synopsis = "MAILBOX",
     .help = "sender of mailed reports",
     .unset = "noreply-tlsrpt@ the submitter"},
    {.name = "send_window",
     .type = &config__t_duration,
     ONE,
     .min = SEC(1),
     .max = DAY(1),
     .def = "4h",
     .off = TR(send_window_ms),
     .synopsis = "DURATION",
     .help = "reports go out at a random moment this long after midnight UTC"},
    {.name = "https_timeout",
     .type = &config__t_duration,
     ONE,
     .min = SEC(1),
     .max = SEC(600),
     .def = "60s",
     .off = TR(https_timeout_ms),
     .synopsis = "DURATION",
     .help = "time for one HTTPS report submission"},
    {.name = "retry_for",
     .type = &config__t_duration,
     ONE,
     .min = SEC(60),
     .max = DAY(7),
     .def = "1d",
     .off = TR(retry_for_ms),
     .synopsis = "DURATION",
     .help = "how long a report that could not be sent is retried"},
    {.name = "keep",
     .type = &config__t_duration,
     ONE,
     .min = DAY(2),
     .max = DAY(366),
     .def = "14d",
     .off = TR(keep_ms),
     .synopsis = "DURATION",
     .help = "how long daily counts are kept"},
    {.name = "dkim_key",
     .type = &config__t_path,
     ONE,
     .off = TR(dkim_key),
     .synopsis = "FILE",
     .help = "private key that DKIM-signs mailed reports (d= the submitter)",
     .unset = "mailed reports are not signed"},
    {.name = "dkim_selector",
     .type = &config__t_hostname,
     ONE,
     .off = TR(dkim_selector),
     .synopsis = "SELECTOR",
     .help = "the DKIM selector of dkim_key",
     .unset = "required with dkim_key"},
};
#undef TR

static int check_tlsrpt(struct config__walk *w, void *obj,
                        const struct config__node *st) {
  const struct config_tlsrpt *t = obj;
  if ((t->dkim_key == NULL) != (t->dkim_selector == NULL))
    return config__fail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                        "'dkim_key' and 'dkim_selector' go together in the "
                        "tlsrpt block");
  return 0;
}

static const struct config__block tlsrpt_block = {
    "tlsrpt", tlsrpt_dirs, NDIRS(tlsrpt_dirs), check_tlsrpt};

#define CL(f) offsetof(struct config_cluster, f)
static const struct config__dir cluster_dirs[] = {
    {.name = "redis",
     .type = &config__t_redis_url,
     ONE,
     .off = CL(redis),
     .synopsis = "URL",
     .help = "the Redis the fleet shares (redis://, rediss:// for TLS, or "
             "unix:///...)",
     .unset = "required"},
    {.name = "redis_ca_file",
     .type = &config__t_path,
     ONE,
     .off = CL(redis_ca_file),
     .synopsis = "FILE",
     .help = "roots that verify a rediss:// Redis' certificate",
     .unset = "the tls block's ca_file"},
    {.name = "redis_cert_file",
     .type = &config__t_path,
     ONE,
     .off = CL(redis_cert_file),
     .synopsis = "FILE",
     .help = "client certificate chain for a rediss:// Redis that asks for one",
     .unset = "none"},
    {.name = "redis_key_file",
     .type = &config__t_path,
     ONE,
     .off = CL(redis_key_file),
     .synopsis = "FILE",
     .help = "the client certificate's private key",
     .unset = "none"},
    {.name = "node",
     .type = &config__t_token,
     ONE,
     .off = CL(node),
     .synopsis = "NAME",
     .help = "this node's name, unique in the fleet",
     .unset = "required"},
    {.name = "key_prefix",
     .type = &config__t_token,
     ONE,
     .def = "postern:",
     .off = CL(key_prefix),
     .synopsis = "TEXT",
     .help = "prepended to every Redis key (fleets sharing one Redis)"},
    {.name = "lease_ttl",
     .type = &config__t_duration,
     ONE,
     .min = SEC(3),
     .max = SEC(3600),
     .def = "30s",
     .off = CL(lease_ttl_ms),
     .synopsis = "DURATION",
     .help = "life of a connection lease; renewed every third of it"},
    {.name = "local_share",
     .type = &config__t_share,
     ONE,
     .min = 0,
     .max = 1000000,
     .def = "0.5",
     .off = CL(local_share),
     .synopsis = "DECIMAL|PERCENT",
     .help = "share of fleet-wide limits used while Redis is unreachable"},
};
#undef CL

static int check_cluster(struct config__walk *w, void *obj,
                         const struct config__node *st) {
  const struct config_cluster *c = obj;
  if (c->redis == NULL || c->node == NULL)
    return config__fail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                        "the cluster block needs 'redis' and 'node'");
  if ((c->redis_cert_file == NULL) != (c->redis_key_file == NULL))
    return config__fail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                        "'redis_cert_file' and 'redis_key_file' go together");
  if ((c->redis_ca_file || c->redis_cert_file) &&
      strncmp(c->redis, "rediss://", 9) != 0)
    return config__fail(w, st->name.line, st->name.col, POSTERN_ECONFIG,
                        "'redis_ca_file', 'redis_cert_file' and "
                        "'redis_key_file' need a rediss:// URL");
  return 0;
}

static const struct config__block cluster_block = {
    "cluster", cluster_dirs, NDIRS(cluster_dirs), check_cluster};

#define R(f) offsetof(struct postern_config, f)
static const struct config__dir root_dirs[] = {
    {.name = "hostname",
     .type = &config__t_hostname,
     ONE,
     .off = R(hostname),
     .synopsis = "NAME",
     .unset = "the system host name",
     .help = "name used in the greeting, EHLO and Received: headers"},
    {.name = "state_dir",
     .type = &config__t_path,
     ONE,
     .def = "/var/lib/postern",
     .off = R(state_dir),
     .synopsis = "PATH",
     .help = "directory of the queue and caches"},
    {.name = "user",
     .type = &config__t_user,
     ONE,
     .off = R(user),
     .synopsis = "NAME",
     .help = "user to switch to after binding, when started as root",
     .unset = "privileges are not dropped"},
    {.name = "listen",
     .type = &config__t_listen,
     ONE,
     .off = R(listens),
     .sub = &listen_block,
     .flags = CONFIG__REPEAT | CONFIG__BLOCK_OPT,
     .synopsis = "ADDR:PORT",
     .help = "accept mail over SMTP on this address"},
    {.name = "queue",
     .type = &config__t_section,
     .off = R(queue),
     .sub = &queue_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "queue and retry schedule"},
    {.name = "delivery",
     .type = &config__t_section,
     .off = R(delivery),
     .sub = &delivery_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "outgoing delivery"},
    {.name = "dns",
     .type = &config__t_section,
     .off = R(dns),
     .sub = &dns_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "resolvers"},
    {.name = "tls",
     .type = &config__t_section,
     .off = R(tls),
     .sub = &tls_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "outgoing TLS"},
    {.name = "policy",
     .type = &config__t_policy,
     .off = R(policy),
     .sub = &policy_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "the policy chain, in order"},
    {.name = "log",
     .type = &config__t_section,
     .off = R(log),
     .sub = &log_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "",
     .help = "logging"},
    {.name = "metrics",
     .type = &config__t_optional,
     .off = R(metrics),
     .sub = &metrics_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "{ listen ADDR:PORT }",
     .help = "metrics endpoint",
     .unset = "no metrics endpoint"},
    {.name = "destination",
     .type = &config__t_destination,
     ONE,
     .off = R(destinations),
     .sub = &destination_block,
     .flags = CONFIG__REPEAT | CONFIG__BLOCK_OPT,
     .synopsis = "PATTERN",
     .help = "what this destination must meet (or, explicitly, need not)",
     .unset = "every destination gets the policy chain as it is"},
    {.name = "tlsrpt",
     .type = &config__t_optional,
     .off = R(tlsrpt),
     .sub = &tlsrpt_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "{ ... }",
     .help = "TLS reporting (RFC 8460)",
     .unset = "no TLS reporting"},
    {.name = "cluster",
     .type = &config__t_optional,
     .off = R(cluster),
     .sub = &cluster_block,
     .flags = CONFIG__BLOCK,
     .synopsis = "{ ... }",
     .help = "fleet mode: limits shared through Redis (docs/fleet.md)",
     .unset = "a single node"},
};
#undef R

static int check_root(struct config__walk *w, void *obj,
                      const struct config__node *st);

const struct config__block config__root_block = {"", root_dirs,
                                                 NDIRS(root_dirs), check_root};

const struct config__block *const config__blocks[] = {
    &config__root_block, &listen_block, &queue_block,
    &delivery_block,     &dns_block,    &tls_block,
    &policy_block,       &local_block,  &mtasts_block,
    &dnssec_block,       &dane_block,   &log_block,
    &metrics_block,      &tlsrpt_block, &cluster_block,
    &destination_block,  NULL};

_Static_assert(NDIRS(delivery_dirs) <= CONFIG__MAX_DIRS,
               "raise CONFIG__MAX_DIRS");
_Static_assert(NDIRS(root_dirs) <= CONFIG__MAX_DIRS, "raise CONFIG__MAX_DIRS");

static int check_root(struct config__walk *w, void *obj,
                      const struct config__node *st) {
  struct postern_config *cfg = obj;
  if (cfg->listen_count == 0)
    return config__fail(
        w, w->eof_line, w->eof_col, POSTERN_ECONFIG,
        "no 'listen' directive: at least one listener is required");
  if (cfg->hostname == NULL) {
    char name[256] = "";
    const char *why = "gethostname failed";
    if (gethostname(name, sizeof name - 1) != 0 ||
        config__hostname_check(name, strlen(name), &why) != 0) {
      char q[256];
      return config__fail(w, 0, 0, POSTERN_ECONFIG,
                          "the system host name '%s' is unusable (%s); set "
                          "'hostname'",
                          config__quote_user(name, strlen(name), q, sizeof q),
                          why);
    }
    cfg->hostname = strdup(name);
    if (cfg->hostname == NULL)
      return config__fail(w, 0, 0, POSTERN_ENOMEM, "out of memory");
  }
  if (cfg->delivery.workers == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->delivery.workers = n < 1 ? 1 : n > 256 ? 256 : (uint32_t)n;
  }
  if (cfg->policy_count == 0) {
    bool seen = false;
    for (size_t i = 0; i < st->nchildren; i++)
      seen |= strcmp(st->children[i].name.s, "policy") == 0;
    if (!seen) {
      /* No policy block at all: security on by default, the chain
       * `local, mtasts, dnssec, dane` with every default. dnssec and dane
       * only ever raise levels on answers a trusted validating resolver
       * vouched for (AD), so they are safe on any resolver. */
      static const enum config_policy_kind chain[] = {
          CONFIG_POLICY_LOCAL, CONFIG_POLICY_MTASTS, CONFIG_POLICY_DNSSEC,
          CONFIG_POLICY_DANE};
      for (size_t i = 0; i < sizeof chain / sizeof chain[0]; i++) {
        struct config_policy_module *m =
            config__arr_push(&cfg->policy, sizeof *m);
        if (m == NULL)
          return config__fail(w, 0, 0, POSTERN_ENOMEM, "out of memory");
        m->kind = chain[i];
        int rc =
            config__apply_defaults(w, policy_dirs[chain[i]].sub, &m->local);
        if (rc != 0)
          return rc;
      }
    }
  }
  return 0;
}
