/*
 * fuzz_mtasts_txt.c - libFuzzer target for policy_mtasts_txt_parse()
 * (policy/chain.h): the TXT RRset at _mta-sts.<domain> (RFC 8461 §3.1).
 *
 * Input layout: byte 0 is the number of records (1 + b % 8); then each
 * record is one length byte and that many bytes (cut at the input's end);
 * a length byte of 255 stands for a NULL record of length 0.
 * Beyond "no crash" it checks:
 *  - the answer follows from counting STS records independently (those
 *    starting "v=STSv1" then ';', blank or the end): none gives ENOENT, two
 *    or more EPROTO, exactly one 0 or EPROTO - never "no policy" for a
 *    domain that published something STS-like;
 *  - on 0 the id is 1-32 ASCII letters and digits, NUL-terminated, and the
 *    STS record holds "id=<that id>";
 *  - the order of the records does not matter (reversed: same answer).
 */
#include "policy/chain.h"
#include "base/postern_err.h"
#include "tests/fuzz/fuzz_util.h"

#define MAX_RECS 8

static bool is_sts(const struct policy_txt *r) {
  return r->data != NULL && r->len >= 7 && memcmp(r->data, "v=STSv1", 7) == 0 &&
         (r->len == 7 || r->data[7] == ';' || r->data[7] == ' ' ||
          r->data[7] == '\t');
}

static bool alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fuzz_in in = {data, size};
  size_t nrecs = 1 + fuzz_u8(&in) % MAX_RECS;
  struct policy_txt recs[MAX_RECS], rev[MAX_RECS];
  char *copies[MAX_RECS];
  size_t nsts = 0, sts = 0;
  for (size_t i = 0; i < nrecs; i++) {
    copies[i] = fuzz_txt_record(&in, false, &recs[i].len);
    recs[i].data = copies[i];
    if (is_sts(&recs[i])) {
      nsts++;
      sts = i;
    }
  }
  for (size_t i = 0; i < nrecs; i++)
    rev[i] = recs[nrecs - 1 - i];

  struct policy_mtasts_txt out, out2;
  memset(&out, 0x55, sizeof out);
  int rc = policy_mtasts_txt_parse(recs, nrecs, &out);
  if (nsts == 0)
    FUZZ_CHECK(rc == POSTERN_ENOENT);
  else if (nsts > 1)
    FUZZ_CHECK(rc == POSTERN_EPROTO);
  else
    FUZZ_CHECK(rc == 0 || rc == POSTERN_EPROTO);
  if (rc == 0) {
    size_t n = strnlen(out.id, sizeof out.id);
    FUZZ_CHECK(n >= 1 && n <= POLICY_MTASTS_ID_MAX);
    for (size_t i = 0; i < n; i++)
      FUZZ_CHECK(alnum(out.id[i]));
    char needle[POLICY_MTASTS_ID_MAX + 4];
    snprintf(needle, sizeof needle, "id=%s", out.id);
    FUZZ_CHECK(memmem(recs[sts].data, recs[sts].len, needle, strlen(needle)) !=
               NULL);
  }
  int rc2 = policy_mtasts_txt_parse(rev, nrecs, &out2);
  FUZZ_CHECK(rc2 == rc);
  if (rc == 0)
    FUZZ_CHECK(strcmp(out.id, out2.id) == 0);
  FUZZ_CHECK(policy_mtasts_txt_parse(NULL, 0, &out2) == POSTERN_ENOENT);
  for (size_t i = 0; i < nrecs; i++)
    free(copies[i]);
  return 0;
}
