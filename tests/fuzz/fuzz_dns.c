/*
 * fuzz_dns.c - libFuzzer target for dns_answer_parse() (net/dns.h).
 *
 * Input layout (tests/fuzz/make_seeds.py writes seeds in it):
 *   byte 0   bits 0-2: the asked qtype, index into A, AAAA, MX, TXT, TLSA,
 *            CNAME (6 and 7 wrap); bit 3: trust_ad; bit 4: check the
 *            message id (qid = the packet's own id when bit 5 is clear,
 *            its complement when set, so that a mismatch is tried too)
 *   byte 1   length L of the asked name; 0 takes the name from the
 *            packet's question section, so answers get parsed deeply
 *   L bytes  the asked name (presentation format, as a caller passes it)
 *   rest     the DNS message
 * Beyond "no crash, no leak" it checks what dns.h promises:
 *  - the return value is out->err, and err matches status (0 only for
 *    ANSWER); rcode is -1..4095;
 *  - ANSWER has records, all of the asked type; other statuses have none
 *    and no null_mx; null_mx only for one MX record whose host is ".";
 *  - every name handed out (qname, cname, MX host, CNAME target) is in the
 *    promised presentation format: non-empty, shorter than DNS_NAME_MAX,
 *    lower case, only letters, digits, '-', '_', '.', and escapes "\." "\\"
 *    "\DDD" (DDD <= 255), no empty label, so a hostile label cannot look
 *    like two labels;
 *  - TXT and TLSA data are NUL-terminated at len; CNAME hops are at most
 *    DNS_CNAME_MAX and none means cname == qname;
 *  - authenticated only with trust_ad and only for ANSWER/NXDOMAIN/NODATA;
 *  - a wrong expected message id always gives MALFORMED;
 *  - dns_answer_free() leaves a zeroed answer and a second free is safe.
 */
#include "net/dns.h"
#include "net/dns_internal.h"
#include "base/postern_err.h"
#include "tests/fuzz/fuzz_util.h"

static const uint16_t qtypes[8] = {DNS_T_A,    DNS_T_AAAA,  DNS_T_MX, DNS_T_TXT,
                                   DNS_T_TLSA, DNS_T_CNAME, DNS_T_A,  DNS_T_MX};

static void check_name(const char *s) {
  FUZZ_CHECK(s != NULL);
  size_t n = strlen(s);
  FUZZ_CHECK(n >= 1 && n < DNS_NAME_MAX);
  if (strcmp(s, ".") == 0)
    return;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '.') {
      /* An unescaped dot separates two non-empty labels. */
      FUZZ_CHECK(i > 0 && i + 1 < n && s[i + 1] != '.');
    } else if (c == '\\') {
      char e = s[i + 1];
      if (e == '.' || e == '\\') {
        i++;
      } else {
        FUZZ_CHECK(e >= '0' && e <= '9' && s[i + 2] >= '0' && s[i + 2] <= '9' &&
                   s[i + 3] >= '0' && s[i + 3] <= '9');
        int v = (e - '0') * 100 + (s[i + 2] - '0') * 10 + (s[i + 3] - '0');
        FUZZ_CHECK(v <= 255);
        i += 3;
      }
    } else {
      FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                 c == '_');
    }
  }
}

static void check_answer(const struct dns_answer *a, int rc, uint16_t qtype,
                         bool trust_ad, bool wire_qname) {
  FUZZ_CHECK(rc == a->err);
  FUZZ_CHECK(a->qtype == qtype);
  FUZZ_CHECK(a->status <= DNS_CANCELED && a->status != DNS_CANCELED);
  FUZZ_CHECK(strcmp(dns_status_name(a->status), "unknown") != 0);
  if (a->err == POSTERN_ENOMEM)
    FUZZ_CHECK(a->status == DNS_TEMPFAIL);
  else
    FUZZ_CHECK(a->err == dns__status_err(a->status));
  FUZZ_CHECK(a->rcode >= -1 && a->rcode <= 4095);
  if (a->authenticated)
    FUZZ_CHECK(trust_ad &&
               (a->status == DNS_ANSWER || a->status == DNS_NXDOMAIN ||
                a->status == DNS_NODATA));
  if (a->qname != NULL) {
    /* The asked name is the caller's text; names from the wire must be in
     * presentation format. */
    FUZZ_CHECK(a->cname != NULL);
    if (wire_qname)
      check_name(a->qname);
    if (wire_qname || a->cname_hops > 0)
      check_name(a->cname);
    /* A chain too long is MALFORMED after one hop too many. */
    FUZZ_CHECK(
        a->cname_hops <= DNS_CNAME_MAX ||
        (a->status == DNS_MALFORMED && a->cname_hops == DNS_CNAME_MAX + 1));
    if (a->cname_hops == 0)
      FUZZ_CHECK(strcmp(a->qname, a->cname) == 0);
  } else {
    FUZZ_CHECK(a->status == DNS_MALFORMED && a->cname == NULL);
  }
  if (a->status != DNS_ANSWER) {
    FUZZ_CHECK(a->nrr == 0 && a->rr == NULL && !a->null_mx);
    return;
  }
  FUZZ_CHECK(a->nrr >= 1 && a->rr != NULL);
  for (size_t i = 0; i < a->nrr; i++) {
    const struct dns_rr *rr = &a->rr[i];
    FUZZ_CHECK(rr->type == qtype);
    FUZZ_CHECK(rr->ttl <= 0x7fffffffu); /* RFC 2181 §8 */
    FUZZ_CHECK(a->ttl <= rr->ttl);
    switch (rr->type) {
    case DNS_T_MX:
      check_name(rr->u.mx.host);
      break;
    case DNS_T_CNAME:
      check_name(rr->u.target);
      break;
    case DNS_T_TXT:
      FUZZ_CHECK(rr->u.txt.data != NULL && rr->u.txt.data[rr->u.txt.len] == 0);
      FUZZ_CHECK(rr->u.txt.nstrings >= 1);
      break;
    case DNS_T_TLSA:
      FUZZ_CHECK(rr->u.tlsa.data != NULL &&
                 rr->u.tlsa.data[rr->u.tlsa.len] == 0);
      break;
    default:
      break;
    }
  }
  if (a->null_mx)
    FUZZ_CHECK(qtype == DNS_T_MX && a->nrr == 1 &&
               strcmp(a->rr[0].u.mx.host, ".") == 0);
  else if (qtype == DNS_T_MX && a->nrr == 1)
    FUZZ_CHECK(strcmp(a->rr[0].u.mx.host, ".") != 0);
}

static void free_twice(struct dns_answer *a) {
  dns_answer_free(a);
  static const struct dns_answer zero;
  FUZZ_CHECK(memcmp(a, &zero, sizeof zero) == 0);
  dns_answer_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fuzz_in in = {data, size};
  uint8_t mode = fuzz_u8(&in);
  uint16_t qtype = qtypes[mode & 7];
  bool trust_ad = mode & 8;
  size_t nlen = fuzz_u8(&in), got;
  const uint8_t *np = fuzz_bytes(&in, nlen, &got);
  char *given = fuzz_strndup(np, got);
  /* The packet in its own allocation, so over-reads are caught exactly. */
  unsigned char *pkt = (unsigned char *)fuzz_strndup(in.p, in.n);
  size_t len = in.n;

  char qname[DNS_NAME_MAX];
  const char *asked = given;
  if (nlen == 0) {
    size_t off = 12;
    if (len < 12 || dns__name_read(pkt, len, len, &off, qname) != 0)
      snprintf(qname, sizeof qname, "example.org");
    asked = qname;
    check_name(qname);
  }
  int id = len >= 2 ? (pkt[0] << 8) | pkt[1] : 0;
  int qid = -1;
  if (mode & 16)
    qid = (mode & 32) ? (~id & 0xffff) : id;

  struct dns_answer a;
  int rc = dns_answer_parse(pkt, len, qid, asked, qtype, trust_ad, &a);
  /* FUZZ_VERBOSE=1 prints each outcome, to see what the seeds reach. */
  static int verbose = -1;
  if (verbose < 0)
    verbose = getenv("FUZZ_VERBOSE") != NULL;
  if (verbose)
    fprintf(stderr, "dns: %s qtype %u %s -> %s, %zu records, hops %u%s\n",
            asked, qtype, trust_ad ? "trust_ad" : "", dns_status_name(a.status),
            a.nrr, a.cname_hops, a.authenticated ? ", authenticated" : "");
  check_answer(&a, rc, qtype, trust_ad, asked == qname);
  if ((mode & 48) == 48 && len >= 2)
    FUZZ_CHECK(a.status == DNS_MALFORMED);
  free_twice(&a);
  free(pkt);
  free(given);
  return 0;
}
