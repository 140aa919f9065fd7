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

/* The days that have counts, oldest first, into a new array of "YYYY-MM-DD"
 * strings (free with free()). Returns 0 or an error as above. */
int tlsrpt_store_days(struct queue *q, char (**days)[11], size_t *n);

/* Deletes a day's counts (after its reports are sent and kept long
 * enough). Returns 0 or the queue's error. */
int tlsrpt_store_forget_day(struct queue *q, const char *day);

#endif
