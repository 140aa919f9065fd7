/*
 * engine/tlsrpt.c - TLS reporting (RFC 8460), the counting half: every TLS
 * session attempt of a delivery becomes updates of the queue's counters
 * (queue_counters_submit), per UTC day, policy domain and applied policy.
 *
 * The updates go through the queue's writer, queued when the session's
 * outcome is known and so before any result of the delivery that made it:
 * a crash loses at most the counts of attempts that had not finished
 * (queue.h, Counters). They ride in the same group commits as the results,
 * which is why counting costs no extra fsync.
 *
 * Key layout (text, fields separated by tabs; qtool and the report
 * builder read it back, engine/tlsrpt_store.c):
 *   T<day>\t<domain>\t<policy id>\tP           note: the policy as JSON
 *   T<day>\t<domain>\t<policy id>\tS           successful sessions
 *   T<day>\t<domain>\t<policy id>\tF\t<fid>    failed sessions, note: the
 *                                              failure details as JSON
 * <day> is YYYY-MM-DD (UTC), <domain> the policy domain in lower case
 * without the trailing dot, <policy id> and <fid> the first 8 bytes of the
 * SHA-256 of the note, in hex. The JSON fields carry the RFC 8460 §4.4
 * names, so a report is assembled from them without translation.
 *
 * Nothing here blocks or keeps state: any worker thread may call it.
 */
#include "engine/tlsrpt.h"
#include "engine/tlsrpt_store.h"

#include "base/postern_err.h"
#include "base/postern_json.h"
#include "base/postern_log.h"
#include "engine/metrics.h"
#include "policy/tlsrpt.h"
#include "queue/queue.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Lower case, no trailing dot, nothing that could break the key. */
static void key_name(const char *in, char *out, size_t cap) {
  size_t n = 0;
  for (; in != NULL && *in && n + 1 < cap; in++) {
    unsigned char c = (unsigned char)*in;
    if (c >= 'A' && c <= 'Z')
      c = (unsigned char)(c - 'A' + 'a');
    else if (c <= 0x20 || c >= 0x7f)
      c = '?';
    out[n++] = (char)c;
  }
  if (n > 1 && out[n - 1] == '.')
    n--;
  out[n] = '\0';
}

static void hex8(const char *data, size_t len, char out[17]) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)data, len, md);
  for (int i = 0; i < 8; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Newline-ended entries into a JSON array of strings. */
static json_t *lines(const char *text) {
  json_t *a = json_array();
  while (a != NULL && text != NULL && *text) {
    const char *nl = strchr(text, '\n');
    size_t n = nl ? (size_t)(nl - text) : strlen(text);
    if (n > 0)
      json_array_append_new(a, postern_json_str(text, n));
    text += n + (nl ? 1 : 0);
  }
  return a;
}

/* The policy's JSON (RFC 8460 §4.4 "policy"), at most the note's size:
 * entries are dropped from the end of policy-string if it is too long. */
static char *policy_note(const char *domain,
                         const struct policy_tlsrpt_applied *ap) {
  json_t *o = json_object();
  if (o == NULL)
    return NULL;
  postern_json_set(o, "policy-type",
                   json_string(policy_tlsrpt_policy_name(ap->type)));
  json_t *strings = lines(ap->strings);
  if (json_array_size(strings) > 0)
    postern_json_set(o, "policy-string", json_incref(strings));
  postern_json_set(o, "policy-domain", postern_json_cstr(domain));
  json_t *mx = lines(ap->mx);
  if (json_array_size(mx) > 0)
    postern_json_set(o, "mx-host", mx);
  else
    json_decref(mx);
  char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  while (s != NULL && strlen(s) > QUEUE_COUNTER_NOTE_MAX &&
         json_array_size(strings) > 0) {
    free(s);
    json_array_remove(strings, json_array_size(strings) - 1);
    s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  }
  json_decref(strings);
  json_decref(o);
  return s;
}

static char *failure_note(const struct tlsrpt_event *e, int result) {
  json_t *o = json_object();
  if (o == NULL)
    return NULL;
  postern_json_set(o, "result-type",
                   json_string(policy_tlsrpt_result_name(result)));
  if (e->sending_ip && e->sending_ip[0])
    postern_json_set(o, "sending-mta-ip", postern_json_cstr(e->sending_ip));
  if (e->mx_host && e->mx_host[0]) {
    char mx[256];
    key_name(e->mx_host, mx, sizeof mx);
    postern_json_set(o, "receiving-mx-hostname", postern_json_cstr(mx));
  }
  if (e->receiving_ip && e->receiving_ip[0])
    postern_json_set(o, "receiving-ip", postern_json_cstr(e->receiving_ip));
  char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(o);
  return s;
}

void engine__tlsrpt_count(struct relay *r, const struct tlsrpt_event *e) {
  const struct postern_config *cfg = r->cfg;
  if (!cfg->tlsrpt.enabled || r->q == NULL || e->policy_domain == NULL)
    return;
  char day[11], domain[256];
  tlsrpt_store_day(relay_now_ms(r), day);
  key_name(e->policy_domain, domain, sizeof domain);
  if (domain[0] == '\0')
    return;
  /* A session under a policy that could not be had counts as that
   * failure, unless it failed on its own account. */
  int result = e->result;
  if (result == POLICY_TLSRPT_SUCCESS && e->applied->failure != 0)
    result = e->applied->failure;
  char *pnote = policy_note(domain, e->applied);
  char *fnote =
      result != POLICY_TLSRPT_SUCCESS ? failure_note(e, result) : NULL;
  if (pnote == NULL || (result != POLICY_TLSRPT_SUCCESS && fnote == NULL)) {
    free(pnote);
    free(fnote);
    return; /* out of memory: this session goes uncounted */
  }
  char pid[17], fid[17] = "";
  hex8(pnote, strlen(pnote), pid);
  if (fnote)
    hex8(fnote, strlen(fnote), fid);
  char kp[QUEUE_COUNTER_KEY_MAX], kc[QUEUE_COUNTER_KEY_MAX];
  int np = snprintf(kp, sizeof kp, "T%s\t%s\t%s\tP", day, domain, pid);
  int nc = fnote ? snprintf(kc, sizeof kc, "T%s\t%s\t%s\tF\t%s", day, domain,
                            pid, fid)
                 : snprintf(kc, sizeof kc, "T%s\t%s\t%s\tS", day, domain, pid);
  struct queue_counter_add adds[2] = {
      {kp, (size_t)np, 0, pnote, strlen(pnote)},
      {kc, (size_t)nc, 1, fnote, fnote ? strlen(fnote) : 0},
  };
  int rc = queue_counters_submit(r->q, adds, 2, NULL, NULL);
  if (rc == 0)
    metrics_tlsrpt_session(result);
  if (rc != 0)
    postern_log(POSTERN_LOG_DEBUG, "tlsrpt_count_failed", "domain", domain,
                "error", postern_strerror(rc), NULL);
  else
    postern_log(POSTERN_LOG_DEBUG, "tlsrpt_counted", "domain", domain, "policy",
                policy_tlsrpt_policy_name(e->applied->type), "result",
                policy_tlsrpt_result_name(result), "mx",
                e->mx_host ? e->mx_host : "", NULL);
  free(pnote);
  free(fnote);
}
