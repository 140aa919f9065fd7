/*
 * engine/tlsrpt_send.c - TLS reporting (RFC 8460), the sending half: once a
 * UTC day is over, each policy domain with counts for it gets its report,
 * at a random moment within tlsrpt { send_window } after midnight (§4.1:
 * spread the load on receivers), to the URIs of its `_smtp._tls` record.
 *
 *   tick (every minute) -> for each finished day with counts, each domain
 *   not done yet whose moment has come: TXT _smtp._tls.<domain> (our
 *   resolver, cached) -> no record: done ("no record"); malformed or not
 *   exactly one: done, logged (§3: no reporting) -> else the report (JSON,
 *   gzip) goes to every kept URI: https: by POST (verified TLS, no
 *   redirects, tlsrpt { https_timeout }), mailto: as a message into our
 *   own queue (flagged as a TLS report: delivered despite TLS failures and
 *   not counted, §3). The report is delivered when one URI took it (§3);
 *   otherwise it is tried again with a growing delay until tlsrpt
 *   { retry_for } after its first try, then given up (logged).
 *
 * What is done is recorded in the queue's counters ("R<day>\t<domain>", a
 * note saying how), so a restart neither resends nor forgets; a day's counts
 * and records go once they are older than tlsrpt { keep }. `qtool tlsrpt
 * send` asks for a (re)send by writing "Q<day>\t<domain>" (and removing the
 * R record): the next tick sends at once, whatever the window.
 *
 * Fleet mode (cluster { }, tlsrpt_fleet.c, docs/fleet.md): every node
 * shares its counts of a finished day at the first tick after the day
 * (and of every day it has, at its first tick after starting), and a
 * day's report for a domain is sent by the one node that takes its send
 * lease, with the sum of every node's counts; the others record the
 * fleet's outcome as their own. Reports are due no earlier than
 * FLEET_GRACE_MS after the day, so that every node running then has
 * shared. Redis unavailable when a report is due: the report waits (a
 * minute at a time) until Redis is back or, at the latest, send_window
 * after the day's end (see fleet_unavailable), then goes with this node's
 * counts alone (logged tlsrpt_fleet_alone).
 *
 * Runs on worker 0's loop with the maintenance resolver and HTTPS client
 * (maint.c). Ownership: the jobs list and its jobs are this file's; a job
 * owns its DNS query and HTTPS fetches, and is freed once none is pending.
 */
#include "engine/tlsrpt_send.h"

#include "base/postern_err.h"
#include "base/postern_htab.h"
#include "base/postern_log.h"
#include "engine/dkim.h"
#include "engine/fleet.h"
#include "engine/metrics.h"
#include "engine/tlsrpt.h"
#include "engine/tlsrpt_store.h"
#include "net/dns.h"
#include "net/https.h"
#include "policy/tlsrpt.h"
#include "queue/queue.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TICK_MS 60000u
#define FIRST_TICK_MS 2000u
/* Retries: the first after retry_for/8 (at most 5 minutes), doubling, at
 * most an hour apart, so that a report is tried several times within any
 * retry_for. */
#define RETRY_FIRST_MAX_MS (5u * 60 * 1000)
#define RETRY_MAX_MS (60u * 60 * 1000)
/* Fleet mode: reports are due this long after the day at the earliest
 * (nodes share their counts within a minute of it); a report waiting for
 * another node or for Redis is looked at again after FLEET_RECHECK_MS. */
#define FLEET_GRACE_MS (5u * 60 * 1000)
#define FLEET_RECHECK_MS 60000u

struct rpt_job {
  struct rpt_job *next;
  char day[11];
  char domain[256];
  uint64_t first_try_ms, next_try_ms, retry_ms;
  bool running;
  struct dns_query *q;
  int pending; /* HTTPS posts and address lookups in flight */
  bool delivered;
  char last_error[1100];
  /* The report, while it is being sent. */
  uint8_t *gz;
  size_t gzlen;
  struct policy_tlsrpt_record rec;
  struct https_post *posts;
  /* Fleet mode: first looked at (the Redis wait's start); the send lease
   * is ours, with the summed counts and whose they are; Redis was
   * unavailable past the wait, so this node's counts go alone; the first
   * real try was made (retry_for counts from it). */
  uint64_t fleet_since_ms;
  bool fleet_held, fleet_alone, fleet_wait_logged, tried;
  bool asked; /* qtool asked for it (a Q record) */
  struct tlsrpt_store_domain *sum;
  size_t nsum;
  char nodes[512];
};

/* One https: URI being sent to: its address lookup, then its POST. */
struct https_post {
  struct https_post *next;
  struct rpt_job *job;
  size_t rua;
  struct dns_query *q;
  struct https_fetch *fetch;
};

static struct {
  struct relay *r;
  uv_loop_t *loop;
  struct dns_resolver *dns;
  struct https_client *https;
  uv_timer_t tick;
  struct rpt_job *jobs;
  bool on;
  bool stopping; /* jobs end as their lookups and posts are cancelled */
} snd;

static uint64_t now_ms(void) {
  return relay_now_ms(snd.r);
}

/* ---- Done records ---- */

static void record_done(const char *day, const char *domain,
                        const char *outcome, const char *detail) {
  char key[300];
  int kl = tlsrpt_store_key('R', day, domain, key, sizeof key);
  char note[600];
  int nl = snprintf(note, sizeof note, "%s %llu %s", outcome,
                    (unsigned long long)now_ms(), detail ? detail : "");
  struct queue_counter_add a = {
      key, (size_t)kl, 1, note,
      (size_t)(nl < (int)sizeof note ? nl : (int)sizeof note - 1)};
  int rc = queue_counters_submit(snd.r->q, &a, 1, NULL, NULL);
  if (rc != 0)
    postern_log(POSTERN_LOG_WARN, "tlsrpt_record_failed", "domain", domain,
                "day", day, "error", postern_strerror(rc), NULL);
}

struct lookup {
  size_t klen;
  bool found;
};

static int found_cb(void *arg, const void *key, size_t klen, uint64_t value,
                    const void *note, size_t nlen) {
  (void)key, (void)value, (void)note, (void)nlen;
  struct lookup *l = arg;
  /* The scan is by prefix: only the key itself counts ("a.com" is a
   * prefix of "a.com.au"). */
  if (klen == l->klen) {
    l->found = true;
    return 1;
  }
  return 0;
}

static bool has_record(char kind, const char *day, const char *domain) {
  char key[300];
  int kl = tlsrpt_store_key(kind, day, domain, key, sizeof key);
  struct lookup l = {(size_t)kl, false};
  queue_counters_scan(snd.r->q, key, (size_t)kl, found_cb, &l);
  return l.found;
}

/* ---- Jobs ---- */

static void job_free(struct rpt_job *j) {
  for (struct rpt_job **p = &snd.jobs; *p; p = &(*p)->next)
    if (*p == j) {
      *p = j->next;
      break;
    }
  tlsrpt_store_free(j->sum, j->nsum);
  free(j->gz);
  free(j);
}

static bool fleet_on(void) {
  return snd.r->cfg->cluster.enabled;
}

/* Fleet mode: the report is done (outcome as record_done says): the fleet
 * learns it and the send lease goes back. */
static void fleet_done(struct rpt_job *j, const char *outcome) {
  if (!j->fleet_held)
    return;
  j->fleet_held = false;
  engine__tlsrpt_fleet_done(snd.r, snd.loop, j->day, j->domain, outcome,
                            j->nodes);
}

/* The report is done: qtool's request for it (a Q record) goes. */
static void forget_ask(struct rpt_job *j) {
  if (has_record('Q', j->day, j->domain)) {
    char key[300];
    int kl = tlsrpt_store_key('Q', j->day, j->domain, key, sizeof key);
    queue_counters_delete(snd.r->q, key, (size_t)kl, NULL);
  }
}

static void job_finish(struct rpt_job *j);
static void tick(uv_timer_t *t);

/* The send attempt is over when nothing is pending any more. */
static void job_settle(struct rpt_job *j) {
  if (j->pending > 0 || j->q != NULL)
    return;
  job_finish(j);
}

static void job_finish(struct rpt_job *j) {
  const struct config_tlsrpt *tc = &snd.r->cfg->tlsrpt;
  j->running = false;
  free(j->gz);
  j->gz = NULL;
  struct https_post *p = j->posts;
  while (p) {
    struct https_post *n = p->next;
    free(p);
    p = n;
  }
  j->posts = NULL;
  if (snd.stopping) {
    job_free(j); /* a cancelled send is tried again after the restart */
    return;
  }
  if (j->delivered) {
    metrics_tlsrpt_report("sent");
    record_done(j->day, j->domain, "sent", "");
    fleet_done(j, "sent");
    forget_ask(j);
    job_free(j);
    return;
  }
  uint64_t now = now_ms();
  if (now - j->first_try_ms >= tc->retry_for_ms) {
    metrics_tlsrpt_report("failed");
    postern_log(POSTERN_LOG_WARN, "tlsrpt_report_given_up", "domain", j->domain,
                "day", j->day, "error", j->last_error, NULL);
    record_done(j->day, j->domain, "failed", j->last_error);
    fleet_done(j, "failed");
    job_free(j);
    return;
  }
  uint64_t first = tc->retry_for_ms / 8;
  if (first > RETRY_FIRST_MAX_MS)
    first = RETRY_FIRST_MAX_MS;
  j->retry_ms = j->retry_ms ? j->retry_ms * 2 : first;
  if (j->retry_ms > RETRY_MAX_MS)
    j->retry_ms = RETRY_MAX_MS;
  /* Never past the end of the retry period, so the last try is on time. */
  uint64_t end = j->first_try_ms + tc->retry_for_ms;
  j->next_try_ms = now + j->retry_ms < end ? now + j->retry_ms : end;
  /* The check after this retry's time, if the next one is later. */
  uint64_t wait = j->next_try_ms - now;
  if (snd.on && uv_timer_get_due_in(&snd.tick) > wait)
    uv_timer_start(&snd.tick, tick, wait < 1000 ? 1000 : wait, 0);
  char in[32];
  snprintf(in, sizeof in, "%llus", (unsigned long long)(j->retry_ms / 1000));
  postern_log(POSTERN_LOG_INFO, "tlsrpt_report_deferred", "domain", j->domain,
              "day", j->day, "error", j->last_error, "retry_in", in, NULL);
}

static void fail_note(struct rpt_job *j, const char *fmt, const char *a,
                      const char *b) {
  snprintf(j->last_error, sizeof j->last_error, fmt, a, b);
}

/* ---- https: ---- */

static void on_posted(const struct https_result *res, void *arg) {
  struct https_post *p = arg;
  struct rpt_job *j = p->job;
  p->fetch = NULL;
  j->pending--;
  const struct policy_tlsrpt_uri *u = &j->rec.rua[p->rua];
  if (res->status == 0) {
    char code[16];
    snprintf(code, sizeof code, "%ld", res->http_code);
    postern_log(POSTERN_LOG_INFO, "tlsrpt_report_sent", "domain", j->domain,
                "day", j->day, "rua", u->target, "http_status", code, NULL);
    j->delivered = true;
  } else if (res->status != POSTERN_ECANCELED) {
    fail_note(j, "%s: %s", u->target, postern_strerror(res->status));
    postern_log(POSTERN_LOG_INFO, "tlsrpt_report_post_failed", "domain",
                j->domain, "rua", u->target, "error",
                postern_strerror(res->status), "detail", res->error, NULL);
  }
  job_settle(j);
}

static void on_post_addrs(const struct dns_answer *a, void *arg) {
  struct https_post *p = arg;
  struct rpt_job *j = p->job;
  const struct policy_tlsrpt_uri *u = &j->rec.rua[p->rua];
  p->q = NULL;
  struct sockaddr_storage addrs[HTTPS_ADDRS_MAX];
  size_t n = 0;
  for (size_t i = 0;
       a->status == DNS_ANSWER && i < a->nrr && n < HTTPS_ADDRS_MAX; i++) {
    memset(&addrs[n], 0, sizeof addrs[n]);
    if (a->rr[i].type == DNS_T_A) {
      struct sockaddr_in *s4 = (struct sockaddr_in *)&addrs[n++];
      s4->sin_family = AF_INET;
      s4->sin_addr = a->rr[i].u.a;
    } else if (a->rr[i].type == DNS_T_AAAA) {
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&addrs[n++];
      s6->sin6_family = AF_INET6;
      s6->sin6_addr = a->rr[i].u.aaaa;
    }
  }
  int rc = POSTERN_ENOENT;
  if (n > 0 && snd.https != NULL) {
    struct https_request rq = {
        .url = u->target,
        .addrs = addrs,
        .naddrs = n,
        .ca_file = snd.r->cfg->tls.ca_file,
        .timeout_ms = (unsigned)snd.r->cfg->tlsrpt.https_timeout_ms,
        .post_body = j->gz,
        .post_len = j->gzlen,
        .post_content_type = "application/tlsrpt+gzip"};
    rc = https_fetch(snd.https, &rq, on_posted, p, &p->fetch);
    if (rc == 0)
      return; /* still pending: on_posted */
  }
  j->pending--;
  fail_note(j, "%s: %s", u->target,
            a->status != DNS_ANSWER ? dns_status_name(a->status)
                                    : postern_strerror(rc));
  job_settle(j);
}

static void post_start(struct rpt_job *j, size_t i) {
  struct https_post *p = calloc(1, sizeof *p);
  if (p == NULL) {
    fail_note(j, "%s: %s", j->rec.rua[i].target, "out of memory");
    return;
  }
  p->job = j;
  p->rua = i;
  p->next = j->posts;
  j->posts = p;
  /* The URL's host: between "https://" and the next ':' or '/'. */
  const char *h = j->rec.rua[i].target + strlen("https://");
  size_t hl = strcspn(h, ":/?");
  char host[256];
  snprintf(host, sizeof host, "%.*s", (int)(hl < 255 ? hl : 255), h);
  j->pending++;
  int rc = dns_resolve_host(snd.dns, host, on_post_addrs, p, &p->q);
  if (rc != 0) {
    j->pending--;
    fail_note(j, "%s: %s", j->rec.rua[i].target, postern_strerror(rc));
  }
}

/* ---- mailto: ---- */

static void mail_send(struct rpt_job *j, const char *const *to, size_t nto,
                      const struct tlsrpt_store_meta *meta, const char *from) {
  char id[QUEUE_ID_LEN + 1];
  queue_id_new(id);
  char report_id[600], msgid[700];
  tlsrpt_store_report_id(j->day, j->domain, meta->submitter, report_id,
                         sizeof report_id);
  snprintf(msgid, sizeof msgid, "%s.tlsrpt@%s", id, meta->submitter);
  long long start = tlsrpt_store_day_start(j->day);
  struct policy_tlsrpt_mail m = {.from = from,
                                 .to = to,
                                 .nto = nto,
                                 .submitter = meta->submitter,
                                 .policy_domain = j->domain,
                                 .report_id = report_id,
                                 .start = (time_t)start,
                                 .end = (time_t)start + 86400 - 1,
                                 .date = (time_t)(now_ms() / 1000),
                                 .message_id = msgid};
  char *msg = NULL;
  size_t len = 0;
  int rc = policy_tlsrpt_mail_build(&m, j->gz, j->gzlen, &msg, &len);
  if (rc == 0 && snd.r->tlsrpt_dkim != NULL) {
    /* RFC 8460 §3: receivers ignore reports without a DKIM signature of
     * the reporting domain. */
    static const char *const signed_fields[] = {"from",
                                                "to",
                                                "subject",
                                                "date",
                                                "message-id",
                                                "mime-version",
                                                "content-type",
                                                "tls-report-domain",
                                                "tls-report-submitter",
                                                "tls-required",
                                                "auto-submitted"};
    char *signed_msg = NULL;
    size_t slen = 0;
    rc = dkim_sign(snd.r->tlsrpt_dkim, msg, len, signed_fields,
                   sizeof signed_fields / sizeof signed_fields[0],
                   (time_t)(now_ms() / 1000), &signed_msg, &slen);
    free(msg);
    msg = signed_msg;
    len = slen;
  }
  if (rc == 0)
    rc = engine__ingress_local_report(snd.r, id, from, to, nto, msg, len);
  if (rc != 0) {
    free(msg);
    fail_note(j, "mailto: %s%s", postern_strerror(rc), "");
    return;
  }
  /* The queue delivers it from here, with its own retries. */
  postern_log(POSTERN_LOG_INFO, "tlsrpt_report_queued", "domain", j->domain,
              "day", j->day, "id", id, "rua", to[0], NULL);
  j->delivered = true;
}

/* ---- One report ---- */

/* The record is known: build the report and hand it to every URI. */
static void job_send(struct rpt_job *j) {
  const struct config_tlsrpt *tc = &snd.r->cfg->tlsrpt;
  struct tlsrpt_store_meta meta;
  char contact[300], from[300];
  tlsrpt_store_defaults(snd.r->cfg->hostname, tc->organization, tc->contact,
                        tc->submitter, tc->from, &meta, contact, from);
  struct tlsrpt_store_domain *d = NULL;
  size_t nd = 0;
  char *json = NULL;
  size_t jlen = 0;
  /* Fleet mode: the fleet's sum; alone (or without a cluster), ours. */
  int rc = j->sum != NULL
               ? 0
               : tlsrpt_store_load(snd.r->q, j->day, j->domain, &d, &nd);
  const struct tlsrpt_store_domain *use = j->sum != NULL ? j->sum : d;
  size_t nuse = j->sum != NULL ? j->nsum : nd;
  if (rc == 0 && nuse != 1)
    rc = POSTERN_ENOENT;
  if (rc == 0)
    rc = tlsrpt_store_report(&use[0], &meta, &json, &jlen);
  tlsrpt_store_free(d, nd);
  if (rc == 0)
    rc = policy_tlsrpt_gzip(json, jlen, &j->gz, &j->gzlen);
  free(json);
  if (rc != 0) {
    fail_note(j, "building the report: %s%s", postern_strerror(rc), "");
    job_settle(j);
    return;
  }
  const char *to[POLICY_TLSRPT_RUA_MAX];
  size_t nto = 0;
  for (size_t i = 0; i < j->rec.nrua; i++) {
    if (j->rec.rua[i].kind == POLICY_TLSRPT_URI_MAILTO)
      to[nto++] = j->rec.rua[i].target;
    else
      post_start(j, i);
  }
  if (nto > 0)
    mail_send(j, to, nto, &meta, from);
  job_settle(j);
}

static void on_txt(const struct dns_answer *a, void *arg) {
  struct rpt_job *j = arg;
  j->q = NULL;
  if (a->status == DNS_CANCELED) {
    job_settle(j);
    return;
  }
  if (a->status == DNS_NXDOMAIN || a->status == DNS_NODATA) {
    metrics_tlsrpt_report("no_record");
    postern_log(POSTERN_LOG_INFO, "tlsrpt_no_record", "domain", j->domain,
                "day", j->day, NULL);
    record_done(j->day, j->domain, "no-record", "");
    fleet_done(j, "no-record");
    j->running = false;
    job_free(j);
    return;
  }
  if (a->status != DNS_ANSWER) {
    fail_note(j, "TXT _smtp._tls.%s: %s", j->domain,
              dns_status_name(a->status));
    job_settle(j);
    return;
  }
  struct policy_txt txt[16];
  size_t n = 0;
  for (size_t i = 0; i < a->nrr && n < 16; i++)
    if (a->rr[i].type == DNS_T_TXT)
      txt[n++] = (struct policy_txt){.data = (const char *)a->rr[i].u.txt.data,
                                     .len = a->rr[i].u.txt.len};
  int rc = policy_tlsrpt_txt_parse(txt, n, &j->rec);
  if (rc != 0) {
    /* §3: not exactly one valid record means no reporting. */
    metrics_tlsrpt_report(rc == POSTERN_ENOENT ? "no_record"
                                               : "invalid_record");
    postern_log(rc == POSTERN_ENOENT ? POSTERN_LOG_INFO : POSTERN_LOG_WARN,
                rc == POSTERN_ENOENT ? "tlsrpt_no_record"
                                     : "tlsrpt_record_invalid",
                "domain", j->domain, "day", j->day, "records",
                n == 1 ? "1" : (n == 0 ? "0" : "several"), NULL);
    record_done(j->day, j->domain,
                rc == POSTERN_ENOENT ? "no-record" : "invalid-record", "");
    fleet_done(j, rc == POSTERN_ENOENT ? "no-record" : "invalid-record");
    j->running = false;
    job_free(j);
    return;
  }
  job_send(j);
}

/* The report's TXT record, then the report itself. */
static void job_lookup(struct rpt_job *j) {
  if (!j->tried) {
    /* Time spent waiting for the fleet is no try: retry_for starts at the
     * first real one. */
    j->tried = true;
    j->first_try_ms = now_ms();
  }
  char name[300];
  snprintf(name, sizeof name, "_smtp._tls.%s", j->domain);
  int rc = dns_query(snd.dns, name, DNS_T_TXT, on_txt, j, &j->q);
  if (rc != 0) {
    j->q = NULL;
    fail_note(j, "TXT %s: %s", name, postern_strerror(rc));
    job_finish(j);
  }
}

/* ---- Fleet mode ---- */

/* Not now: the job is looked at again in `ms` (not a try). */
static void job_later(struct rpt_job *j, uint64_t ms) {
  j->running = false;
  uint64_t now = now_ms();
  j->next_try_ms = now + ms;
  if (snd.on && uv_timer_get_due_in(&snd.tick) > ms)
    uv_timer_start(&snd.tick, tick, ms < 1000 ? 1000 : ms, 0);
}

/* Redis could not say who sends: wait for it until send_window after the
 * day's end (or after the report was first looked at, if later; for a
 * report qtool asked for, after that), then send this node's counts
 * alone. */
static void fleet_unavailable(struct rpt_job *j) {
  uint64_t now = now_ms();
  uint64_t end = (uint64_t)(tlsrpt_store_day_start(j->day) + 86400) * 1000;
  uint64_t from =
      !j->asked && end > j->fleet_since_ms ? end : j->fleet_since_ms;
  uint64_t until = from + snd.r->cfg->tlsrpt.send_window_ms;
  if (now < until) {
    if (!j->fleet_wait_logged) {
      char in[32];
      snprintf(in, sizeof in, "%llus",
               (unsigned long long)((until - now) / 1000));
      postern_log(POSTERN_LOG_WARN, "tlsrpt_fleet_waiting", "domain", j->domain,
                  "day", j->day, "reason", "Redis unavailable", "alone_in", in,
                  NULL);
      j->fleet_wait_logged = true;
    }
    job_later(j,
              until - now < FLEET_RECHECK_MS ? until - now : FLEET_RECHECK_MS);
    return;
  }
  postern_log(POSTERN_LOG_WARN, "tlsrpt_fleet_alone", "domain", j->domain,
              "day", j->day, "reason", "Redis unavailable", "report",
              "this node's counts only", NULL);
  j->fleet_alone = true;
  j->running = true;
  job_lookup(j);
}

static void on_fleet(void *arg, struct tlsrpt_fleet_answer *a) {
  struct rpt_job *j = arg;
  if (snd.stopping) {
    tlsrpt_store_free(a->sum, a->nsum);
    job_free(j);
    return;
  }
  switch (a->verdict) {
  case TLSRPT_FLEET_SEND:
    tlsrpt_store_free(j->sum, j->nsum);
    j->sum = a->sum;
    j->nsum = a->nsum;
    j->fleet_held = true;
    snprintf(j->nodes, sizeof j->nodes, "%s", a->nodes);
    postern_log(POSTERN_LOG_INFO, "tlsrpt_fleet_sending", "domain", j->domain,
                "day", j->day, "nodes", a->nodes, NULL);
    job_lookup(j);
    return;
  case TLSRPT_FLEET_DONE:
    postern_log(POSTERN_LOG_INFO, "tlsrpt_fleet_already_done", "domain",
                j->domain, "day", j->day, "by", a->by, NULL);
    record_done(j->day, j->domain, "fleet", a->by);
    forget_ask(j);
    job_free(j);
    return;
  case TLSRPT_FLEET_BUSY:
    postern_log(POSTERN_LOG_DEBUG, "tlsrpt_fleet_busy", "domain", j->domain,
                "day", j->day, NULL);
    job_later(j, FLEET_RECHECK_MS);
    return;
  default:
    fleet_unavailable(j);
    return;
  }
}

static void job_start(struct rpt_job *j) {
  j->running = true;
  j->delivered = false;
  j->last_error[0] = '\0';
  if (j->first_try_ms == 0)
    j->first_try_ms = now_ms();
  if (j->fleet_since_ms == 0)
    j->fleet_since_ms = now_ms();
  if (!fleet_on() || j->fleet_alone) {
    job_lookup(j);
    return;
  }
  if (engine__tlsrpt_fleet_claim(snd.r, snd.loop, j->day, j->domain, on_fleet,
                                 j) != 0)
    fleet_unavailable(j);
}

static struct rpt_job *job_find(const char *day, const char *domain) {
  for (struct rpt_job *j = snd.jobs; j; j = j->next)
    if (strcmp(j->day, day) == 0 && strcmp(j->domain, domain) == 0)
      return j;
  return NULL;
}

/* The moment within the send window a domain's report for a day is due:
 * spread by a hash of the two (stable within one process). */
static uint64_t due_ms(const char *day, const char *domain) {
  long long start = tlsrpt_store_day_start(day);
  char k[300];
  int kl = snprintf(k, sizeof k, "%s\t%s", day, domain);
  uint64_t w = snd.r->cfg->tlsrpt.send_window_ms;
  uint64_t off = w ? postern_hash(k, (size_t)kl) % w : 0;
  if (fleet_on() && off < FLEET_GRACE_MS)
    off = FLEET_GRACE_MS; /* every node has shared its counts by then */
  return (uint64_t)(start + 86400) * 1000 + off;
}

/* ---- The tick ---- */

/* Days whose every report is done (sent, given up, or not wanted): not
 * loaded again each minute, unless qtool asks for a day (a Q record). */
#define DONE_DAYS_MAX 64
static char done_days[DONE_DAYS_MAX][11];
static size_t ndone_days;

static bool day_in(char (*set)[11], size_t n, const char *day) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(set[i], day) == 0)
      return true;
  return false;
}

struct asked_days {
  char d[DONE_DAYS_MAX][11];
  size_t n;
};

static int on_asked(void *arg, const void *key, size_t klen, uint64_t value,
                    const void *note, size_t nlen) {
  (void)value, (void)note, (void)nlen;
  struct asked_days *a = arg;
  if (klen < 11 || a->n == DONE_DAYS_MAX)
    return 0;
  char day[11];
  memcpy(day, (const char *)key + 1, 10);
  day[10] = '\0';
  if (!day_in(a->d, a->n, day))
    memcpy(a->d[a->n++], day, 11);
  return 0;
}

/* only_asked: the day is today, whose reports go only when qtool asks.
 * Returns whether every domain's report for the day is done. */
static bool consider_day(const char *day, uint64_t now, bool only_asked) {
  struct tlsrpt_store_domain *d = NULL;
  size_t n = 0;
  bool all_done = !only_asked;
  if (tlsrpt_store_load(snd.r->q, day, NULL, &d, &n) != 0)
    return false;
  for (size_t i = 0; i < n; i++) {
    const char *dom = d[i].domain;
    struct rpt_job *j = job_find(day, dom);
    if (j != NULL) {
      all_done = false;
      if (!j->running && now >= j->next_try_ms)
        job_start(j);
      continue;
    }
    bool sent = has_record('R', day, dom);
    if (!sent)
      all_done = false;
    bool asked = has_record('Q', day, dom);
    if (only_asked && !asked)
      continue;
    if (!asked && (sent || now < due_ms(day, dom)))
      continue;
    if (asked && sent)
      continue; /* qtool removes R before asking; a stale Q */
    j = calloc(1, sizeof *j);
    if (j == NULL)
      break;
    snprintf(j->day, sizeof j->day, "%s", day);
    snprintf(j->domain, sizeof j->domain, "%s", dom);
    j->asked = asked;
    j->next = snd.jobs;
    snd.jobs = j;
    all_done = false;
    job_start(j);
  }
  tlsrpt_store_free(d, n);
  return all_done;
}

/* Fleet mode: the days whose counts this process has shared, and whether
 * the day was over then (a day is shared at the first tick, and again
 * once it is over). */
static struct {
  char day[11];
  bool finished;
} shared[DONE_DAYS_MAX];
static size_t nshared;

static void fleet_share(const char *day, bool finished) {
  for (size_t i = 0; i < nshared; i++)
    if (strcmp(shared[i].day, day) == 0 && shared[i].finished == finished)
      return;
  if (engine__tlsrpt_fleet_publish(snd.r, snd.loop, day, finished) != 0)
    return; /* Redis down: at a later tick */
  if (nshared == DONE_DAYS_MAX) {
    memmove(&shared[0], &shared[1], (DONE_DAYS_MAX - 1) * sizeof shared[0]);
    nshared--;
  }
  snprintf(shared[nshared].day, sizeof shared[nshared].day, "%s", day);
  shared[nshared++].finished = finished;
}

static void tick(uv_timer_t *t) {
  (void)t;
  const struct config_tlsrpt *tc = &snd.r->cfg->tlsrpt;
  if (tc->enabled) {
    uint64_t now = now_ms();
    char today[11];
    tlsrpt_store_day(now, today);
    char(*days)[11] = NULL;
    size_t n = 0;
    struct asked_days asked = {.n = 0};
    queue_counters_scan(snd.r->q, "Q", 1, on_asked, &asked);
    /* Fleet mode: the send leases of reports being retried stay ours. */
    for (struct rpt_job *j = snd.jobs; fleet_on() && j; j = j->next)
      if (j->fleet_held)
        engine__tlsrpt_fleet_renew(snd.r, snd.loop, j->day, j->domain);
    if (tlsrpt_store_days(snd.r->q, &days, &n) == 0) {
      for (size_t i = 0; i < n; i++) {
        long long start = tlsrpt_store_day_start(days[i]);
        if (start < 0)
          continue;
        if ((uint64_t)(start + 86400) * 1000 + tc->keep_ms < now) {
          /* Older than `keep`: its counts and records go. */
          char key[16];
          int kl = tlsrpt_store_key('R', days[i], NULL, key, sizeof key);
          tlsrpt_store_forget_day(snd.r->q, days[i]);
          queue_counters_delete(snd.r->q, key, (size_t)kl, NULL);
          key[0] = 'Q';
          queue_counters_delete(snd.r->q, key, (size_t)kl, NULL);
          postern_log(POSTERN_LOG_INFO, "tlsrpt_day_forgotten", "day", days[i],
                      NULL);
          continue;
        }
        int cmp = strcmp(days[i], today);
        if (cmp > 0)
          continue;
        /* Fleet mode: today, and the days whose reports may still go
         * (asked for, or within send_window and retry_for and a day). */
        if (fleet_on() && (cmp == 0 || day_in(asked.d, asked.n, days[i]) ||
                           (uint64_t)(start + 2 * 86400) * 1000 +
                                   tc->send_window_ms + tc->retry_for_ms >
                               now))
          fleet_share(days[i], cmp < 0);
        if (day_in(done_days, ndone_days, days[i]) &&
            !day_in(asked.d, asked.n, days[i]))
          continue;
        /* Today's reports are not due: only one asked for (qtool) may
         * start, and it has a Q record. */
        if (cmp == 0 && !day_in(asked.d, asked.n, days[i]))
          continue;
        bool done = consider_day(days[i], now, cmp == 0);
        if (done && !day_in(done_days, ndone_days, days[i])) {
          /* Oldest first: a full set forgets its oldest day. */
          if (ndone_days == DONE_DAYS_MAX) {
            memmove(done_days[0], done_days[1],
                    (DONE_DAYS_MAX - 1) * sizeof done_days[0]);
            ndone_days--;
          }
          memcpy(done_days[ndone_days++], days[i], 11);
        }
      }
      free(days);
    }
  }
  /* The next check: in a minute, or sooner when a retry is due. */
  uint64_t next = TICK_MS, now = now_ms();
  for (struct rpt_job *j = snd.jobs; j; j = j->next)
    if (!j->running) {
      uint64_t in = j->next_try_ms > now ? j->next_try_ms - now : 0;
      if (in < next)
        next = in;
    }
  uv_timer_start(&snd.tick, tick, next < 1000 ? 1000 : next, 0);
}

void engine__tlsrpt_send_start(struct relay *r, uv_loop_t *loop,
                               struct dns_resolver *dns,
                               struct https_client *https) {
  snd.r = r;
  snd.loop = loop;
  snd.dns = dns;
  snd.https = https;
  uv_timer_init(loop, &snd.tick);
  uv_timer_start(&snd.tick, tick, FIRST_TICK_MS, 0);
  snd.on = true;
}

/* The resolver and HTTPS client close after this (maint.c), which cancels
 * what is in flight; the jobs' callbacks then find nothing to do. */
void engine__tlsrpt_send_stop(void) {
  if (!snd.on)
    return;
  snd.on = false;
  snd.stopping = true;
  uv_timer_stop(&snd.tick);
  uv_close((uv_handle_t *)&snd.tick, NULL);
  /* Jobs waiting for their next try go now; running ones when their
   * cancelled lookups and posts report (job_finish). */
  struct rpt_job *j = snd.jobs;
  while (j) {
    struct rpt_job *n = j->next;
    if (!j->running)
      job_free(j);
    j = n;
  }
}
