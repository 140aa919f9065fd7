/*
 * mtasts_parse.c - the pure parts of MTA-STS (RFC 8461): the `_mta-sts` TXT
 * record, the policy body served at /.well-known/mta-sts.txt, and MX pattern
 * matching.
 *
 * Both inputs come from the network and are hostile: every byte is checked
 * against the RFC's grammar, lengths are bounded before anything is copied,
 * numbers are parsed digit by digit with a bound, and nothing is ever read
 * past `len` (inputs need not be NUL-terminated). The parsers see whole
 * objects, so they answer OK or PROTO_ERROR; there is no NEED_MORE.
 *
 * No state, no allocation: outputs are plain structs owned by the caller.
 */
#include "policy/chain.h"

#include <string.h>

#include "policy/internal.h"
#include "policy/txt_record.h"
#include "base/postern_domain.h"
#include "base/postern_err.h"
#include "base/postern_idna.h"
#include "base/postern_utf8.h"

static const char *const mode_names[] = {
#define POLICY__NAME(name, str) str,
    POLICY_MTASTS_MODE_MAP(POLICY__NAME)
#undef POLICY__NAME
};

const char *policy_mtasts_mode_name(enum policy_mtasts_mode mode) {
  if ((unsigned)mode >= POLICY_MTASTS_MODE_COUNT)
    return "unknown";
  return mode_names[mode];
}

static bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

/* Compares the `n` bytes at `s` with the C string `lit`. */
static bool equals(const char *s, size_t n, const char *lit) {
  return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* ---- TXT record (RFC 8461 §3.1) ---------------------------------------- */

struct sts_fields {
  struct policy_mtasts_txt *out;
  bool have_id;
};

/* One field of the record; its grammar is the one RFC 8460 §3 took over
 * for `_smtp._tls` (policy/txt_record.h), only the `id` field is ours. */
static int sts_field(void *ctx, const char *name, size_t name_len,
                     const char *s, size_t n, size_t *i) {
  struct sts_fields *st = ctx;
  size_t value = *i, value_len;
  if (policy__txt_ext_value(s, n, i, &value_len) != 0)
    return POSTERN_EPROTO;
  if (equals(name, name_len, "id")) {
    /* sts-id = %s"id=" 1*32(ALPHA / DIGIT); a second id is ambiguous. */
    if (st->have_id || value_len > POLICY_MTASTS_ID_MAX)
      return POSTERN_EPROTO;
    for (size_t k = 0; k < value_len; k++)
      if (!is_alnum(s[value + k]))
        return POSTERN_EPROTO;
    memcpy(st->out->id, s + value, value_len);
    st->out->id[value_len] = '\0';
    st->have_id = true;
  }
  /* Other fields are extensions: tolerated and ignored. */
  return 0;
}

int policy_mtasts_txt_parse(const struct policy_txt *recs, size_t nrecs,
                            struct policy_mtasts_txt *out) {
  if (out == NULL)
    return POSTERN_EINVAL;
  /* RFC 8461 §3.1: records not beginning with "v=STSv1;" are discarded,
   * and anything but exactly one STS record is no usable one. */
  const struct policy_txt *sts;
  int rc = policy__txt_select(recs, nrecs, "v=STSv1", &sts);
  if (rc != 0)
    return rc;
  struct policy_mtasts_txt tmp;
  struct sts_fields st = {&tmp, false};
  rc = policy__txt_fields(sts->data, sts->len, 7 /* after "v=STSv1" */,
                          sts_field, &st);
  if (rc == 0 && !st.have_id)
    rc = POSTERN_EPROTO;
  if (rc == 0)
    *out = tmp;
  return rc;
}

/* ---- Policy body (RFC 8461 §3.2) --------------------------------------- */

/* CTLs other than HTAB are never allowed in a line. */
static bool has_ctl(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char u = (unsigned char)s[i];
    if ((u < 0x20 && s[i] != '\t') || u == 0x7f)
      return true;
  }
  return false;
}

/* max_age = 1*10(DIGIT) (RFC 8461 §3.2). Values MUST be at most 31557600,
 * but a larger one is still syntactically valid and parsers MUST accept
 * syntactically valid policies: it is capped, not rejected. */
static int parse_max_age(const char *s, size_t n, uint32_t *out) {
  if (n == 0 || n > 10)
    return POSTERN_EPROTO;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return POSTERN_EPROTO;
    v = v * 10 + (uint64_t)(s[i] - '0'); /* 10 digits fit in 64 bits */
  }
  if (v > POLICY_MTASTS_MAX_AGE_MAX)
    v = POLICY_MTASTS_MAX_AGE_MAX;
  *out = (uint32_t)v;
  return 0;
}

/* mx = ["*."] Domain (RFC 8461 §3.2, RFC 5321 Domain); stored normalised.
 * A policy written with U-labels (RFC 6531 extends Domain with them) is
 * stored in the A-label form (IDNA2008), which is what MX records and
 * certificates carry; a name that is not valid IDNA2008 makes the policy
 * malformed, like any other bad mx value. */
static int add_mx(struct policy_mtasts_policy *p, const char *s, size_t n) {
  char alabel[POLICY_MTASTS_MX_LEN + 4];
  if (postern_has_8bit(s, n)) {
    char in[POLICY_MTASTS_MX_LEN * 4 + 8];
    bool wild = n > 2 && s[0] == '*' && s[1] == '.';
    size_t k = n - (wild ? 2 : 0);
    if (k >= sizeof in)
      return POSTERN_EPROTO;
    memcpy(in, s + (wild ? 2 : 0), k);
    in[k] = '\0';
    if (wild)
      memcpy(alabel, "*.", 2);
    if (postern_idna_to_ascii(in, alabel + (wild ? 2 : 0),
                              sizeof alabel - (wild ? 2 : 0), NULL) != 0)
      return POSTERN_EPROTO;
    s = alabel;
    n = strlen(alabel);
  }
  if (postern_domain_check(
          s, n, POSTERN_DOMAIN_WILDCARD | POSTERN_DOMAIN_TRAILING_DOT, NULL,
          NULL) != 0)
    return POSTERN_EPROTO;
  if (p->n_mx >= POLICY_MTASTS_MX_MAX)
    return POSTERN_ETOOBIG;
  if (policy__name_norm(s, n, p->mx[p->n_mx], POLICY_MTASTS_MX_LEN) < 0)
    return POSTERN_EPROTO;
  p->n_mx++;
  return 0;
}

struct body_state {
  bool have_version, have_mode, have_max_age;
};

static int body_line(struct body_state *st, struct policy_mtasts_policy *p,
                     const char *s, size_t n) {
  if (has_ctl(s, n))
    return POSTERN_EPROTO;
  while (n > 0 && policy__txt_is_wsp(s[0])) {
    s++;
    n--;
  }
  while (n > 0 && policy__txt_is_wsp(s[n - 1]))
    n--;
  if (n == 0)
    return 0; /* blank lines are tolerated */
  const char *colon = memchr(s, ':', n);
  if (colon == NULL)
    return POSTERN_EPROTO;
  size_t klen = (size_t)(colon - s);
  while (klen > 0 && policy__txt_is_wsp(s[klen - 1]))
    klen--;
  const char *v = colon + 1;
  size_t vlen = n - (size_t)(v - s);
  while (vlen > 0 && policy__txt_is_wsp(v[0])) {
    v++;
    vlen--;
  }
  /* Every field, known or not, must be `name: non-empty value`. */
  if (!policy__txt_name_ok(s, klen) || vlen == 0)
    return POSTERN_EPROTO;

  /* Fields may come in any order (RFC 8461 §3.2 gives no order, and
   * syntactically valid policies MUST be accepted). A body whose version is
   * not STSv1 is refused wherever that field appears, so another version's
   * body is never taken for this one. */
  if (equals(s, klen, "version")) {
    if (st->have_version)
      return 0; /* RFC 8461 §3.2: the first occurrence counts */
    if (!equals(v, vlen, "STSv1"))
      return POSTERN_EPROTO;
    st->have_version = true;
    return 0;
  }
  if (equals(s, klen, "mode")) {
    if (st->have_mode)
      return 0;
    for (int m = 0; m < POLICY_MTASTS_MODE_COUNT; m++) {
      if (equals(v, vlen, mode_names[m])) {
        p->mode = (enum policy_mtasts_mode)m;
        st->have_mode = true;
        return 0;
      }
    }
    return POSTERN_EPROTO;
  }
  if (equals(s, klen, "max_age")) {
    if (st->have_max_age)
      return 0;
    int rc = parse_max_age(v, vlen, &p->max_age);
    if (rc == 0)
      st->have_max_age = true;
    return rc;
  }
  if (equals(s, klen, "mx"))
    return add_mx(p, v, vlen);
  /* Unknown keys are ignored (RFC 8461 §3.2); their values may hold any
   * printable or UTF-8 text, which has_ctl() already allowed. */
  return 0;
}

int policy_mtasts_policy_parse(const char *body, size_t len,
                               struct policy_mtasts_policy *out) {
  if (out == NULL || (body == NULL && len > 0))
    return POSTERN_EINVAL;
  if (len > POLICY_MTASTS_BODY_MAX)
    return POSTERN_ETOOBIG;
  memset(out, 0, sizeof *out);
  struct body_state st = {false, false, false};
  size_t i = 0;
  while (i < len) {
    const char *nl = memchr(body + i, '\n', len - i);
    size_t end = nl != NULL ? (size_t)(nl - body) : len;
    size_t line_end = end;
    /* Lines end with LF or CRLF; a CR elsewhere is a control character. */
    if (line_end > i && body[line_end - 1] == '\r')
      line_end--;
    int rc = body_line(&st, out, body + i, line_end - i);
    if (rc != 0)
      return rc;
    i = nl != NULL ? end + 1 : len;
  }
  if (!st.have_version || !st.have_mode || !st.have_max_age)
    return POSTERN_EPROTO;
  if (out->mode != POLICY_MTASTS_MODE_NONE && out->n_mx == 0)
    return POSTERN_EPROTO;
  return 0;
}

/* ---- MX matching (RFC 8461 §4.1) --------------------------------------- */

bool policy_mtasts_mx_match(const char *pattern, const char *host) {
  char p[POLICY_MTASTS_MX_LEN], h[POLICY_MTASTS_MX_LEN];
  if (pattern == NULL || host == NULL)
    return false;
  if (policy__name_norm(pattern, strlen(pattern), p, sizeof p) < 0 ||
      policy__name_norm(host, strlen(host), h, sizeof h) < 0)
    return false;
  /* A host that is not a plain domain name (say "*.example.com") matches
   * nothing. */
  if (postern_domain_check(h, strlen(h), POSTERN_DOMAIN_TRAILING_DOT, NULL,
                           NULL) != 0)
    return false;
  if (p[0] == '*' && p[1] == '.') {
    /* "*.example.com" stands for exactly one extra leftmost label: it
     * matches mx.example.com, not example.com nor a.mx.example.com. */
    const char *suffix = p + 2;
    const char *dot = strchr(h, '.');
    return suffix[0] != '\0' && dot != NULL && dot != h &&
           strcmp(dot + 1, suffix) == 0;
  }
  return strcmp(p, h) == 0;
}

bool policy_mtasts_policy_match(const struct policy_mtasts_policy *policy,
                                const char *host) {
  if (policy == NULL)
    return false;
  for (size_t i = 0; i < policy->n_mx && i < POLICY_MTASTS_MX_MAX; i++)
    if (policy_mtasts_mx_match(policy->mx[i], host))
      return true;
  return false;
}
