/*
 * net/dns.h - asynchronous DNS lookups with DNSSEC status, on a libuv loop.
 *
 * One resolver (struct dns_resolver) per libuv loop, used only from that
 * loop's thread. It wraps one c-ares channel: c-ares sends and retries (UDP,
 * then TCP when an answer is truncated), and this module builds the queries
 * (EDNS0 with the DO bit and the AD bit set, RFC 6840 §5.7) and parses the
 * raw answers itself, so that every answer carries its rcode, its minimum
 * TTL and whether the resolver vouched for it (the AD bit).
 *
 * The AD bit only means something when the path to a validating resolver
 * is trusted. It is reported as `authenticated` only when the operator says
 * so (`trust_ad yes`) or every configured server is on loopback; otherwise
 * it is always false (RFC 6698 §A.2.3, RFC 7672 §2.1.1). The resolver never
 * falls back to any server it was not given.
 *
 * Results are not C errors: a lookup always ends with one callback carrying a
 * struct dns_answer whose `status` says what happened. Callbacks never run
 * inside the call that started the lookup.
 *
 * Answers are cached per resolver (dns_opts.cache_size) for their TTL,
 * negative ones too (RFC 2308), failures never; a cached answer carries
 * the AD bit it came with and its remaining TTL, and is delivered like any
 * other (later, on the loop).
 */
#ifndef NET_DNS_H
#define NET_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

/* RR types this module parses (RFC 1035, RFC 3596, RFC 6698). */
enum dns_type {
  DNS_T_A = 1,
  DNS_T_CNAME = 5,
  DNS_T_SOA = 6,
  DNS_T_MX = 15,
  DNS_T_TXT = 16,
  DNS_T_AAAA = 28,
  DNS_T_OPT = 41,
  DNS_T_TLSA = 52,
};

/* X(NAME, "name"): how a lookup ended. */
#define DNS_STATUS_MAP(X)                                                      \
  X(ANSWER, "answer")       /* records of the asked type were found */         \
  X(NXDOMAIN, "nxdomain")   /* the (final canonical) name does not exist */    \
  X(NODATA, "nodata")       /* the name exists, no records of that type */     \
  X(TEMPFAIL, "tempfail")   /* SERVFAIL, REFUSED, timeout, network, memory */  \
  X(MALFORMED, "malformed") /* the answer violates the protocol */             \
  X(CANCELED, "canceled")   /* dns_query_cancel() or resolver closed */

enum dns_status {
#define DNS__STATUS_ENUM(name, str) DNS_##name,
  DNS_STATUS_MAP(DNS__STATUS_ENUM)
#undef DNS__STATUS_ENUM
};

/* "answer", "nxdomain", ...; static strings ("unknown" out of range). */
const char *dns_status_name(enum dns_status st);

/* Maximum CNAME links followed inside one answer before it is MALFORMED. */
#define DNS_CNAME_MAX 8

/* Longest presentation-format name this module produces, with its NUL. A
 * wire name is at most 255 octets; escaping (\DDD) can make it 4 times as
 * long. */
#define DNS_NAME_MAX 1024

/*
 * One resource record of the asked type. Names are in presentation format,
 * lower-cased, without the trailing dot ("mx1.example.org"; the root is "."),
 * with bytes outside letters, digits, '-' and '_' escaped as \DDD and '.' or
 * '\' inside a label as \. and \\ (RFC 1035 §5.1), so a hostile label can
 * never look like two labels.
 */
struct dns_rr {
  uint16_t type;
  uint32_t ttl;
  union {
    struct in_addr a;     /* DNS_T_A */
    struct in6_addr aaaa; /* DNS_T_AAAA */
    struct {
      uint16_t pref;
      char *host; /* "." for a null MX (RFC 7505) */
    } mx;         /* DNS_T_MX */
    struct {
      /* The record's character-strings concatenated (RFC 7208 §3.3);
       * NUL-terminated for convenience but may contain NULs: use len. One
       * struct per record, so record boundaries are kept. */
      unsigned char *data;
      size_t len;
      unsigned nstrings;
    } txt; /* DNS_T_TXT */
    struct {
      /* RFC 6698 §2.1. `data` is kept whatever its length: whether a
       * record is usable (32 bytes for SHA2-256, 64 for SHA2-512) is for
       * DANE to judge; unusable records are skipped, not fatal (RFC 7672
       * §2.2). Only an RDATA shorter than its three fixed octets is
       * MALFORMED. */
      uint8_t usage, selector, mtype;
      unsigned char *data;
      size_t len;
    } tlsa;       /* DNS_T_TLSA */
    char *target; /* DNS_T_CNAME, when CNAME itself was asked */
  } u;
};

/* The two lookups of dns_resolve_host, as indexes of dns_answer.family. */
enum dns_family_index { DNS_FAMILY_A = 0, DNS_FAMILY_AAAA = 1 };

/* What one family's lookup of a host found. */
struct dns_family {
  enum dns_status status;
  /* As dns_answer.authenticated, for this lookup alone. */
  bool authenticated;
};

struct dns_answer {
  enum dns_status status;
  /* The same outcome as a code: 0 for ANSWER, POSTERN_EDNS_NXDOMAIN,
   * _NODATA, _TEMPFAIL, _MALFORMED, POSTERN_ECANCELED, or POSTERN_ETIMEOUT /
   * POSTERN_ENOMEM for a TEMPFAIL with that known cause. For logs. */
  int err;
  uint16_t qtype;
  /* Response code of the DNS answer (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN,
   * 5 REFUSED, ...), or -1 when no answer arrived. */
  int rcode;
  /* AD bit of the answer, and the resolver is trusted. For NXDOMAIN and
   * NODATA it means the denial was validated. Always false for TEMPFAIL,
   * MALFORMED and CANCELED. */
  bool authenticated;
  /* MX lookups only: the answer is exactly one MX record whose exchange is
   * the root (RFC 7505 §3): the domain accepts no mail. status is ANSWER
   * and the record is in rr[]. */
  bool null_mx;
  /* Host lookups only (dns_resolve_host): one of the two lookups failed
   * (TEMPFAIL/MALFORMED) while the other gave addresses. */
  bool partial;
  /* Host lookups only: what the A ([DNS_FAMILY_A]) and the AAAA
   * ([DNS_FAMILY_AAAA]) lookup found on their own, so that a failed or
   * bogus family never makes the other look unauthenticated (RFC 7672
   * §2.1.1; see dns_host_select). Zeroed for other lookups. */
  struct dns_family family[2];
  /* The name asked, and the final canonical name after following the
   * CNAME chain in the answer (equal to qname when there was none). For
   * DANE the TLSA base domain is the canonical name when the chain is
   * authenticated (RFC 7672 §2.2.2). Both are NULL only on CANCELED. */
  char *qname;
  char *cname;
  /* Number of CNAME links followed. */
  unsigned cname_hops;
  /* Minimum TTL over the records used (CNAME links included); for
   * NXDOMAIN/NODATA the negative-caching TTL from the SOA in the authority
   * section (RFC 2308 §5), 0 when there is none. */
  uint32_t ttl;
  size_t nrr;
  struct dns_rr *rr;
};

/* ---- Wire parser (pure; used by the resolver, unit tests and fuzzing) ---- */

/*
 * Parses the DNS message `pkt` (`len` bytes) as the answer to the question
 * (`qname`, IN, `qtype`). `qid` is the expected message id, or -1 to accept
 * any (the resolver passes -1: c-ares assigns ids and matches them).
 * `trust_ad` says whether the AD bit may be believed.
 *
 * Every byte is treated as hostile: counts are checked against the packet,
 * compressed names must point strictly backwards (so they cannot loop) and
 * are at most 255 octets, every RDATA must be exactly consumed by its
 * fields. Anything else makes status MALFORMED. Follows at most
 * DNS_CNAME_MAX CNAME links from qname (a longer chain or a loop is
 * MALFORMED); a chain that ends without records is NODATA for the last
 * name. Only records in the answer section owned by the final name with the
 * asked type are returned; the others are checked, then ignored.
 *
 * Always fills *out (status and err set even on failure); the caller must
 * release it with dns_answer_free(). Returns out->err: 0 for ANSWER or the
 * negative code matching the status (POSTERN_ENOMEM with status TEMPFAIL
 * when memory ran out).
 */
int dns_answer_parse(const unsigned char *pkt, size_t len, int qid,
                     const char *qname, uint16_t qtype, bool trust_ad,
                     struct dns_answer *out);

/* Releases what dns_answer_parse() allocated inside *a (not `a` itself) and
 * zeroes it. Safe on a zeroed or already freed answer. */
void dns_answer_free(struct dns_answer *a);

/* ---- Resolver ---- */

#define DNS_MAX_SERVERS 8

struct dns_opts {
  /* Servers in order; port 0 means 53. nservers == 0: the servers of
   * /etc/resolv.conf (c-ares default initialisation). */
  struct sockaddr_storage servers[DNS_MAX_SERVERS];
  size_t nservers;
  /* Time for the first try at each server, in milliseconds (c-ares doubles
   * it at every later round). 0 means 5000. */
  unsigned timeout_ms;
  /* Rounds over the server list. 0 means 2. */
  unsigned attempts;
  /* Believe the AD bit even from a non-loopback server. */
  bool trust_ad;
  /* The answer cache (dns_cache.c): at most this many answers (0: no
   * cache), each kept for its TTL but at most cache_max_ttl seconds
   * (negative answers also at most 3 hours, RFC 2308 §5). */
  size_t cache_size;
  uint32_t cache_max_ttl;
  /* Queries sent and not yet answered, at most (0 means
   * DNS_MAX_INFLIGHT_DEFAULT); more wait, in order, for an answer. A
   * burst of new destinations would otherwise overflow the resolver's
   * socket buffer or query table, and each dropped query costs a whole
   * timeout. Cached answers never wait. */
  unsigned max_inflight;
};

/* What the answer cache did since the resolver was made. */
struct dns_cache_stats {
  uint64_t hits, misses, stored, evicted;
  uint64_t entries; /* answers held now */
  uint64_t waited;  /* queries that waited for an in-flight slot */
};

/* Fills *o with the defaults: no servers (resolv.conf), 5 s, 2 attempts,
 * trust_ad off, DNS_MAX_INFLIGHT_DEFAULT queries in flight, a cache of
 * DNS_CACHE_SIZE_DEFAULT answers kept at most DNS_CACHE_MAX_TTL_DEFAULT
 * seconds. */
#define DNS_CACHE_SIZE_DEFAULT 10000
#define DNS_CACHE_MAX_TTL_DEFAULT 86400
#define DNS_MAX_INFLIGHT_DEFAULT 100
void dns_opts_init(struct dns_opts *o);

/*
 * Parses one server as written in the config: "192.0.2.1", "192.0.2.1:5353",
 * "::1", "[::1]:5353" into *out (port 53 when absent). Returns 0 or
 * POSTERN_EINVAL (not an address, bad port). A host name is refused: the
 * resolver's own address must not need resolving.
 */
int dns_server_parse(const char *s, struct sockaddr_storage *out);

struct dns_resolver;
struct dns_query;

/*
 * Called once per lookup, on the resolver's loop, never from inside the call
 * that started it. `a` and everything it points to are borrowed: they are
 * freed when the callback returns, so copy what you keep. The query handle
 * is invalid from the moment the callback starts.
 */
typedef void (*dns_cb)(const struct dns_answer *a, void *arg);

/*
 * Creates a resolver on `loop` with options `o` (NULL for defaults) into
 * *out. Returns 0, POSTERN_ENOMEM, POSTERN_EINVAL (bad option or server
 * address) or POSTERN_EDNS_TEMPFAIL (c-ares could not initialise, e.g.
 * unreadable resolv.conf). Nothing is allocated on failure.
 */
int dns_resolver_new(uv_loop_t *loop, const struct dns_opts *o,
                     struct dns_resolver **out);

/* Whether answers from this resolver may be `authenticated`. */
bool dns_resolver_trusts_ad(const struct dns_resolver *r);

/* The answer cache's counters (all 0 without a cache). Any thread may
 * read them while the resolver is open (a metrics scrape). */
void dns_resolver_cache_stats(const struct dns_resolver *r,
                              struct dns_cache_stats *st);

/*
 * Closes the resolver. Every pending lookup gets its callback with CANCELED
 * (later, on the loop); then the libuv handles are closed, the memory is
 * freed and `cb(arg)` runs (cb may be NULL). The resolver must not be used
 * after this call except by the cancel callbacks, whose new lookups fail
 * with POSTERN_ESTATE.
 */
void dns_resolver_close(struct dns_resolver *r, void (*cb)(void *arg),
                        void *arg);

/*
 * Starts a lookup of (`name`, IN, `type`); `type` is any RR type, but only
 * A, AAAA, MX, TXT, TLSA and CNAME records are decoded (others yield
 * records with only `type` and `ttl` set). `name` may end with a dot. On 0,
 * `cb(answer, arg)` will run exactly once, and *qp (if qp is not NULL) is a
 * handle valid until then. Returns POSTERN_EINVAL (bad name),
 * POSTERN_ENOMEM, or POSTERN_ESTATE (resolver closing); then cb never runs.
 */
int dns_query(struct dns_resolver *r, const char *name, uint16_t type,
              dns_cb cb, void *arg, struct dns_query **qp);

/*
 * Looks up A and AAAA for `name` at once and reports one merged answer
 * (qtype 0, records of both types, A first). Status: ANSWER when either
 * gave addresses (`partial` set if the other failed); otherwise NXDOMAIN if
 * either said so, else the worse failure (MALFORMED, then TEMPFAIL), else
 * NODATA. `authenticated` only when both lookups were authenticated
 * answers or authenticated NODATA; `family` says what each lookup found
 * (use dns_host_select to decide what DANE may rely on). ttl is the minimum
 * of both. Same contract and errors as dns_query().
 */
int dns_resolve_host(struct dns_resolver *r, const char *name, dns_cb cb,
                     void *arg, struct dns_query **qp);

/*
 * Which addresses of a host lookup (dns_resolve_host) to connect to, and
 * whether they are DNSSEC-authenticated, for DANE (RFC 7672 §2.1.1, §2.2):
 * an indeterminate or bogus answer (TEMPFAIL, MALFORMED: what a validating
 * resolver gives for bogus data) is never "insecure", so a family that
 * validated is not downgraded by the other's failure.
 *  - When at least one family is an authenticated ANSWER, only the
 *    authenticated families are used (use[i] true for those) and the
 *    result is true: DANE may apply, to those addresses only.
 *  - Otherwise every family that gave an ANSWER is used and the result is
 *    false (no DANE; a failed family has no addresses anyway).
 * use[] is indexed by enum dns_family_index. Pure; `a` is only read.
 */
bool dns_host_select(const struct dns_answer *a, bool use[2]);

/*
 * Cancels a lookup whose callback has not started yet: the callback runs
 * later, on the loop, with CANCELED. Calling it on a finished lookup is a
 * use after free.
 */
void dns_query_cancel(struct dns_query *q);

#endif
