/*
 * config.h - Postern's configuration file: loading, validation, printing.
 *
 * The file is read once into a `struct postern_config` made of plain fields
 * with every default already filled in, so callers never look up a default
 * themselves. The syntax and every directive are described in
 * docs/postern.conf.5. Parsing is driven by one schema table per block
 * (config_schema.c), the same table that fills defaults and drives
 * config_print.
 *
 * Enumerated values have one definition each, so the relay passes them on
 * without a cast: the security levels are the policy's (policy/levels.h),
 * the log level and format the logger's (base/postern_log.h). Names come
 * from the X-macro that defines each enum, or for policy modules from their
 * schema rows, so no name table is kept by hand.
 *
 * Ownership: a `struct postern_config` owns every string and array it
 * points to; all of them stay valid until config_free. Callers that keep a
 * value past a reload copy it.
 *
 * Threading: config_load and config_print have no global state except
 * reading the environment ({env:NAME}); a loaded configuration is immutable
 * and may be read from any thread. A reload loads a new one and swaps it.
 */
#ifndef POSTERN_ENGINE_CONFIG_H
#define POSTERN_ENGINE_CONFIG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "base/postern_log.h"
#include "policy/levels.h"

#define CONFIG_DEFAULT_PATH "/etc/postern/postern.conf"

/* Limits on the input; going over one is an error with its position. */
#define CONFIG_FILE_MAX (16u * 1024 * 1024) /* bytes in the whole file */
#define CONFIG_LINE_MAX 65536u              /* bytes in one line */
#define CONFIG_TOKEN_MAX 4096u   /* bytes in one word, after {env:} */
#define CONFIG_ARGS_MAX 1024u    /* arguments of one directive */
#define CONFIG_DEPTH_MAX 8u      /* nesting of { } blocks */
#define CONFIG_WORDS_MAX 262144u /* words (names and arguments) in a file */
#define CONFIG_LISTEN_MAX 256u   /* listen directives */
#define CONFIG_ROUTE_MAX 1000u   /* route directives */
#define CONFIG_DEST_MAX 10000u   /* destination blocks */
#define CONFIG_DEST_PINS 8u      /* tls_fingerprint digests per block */
#define CONFIG_DEST_NAMES 8u     /* tls_names per block */

/*
 * The config's earlier names for values it now shares with their owners
 * (the logger's levels and formats, the policy's levels), kept so existing
 * callers and tests read the same. New code uses the owners' names.
 */
#define CONFIG_LOG_ERROR POSTERN_LOG_ERROR
#define CONFIG_LOG_WARN POSTERN_LOG_WARN
#define CONFIG_LOG_INFO POSTERN_LOG_INFO
#define CONFIG_LOG_DEBUG POSTERN_LOG_DEBUG
#define CONFIG_LOG_LOGFMT POSTERN_LOG_LOGFMT
#define CONFIG_LOG_JSON POSTERN_LOG_JSON
#define CONFIG_TLS_LEVEL_NONE POLICY_TLS_LEVEL_NONE
#define CONFIG_TLS_LEVEL_ENCRYPTED POLICY_TLS_LEVEL_ENCRYPTED
#define CONFIG_TLS_LEVEL_AUTHENTICATED POLICY_TLS_LEVEL_AUTHENTICATED
#define CONFIG_MX_LEVEL_NONE POLICY_MX_LEVEL_NONE
#define CONFIG_MX_LEVEL_MTASTS POLICY_MX_LEVEL_MTASTS
#define CONFIG_MX_LEVEL_DNSSEC POLICY_MX_LEVEL_DNSSEC

/* The oldest TLS version spoken (`tls { min_version }`). X(NAME, "string") */
#define CONFIG_TLS_VERSION_MAP(X)                                              \
  X(1_2, "1.2")                                                                \
  X(1_3, "1.3")

enum config_tls_version {
#define CONFIG__TLS_VERSION_DEF(name, str) CONFIG_TLS_##name,
  CONFIG_TLS_VERSION_MAP(CONFIG__TLS_VERSION_DEF)
#undef CONFIG__TLS_VERSION_DEF
      CONFIG_TLS_VERSION_COUNT
};

/* The modules of the policy chain. A module's name is its directive's in
 * the policy block (config_policy_kind_name), whose schema table is indexed
 * by this enum. */
enum config_policy_kind {
  CONFIG_POLICY_LOCAL,
  CONFIG_POLICY_MTASTS,
  CONFIG_POLICY_DNSSEC,
  CONFIG_POLICY_DANE,
  CONFIG_POLICY_KIND_COUNT
};

/* An IP address and port, validated: "127.0.0.1:2525" or "[::1]:2525".
 * `text` is the canonical form (what config_print writes). */
struct config_addr {
  char *text;
  struct sockaddr_storage sa; /* sockaddr_in or sockaddr_in6, port set */
  socklen_t salen;
};

/* An IP address without port ("192.0.2.1", "2001:db8::1"); text is NULL
 * when the directive was not given. */
struct config_ip {
  char *text;
  struct sockaddr_storage sa; /* port 0 */
  socklen_t salen;
};

/* A network in CIDR notation; host bits are always zero. */
struct config_cidr {
  char *text;       /* canonical: "127.0.0.1/32", "::1/128" */
  int family;       /* AF_INET or AF_INET6 */
  uint8_t addr[16]; /* network byte order; 4 bytes used for AF_INET */
  unsigned prefix;  /* 0..32 or 0..128 */
};

struct smtp_auth_users; /* net/smtp_auth.h */

/* listen ADDR:PORT { ... } - one SMTP listener (relay ingress). */
struct config_listen {
  struct config_addr addr;
  /* Clients allowed to relay; with `auth required` and no accept_from
   * given, everyone (0.0.0.0/0 ::/0): the login is the check. */
  struct config_cidr *accept_from;
  size_t accept_from_count;
  /* SMTP AUTH (RFC 4954): enum smtp_auth_mode of net/smtp_auth.h; off,
   * optional (login OR accept_from), required (login AND accept_from). */
  int auth;
  char *users_file;              /* NULL: none; needs tls_cert */
  struct smtp_auth_users *users; /* users_file parsed, owned */
  uint32_t auth_max_failures;    /* per client address, before 421 */
  uint64_t max_message_size;     /* bytes */
  uint32_t max_recipients;
  uint32_t max_sessions;
  char *tls_cert; /* both NULL or both set: STARTTLS offered when set */
  char *tls_key;
  uint64_t timeout_ms;
  unsigned line, col; /* where the listen directive is */
};

struct config_queue {
  uint64_t map_size; /* bytes */
  uint64_t retry_initial_ms;
  double retry_factor; /* 1.0 .. 10.0, at most 6 decimals */
  uint64_t retry_max_ms;
  uint64_t max_age_ms;
  uint64_t delay_warning_ms;   /* 0: no delay warnings */
  uint64_t commit_interval_ms; /* 0: commit as soon as the last one ends */
};

/* route DOMAIN TARGET - send DOMAIN's mail to TARGET instead of its MX. */
struct config_route {
  char *domain;  /* lower case, no trailing dot; "*" matches every domain */
  char *host;    /* lower-case host name or IP literal, without brackets */
  uint16_t port; /* always given */
  bool no_mx;    /* TARGET was in brackets or is an IP: no MX lookup */
  bool is_ip;    /* host is an IP literal: sa holds it, with the port */
  struct sockaddr_storage sa;
  socklen_t salen;
  unsigned line, col;
};

/* A per-destination limit (connections, rate): fleet-wide in fleet mode
 * unless `local` (written "local:N" in the file), then per node. n 0:
 * none / inherit, as the directive says. */
struct config_limit {
  uint32_t n;
  bool local;
};

struct config_delivery {
  uint32_t workers; /* never 0 after loading: 0 in the file = cores */
  uint32_t max_connections;
  struct config_limit per_domain_connections;
  uint32_t initial_connections; /* slow start: attempts before one is up */
  uint32_t max_inflight;        /* messages in delivery at once */
  uint64_t max_inflight_bytes;  /* their bodies, in total */
  struct config_limit per_domain_rate; /* deliveries per second; 0: no cap */
  uint32_t reuse_limit;                /* messages per connection */
  uint64_t chain_threshold_ms;         /* 0: never chain (see deliver.c) */
  uint64_t idle_timeout_ms;
  uint64_t connect_timeout_ms;
  uint64_t command_timeout_ms;
  uint64_t data_timeout_ms;
  uint16_t port;
  struct config_ip local_ip; /* text NULL: let the kernel choose */
  uint64_t shutdown_timeout_ms;
  struct config_route *routes; /* in file order; first match wins */
  size_t route_count;
};

struct config_dns {
  struct config_addr *servers; /* none: the servers in /etc/resolv.conf */
  size_t server_count;
  uint64_t timeout_ms;
  uint32_t attempts;
  bool trust_ad;
  uint32_t cache_size;       /* answers per worker; 0: no cache */
  uint64_t cache_max_ttl_ms; /* longest time an answer is kept */
  uint32_t max_inflight;     /* queries per worker awaiting an answer */
};

struct config_tls {
  char *ca_file;
  enum config_tls_version min_version;
};

struct config_policy_local {
  enum policy_tls_level min_tls_level;
  enum policy_mx_level min_mx_level;
};

struct config_policy_mtasts {
  uint64_t fetch_timeout_ms;
  uint16_t https_port;
  uint64_t max_policy_size;     /* bytes */
  uint64_t cache_size;          /* bytes of the cache's map */
  uint64_t refresh_interval_ms; /* a policy in use is fetched this often */
};

/* One module of the policy chain; `kind` says which member is valid
 * (dnssec and dane have no options). */
struct config_policy_module {
  enum config_policy_kind kind;
  union {
    struct config_policy_local local;
    struct config_policy_mtasts mtasts;
  };
  unsigned line, col;
};

struct config_log {
  enum postern_log_level level;
  enum postern_log_format format;
  char *file; /* "-" means standard error */
};

struct config_metrics {
  bool enabled; /* false when the file has no metrics block */
  struct config_addr listen;
};

/*
 * destination PATTERN { ... }: what the operator demands (or, explicitly,
 * forgives) for one destination. PATTERN is a domain, ".example.com" for
 * every subdomain of it, or "*"; the first block that matches wins. Every
 * setting left out inherits: the enums' value 0 is "inherit", the limits'
 * 0 likewise.
 */
enum config_dest_tls {
  CONFIG_DEST_TLS_INHERIT,
  CONFIG_DEST_TLS_NONE,
  CONFIG_DEST_TLS_ENCRYPTED,
  CONFIG_DEST_TLS_AUTHENTICATED
};
enum config_dest_mx {
  CONFIG_DEST_MX_INHERIT,
  CONFIG_DEST_MX_NONE,
  CONFIG_DEST_MX_MTASTS,
  CONFIG_DEST_MX_DNSSEC
};
enum config_dest_switch {
  CONFIG_DEST_INHERIT,
  CONFIG_DEST_ON,
  CONFIG_DEST_OFF,
  CONFIG_DEST_REQUIRED /* dane only */
};
struct config_destination {
  char *pattern;
  unsigned line, col;
  int min_tls_level;                  /* enum config_dest_tls */
  int min_mx_level;                   /* enum config_dest_mx */
  int dane;                           /* enum config_dest_switch */
  int mtasts;                         /* ON, OFF or INHERIT */
  uint8_t pins[CONFIG_DEST_PINS][32]; /* SHA-256 of a certificate or SPKI */
  size_t npins;
  char names[CONFIG_DEST_NAMES][254]; /* accepted besides the MX name */
  size_t nnames;
  struct config_limit connections; /* per_domain_connections; 0: inherit */
  struct config_limit rate;        /* per_domain_rate; 0: inherit */
  uint32_t reuse_limit;            /* 0: inherit */
};

/* tlsrpt { }: TLS reporting (RFC 8460); off without the block. Strings
 * NULL: derived from the hostname when used. */
struct config_tlsrpt {
  bool enabled;       /* first: see config__t_optional */
  char *organization; /* "organization-name"; NULL: the hostname */
  char *contact;      /* "contact-info"; NULL: postmaster@<submitter> */
  char *submitter;    /* TLS-Report-Submitter; NULL: the hostname */
  char *from;         /* From of mailed reports; NULL: noreply-tlsrpt@... */
  uint64_t send_window_ms; /* reports go out within this after 00:00 UTC */
  uint64_t https_timeout_ms;
  uint64_t retry_for_ms; /* how long a report is retried */
  uint64_t keep_ms;      /* counts kept this long */
  char *dkim_key;        /* PEM private key signing mailed reports */
  char *dkim_selector;   /* its selector (s=); required with the key */
};

/* cluster { }: fleet mode (docs/fleet.md); off without the block. Nodes
 * that name the same Redis (and key_prefix) share connection leases. */
struct config_cluster {
  bool enabled; /* first: see config__t_optional */
  char *redis;  /* the URL, checked with redis_url_parse */
  /* rediss://: the roots (NULL: tls { ca_file }) and an optional client
   * certificate and key. */
  char *redis_ca_file, *redis_cert_file, *redis_key_file;
  char *node;            /* this node's name in the fleet: unique per node */
  char *key_prefix;      /* prepended to every Redis key */
  uint64_t lease_ttl_ms; /* a connection lease's life, renewed every third */
  /* The share of a fleet-wide limit (per_domain_connections) this node
   * uses while Redis is unreachable, 0..1; at least one connection. */
  double local_share;
};

struct postern_config {
  uint64_t generation; /* unique per configuration loaded (never 0) */
  char *path;          /* the file this was loaded from */
  char *hostname;      /* default: gethostname() */
  char *state_dir;
  char *user;                    /* NULL: do not change user */
  struct config_listen *listens; /* at least one */
  size_t listen_count;
  struct config_queue queue;
  struct config_delivery delivery;
  struct config_dns dns;
  struct config_tls tls;
  struct config_policy_module *policy; /* the chain, in order */
  size_t policy_count;
  /* policy { honour_tls_required_no yes|no }: 0 = yes (the default), 1 =
   * no. Right after the chain: the policy block's walk reaches it at its
   * offset from `policy` (config_schema.c). */
  int tls_required_no;
  struct config_log log;
  struct config_metrics metrics;
  struct config_tlsrpt tlsrpt;
  struct config_cluster cluster;
  struct config_destination *destinations; /* in file order */
  size_t destination_count;
};

/* Where and why loading failed. line and col are 1-based (col counts
 * bytes); both are 0 when the error concerns the whole file (unreadable). */
struct config_error {
  char file[1024];
  unsigned line, col;
  char message[512];
};

/*
 * Reads and validates the file at `path`. On success returns 0 and stores a
 * new configuration in *out (free it with config_free). On failure returns
 * POSTERN_ESYNTAX (the file's syntax), POSTERN_ECONFIG (a directive or value
 * is wrong), POSTERN_ETOOBIG (a limit above was exceeded), POSTERN_EIO or
 * POSTERN_ENOENT (the file cannot be read) or POSTERN_ENOMEM, fills *err and
 * leaves *out NULL. `err` may not be NULL.
 */
int config_load(const char *path, struct postern_config **out,
                struct config_error *err);

/*
 * Like config_load for text already in memory; `name` is used in error
 * messages and as cfg->path. `text` need not be NUL-terminated and may hold
 * any bytes (NUL bytes are reported as errors). Same errors as config_load.
 */
int config_parse(const char *name, const char *text, size_t len,
                 struct postern_config **out, struct config_error *err);

/* Frees a configuration from config_load/config_parse. NULL is a no-op. */
void config_free(struct postern_config *cfg);

/*
 * Writes the effective configuration, with every default filled in, in the
 * file's own syntax: parsing the output yields the same configuration.
 * Returns 0 or POSTERN_EIO when writing failed.
 */
int config_print(FILE *f, const struct postern_config *cfg);

/*
 * Writes the schema, one directive per line, tab-separated: the name with
 * its blocks ("queue.retry_max", "policy.local.min_tls_level"), the
 * arguments ("DURATION"), the default in file syntax (or "unset: ..." or
 * empty), the range ("1ms..30d" or empty), and a one-line description. For
 * `postern --directives` and the documentation tests. Returns 0 or
 * POSTERN_EIO.
 */
int config_schema_print(FILE *f);

/*
 * Formats `err` as "file:line:col: message" (or "file: message" when line is
 * 0) into buf, always NUL-terminated. Returns the length it wanted, like
 * snprintf.
 */
size_t config_error_format(const struct config_error *err, char *buf,
                           size_t cap);

/* Names as written in the file ("dane", "authenticated", "mtasts", "info",
 * "json", "1.2"); static strings, "?" for values out of range. */
const char *config_policy_kind_name(enum config_policy_kind kind);
const char *config_tls_level_name(enum policy_tls_level level);
const char *config_mx_level_name(enum policy_mx_level level);
const char *config_log_level_name(enum postern_log_level level);
const char *config_log_format_name(enum postern_log_format format);
const char *config_tls_version_name(enum config_tls_version version);
/* "off", "optional", "required" (config_listen.auth). */
const char *config_auth_mode_name(int mode);

/* A Redis URL (cluster { redis }) as it may be shown (--check, qtool):
 * the password, if any, as "***"; at most cap bytes with the NUL. */
void config_redis_url_shown(const char *url, char *buf, size_t cap);

#endif
