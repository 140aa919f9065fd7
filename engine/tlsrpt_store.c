/*
 * engine/tlsrpt_store.c - reads the TLS report counts back from the
 * queue's counters (see tlsrpt_store.h; the layout is in tlsrpt.c).
 *
 * Keys come sorted, so one scan meets each domain's records together and,
 * within a domain, each policy's; a policy's failure records (kind F) sort
 * before its description (P) and its successes (S), so a policy entry is
 * made by whichever record comes first and completed by the others.
 *
 * Ownership: everything in the returned array is owned by it.
 */
#include "engine/tlsrpt_store.h"

#include "base/postern_err.h"
#include "policy/tlsrpt.h"
#include "queue/queue.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct load {
  struct tlsrpt_store_domain *d;
  size_t n, cap;
  char pid[17]; /* the current policy's id */
  int err;
};

static bool day_ok(const char *s) {
  if (s == NULL || strlen(s) != 10)
    return false;
  for (int i = 0; i < 10; i++) {
    bool dash = i == 4 || i == 7;
    if (dash ? s[i] != '-' : (s[i] < '0' || s[i] > '9'))
      return false;
  }
  return true;
}

/* Splits a key into its tab-separated fields (at most 6). */
static size_t fields(const char *key, size_t klen, const char *f[6],
                     size_t len[6]) {
  size_t n = 0, start = 0;
  for (size_t i = 0; i <= klen && n < 6; i++) {
    if (i == klen || key[i] == '\t') {
      f[n] = key + start;
      len[n] = i - start;
      n++;
      start = i + 1;
    }
  }
  return n;
}

static char *dup_json_str(json_t *o, const char *name) {
  const char *s = json_string_value(json_object_get(o, name));
  return s ? strdup(s) : NULL;
}

static int str_array(json_t *a, char ***out, size_t *n) {
  size_t k = json_array_size(a);
  *out = NULL;
  *n = 0;
  if (k == 0)
    return 0;
  char **v = calloc(k, sizeof *v);
  if (v == NULL)
    return POSTERN_ENOMEM;
  for (size_t i = 0; i < k; i++) {
    const char *s = json_string_value(json_array_get(a, i));
    if (s != NULL && (v[*n] = strdup(s)) != NULL)
      (*n)++;
  }
  *out = v;
  return 0;
}

static struct tlsrpt_store_policy *cur_policy(struct load *l) {
  struct tlsrpt_store_domain *d = &l->d[l->n - 1];
  return &d->policies[d->npolicies - 1];
}

static int on_counter(void *arg, const void *key, size_t klen, uint64_t value,
                      const void *note, size_t nlen) {
  struct load *l = arg;
  const char *f[6];
  size_t len[6];
  size_t nf = fields(key, klen, f, len);
  /* T<day> <domain> <pid> <kind> [<fid>] */
  if (nf < 4 || len[0] != 11 || len[1] == 0 || len[1] > 255 || len[2] != 16 ||
      len[3] != 1)
    return 0;
  char domain[256];
  memcpy(domain, f[1], len[1]);
  domain[len[1]] = '\0';
  if (l->n == 0 || strcmp(l->d[l->n - 1].domain, domain) != 0) {
    if (l->n == l->cap) {
      size_t nc = l->cap ? 2 * l->cap : 16;
      struct tlsrpt_store_domain *nd = realloc(l->d, nc * sizeof *nd);
      if (nd == NULL)
        return l->err = POSTERN_ENOMEM;
      l->d = nd;
      l->cap = nc;
    }
    struct tlsrpt_store_domain *d = &l->d[l->n++];
    memset(d, 0, sizeof *d);
    memcpy(d->day, f[0] + 1, 10);
    snprintf(d->domain, sizeof d->domain, "%s", domain);
    l->pid[0] = '\0';
  }
  struct tlsrpt_store_domain *d = &l->d[l->n - 1];
  if (d->npolicies == 0 || memcmp(l->pid, f[2], 16) != 0) {
    struct tlsrpt_store_policy *np =
        realloc(d->policies, (d->npolicies + 1) * sizeof *np);
    if (np == NULL)
      return l->err = POSTERN_ENOMEM;
    d->policies = np;
    memset(&np[d->npolicies], 0, sizeof *np);
    np[d->npolicies].type = POLICY_TLSRPT_POLICY_NO_POLICY_FOUND;
    d->npolicies++;
    memcpy(l->pid, f[2], 16);
    l->pid[16] = '\0';
  }
  struct tlsrpt_store_policy *p = cur_policy(l);
  json_t *j = nlen > 0 ? json_loadb(note, nlen, 0, NULL) : NULL;
  switch (f[3][0]) {
  case 'P': {
    int t = policy_tlsrpt_policy_parse(
        json_string_value(json_object_get(j, "policy-type")));
    if (t >= 0)
      p->type = t;
    if (str_array(json_object_get(j, "policy-string"), &p->strings,
                  &p->nstrings) ||
        str_array(json_object_get(j, "mx-host"), &p->mx, &p->nmx))
      l->err = POSTERN_ENOMEM;
    break;
  }
  case 'S':
    p->successful += value;
    break;
  case 'F': {
    int res = policy_tlsrpt_result_parse(
        json_string_value(json_object_get(j, "result-type")));
    if (res <= 0 || value == 0)
      break;
    struct tlsrpt_store_failure *nfl =
        realloc(p->failures, (p->nfailures + 1) * sizeof *nfl);
    if (nfl == NULL) {
      l->err = POSTERN_ENOMEM;
      break;
    }
    p->failures = nfl;
    struct tlsrpt_store_failure *x = &nfl[p->nfailures++];
    *x = (struct tlsrpt_store_failure){
        .result = res,
        .sending_ip = dup_json_str(j, "sending-mta-ip"),
        .mx = dup_json_str(j, "receiving-mx-hostname"),
        .receiving_ip = dup_json_str(j, "receiving-ip"),
        .count = value};
    p->failed += value;
    break;
  }
  default:
    break;
  }
  json_decref(j);
  return l->err;
}

int tlsrpt_store_load(struct queue *q, const char *day, const char *domain,
                      struct tlsrpt_store_domain **out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (!day_ok(day) || (domain != NULL &&
                       (strchr(domain, '\t') != NULL || strlen(domain) > 255)))
    return POSTERN_EINVAL;
  char prefix[300];
  int plen = domain ? snprintf(prefix, sizeof prefix, "T%s\t%s\t", day, domain)
                    : snprintf(prefix, sizeof prefix, "T%s\t", day);
  struct load l = {0};
  int rc = queue_counters_scan(q, prefix, (size_t)plen, on_counter, &l);
  if (rc == 0)
    rc = l.err;
  if (rc != 0) {
    tlsrpt_store_free(l.d, l.n);
    return rc;
  }
  *out = l.d;
  *n = l.n;
  return 0;
}

int tlsrpt_store_from_records(const struct tlsrpt_store_rec *recs, size_t n,
                              struct tlsrpt_store_domain **out, size_t *nout) {
  struct load l = {0};
  for (size_t i = 0; i < n && l.err == 0; i++)
    on_counter(&l, recs[i].key, recs[i].klen, recs[i].value, recs[i].note,
               recs[i].nlen);
  if (l.err != 0) {
    tlsrpt_store_free(l.d, l.n);
    *out = NULL;
    *nout = 0;
    return l.err;
  }
  *out = l.d;
  *nout = l.n;
  return 0;
}

void tlsrpt_store_free(struct tlsrpt_store_domain *d, size_t n) {
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < d[i].npolicies; k++) {
      struct tlsrpt_store_policy *p = &d[i].policies[k];
      for (size_t s = 0; s < p->nstrings; s++)
        free(p->strings[s]);
      free(p->strings);
      for (size_t s = 0; s < p->nmx; s++)
        free(p->mx[s]);
      free(p->mx);
      for (size_t s = 0; s < p->nfailures; s++) {
        free(p->failures[s].sending_ip);
        free(p->failures[s].mx);
        free(p->failures[s].receiving_ip);
      }
      free(p->failures);
    }
    free(d[i].policies);
  }
  free(d);
}

struct days {
  char (*d)[11];
  size_t n, cap;
  int err;
};

static int on_day(void *arg, const void *key, size_t klen, uint64_t value,
                  const void *note, size_t nlen) {
  (void)value, (void)note, (void)nlen;
  struct days *ds = arg;
  if (klen < 12)
    return 0;
  const char *day = (const char *)key + 1;
  if (ds->n > 0 && memcmp(ds->d[ds->n - 1], day, 10) == 0)
    return 0;
  if (ds->n == ds->cap) {
    size_t nc = ds->cap ? 2 * ds->cap : 8;
    char(*nd)[11] = realloc(ds->d, nc * sizeof *nd);
    if (nd == NULL)
      return ds->err = POSTERN_ENOMEM;
    ds->d = nd;
    ds->cap = nc;
  }
  memcpy(ds->d[ds->n], day, 10);
  ds->d[ds->n][10] = '\0';
  if (day_ok(ds->d[ds->n]))
    ds->n++;
  return 0;
}

int tlsrpt_store_days(struct queue *q, char (**days)[11], size_t *n) {
  struct days ds = {0};
  int rc = queue_counters_scan(q, "T", 1, on_day, &ds);
  if (rc == 0)
    rc = ds.err;
  if (rc != 0) {
    free(ds.d);
    *days = NULL;
    *n = 0;
    return rc;
  }
  *days = ds.d;
  *n = ds.n;
  return 0;
}

int tlsrpt_store_forget_day(struct queue *q, const char *day) {
  if (!day_ok(day))
    return POSTERN_EINVAL;
  char prefix[16];
  int plen = snprintf(prefix, sizeof prefix, "T%s\t", day);
  return queue_counters_delete(q, prefix, (size_t)plen, NULL);
}

long long tlsrpt_store_day_start(const char *day) {
  if (!day_ok(day))
    return -1;
  struct tm tm = {0};
  tm.tm_year = atoi(day) - 1900;
  tm.tm_mon = atoi(day + 5) - 1;
  tm.tm_mday = atoi(day + 8);
  if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31)
    return -1;
  return (long long)timegm(&tm);
}

void tlsrpt_store_defaults(const char *hostname, const char *organization,
                           const char *contact, const char *submitter,
                           const char *from, struct tlsrpt_store_meta *meta,
                           char contact_buf[300], char from_buf[300]) {
  meta->submitter = submitter ? submitter : hostname;
  meta->organization = organization ? organization : hostname;
  if (contact == NULL) {
    snprintf(contact_buf, 300, "postmaster@%s", meta->submitter);
    contact = contact_buf;
  }
  meta->contact = contact;
  if (from_buf != NULL) {
    if (from == NULL)
      snprintf(from_buf, 300, "noreply-tlsrpt@%s", meta->submitter);
    else
      snprintf(from_buf, 300, "%s", from);
  }
}

void tlsrpt_store_report_id(const char *day, const char *domain,
                            const char *submitter, char *buf, size_t cap) {
  snprintf(buf, cap, "%s.%s@%s", day, domain, submitter);
}

int tlsrpt_store_view(const struct tlsrpt_store_domain *d,
                      struct tlsrpt_store_view *v) {
  memset(v, 0, sizeof *v);
  v->pols = calloc(d->npolicies ? d->npolicies : 1, sizeof *v->pols);
  v->fs = calloc(d->npolicies ? d->npolicies : 1, sizeof *v->fs);
  v->n = d->npolicies;
  if (v->pols == NULL || v->fs == NULL) {
    tlsrpt_store_view_free(v);
    return POSTERN_ENOMEM;
  }
  for (size_t i = 0; i < d->npolicies; i++) {
    const struct tlsrpt_store_policy *p = &d->policies[i];
    if (p->nfailures && !(v->fs[i] = calloc(p->nfailures, sizeof *v->fs[i]))) {
      tlsrpt_store_view_free(v);
      return POSTERN_ENOMEM;
    }
    for (size_t k = 0; k < p->nfailures; k++)
      v->fs[i][k] = (struct policy_tlsrpt_failure){
          .result = p->failures[k].result,
          .sending_mta_ip = p->failures[k].sending_ip,
          .receiving_mx_hostname = p->failures[k].mx,
          .receiving_ip = p->failures[k].receiving_ip,
          .count = p->failures[k].count};
    v->pols[i] = (struct policy_tlsrpt_policy){
        .type = p->type,
        .domain = d->domain,
        .strings = (const char *const *)p->strings,
        .nstrings = p->nstrings,
        .mx_hosts = (const char *const *)p->mx,
        .nmx_hosts = p->nmx,
        .successful = p->successful,
        .failed = p->failed,
        .failures = v->fs[i],
        .nfailures = p->nfailures};
  }
  return 0;
}

void tlsrpt_store_view_free(struct tlsrpt_store_view *v) {
  for (size_t i = 0; v->fs != NULL && i < v->n; i++)
    free(v->fs[i]);
  free(v->fs);
  free(v->pols);
  memset(v, 0, sizeof *v);
}

int tlsrpt_store_report(const struct tlsrpt_store_domain *d,
                        const struct tlsrpt_store_meta *meta, char **json,
                        size_t *len) {
  long long start = tlsrpt_store_day_start(d->day);
  if (start < 0 || d->npolicies == 0)
    return POSTERN_EINVAL;
  struct tlsrpt_store_view v;
  int rc = tlsrpt_store_view(d, &v);
  if (rc != 0)
    return rc;
  char id[600];
  tlsrpt_store_report_id(d->day, d->domain, meta->submitter, id, sizeof id);
  struct policy_tlsrpt_report r = {.organization = meta->organization,
                                   .contact = meta->contact,
                                   .report_id = id,
                                   .start = (time_t)start,
                                   .end = (time_t)start + 86400 - 1,
                                   .policies = v.pols,
                                   .npolicies = v.n};
  rc = policy_tlsrpt_report_json(&r, json, len);
  tlsrpt_store_view_free(&v);
  return rc;
}

void tlsrpt_store_day(uint64_t now_ms, char out[11]) {
  time_t t = (time_t)(now_ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 11, "%Y-%m-%d", &tm);
}

int tlsrpt_store_key(char kind, const char *day, const char *domain, char *buf,
                     size_t cap) {
  int n = snprintf(buf, cap, "%c%s\t%s", kind, day, domain ? domain : "");
  return n < 0 || (size_t)n >= cap ? -1 : n;
}
