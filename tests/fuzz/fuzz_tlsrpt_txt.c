/*
 * fuzz_tlsrpt_txt.c - libFuzzer target for policy_tlsrpt_txt_parse()
 * (policy/tlsrpt.h): the TXT RRset at _smtp._tls.<domain> (RFC 8460 §3),
 * whose URIs become SMTP recipients and HTTPS requests.
 *
 * Input layout: byte 0 is the number of records (1 + b % 4); then each
 * record is a two-byte big-endian length and that many bytes (cut at the
 * input's end); a length of 0xffff stands for a NULL record of length 0.
 * Beyond "no crash" it checks:
 *  - the answer follows from counting TLSRPT records independently (those
 *    starting "v=TLSRPTv1" then ';', blank or the end): none gives ENOENT,
 *    two or more EPROTO, exactly one 0 or EPROTO;
 *  - on 0: 1 to POLICY_TLSRPT_RUA_MAX URIs, each NUL-terminated, found in
 *    the record as published, of printable ASCII without blanks; each
 *    target printable ASCII without blanks (nothing that could end or
 *    split a header or a request line), distinct from the others; a mailto:
 *    target holds exactly one '@' and no ',' or '?'; an https: target
 *    starts "https://" and has no '@' before its path and no '#';
 *  - the order of the records does not matter (reversed: same answer).
 */
#include "base/postern_err.h"
#include "policy/tlsrpt.h"
#include "tests/fuzz/fuzz_util.h"

#define MAX_RECS 4

static bool is_tlsrpt(const struct policy_txt *r) {
  return r->data != NULL && r->len >= 10 &&
         memcmp(r->data, "v=TLSRPTv1", 10) == 0 &&
         (r->len == 10 || r->data[10] == ';' || r->data[10] == ' ' ||
          r->data[10] == '\t');
}

/* Printable ASCII, no space: safe in a header value or a request line. */
static bool plain(const char *s, size_t max) {
  size_t n = strnlen(s, max);
  if (n == 0 || n == max)
    return false;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
      return false;
  return true;
}

static void check_uri(const struct policy_tlsrpt_uri *u,
                      const struct policy_txt *rec) {
  FUZZ_CHECK(plain(u->uri, sizeof u->uri));
  FUZZ_CHECK(memmem(rec->data, rec->len, u->uri, strlen(u->uri)) != NULL);
  FUZZ_CHECK(plain(u->target, sizeof u->target));
  const char *t = u->target;
  if (u->kind == POLICY_TLSRPT_URI_MAILTO) {
    const char *at = strchr(t, '@');
    FUZZ_CHECK(at != NULL && at != t && strchr(at + 1, '@') == NULL);
    FUZZ_CHECK(strpbrk(t, ",?") == NULL);
  } else {
    FUZZ_CHECK(u->kind == POLICY_TLSRPT_URI_HTTPS);
    FUZZ_CHECK(strncmp(t, "https://", 8) == 0);
    const char *path = strchr(t + 8, '/');
    FUZZ_CHECK(path != NULL && path > t + 8);
    FUZZ_CHECK(memchr(t + 8, '@', (size_t)(path - t - 8)) == NULL);
    FUZZ_CHECK(strchr(t, '#') == NULL);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fuzz_in in = {data, size};
  size_t nrecs = 1 + fuzz_u8(&in) % MAX_RECS;
  struct policy_txt recs[MAX_RECS], rev[MAX_RECS];
  char *copies[MAX_RECS];
  size_t nfound = 0, found = 0;
  for (size_t i = 0; i < nrecs; i++) {
    copies[i] = fuzz_txt_record(&in, true, &recs[i].len);
    recs[i].data = copies[i];
    if (is_tlsrpt(&recs[i])) {
      nfound++;
      found = i;
    }
  }
  for (size_t i = 0; i < nrecs; i++)
    rev[i] = recs[nrecs - 1 - i];

  struct policy_tlsrpt_record *out = malloc(sizeof *out);
  struct policy_tlsrpt_record *out2 = malloc(sizeof *out2);
  FUZZ_CHECK(out != NULL && out2 != NULL);
  memset(out, 0x55, sizeof *out);
  int rc = policy_tlsrpt_txt_parse(recs, nrecs, out);
  if (nfound == 0)
    FUZZ_CHECK(rc == POSTERN_ENOENT);
  else if (nfound > 1)
    FUZZ_CHECK(rc == POSTERN_EPROTO);
  else
    FUZZ_CHECK(rc == 0 || rc == POSTERN_EPROTO);
  if (rc == 0) {
    FUZZ_CHECK(out->nrua >= 1 && out->nrua <= POLICY_TLSRPT_RUA_MAX);
    for (size_t k = 0; k < out->nrua; k++) {
      check_uri(&out->rua[k], &recs[found]);
      for (size_t j = 0; j < k; j++)
        FUZZ_CHECK(out->rua[j].kind != out->rua[k].kind ||
                   strcmp(out->rua[j].target, out->rua[k].target) != 0);
    }
  }
  int rc2 = policy_tlsrpt_txt_parse(rev, nrecs, out2);
  FUZZ_CHECK(rc2 == rc);
  if (rc == 0) {
    FUZZ_CHECK(out2->nrua == out->nrua && out2->nskipped == out->nskipped);
    for (size_t k = 0; k < out->nrua; k++)
      FUZZ_CHECK(strcmp(out->rua[k].target, out2->rua[k].target) == 0);
  }
  free(out);
  free(out2);
  for (size_t i = 0; i < nrecs; i++)
    free(copies[i]);
  return 0;
}
