/*
 * engine/tlsrpt_store.h - reading back the TLS report counts that
 * engine/tlsrpt.c keeps in the queue's counters (the key layout is
 * described there): one day's sessions per policy domain and applied
 * policy, as the report (RFC 8460 §4.4) and qtool need them.
 */
#ifndef POSTERN_ENGINE_TLSRPT_STORE_H
#define POSTERN_ENGINE_TLSRPT_STORE_H

#include <stddef.h>
#include <stdint.h>

struct queue;

struct tlsrpt_store_failure {
  int result;         /* enum policy_tlsrpt_result */
  char *sending_ip;   /* NULL when unknown */
  char *mx;           /* receiving-mx-hostname, NULL when none */
  char *receiving_ip; /* NULL when unknown */
  uint64_t count;
};

struct tlsrpt_store_policy {
  int type; /* enum policy_tlsrpt_policy_type */
  char **strings;
  size_t nstrings;
  char **mx;
  size_t nmx;
  uint64_t successful, failed;
  struct tlsrpt_store_failure *failures;
  size_t nfailures;
};

struct tlsrpt_store_domain {
  char day[11];     /* YYYY-MM-DD, UTC */
  char domain[256]; /* the policy domain */
  struct tlsrpt_store_policy *policies;
  size_t npolicies;
};

/*
 * Loads the counts of `day` ("YYYY-MM-DD"), for one policy domain or, with
 * domain NULL, for all, into a new array *out of *n entries in domain
 * order (free with tlsrpt_store_free). Records that do not parse are
 * skipped. Returns 0, POSTERN_EINVAL (day not YYYY-MM-DD), POSTERN_ENOMEM
 * or the queue's read error.
 */
int tlsrpt_store_load(struct queue *q, const char *day, const char *domain,
                      struct tlsrpt_store_domain **out, size_t *n);
void tlsrpt_store_free(struct tlsrpt_store_domain *d, size_t n);

/* One counter record as the queue keeps it (the layout is in tlsrpt.c);
 * borrowed views. */
struct tlsrpt_store_rec {
  const char *key;
  size_t klen;
  uint64_t value;
  const char *note;
  size_t nlen;
};

/* tlsrpt_store_load on records given in key order instead of the queue's
 * (fleet mode: the sum of every node's, tlsrpt_share.c). Same results. */
int tlsrpt_store_from_records(const struct tlsrpt_store_rec *recs, size_t n,
                              struct tlsrpt_store_domain **out, size_t *nout);

/* ---- Fleet mode: the counts a node shares (tlsrpt_share.c) ------------
 *
 * A node shares its records of one day and policy domain as text, so that
 * the node sending the report can sum every node's:
 *
 *   postern-tlsrpt 1\n
 *   <policy id>\t<kind>[\t<failure id>]\t<count>\t<note>\n   (per record)
 *
 * the key's tail, the value and the note of each record as tlsrpt.c writes
 * them (ids: 16 lower-case hex digits; kind P, S or F, F with a failure
 * id; the note JSON without control characters). Records with equal tails
 * are the same thing counted by different nodes: their counts add up.
 */

#define TLSRPT_SHARE_MAX (4u * 1024 * 1024) /* bytes of one node's text */

/* The text of one day's records for `domain` (malloc'd, *len bytes, not
 * NUL-terminated). Returns 0, POSTERN_ENOENT (no records), POSTERN_TOOBIG,
 * POSTERN_EINVAL, POSTERN_ENOMEM or the queue's read error. */
int tlsrpt_store_export(struct queue *q, const char *day, const char *domain,
                        char **text, size_t *len);

struct tlsrpt_share_text {
  const char *data;
  size_t len;
};

/*
 * Sums the texts of several nodes for (day, domain) into *out: one entry
 * (*nout 1), or none when the texts hold no record. A text that does not
 * parse as a whole (bad magic, a malformed line, over TLSRPT_SHARE_MAX) is
 * left out and counted in *bad: a node's counts are added entirely or not
 * at all. Returns 0, POSTERN_EINVAL or POSTERN_ENOMEM.
 */
int tlsrpt_store_sum(const char *day, const char *domain,
                     const struct tlsrpt_share_text *texts, size_t n,
                     struct tlsrpt_store_domain **out, size_t *nout,
                     size_t *bad);

/* The days that have counts, oldest first, into a new array of "YYYY-MM-DD"
 * strings (free with free()). Returns 0 or an error as above. */
int tlsrpt_store_days(struct queue *q, char (**days)[11], size_t *n);

/* What a report says about who sends it (tlsrpt { } in the config, with
 * the hostname for what is unset); strings borrowed for the call. */
struct tlsrpt_store_meta {
  const char *organization;
  const char *contact;
  const char *submitter;
};

/* Fills in the defaults of a tlsrpt block for hostname: organization and
 * submitter the hostname, contact "postmaster@<submitter>", from
 * "noreply-tlsrpt@<submitter>" (into the caller's buffers). */
void tlsrpt_store_defaults(const char *hostname, const char *organization,
                           const char *contact, const char *submitter,
                           const char *from, struct tlsrpt_store_meta *meta,
                           char contact_buf[300], char from_buf[300]);

/* The report-id of a day's report for a domain: "<day>.<domain>@<submitter>"
 * (the same for every try, so a receiver can drop a repeat). */
void tlsrpt_store_report_id(const char *day, const char *domain,
                            const char *submitter, char *buf, size_t cap);

/* A domain's counts as the report builder takes them (policy/tlsrpt.h):
 * the policies and their failures point into the domain's entry, which
 * must outlive the view. */
struct policy_tlsrpt_policy;
struct policy_tlsrpt_failure;
struct tlsrpt_store_view {
  struct policy_tlsrpt_policy *pols;
  struct policy_tlsrpt_failure **fs;
  size_t n;
};
/* Fills *v (free with tlsrpt_store_view_free). Returns 0 or
 * POSTERN_ENOMEM (*v then empty). */
int tlsrpt_store_view(const struct tlsrpt_store_domain *d,
                      struct tlsrpt_store_view *v);
void tlsrpt_store_view_free(struct tlsrpt_store_view *v);

/*
 * The RFC 8460 report (JSON, policy_tlsrpt_report_json) of one domain's
 * day d: date-range that UTC day, the given sender data. On 0 *json is
 * malloc'd (caller frees), *len its length. Returns 0 or the builder's
 * error.
 */
int tlsrpt_store_report(const struct tlsrpt_store_domain *d,
                        const struct tlsrpt_store_meta *meta, char **json,
                        size_t *len);

/* The UTC day of now_ms as "YYYY-MM-DD" (the days counts are kept by). */
void tlsrpt_store_day(uint64_t now_ms, char out[11]);

/* The key of a report's record: kind 'R' (sent) or 'Q' (asked for by
 * qtool), "<kind><day>\t<domain>"; domain NULL: the prefix of the day's
 * records of that kind. Returns the length, or -1 when it does not fit. */
int tlsrpt_store_key(char kind, const char *day, const char *domain, char *buf,
                     size_t cap);

/* Start of the UTC day "YYYY-MM-DD" in seconds since the epoch, -1 when
 * the text is not a day. */
long long tlsrpt_store_day_start(const char *day);

/* Deletes a day's counts (after its reports are sent and kept long
 * enough). Returns 0 or the queue's error. */
int tlsrpt_store_forget_day(struct queue *q, const char *day);

#endif
