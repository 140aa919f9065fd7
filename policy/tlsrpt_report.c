/*
 * policy/tlsrpt_report.c - the aggregate report of SMTP TLS Reporting
 * (RFC 8460): its JSON form (§4.4), its gzip file and file name, and the
 * mail that carries it (§5.3).
 *
 * Every builder checks all of its input before it writes anything, so an
 * error leaves no partial output; what it returns is a fresh malloc'd
 * buffer the caller owns. Inputs are borrowed for the call only.
 *
 * The values come from the engine's counts, but several of them started as
 * remote input (MX host names, the policy's text, the addresses of a
 * `_smtp._tls` record): JSON text goes through base/postern_json.h, which
 * escapes what is not UTF-8, and every value put into a mail header must
 * have a grammar that excludes CR, LF and other control characters (host
 * names, dot-atoms, addresses), so no header can be injected.
 *
 * Pure: no I/O (the mail is written with open_memstream, into memory), no
 * clock (times are passed in), no global state; zlib and BoringSSL's
 * base64 only compute.
 */
#include "policy/tlsrpt.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/base64.h>
#include <zlib.h>

#include "base/postern_domain.h"
#include "base/postern_err.h"
#include "base/postern_json.h"
#include "net/rfc5322.h"
#include "policy/tlsrpt_internal.h"

static bool empty(const char *s) {
  return s == NULL || s[0] == '\0';
}

/* A policy domain or submitter: a host name (no trailing dot). Its
 * characters are safe in a header, a file name and a MIME parameter. */
static bool domain_ok(const char *s) {
  return s != NULL && postern_domain_check(s, strlen(s), 0, NULL, NULL) == 0;
}

/* The report's period: the file name writes both ends as unsigned
 * numbers (§5.3), so neither may precede the epoch. */
static bool range_ok(time_t start, time_t end) {
  return start >= 0 && start <= end;
}

/* An RFC 3339 date-time in UTC, as §4.4 writes the date-range
 * ("2016-04-01T00:00:00Z"): years 1970 to 9999 (RFC 3339 has four digits). */
#define DATE_TIME_MAX 21

static int date_time(time_t t, char out[DATE_TIME_MAX]) {
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999)
    return POSTERN_ERANGE;
  /* Numbers only: strftime's locale does not touch these conversions. */
  return strftime(out, DATE_TIME_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm) ==
                 DATE_TIME_MAX - 1
             ? 0
             : POSTERN_ERANGE;
}

/* ---- JSON (§4.4) ------------------------------------------------------ */

static bool ip_ok(const char *s) {
  unsigned char a[sizeof(struct in6_addr)];
  return empty(s) || inet_pton(AF_INET, s, a) == 1 ||
         inet_pton(AF_INET6, s, a) == 1;
}

static bool strings_ok(const char *const *v, size_t n) {
  if (n > 0 && v == NULL)
    return false;
  for (size_t i = 0; i < n; i++)
    if (v[i] == NULL)
      return false;
  return true;
}

/* Counts are JSON integers; jansson's are signed 64-bit. */
static bool count_ok(uint64_t v) {
  return v <= (uint64_t)INT64_MAX;
}

static int policy_check(const struct policy_tlsrpt_policy *p) {
  if ((unsigned)p->type >= POLICY_TLSRPT_POLICY_COUNT ||
      !domain_ok(p->domain) || !strings_ok(p->strings, p->nstrings) ||
      !strings_ok(p->mx_hosts, p->nmx_hosts) ||
      (p->nfailures > 0 && p->failures == NULL))
    return POSTERN_EINVAL;
  if (!count_ok(p->successful) || !count_ok(p->failed))
    return POSTERN_ERANGE;
  for (size_t i = 0; i < p->nfailures; i++) {
    const struct policy_tlsrpt_failure *f = &p->failures[i];
    if (f->result <= POLICY_TLSRPT_SUCCESS ||
        f->result >= POLICY_TLSRPT_RESULT_COUNT || !ip_ok(f->sending_mta_ip) ||
        !ip_ok(f->receiving_ip))
      return POSTERN_EINVAL;
    if (!count_ok(f->count))
      return POSTERN_ERANGE;
  }
  return 0;
}

static int report_check(const struct policy_tlsrpt_report *r) {
  if (empty(r->organization) || empty(r->contact) || empty(r->report_id) ||
      !range_ok(r->start, r->end) || r->npolicies == 0 || r->policies == NULL)
    return POSTERN_EINVAL;
  char d[DATE_TIME_MAX];
  int rc = date_time(r->end, d); /* start <= end: end is the later one */
  for (size_t i = 0; rc == 0 && i < r->npolicies; i++)
    rc = policy_check(&r->policies[i]);
  return rc;
}

/* Sets an optional string field; absent (NULL or "") leaves it out. Returns
 * 0 or -1 (out of memory), like postern_json_set. */
static int set_opt(json_t *o, const char *key, const char *s) {
  return empty(s) ? 0 : postern_json_set(o, key, postern_json_cstr(s));
}

static int set_count(json_t *o, const char *key, uint64_t v) {
  return postern_json_set(o, key, json_integer((json_int_t)v));
}

/* A JSON array of the strings; NULL when out of memory. */
static json_t *str_array(const char *const *v, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a != NULL && i < n; i++) {
    if (json_array_append_new(a, postern_json_cstr(v[i])) != 0) {
      json_decref(a);
      a = NULL;
    }
  }
  return a;
}

static json_t *failure_json(const struct policy_tlsrpt_failure *f) {
  json_t *o = json_object();
  if (o == NULL)
    return NULL;
  int err = postern_json_set(o, "result-type",
                             json_string(policy_tlsrpt_result_name(f->result)));
  err |= set_opt(o, "sending-mta-ip", f->sending_mta_ip);
  err |= set_opt(o, "receiving-mx-hostname", f->receiving_mx_hostname);
  err |= set_opt(o, "receiving-mx-helo", f->receiving_mx_helo);
  err |= set_opt(o, "receiving-ip", f->receiving_ip);
  err |= set_count(o, "failed-session-count", f->count);
  err |= set_opt(o, "failure-reason-code", f->failure_reason_code);
  if (err != 0) {
    json_decref(o);
    return NULL;
  }
  return o;
}

json_t *policy_tlsrpt_policy_json(const struct policy_tlsrpt_policy *p) {
  json_t *o = json_object(), *pol = json_object(), *sum = json_object();
  int err = o == NULL || pol == NULL || sum == NULL ? -1 : 0;
  if (err == 0) {
    err |= postern_json_set(pol, "policy-type",
                            json_string(policy_tlsrpt_policy_name(p->type)));
    if (p->nstrings > 0)
      err |= postern_json_set(pol, "policy-string",
                              str_array(p->strings, p->nstrings));
    err |= postern_json_set(pol, "policy-domain", postern_json_cstr(p->domain));
    if (p->nmx_hosts > 0)
      err |= postern_json_set(pol, "mx-host",
                              str_array(p->mx_hosts, p->nmx_hosts));
    err |= set_count(sum, "total-successful-session-count", p->successful);
    err |= set_count(sum, "total-failure-session-count", p->failed);
  }
  json_t *details = json_array();
  for (size_t i = 0; err == 0 && details != NULL && i < p->nfailures; i++) {
    /* An entry that counts no session says nothing. */
    if (p->failures[i].count > 0)
      err |= json_array_append_new(details, failure_json(&p->failures[i]));
  }
  if (err != 0 || details == NULL) {
    json_decref(o);
    json_decref(pol);
    json_decref(sum);
    json_decref(details);
    return NULL;
  }
  /* postern_json_set takes each reference, also when it fails. */
  err |= postern_json_set(o, "policy", pol);
  err |= postern_json_set(o, "summary", sum);
  if (json_array_size(details) > 0)
    err |= postern_json_set(o, "failure-details", details);
  else
    json_decref(details);
  if (err != 0) {
    json_decref(o);
    return NULL;
  }
  return o;
}

static json_t *report_json(const struct policy_tlsrpt_report *r) {
  char start[DATE_TIME_MAX], end[DATE_TIME_MAX];
  date_time(r->start, start); /* report_check: both are in range */
  date_time(r->end, end);
  json_t *o = json_object(), *range = json_object(), *pols = json_array();
  int err = o == NULL || range == NULL || pols == NULL ? -1 : 0;
  if (err == 0) {
    err |= postern_json_set(range, "start-datetime", json_string(start));
    err |= postern_json_set(range, "end-datetime", json_string(end));
    for (size_t i = 0; err == 0 && i < r->npolicies; i++)
      err |= json_array_append_new(pols,
                                   policy_tlsrpt_policy_json(&r->policies[i]));
  }
  if (err != 0) {
    json_decref(o);
    json_decref(range);
    json_decref(pols);
    return NULL;
  }
  err |= postern_json_set(o, "organization-name",
                          postern_json_cstr(r->organization));
  err |= postern_json_set(o, "date-range", range);
  err |= postern_json_set(o, "contact-info", postern_json_cstr(r->contact));
  err |= postern_json_set(o, "report-id", postern_json_cstr(r->report_id));
  err |= postern_json_set(o, "policies", pols);
  if (err != 0) {
    json_decref(o);
    return NULL;
  }
  return o;
}

int policy_tlsrpt_report_json(const struct policy_tlsrpt_report *r, char **out,
                              size_t *len) {
  if (r == NULL || out == NULL || len == NULL)
    return POSTERN_EINVAL;
  int rc = report_check(r);
  if (rc != 0)
    return rc;
  json_t *doc = report_json(r);
  if (doc == NULL)
    return POSTERN_ENOMEM;
  size_t n = json_dumpb(doc, NULL, 0, JSON_COMPACT);
  char *buf = n > 0 ? malloc(n + 1) : NULL;
  if (buf == NULL || json_dumpb(doc, buf, n, JSON_COMPACT) != n) {
    free(buf);
    json_decref(doc);
    return POSTERN_ENOMEM;
  }
  json_decref(doc);
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

/* ---- gzip --------------------------------------------------------------- */

int policy_tlsrpt_gzip(const void *in, size_t len, uint8_t **out,
                       size_t *outlen) {
  if ((in == NULL && len > 0) || out == NULL || outlen == NULL)
    return POSTERN_EINVAL;
  /* One deflate call: zlib counts input in uInt. */
  if (len > UINT_MAX)
    return POSTERN_ETOOBIG;
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  /* windowBits 15 + 16: the gzip wrapper (RFC 1952) around deflate. */
  int zrc = deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                         Z_DEFAULT_STRATEGY);
  if (zrc != Z_OK)
    return zrc == Z_MEM_ERROR ? POSTERN_ENOMEM : POSTERN_EINTERNAL;
  /* deflateBound counts the gzip header and trailer too. */
  uLong cap = deflateBound(&zs, (uLong)len);
  uint8_t *buf = cap <= UINT_MAX ? malloc(cap) : NULL;
  if (buf == NULL) {
    deflateEnd(&zs);
    return POSTERN_ENOMEM;
  }
  zs.next_in = (Bytef *)(uintptr_t)in; /* zlib does not write the input */
  zs.avail_in = (uInt)len;
  zs.next_out = buf;
  zs.avail_out = (uInt)cap;
  zrc = deflate(&zs, Z_FINISH);
  size_t n = zs.total_out;
  deflateEnd(&zs);
  if (zrc != Z_STREAM_END) {
    free(buf);
    return POSTERN_EINTERNAL;
  }
  *out = buf;
  *outlen = n;
  return 0;
}

/* ---- The file name and the mail (§5.3) ---------------------------------- */

int policy_tlsrpt_filename(const char *submitter, const char *policy_domain,
                           time_t start, time_t end, char *buf, size_t cap) {
  if (buf == NULL)
    return POSTERN_EINVAL;
  if (cap > 0)
    buf[0] = '\0';
  if (!domain_ok(submitter) || !domain_ok(policy_domain) ||
      !range_ok(start, end))
    return POSTERN_EINVAL;
  int w = snprintf(buf, cap, "%s!%s!%lld!%lld.json.gz", submitter,
                   policy_domain, (long long)start, (long long)end);
  if (w < 0 || (size_t)w >= cap) {
    if (cap > 0)
      buf[0] = '\0';
    return POSTERN_ETOOBIG;
  }
  return 0;
}

/* Base64 (RFC 2045 §6.8) in lines of 76 characters: 57 input bytes each. */
#define B64_LINE_IN 57

static void put_base64(FILE *f, const uint8_t *p, size_t n) {
  uint8_t line[4 * B64_LINE_IN / 3 + 1]; /* EVP_EncodeBlock adds a NUL */
  for (size_t i = 0; i < n; i += B64_LINE_IN) {
    size_t k = n - i < B64_LINE_IN ? n - i : B64_LINE_IN;
    size_t w = EVP_EncodeBlock(line, p + i, k);
    fwrite(line, 1, w, f);
    fputs("\r\n", f);
  }
}

static bool addr_ok(const char *s) {
  return s != NULL && policy__tlsrpt_addr_ok(s, strlen(s));
}

static bool msgid_ok(const char *s) {
  return s != NULL && policy__tlsrpt_msgid_ok(s, strlen(s));
}

static int mail_check(const struct policy_tlsrpt_mail *m, const void *gz,
                      size_t gzlen) {
  if (!addr_ok(m->from) || m->nto == 0 || m->nto > POLICY_TLSRPT_RUA_MAX ||
      m->to == NULL || !msgid_ok(m->report_id) || !msgid_ok(m->message_id) ||
      (gz == NULL && gzlen > 0))
    return POSTERN_EINVAL;
  for (size_t i = 0; i < m->nto; i++)
    if (!addr_ok(m->to[i]))
      return POSTERN_EINVAL;
  return 0;
}

/* Writes the headers and the text part; the strings are checked. */
static void put_head(FILE *f, const struct policy_tlsrpt_mail *m,
                     const char *date, const char *boundary, const char *start,
                     const char *end, const char *name) {
  fprintf(f, "From: %s\r\nTo: %s", m->from, m->to[0]);
  for (size_t i = 1; i < m->nto; i++)
    fprintf(f, ",\r\n %s", m->to[i]);
  /* The Subject as §5.3's tlsrpt-subject, folded at its FWS. Sending MTAs
   * MUST deliver reports despite TLS failures (§3): "TLS-Required: No"
   * (RFC 8689 §5) asks every relay on the way to do so. */
  fprintf(f,
          "\r\nDate: %s\r\n"
          "Message-ID: <%s>\r\n"
          "Subject: Report Domain: %s\r\n"
          " Submitter: %s\r\n"
          " Report-ID: <%s>\r\n"
          "TLS-Report-Domain: %s\r\n"
          "TLS-Report-Submitter: %s\r\n"
          "Auto-Submitted: auto-generated\r\n"
          "TLS-Required: No\r\n"
          "MIME-Version: 1.0\r\n"
          "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
          " boundary=\"%s\"\r\n"
          "\r\n"
          "This is a multipart message in MIME format.\r\n"
          "\r\n",
          date, m->message_id, m->policy_domain, m->submitter, m->report_id,
          m->policy_domain, m->submitter, boundary);
  /* RFC 6522 §3: the first part is for people. */
  fprintf(f,
          "--%s\r\n"
          "Content-Type: text/plain; charset=\"us-ascii\"\r\n"
          "Content-Transfer-Encoding: 7bit\r\n"
          "\r\n"
          "This is an aggregate TLS report (RFC 8460, SMTP TLS Reporting)\r\n"
          "about mail from %s to the domain %s.\r\n"
          "\r\n"
          "Report-ID: <%s>\r\n"
          "Period:    %s to %s\r\n"
          "\r\n"
          "The report is the attached gzip-compressed JSON file:\r\n"
          "%s\r\n"
          "\r\n",
          boundary, m->submitter, m->policy_domain, m->report_id, start, end,
          name);
  fprintf(f,
          "--%s\r\n"
          "Content-Type: application/tlsrpt+gzip\r\n"
          "Content-Transfer-Encoding: base64\r\n"
          "Content-Disposition: attachment;\r\n"
          " filename=\"%s\"\r\n"
          "\r\n",
          boundary, name);
}

int policy_tlsrpt_mail_build(const struct policy_tlsrpt_mail *m, const void *gz,
                             size_t gzlen, char **out, size_t *len) {
  if (m == NULL || out == NULL || len == NULL)
    return POSTERN_EINVAL;
  int rc = mail_check(m, gz, gzlen);
  char name[POLICY_TLSRPT_FILENAME_MAX];
  if (rc == 0) /* checks submitter, policy_domain, start and end */
    rc = policy_tlsrpt_filename(m->submitter, m->policy_domain, m->start,
                                m->end, name, sizeof name);
  if (rc != 0)
    return rc;
  char date[RFC5322_DATE_MAX], start[DATE_TIME_MAX], end[DATE_TIME_MAX];
  if (rfc5322_date_format(m->date, date, sizeof date) != 0 ||
      date_time(m->start, start) != 0 || date_time(m->end, end) != 0)
    return POSTERN_ERANGE;
  /* RFC 2046 §5.1.1: the boundary must not occur in the parts. No line we
   * write starts with "--" (base64 has no '-'; the text part's lines start
   * with fixed words), so a fixed one is safe; the period makes it
   * distinct from a report quoted inside another. */
  char boundary[64];
  snprintf(boundary, sizeof boundary, "----=_tlsrpt_%lld_%lld",
           (long long)m->start, (long long)m->end);

  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  if (f == NULL)
    return POSTERN_ENOMEM;
  put_head(f, m, date, boundary, start, end, name);
  put_base64(f, gz, gzlen);
  /* The CRLF ending the last line belongs to the closing delimiter. */
  fprintf(f, "--%s--\r\n", boundary);
  bool failed = ferror(f) != 0;
  if (fclose(f) != 0 || failed) {
    free(buf);
    return POSTERN_ENOMEM;
  }
  *out = buf;
  *len = n;
  return 0;
}
