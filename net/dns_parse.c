/*
 * net/dns_parse.c - the DNS answer parser: raw message in, struct dns_answer
 * out (see dns_answer_parse() in dns.h).
 *
 * Every byte comes from the network and is hostile. Invariants:
 * - no read ever goes past `len`: every field read is preceded by a check
 *   against the end of the packet or of the RDATA it lives in;
 * - a compressed name may only point strictly before the previous pointer
 *   target (RFC 1035 §4.1.4 allows only earlier offsets), so decompression
 *   always terminates; names are capped at 255 octets and 128 pointers;
 * - counts in the header are checked against the bytes left before
 *   anything is allocated for them;
 * - the answer owns all its memory (one allocation per string); the caller
 *   releases it with dns_answer_free().
 * The parser is pure: no globals, no I/O, so it is also the fuzz target.
 */
#include "net/dns.h"

#include "net/dns_internal.h"
#include "base/postern_err.h"

#include <stdlib.h>
#include <string.h>

#define DNS_HDR_LEN 12
/* Smallest resource record: root owner (1) + type, class, ttl, rdlength. */
#define DNS_RR_MIN 11
#define DNS_WIRE_NAME_MAX 255
#define DNS_MAX_POINTERS 128

#define DNS_FLAG_QR 0x8000
#define DNS_FLAG_TC 0x0200
#define DNS_FLAG_AD 0x0020

static const char *const status_names[] = {
#define DNS__STATUS_NAME(name, str) str,
    DNS_STATUS_MAP(DNS__STATUS_NAME)
#undef DNS__STATUS_NAME
};

const char *dns_status_name(enum dns_status st) {
  if ((unsigned)st < sizeof status_names / sizeof status_names[0])
    return status_names[st];
  return "unknown";
}

int dns__status_err(enum dns_status st) {
  switch (st) {
  case DNS_ANSWER:
    return 0;
  case DNS_NXDOMAIN:
    return POSTERN_EDNS_NXDOMAIN;
  case DNS_NODATA:
    return POSTERN_EDNS_NODATA;
  case DNS_TEMPFAIL:
    return POSTERN_EDNS_TEMPFAIL;
  case DNS_MALFORMED:
    return POSTERN_EDNS_MALFORMED;
  case DNS_CANCELED:
    return POSTERN_ECANCELED;
  }
  return POSTERN_EINTERNAL;
}

static uint16_t get16(const unsigned char *p) {
  return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const unsigned char *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Appends one label octet in presentation format (RFC 1035 §5.1). */
static size_t put_label_byte(char *out, size_t n, unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    c = (unsigned char)(c - 'A' + 'a');
  if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
      c == '_') {
    out[n++] = (char)c;
  } else if (c == '.' || c == '\\') {
    out[n++] = '\\';
    out[n++] = (char)c;
  } else {
    out[n++] = '\\';
    out[n++] = (char)('0' + c / 100);
    out[n++] = (char)('0' + (c / 10) % 10);
    out[n++] = (char)('0' + c % 10);
  }
  return n;
}

/*
 * Reads the possibly compressed name at *off. Labels read in place must end
 * before `end` (the RDATA or packet end); after a pointer, before `len`.
 * Writes the presentation form into out (DNS_NAME_MAX bytes) and moves *off
 * past the name's in-place bytes. Returns 0 or -1 (malformed).
 */
int dns__name_read(const unsigned char *pkt, size_t len, size_t end,
                   size_t *off, char *out) {
  size_t pos = *off, limit = pos, after = 0, wire = 0, n = 0;
  unsigned jumps = 0;
  bool jumped = false;
  if (end > len)
    return -1;
  for (;;) {
    size_t bound = jumped ? len : end;
    if (pos >= bound)
      return -1;
    unsigned char c = pkt[pos];
    if ((c & 0xc0) == 0xc0) {
      if (pos + 1 >= bound)
        return -1;
      size_t target = ((size_t)(c & 0x3f) << 8) | pkt[pos + 1];
      /* Strictly before the previous target: decompression must end. */
      if (target >= limit || ++jumps > DNS_MAX_POINTERS)
        return -1;
      if (!jumped)
        after = pos + 2;
      jumped = true;
      limit = target;
      pos = target;
      continue;
    }
    if (c & 0xc0) /* 0x40, 0x80: extended label types, obsolete (RFC 6891) */
      return -1;
    wire += 1u + c;
    if (wire > DNS_WIRE_NAME_MAX)
      return -1;
    if (c == 0) {
      pos++;
      break;
    }
    if (pos + 1 + c > bound)
      return -1;
    if (n > 0)
      out[n++] = '.';
    for (size_t i = 0; i < c; i++)
      n = put_label_byte(out, n, pkt[pos + 1 + i]);
    pos += 1u + c;
  }
  if (n == 0)
    out[n++] = '.';
  out[n] = '\0';
  *off = jumped ? after : pos;
  return 0;
}

int dns__name_normalize(const char *in, char *out) {
  size_t n = strlen(in);
  if (n == 0 || n >= DNS_NAME_MAX)
    return -1;
  /* Drop one trailing dot unless it is escaped ("a\.") or the root. */
  if (n > 1 && in[n - 1] == '.') {
    size_t bs = 0;
    for (size_t i = n - 1; i > 0 && in[i - 1] == '\\'; i--)
      bs++;
    if (bs % 2 == 0)
      n--;
  }
  for (size_t i = 0; i < n; i++) {
    char c = in[i];
    out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  out[n] = '\0';
  return 0;
}

/* One answer-section record, as located during the walk. */
struct rr_loc {
  char *owner;
  uint16_t type;
  uint32_t ttl;
  size_t rdoff;
  uint16_t rdlen;
};

struct walk {
  const unsigned char *pkt;
  size_t len;
  size_t off;
};

/* Reads the fixed part of a record after its owner name. */
static int rr_fixed(struct walk *w, uint16_t *type, uint16_t *klass,
                    uint32_t *ttl, size_t *rdoff, uint16_t *rdlen) {
  if (w->len - w->off < 10)
    return -1;
  const unsigned char *p = w->pkt + w->off;
  *type = get16(p);
  *klass = get16(p + 2);
  *ttl = get32(p + 4);
  *rdlen = get16(p + 8);
  *rdoff = w->off + 10;
  if (*rdlen > w->len - *rdoff)
    return -1;
  w->off = *rdoff + *rdlen;
  return 0;
}

/* RFC 2181 §8: a TTL with the top bit set is treated as zero. */
static uint32_t ttl_clamp(uint32_t t) {
  return (t & 0x80000000u) ? 0 : t;
}

static void set_status(struct dns_answer *a, enum dns_status st) {
  a->status = st;
  a->err = dns__status_err(st);
}

static void free_rrs(struct dns_rr *rr, size_t n) {
  for (size_t i = 0; i < n; i++) {
    switch (rr[i].type) {
    case DNS_T_MX:
      free(rr[i].u.mx.host);
      break;
    case DNS_T_TXT:
      free(rr[i].u.txt.data);
      break;
    case DNS_T_TLSA:
      free(rr[i].u.tlsa.data);
      break;
    case DNS_T_CNAME:
      free(rr[i].u.target);
      break;
    default:
      break;
    }
  }
  free(rr);
}

void dns_answer_free(struct dns_answer *a) {
  if (a == NULL)
    return;
  free_rrs(a->rr, a->nrr);
  free(a->qname);
  free(a->cname);
  memset(a, 0, sizeof *a);
}

static void *dup_bytes(const void *p, size_t n) {
  void *d = malloc(n + 1);
  if (d != NULL) {
    memcpy(d, p, n);
    ((unsigned char *)d)[n] = '\0';
  }
  return d;
}

int dns__answer_copy(const struct dns_answer *src, struct dns_answer *dst) {
  *dst = *src;
  dst->rr = NULL;
  dst->nrr = 0;
  dst->qname = src->qname ? strdup(src->qname) : NULL;
  dst->cname = src->cname ? strdup(src->cname) : NULL;
  if ((src->qname && !dst->qname) || (src->cname && !dst->cname))
    goto nomem;
  if (src->nrr > 0) {
    dst->rr = calloc(src->nrr, sizeof *dst->rr);
    if (dst->rr == NULL)
      goto nomem;
  }
  for (size_t i = 0; i < src->nrr; i++) {
    const struct dns_rr *s = &src->rr[i];
    struct dns_rr *d = &dst->rr[i];
    *d = *s;
    void *p = (void *)1;
    switch (s->type) {
    case DNS_T_MX:
      p = d->u.mx.host = strdup(s->u.mx.host);
      break;
    case DNS_T_TXT:
      p = d->u.txt.data = dup_bytes(s->u.txt.data, s->u.txt.len);
      break;
    case DNS_T_TLSA:
      p = d->u.tlsa.data = dup_bytes(s->u.tlsa.data, s->u.tlsa.len);
      break;
    case DNS_T_CNAME:
      p = d->u.target = strdup(s->u.target);
      break;
    default:
      break;
    }
    dst->nrr = i + 1; /* owned from here on: freed on failure */
    if (p == NULL)
      goto nomem;
  }
  return 0;
nomem:
  dns_answer_free(dst);
  return POSTERN_ENOMEM;
}

/* Decodes the RDATA of one record of the asked type into *rr. Returns 0,
 * 1 (malformed) or POSTERN_ENOMEM. */
static int rdata_decode(const unsigned char *pkt, size_t len,
                        const struct rr_loc *l, struct dns_rr *rr) {
  const unsigned char *rd = pkt + l->rdoff;
  size_t rdend = l->rdoff + l->rdlen;
  char name[DNS_NAME_MAX];
  rr->type = l->type;
  rr->ttl = l->ttl;
  switch (l->type) {
  case DNS_T_A:
    if (l->rdlen != 4)
      return 1;
    memcpy(&rr->u.a, rd, 4);
    return 0;
  case DNS_T_AAAA:
    if (l->rdlen != 16)
      return 1;
    memcpy(&rr->u.aaaa, rd, 16);
    return 0;
  case DNS_T_MX: {
    if (l->rdlen < 3)
      return 1;
    size_t off = l->rdoff + 2;
    if (dns__name_read(pkt, len, rdend, &off, name) != 0 || off != rdend)
      return 1;
    rr->u.mx.pref = get16(rd);
    rr->u.mx.host = strdup(name);
    return rr->u.mx.host ? 0 : POSTERN_ENOMEM;
  }
  case DNS_T_CNAME: {
    size_t off = l->rdoff;
    if (dns__name_read(pkt, len, rdend, &off, name) != 0 || off != rdend)
      return 1;
    rr->u.target = strdup(name);
    return rr->u.target ? 0 : POSTERN_ENOMEM;
  }
  case DNS_T_TXT: {
    /* RFC 1035 §3.3.14: one or more <character-string>s filling RDATA. */
    if (l->rdlen < 1)
      return 1;
    size_t i = 0, total = 0;
    unsigned ns = 0;
    while (i < l->rdlen) {
      size_t sl = rd[i];
      if (sl > l->rdlen - i - 1)
        return 1;
      total += sl;
      i += 1 + sl;
      ns++;
    }
    unsigned char *d = malloc(total + 1);
    if (d == NULL)
      return POSTERN_ENOMEM;
    size_t n = 0;
    for (i = 0; i < l->rdlen; i += 1u + rd[i]) {
      memcpy(d + n, rd + i + 1, rd[i]);
      n += rd[i];
    }
    d[n] = '\0';
    rr->u.txt.data = d;
    rr->u.txt.len = total;
    rr->u.txt.nstrings = ns;
    return 0;
  }
  case DNS_T_TLSA: {
    /* RFC 6698 §2.1: usage, selector, matching type, then the data. */
    if (l->rdlen < 3)
      return 1;
    size_t dl = l->rdlen - 3u;
    unsigned char *d = malloc(dl + 1);
    if (d == NULL)
      return POSTERN_ENOMEM;
    memcpy(d, rd + 3, dl);
    d[dl] = 0;
    rr->u.tlsa.usage = rd[0];
    rr->u.tlsa.selector = rd[1];
    rr->u.tlsa.mtype = rd[2];
    rr->u.tlsa.data = d;
    rr->u.tlsa.len = dl;
    return 0;
  }
  default:
    return 0;
  }
}

/* Reads the negative-caching TTL from an SOA RDATA (RFC 2308 §5: the
 * minimum of the SOA's own TTL and its MINIMUM field). */
static int soa_ttl(const unsigned char *pkt, size_t len, size_t rdoff,
                   uint16_t rdlen, uint32_t ttl, uint32_t *out) {
  char name[DNS_NAME_MAX];
  size_t end = rdoff + rdlen, off = rdoff;
  if (dns__name_read(pkt, len, end, &off, name) != 0 ||
      dns__name_read(pkt, len, end, &off, name) != 0 || end - off != 20)
    return -1;
  uint32_t min = ttl_clamp(get32(pkt + off + 16));
  *out = min < ttl ? min : ttl;
  return 0;
}

static int parse(const unsigned char *pkt, size_t len, int qid, uint16_t qtype,
                 bool trust_ad, struct dns_answer *a) {
  struct rr_loc *locs = NULL;
  size_t nlocs = 0;
  char name[DNS_NAME_MAX];
  int rc = 0;
  enum dns_status st = DNS_MALFORMED;

  if (pkt == NULL || len < DNS_HDR_LEN)
    goto done;
  uint16_t id = get16(pkt), flags = get16(pkt + 2);
  uint16_t qd = get16(pkt + 4), an = get16(pkt + 6), ns = get16(pkt + 8),
           ar = get16(pkt + 10);
  if (qid >= 0 && id != (uint16_t)qid)
    goto done;
  /* A response (QR) to a standard query (opcode 0). */
  if (!(flags & DNS_FLAG_QR) || ((flags >> 11) & 0xf) != 0)
    goto done;
  int rcode = flags & 0xf;
  a->rcode = rcode;
  if (qd != 1)
    goto done;
  /* Every record needs at least DNS_RR_MIN bytes: refuse counts the packet
   * cannot hold before trusting them for anything. */
  struct walk w = {pkt, len, DNS_HDR_LEN};
  if (dns__name_read(pkt, len, len, &w.off, name) != 0 || len - w.off < 4)
    goto done;
  if (strcmp(name, a->qname) != 0 || get16(pkt + w.off) != qtype ||
      get16(pkt + w.off + 2) != 1 /* IN */)
    goto done;
  w.off += 4;
  if ((size_t)an + ns + ar > (len - w.off) / DNS_RR_MIN)
    goto done;

  if (an > 0) {
    locs = calloc(an, sizeof *locs);
    if (locs == NULL) {
      rc = POSTERN_ENOMEM;
      goto done;
    }
  }
  for (unsigned i = 0; i < an; i++) {
    uint16_t type, klass, rdlen;
    uint32_t ttl;
    size_t rdoff;
    if (dns__name_read(pkt, len, len, &w.off, name) != 0 ||
        rr_fixed(&w, &type, &klass, &ttl, &rdoff, &rdlen) != 0)
      goto done;
    if (klass != 1)
      continue;
    struct rr_loc *l = &locs[nlocs];
    l->owner = strdup(name);
    if (l->owner == NULL) {
      rc = POSTERN_ENOMEM;
      goto done;
    }
    nlocs++;
    l->type = type;
    l->ttl = ttl_clamp(ttl);
    l->rdoff = rdoff;
    l->rdlen = rdlen;
  }
  bool have_soa = false;
  uint32_t neg_ttl = 0;
  for (unsigned i = 0; i < ns; i++) {
    uint16_t type, klass, rdlen;
    uint32_t ttl;
    size_t rdoff;
    if (dns__name_read(pkt, len, len, &w.off, name) != 0 ||
        rr_fixed(&w, &type, &klass, &ttl, &rdoff, &rdlen) != 0)
      goto done;
    if (type == DNS_T_SOA && klass == 1) {
      if (have_soa ||
          soa_ttl(pkt, len, rdoff, rdlen, ttl_clamp(ttl), &neg_ttl) != 0)
        goto done;
      have_soa = true;
    }
  }
  bool have_opt = false;
  for (unsigned i = 0; i < ar; i++) {
    uint16_t type, klass, rdlen;
    uint32_t ttl;
    size_t rdoff;
    if (dns__name_read(pkt, len, len, &w.off, name) != 0 ||
        rr_fixed(&w, &type, &klass, &ttl, &rdoff, &rdlen) != 0)
      goto done;
    if (type == DNS_T_OPT) {
      /* RFC 6891 §6.1.1: at most one OPT, owned by the root. Its TTL
       * carries the upper 8 bits of the extended rcode. */
      if (have_opt || strcmp(name, ".") != 0)
        goto done;
      have_opt = true;
      rcode |= (int)((ttl >> 24) << 4);
      a->rcode = rcode;
    }
  }
  /* Trailing bytes after the last counted record are ignored. */

  if (flags & DNS_FLAG_TC) {
    /* c-ares retries truncated UDP answers over TCP; a truncated answer
     * that still reaches us is incomplete, so it answers nothing. */
    st = DNS_TEMPFAIL;
    goto done;
  }
  if (rcode != 0 && rcode != 3) {
    st = DNS_TEMPFAIL; /* SERVFAIL, REFUSED, FORMERR, NOTIMP, BADVERS... */
    goto done;
  }

  /* Follow the CNAME chain from qname (RFC 1034 §3.6.2, RFC 2181 §10.1). */
  uint32_t minttl = UINT32_MAX;
  size_t nfound = 0;
  for (;;) {
    nfound = 0;
    size_t cn = SIZE_MAX;
    for (size_t i = 0; i < nlocs; i++) {
      if (strcmp(locs[i].owner, a->cname) != 0)
        continue;
      if (locs[i].type == qtype)
        nfound++;
      else if (locs[i].type == DNS_T_CNAME) {
        if (cn != SIZE_MAX) /* two CNAMEs for one name: RFC 2181 §10.1 */
          goto done;
        cn = i;
      }
    }
    if (nfound > 0 || cn == SIZE_MAX)
      break;
    /* A name with a CNAME has no other data (RFC 1034 §3.6.2). */
    if (++a->cname_hops > DNS_CNAME_MAX)
      goto done;
    size_t off = locs[cn].rdoff, end = off + locs[cn].rdlen;
    if (dns__name_read(pkt, len, end, &off, name) != 0 || off != end)
      goto done;
    char *next = strdup(name);
    if (next == NULL) {
      rc = POSTERN_ENOMEM;
      goto done;
    }
    free(a->cname);
    a->cname = next;
    if (locs[cn].ttl < minttl)
      minttl = locs[cn].ttl;
  }

  if (rcode == 3) {
    /* RFC 6604 §3: NXDOMAIN speaks of the last name of the chain, which
     * then cannot hold records. */
    if (nfound > 0)
      goto done;
    st = DNS_NXDOMAIN;
    a->ttl = have_soa ? neg_ttl : 0;
  } else if (nfound == 0) {
    st = DNS_NODATA;
    a->ttl = have_soa ? neg_ttl : 0;
  } else {
    a->rr = calloc(nfound, sizeof *a->rr);
    if (a->rr == NULL) {
      rc = POSTERN_ENOMEM;
      goto done;
    }
    for (size_t i = 0; i < nlocs; i++) {
      if (locs[i].type != qtype || strcmp(locs[i].owner, a->cname) != 0)
        continue;
      struct dns_rr *rr = &a->rr[a->nrr];
      int r = rdata_decode(pkt, len, &locs[i], rr);
      if (r != 0) {
        if (r == POSTERN_ENOMEM)
          rc = r;
        goto done;
      }
      a->nrr++;
      if (locs[i].ttl < minttl)
        minttl = locs[i].ttl;
    }
    /* RFC 7505 §3: a null MX is the only MX, with the root as exchange. */
    if (qtype == DNS_T_MX && a->nrr == 1 &&
        strcmp(a->rr[0].u.mx.host, ".") == 0)
      a->null_mx = true;
    a->ttl = minttl;
    st = DNS_ANSWER;
  }
  if (st != DNS_ANSWER && minttl < a->ttl)
    a->ttl = minttl;
  /* RFC 6840 §5.7: AD is only as good as the path to the validator. */
  a->authenticated = trust_ad && (flags & DNS_FLAG_AD);

done:
  for (size_t i = 0; i < nlocs; i++)
    free(locs[i].owner);
  free(locs);
  if (rc != 0)
    st = DNS_TEMPFAIL;
  if (st != DNS_ANSWER) {
    free_rrs(a->rr, a->nrr);
    a->rr = NULL;
    a->nrr = 0;
    a->null_mx = false;
    if (st != DNS_NXDOMAIN && st != DNS_NODATA)
      a->authenticated = false;
  }
  set_status(a, st);
  if (rc != 0)
    a->err = rc;
  return a->err;
}

bool dns_host_select(const struct dns_answer *a, bool use[2]) {
  bool secure[2], any_secure = false;
  for (int i = 0; i < 2; i++) {
    secure[i] = a->family[i].status == DNS_ANSWER && a->family[i].authenticated;
    any_secure = any_secure || secure[i];
  }
  for (int i = 0; i < 2; i++)
    use[i] = any_secure ? secure[i] : a->family[i].status == DNS_ANSWER;
  return any_secure;
}

int dns_answer_parse(const unsigned char *pkt, size_t len, int qid,
                     const char *qname, uint16_t qtype, bool trust_ad,
                     struct dns_answer *out) {
  char norm[DNS_NAME_MAX];
  memset(out, 0, sizeof *out);
  out->qtype = qtype;
  out->rcode = -1;
  if (qname == NULL || dns__name_normalize(qname, norm) != 0) {
    set_status(out, DNS_MALFORMED);
    return out->err;
  }
  out->qname = strdup(norm);
  out->cname = strdup(norm);
  if (out->qname == NULL || out->cname == NULL) {
    set_status(out, DNS_TEMPFAIL);
    out->err = POSTERN_ENOMEM;
    return out->err;
  }
  return parse(pkt, len, qid, qtype, trust_ad, out);
}
