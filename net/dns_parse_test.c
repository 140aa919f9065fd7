/*
 * tests/dns/dns_parse_test.c - table-driven unit tests for the DNS answer
 * parser (dns_answer_parse): good answers of every type, compression,
 * pointer loops, truncation, mismatched id and question, oversize counts,
 * odd TLSA lengths, CNAME chains and their bound; and dns_host_select,
 * which families of a host lookup DANE may rely on.
 *
 * Packets are built by a tiny writer below rather than written as hex, so
 * each case says what it means; hostile cases then damage them on purpose.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/dns.h"
#include "net/dns_internal.h"
#include "base/postern_err.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- packet writer ---- */

struct pkt {
  unsigned char b[4096];
  size_t n;
};

static void put8(struct pkt *p, unsigned v) {
  p->b[p->n++] = (unsigned char)v;
}
static void put16(struct pkt *p, unsigned v) {
  put8(p, v >> 8);
  put8(p, v & 0xff);
}
static void put32(struct pkt *p, uint32_t v) {
  put16(p, v >> 16);
  put16(p, v & 0xffff);
}
static void putbytes(struct pkt *p, const void *d, size_t n) {
  memcpy(p->b + p->n, d, n);
  p->n += n;
}
/* Writes a dotted name uncompressed ("" or "." is the root). */
static void putname(struct pkt *p, const char *name) {
  while (*name && strcmp(name, ".") != 0) {
    const char *dot = strchr(name, '.');
    size_t l = dot ? (size_t)(dot - name) : strlen(name);
    put8(p, (unsigned)l);
    putbytes(p, name, l);
    name += l;
    if (*name == '.')
      name++;
  }
  put8(p, 0);
}
static void putptr(struct pkt *p, size_t off) {
  put16(p, 0xc000 | off);
}

#define F_QR 0x8000
#define F_RD 0x0100
#define F_RA 0x0080
#define F_AD 0x0020
#define F_TC 0x0200

static void hdr(struct pkt *p, unsigned id, unsigned flags, unsigned qd,
                unsigned an, unsigned ns, unsigned ar) {
  p->n = 0;
  put16(p, id);
  put16(p, flags);
  put16(p, qd);
  put16(p, an);
  put16(p, ns);
  put16(p, ar);
}
static void question(struct pkt *p, const char *name, unsigned type) {
  putname(p, name);
  put16(p, type);
  put16(p, 1);
}
/* Record header with a compressed owner pointing at the question (12). */
static void rr_q(struct pkt *p, unsigned type, uint32_t ttl, unsigned rdlen) {
  putptr(p, 12);
  put16(p, type);
  put16(p, 1);
  put32(p, ttl);
  put16(p, rdlen);
}
static void rr_named(struct pkt *p, const char *owner, unsigned type,
                     uint32_t ttl, unsigned rdlen) {
  putname(p, owner);
  put16(p, type);
  put16(p, 1);
  put32(p, ttl);
  put16(p, rdlen);
}
static void soa(struct pkt *p, uint32_t ttl, uint32_t minimum) {
  putname(p, "example.org");
  put16(p, DNS_T_SOA);
  put16(p, 1);
  put32(p, ttl);
  put16(p, 2 + 2 + 20);
  putptr(p, 12 + 3); /* "example.org" inside the question name */
  putptr(p, 12 + 3);
  put32(p, 1);
  put32(p, 3600);
  put32(p, 600);
  put32(p, 86400);
  put32(p, minimum);
}

#define QN "mx.example.org"
#define FLAGS (F_QR | F_RD | F_RA)

/* ---- cases ---- */

static void b_a(struct pkt *p) {
  hdr(p, 7, FLAGS | F_AD, 1, 2, 0, 0);
  question(p, QN, DNS_T_A);
  rr_q(p, DNS_T_A, 300, 4);
  putbytes(p, "\xc0\x00\x02\x01", 4);
  rr_q(p, DNS_T_A, 100, 4);
  putbytes(p, "\xc0\x00\x02\x02", 4);
}
static void c_a(const struct dns_answer *a) {
  assert_int_equal(a->rr[0].type, DNS_T_A);
  assert_int_equal(ntohl(a->rr[0].u.a.s_addr), 0xc0000201);
  assert_int_equal(ntohl(a->rr[1].u.a.s_addr), 0xc0000202);
  assert_int_equal(a->ttl, 100);
  assert_string_equal(a->cname, QN);
}

static void b_aaaa(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, QN, DNS_T_AAAA);
  rr_q(p, DNS_T_AAAA, 60, 16);
  putbytes(p, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
}
static void c_aaaa(const struct dns_answer *a) {
  char s[64];
  inet_ntop(AF_INET6, &a->rr[0].u.aaaa, s, sizeof s);
  assert_string_equal(s, "2001:db8::1");
  assert_int_equal(a->ttl, 60);
}

/* MX with the exchange compressed against the question's "example.org". */
static void b_mx(struct pkt *p) {
  hdr(p, 7, FLAGS | F_AD, 1, 2, 0, 0);
  question(p, "example.org", DNS_T_MX);
  rr_q(p, DNS_T_MX, 3600, 2 + 5 + 2);
  put16(p, 10);
  put8(p, 4);
  putbytes(p, "mail", 4);
  putptr(p, 12);
  rr_q(p, DNS_T_MX, 3600, 2 + 7);
  put16(p, 20);
  put8(p, 5);
  putbytes(p, "BACKU", 5); /* case folded on output */
  put8(p, 0);
}
static void c_mx(const struct dns_answer *a) {
  assert_int_equal(a->rr[0].u.mx.pref, 10);
  assert_string_equal(a->rr[0].u.mx.host, "mail.example.org");
  assert_int_equal(a->rr[1].u.mx.pref, 20);
  assert_string_equal(a->rr[1].u.mx.host, "backu");
  assert_false(a->null_mx);
  assert_true(a->authenticated);
}

static void b_nullmx(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, "example.org", DNS_T_MX);
  rr_q(p, DNS_T_MX, 3600, 3);
  put16(p, 0);
  put8(p, 0);
}
static void c_nullmx(const struct dns_answer *a) {
  assert_true(a->null_mx);
  assert_string_equal(a->rr[0].u.mx.host, ".");
}

static void b_txt(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 2, 0, 0);
  question(p, "_mta-sts.example.org", DNS_T_TXT);
  rr_q(p, DNS_T_TXT, 300, 1 + 10 + 1 + 9);
  put8(p, 10);
  putbytes(p, "v=STSv1; i", 10);
  put8(p, 9);
  putbytes(p, "d=2026112", 9);
  rr_q(p, DNS_T_TXT, 300, 1 + 3 + 1);
  put8(p, 3);
  putbytes(p, "a\0b", 3);
  put8(p, 0); /* an empty string is legal */
}
static void c_txt(const struct dns_answer *a) {
  assert_int_equal(a->rr[0].u.txt.len, 19);
  assert_int_equal(a->rr[0].u.txt.nstrings, 2);
  assert_memory_equal(a->rr[0].u.txt.data, "v=STSv1; id=2026112", 19);
  assert_int_equal(a->rr[1].u.txt.len, 3);
  assert_int_equal(a->rr[1].u.txt.nstrings, 2);
  assert_memory_equal(a->rr[1].u.txt.data, "a\0b", 3);
}

static void b_tlsa(struct pkt *p) {
  unsigned char h[32];
  for (int i = 0; i < 32; i++)
    h[i] = (unsigned char)i;
  hdr(p, 7, FLAGS | F_AD, 1, 3, 0, 0);
  question(p, "_25._tcp." QN, DNS_T_TLSA);
  rr_q(p, DNS_T_TLSA, 600, 3 + 32);
  put8(p, 3);
  put8(p, 1);
  put8(p, 1);
  putbytes(p, h, 32);
  rr_q(p, DNS_T_TLSA, 600, 3 + 5); /* odd length: kept, DANE judges */
  put8(p, 2);
  put8(p, 0);
  put8(p, 1);
  putbytes(p, "\x01\x02\x03\x04\x05", 5);
  rr_q(p, DNS_T_TLSA, 600, 3); /* empty data */
  put8(p, 3);
  put8(p, 0);
  put8(p, 0);
}
static void c_tlsa(const struct dns_answer *a) {
  assert_int_equal(a->rr[0].u.tlsa.usage, 3);
  assert_int_equal(a->rr[0].u.tlsa.selector, 1);
  assert_int_equal(a->rr[0].u.tlsa.mtype, 1);
  assert_int_equal(a->rr[0].u.tlsa.len, 32);
  assert_int_equal(a->rr[0].u.tlsa.data[31], 31);
  assert_int_equal(a->rr[1].u.tlsa.usage, 2);
  assert_int_equal(a->rr[1].u.tlsa.len, 5);
  assert_int_equal(a->rr[2].u.tlsa.len, 0);
  assert_true(a->authenticated);
}

/* qname -> c1 -> c2 -> A, records deliberately out of order. */
static void b_cname(struct pkt *p) {
  hdr(p, 7, FLAGS | F_AD, 1, 3, 0, 0);
  question(p, QN, DNS_T_A);
  rr_named(p, "c2.example.net", DNS_T_A, 50, 4);
  putbytes(p, "\x0a\x00\x00\x01", 4);
  rr_q(p, DNS_T_CNAME, 500, 16);
  putname(p, "c1.example.net");
  rr_named(p, "c1.example.net", DNS_T_CNAME, 20, 16);
  putname(p, "c2.example.net");
}
static void c_cname(const struct dns_answer *a) {
  assert_string_equal(a->qname, QN);
  assert_string_equal(a->cname, "c2.example.net");
  assert_int_equal(a->cname_hops, 2);
  assert_int_equal(a->ttl, 20); /* min over the chain and the data */
  assert_int_equal(ntohl(a->rr[0].u.a.s_addr), 0x0a000001);
}

/* A chain of `hops` CNAMEs c0 -> c1 -> ... ending in an A record. */
static void chain(struct pkt *p, int hops) {
  char owner[64], target[64];
  hdr(p, 7, FLAGS, 1, (unsigned)hops + 1, 0, 0);
  question(p, "c0.example.org", DNS_T_A);
  for (int i = 0; i < hops; i++) {
    snprintf(owner, sizeof owner, "c%d.example.org", i);
    snprintf(target, sizeof target, "c%d.example.org", i + 1);
    rr_named(p, owner, DNS_T_CNAME, 60, (unsigned)strlen(target) + 2);
    putname(p, target);
  }
  snprintf(owner, sizeof owner, "c%d.example.org", hops);
  rr_named(p, owner, DNS_T_A, 60, 4);
  putbytes(p, "\x0a\0\0\x02", 4);
}
static void b_chain8(struct pkt *p) {
  chain(p, DNS_CNAME_MAX);
}
static void b_chain9(struct pkt *p) {
  chain(p, DNS_CNAME_MAX + 1);
}
static void c_chain8(const struct dns_answer *a) {
  assert_string_equal(a->cname, "c8.example.org");
  assert_int_equal(a->cname_hops, 8);
}

static void b_cname_loop(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 2, 0, 0);
  question(p, "c0.example.org", DNS_T_A);
  rr_named(p, "c0.example.org", DNS_T_CNAME, 60, 16);
  putname(p, "c1.example.org");
  rr_named(p, "c1.example.org", DNS_T_CNAME, 60, 16);
  putname(p, "c0.example.org");
}

/* Chain ends at a name without data: NODATA for the last name. */
static void b_cname_nodata(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 1, 0);
  question(p, QN, DNS_T_AAAA);
  rr_q(p, DNS_T_CNAME, 60, 16);
  putname(p, "c1.example.net");
  soa(p, 900, 300);
}
static void c_cname_nodata(const struct dns_answer *a) {
  assert_string_equal(a->cname, "c1.example.net");
  assert_int_equal(a->ttl, 60);
}

static void b_two_cnames(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 2, 0, 0);
  question(p, QN, DNS_T_A);
  rr_q(p, DNS_T_CNAME, 60, 16);
  putname(p, "c1.example.net");
  rr_q(p, DNS_T_CNAME, 60, 16);
  putname(p, "c2.example.net");
}

static void b_nxdomain(struct pkt *p) {
  hdr(p, 7, FLAGS | F_AD | 3, 1, 0, 1, 0);
  question(p, QN, DNS_T_A);
  soa(p, 900, 300);
}
static void c_neg(const struct dns_answer *a) {
  assert_int_equal(a->ttl, 300); /* min(SOA TTL, MINIMUM), RFC 2308 */
  assert_int_equal(a->nrr, 0);
}
static void c_nx_auth(const struct dns_answer *a) {
  c_neg(a);
  assert_true(a->authenticated);
  assert_int_equal(a->rcode, 3);
}

static void b_nodata(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 0, 1, 0);
  question(p, QN, DNS_T_AAAA);
  soa(p, 200, 3000);
}
static void c_nodata(const struct dns_answer *a) {
  assert_int_equal(a->ttl, 200);
  assert_false(a->authenticated);
}

/* Records of another type or owner are checked, then ignored. */
static void b_other_rrs(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 2, 0, 1);
  question(p, QN, DNS_T_A);
  rr_named(p, "other.example.org", DNS_T_A, 60, 4);
  putbytes(p, "\x01\x02\x03\x04", 4);
  rr_q(p, 99 /* SPF */, 60, 2);
  putbytes(p, "\x01x", 2);
  put8(p, 0); /* OPT */
  put16(p, DNS_T_OPT);
  put16(p, 1232);
  put32(p, 0x00008000);
  put16(p, 0);
}

static void b_servfail(struct pkt *p) {
  hdr(p, 7, FLAGS | 2, 1, 0, 0, 0);
  question(p, QN, DNS_T_A);
}
static void b_refused(struct pkt *p) {
  hdr(p, 7, FLAGS | 5, 1, 0, 0, 0);
  question(p, QN, DNS_T_A);
}
static void b_tc(struct pkt *p) {
  hdr(p, 7, FLAGS | F_TC, 1, 0, 0, 0);
  question(p, QN, DNS_T_A);
}
/* Extended rcode BADVERS (16) through the OPT record. */
static void b_badvers(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 0, 0, 1);
  question(p, QN, DNS_T_A);
  put8(p, 0);
  put16(p, DNS_T_OPT);
  put16(p, 1232);
  put32(p, 0x01000000);
  put16(p, 0);
}
static void b_two_opts(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 0, 0, 2);
  question(p, QN, DNS_T_A);
  for (int i = 0; i < 2; i++) {
    put8(p, 0);
    put16(p, DNS_T_OPT);
    put16(p, 1232);
    put32(p, 0);
    put16(p, 0);
  }
}

static void b_wrong_id(struct pkt *p) {
  b_a(p);
  p->b[1] = 8;
}
static void b_wrong_qname(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, "mx.example.com", DNS_T_A);
  rr_q(p, DNS_T_A, 60, 4);
  putbytes(p, "\x01\x02\x03\x04", 4);
}
static void b_wrong_qtype(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 0, 0, 0);
  question(p, QN, DNS_T_AAAA);
}
static void b_not_response(struct pkt *p) {
  b_a(p);
  p->b[2] &= 0x7f;
}
static void b_qd0(struct pkt *p) {
  hdr(p, 7, FLAGS | 2, 0, 0, 0, 0);
}
static void b_short_hdr(struct pkt *p) {
  b_a(p);
  p->n = 11;
}
static void b_cut_rdata(struct pkt *p) {
  b_a(p);
  p->n -= 1;
}
static void b_cut_rr_hdr(struct pkt *p) {
  b_a(p);
  p->n -= 4 + 5;
}
static void b_oversize_an(struct pkt *p) {
  b_a(p);
  p->b[6] = 0xff;
  p->b[7] = 0xff;
}
static void b_oversize_ar(struct pkt *p) {
  b_a(p);
  p->b[10] = 0x00;
  p->b[11] = 0x01;
}
static void b_a_badlen(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, QN, DNS_T_A);
  rr_q(p, DNS_T_A, 60, 5);
  putbytes(p, "\x01\x02\x03\x04\x05", 5);
}
static void b_txt_overrun(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, QN, DNS_T_TXT);
  rr_q(p, DNS_T_TXT, 60, 4);
  put8(p, 5); /* claims 5 bytes, 3 left in RDATA */
  putbytes(p, "abc", 3);
  putbytes(p, "\0\0\0\0\0\0", 6); /* bytes exist after RDATA */
}
static void b_txt_empty_rdata(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, QN, DNS_T_TXT);
  rr_q(p, DNS_T_TXT, 60, 0);
}
static void b_tlsa_short(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, QN, DNS_T_TLSA);
  rr_q(p, DNS_T_TLSA, 60, 2);
  putbytes(p, "\x03\x01", 2);
}
static void b_mx_trailing(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, "example.org", DNS_T_MX);
  rr_q(p, DNS_T_MX, 60, 2 + 1 + 1);
  put16(p, 0);
  put8(p, 0);
  put8(p, 0x41); /* a byte left over inside RDATA */
}
static void b_mx_name_past_rdata(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, "example.org", DNS_T_MX);
  rr_q(p, DNS_T_MX, 60, 2 + 2);
  put16(p, 0);
  put8(p, 4);
  putbytes(p, "mail", 4);
  put8(p, 0);
}
/* Pointer to itself. */
static void b_ptr_self(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, QN, DNS_T_A);
  size_t at = p->n;
  putptr(p, at);
  put16(p, DNS_T_A);
  put16(p, 1);
  put32(p, 60);
  put16(p, 4);
  putbytes(p, "\x01\x02\x03\x04", 4);
}
/* Two names pointing at each other: a -> b -> a. */
static void b_ptr_loop(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, QN, DNS_T_MX);
  size_t rr = p->n;
  put8(p, 1);
  put8(p, 'x');
  putptr(p, rr + 14); /* forward: into the RDATA below */
  put16(p, DNS_T_MX);
  put16(p, 1);
  put32(p, 60);
  put16(p, 6);
  put16(p, 10);
  put8(p, 1);
  put8(p, 'y');
  putptr(p, rr);
}
/* A backward pointer whose target reads forward into another pointer to
 * the same place: rejected because targets must strictly decrease. */
static void b_ptr_cycle_back(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, "example.org", DNS_T_MX);
  size_t rr = p->n;
  rr_q(p, DNS_T_MX, 60, 2 + 2 + 2);
  put16(p, 10);
  size_t name = p->n;
  put8(p, 1);
  put8(p, 'z');
  putptr(p, name); /* "z" then back to "z"... */
  (void)rr;
}
static void b_ptr_past_end(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 0, 0, 0);
  putptr(p, 0x3fff);
  put16(p, DNS_T_A);
  put16(p, 1);
}
static void b_label_type(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 0, 0, 0);
  put8(p, 0x41);
  put8(p, 0);
  put16(p, DNS_T_A);
  put16(p, 1);
}
static void b_long_name(struct pkt *p) {
  /* 5 labels of 63: 320 octets > 255. */
  hdr(p, 7, FLAGS, 1, 0, 0, 0);
  for (int i = 0; i < 5; i++) {
    put8(p, 63);
    for (int j = 0; j < 63; j++)
      put8(p, 'a');
  }
  put8(p, 0);
  put16(p, DNS_T_A);
  put16(p, 1);
}
/* Label bytes needing escapes; the parser must not produce a '.' in a
 * label that could be read as two labels. */
static void b_escaped(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, "example.org", DNS_T_MX);
  rr_q(p, DNS_T_MX, 60, 2 + 1 + 5 + 1);
  put16(p, 5);
  put8(p, 5);
  putbytes(p, "a.b\\\x01", 5);
  put8(p, 0);
}
static void c_escaped(const struct dns_answer *a) {
  assert_string_equal(a->rr[0].u.mx.host, "a\\.b\\\\\\001");
}
static void b_nx_with_data(struct pkt *p) {
  b_a(p);
  p->b[3] = (unsigned char)((p->b[3] & 0xf0) | 3);
}
static void b_ttl_topbit(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, QN, DNS_T_A);
  rr_q(p, DNS_T_A, 0x80000001u, 4);
  putbytes(p, "\x01\x02\x03\x04", 4);
}
static void c_ttl0(const struct dns_answer *a) {
  assert_int_equal(a->ttl, 0);
}
static void b_class_chaos(struct pkt *p) {
  hdr(p, 7, FLAGS, 1, 1, 0, 0);
  question(p, QN, DNS_T_A);
  putptr(p, 12);
  put16(p, DNS_T_A);
  put16(p, 3);
  put32(p, 60);
  put16(p, 4);
  putbytes(p, "\x01\x02\x03\x04", 4);
}
static void b_trailing_bytes(struct pkt *p) {
  b_a(p);
  putbytes(p, "junk", 4);
}

struct pcase {
  const char *name;
  void (*build)(struct pkt *p);
  const char *qname;
  uint16_t qtype;
  int qid;
  bool trust;
  enum dns_status want;
  size_t nrr;
  void (*check)(const struct dns_answer *a);
};

static const struct pcase cases[] = {
    {"a", b_a, QN, DNS_T_A, 7, true, DNS_ANSWER, 2, c_a},
    {"a trailing dot, uppercase qname", b_a, "MX.Example.ORG.", DNS_T_A, -1,
     true, DNS_ANSWER, 2, c_a},
    {"aaaa", b_aaaa, QN, DNS_T_AAAA, 7, true, DNS_ANSWER, 1, c_aaaa},
    {"mx compressed", b_mx, "example.org", DNS_T_MX, 7, true, DNS_ANSWER, 2,
     c_mx},
    {"null mx", b_nullmx, "example.org", DNS_T_MX, 7, true, DNS_ANSWER, 1,
     c_nullmx},
    {"txt multi-string", b_txt, "_mta-sts.example.org", DNS_T_TXT, 7, true,
     DNS_ANSWER, 2, c_txt},
    {"tlsa odd lengths", b_tlsa, "_25._tcp." QN, DNS_T_TLSA, 7, true,
     DNS_ANSWER, 3, c_tlsa},
    {"cname chain", b_cname, QN, DNS_T_A, 7, true, DNS_ANSWER, 1, c_cname},
    {"cname chain at bound", b_chain8, "c0.example.org", DNS_T_A, 7, true,
     DNS_ANSWER, 1, c_chain8},
    {"cname chain too long", b_chain9, "c0.example.org", DNS_T_A, 7, true,
     DNS_MALFORMED, 0, NULL},
    {"cname loop", b_cname_loop, "c0.example.org", DNS_T_A, 7, true,
     DNS_MALFORMED, 0, NULL},
    {"cname to nodata", b_cname_nodata, QN, DNS_T_AAAA, 7, true, DNS_NODATA, 0,
     c_cname_nodata},
    {"two cnames one owner", b_two_cnames, QN, DNS_T_A, 7, true, DNS_MALFORMED,
     0, NULL},
    {"nxdomain authenticated", b_nxdomain, QN, DNS_T_A, 7, true, DNS_NXDOMAIN,
     0, c_nx_auth},
    {"nodata", b_nodata, QN, DNS_T_AAAA, 7, true, DNS_NODATA, 0, c_nodata},
    {"other records ignored", b_other_rrs, QN, DNS_T_A, 7, true, DNS_NODATA, 0,
     NULL},
    {"servfail", b_servfail, QN, DNS_T_A, 7, true, DNS_TEMPFAIL, 0, NULL},
    {"refused", b_refused, QN, DNS_T_A, 7, true, DNS_TEMPFAIL, 0, NULL},
    {"truncated flag", b_tc, QN, DNS_T_A, 7, true, DNS_TEMPFAIL, 0, NULL},
    {"badvers extended rcode", b_badvers, QN, DNS_T_A, 7, true, DNS_TEMPFAIL, 0,
     NULL},
    {"two opt records", b_two_opts, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0,
     NULL},
    {"wrong id", b_wrong_id, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0, NULL},
    {"id unchecked", b_wrong_id, QN, DNS_T_A, -1, true, DNS_ANSWER, 2, NULL},
    {"wrong qname", b_wrong_qname, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0,
     NULL},
    {"wrong qtype", b_wrong_qtype, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0,
     NULL},
    {"not a response", b_not_response, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0,
     NULL},
    {"no question", b_qd0, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0, NULL},
    {"short header", b_short_hdr, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0, NULL},
    {"rdata cut", b_cut_rdata, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0, NULL},
    {"rr header cut", b_cut_rr_hdr, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0,
     NULL},
    {"ancount 65535", b_oversize_an, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0,
     NULL},
    {"arcount past end", b_oversize_ar, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0,
     NULL},
    {"a rdlength 5", b_a_badlen, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0, NULL},
    {"txt string overruns rdata", b_txt_overrun, QN, DNS_T_TXT, 7, true,
     DNS_MALFORMED, 0, NULL},
    {"txt empty rdata", b_txt_empty_rdata, QN, DNS_T_TXT, 7, true,
     DNS_MALFORMED, 0, NULL},
    {"tlsa rdlength 2", b_tlsa_short, QN, DNS_T_TLSA, 7, true, DNS_MALFORMED, 0,
     NULL},
    {"mx bytes after name", b_mx_trailing, "example.org", DNS_T_MX, 7, true,
     DNS_MALFORMED, 0, NULL},
    {"mx name past rdata", b_mx_name_past_rdata, "example.org", DNS_T_MX, 7,
     true, DNS_MALFORMED, 0, NULL},
    {"pointer to itself", b_ptr_self, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0,
     NULL},
    {"pointer loop forward", b_ptr_loop, QN, DNS_T_MX, 7, true, DNS_MALFORMED,
     0, NULL},
    {"pointer cycle back", b_ptr_cycle_back, "example.org", DNS_T_MX, 7, true,
     DNS_MALFORMED, 0, NULL},
    {"pointer past end", b_ptr_past_end, QN, DNS_T_A, 7, true, DNS_MALFORMED, 0,
     NULL},
    {"extended label type", b_label_type, QN, DNS_T_A, 7, true, DNS_MALFORMED,
     0, NULL},
    {"name over 255 octets", b_long_name, QN, DNS_T_A, 7, true, DNS_MALFORMED,
     0, NULL},
    {"escaped label bytes", b_escaped, "example.org", DNS_T_MX, 7, true,
     DNS_ANSWER, 1, c_escaped},
    {"nxdomain with data", b_nx_with_data, QN, DNS_T_A, 7, true, DNS_MALFORMED,
     0, NULL},
    {"ttl top bit", b_ttl_topbit, QN, DNS_T_A, 7, true, DNS_ANSWER, 1, c_ttl0},
    {"class chaos ignored", b_class_chaos, QN, DNS_T_A, 7, true, DNS_NODATA, 0,
     NULL},
    {"trailing bytes ignored", b_trailing_bytes, QN, DNS_T_A, 7, true,
     DNS_ANSWER, 2, NULL},
};

static void test_cases(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct pcase *c = &cases[i];
    struct pkt p;
    struct dns_answer a;
    memset(&p, 0, sizeof p);
    c->build(&p);
    printf("case: %s\n", c->name);
    int rc =
        dns_answer_parse(p.b, p.n, c->qid, c->qname, c->qtype, c->trust, &a);
    if (a.status != c->want)
      fail_msg("%s: status %s, want %s", c->name, dns_status_name(a.status),
               dns_status_name(c->want));
    assert_int_equal(rc, a.err);
    assert_int_equal(rc, dns__status_err(c->want));
    assert_int_equal(a.nrr, c->nrr);
    assert_int_equal(a.qtype, c->qtype);
    if (c->want == DNS_TEMPFAIL || c->want == DNS_MALFORMED)
      assert_false(a.authenticated);
    if (c->check != NULL)
      c->check(&a);
    dns_answer_free(&a);
    /* Every prefix of a packet must parse without reading past it (ASan
     * guards the heap copy) and never yield more than the full packet. */
    for (size_t n = 0; n < p.n; n++) {
      unsigned char *cut = malloc(n ? n : 1);
      memcpy(cut, p.b, n);
      dns_answer_parse(cut, n, c->qid, c->qname, c->qtype, c->trust, &a);
      assert_true(a.status != DNS_ANSWER || a.nrr <= c->nrr);
      dns_answer_free(&a);
      free(cut);
    }
  }
}

/* Deterministic mutations of every case: random byte changes, mostly in
 * the header, names and lengths. The parser must never read out of bounds
 * (ASan), and whatever it returns must be consistent. */
static void test_mutations(void **state) {
  (void)state;
  uint32_t seed = 12345;
#define RND() (seed = seed * 1103515245u + 12345u, (seed >> 16) & 0x7fff)
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct pcase *c = &cases[i];
    struct pkt orig;
    memset(&orig, 0, sizeof orig);
    c->build(&orig);
    for (int m = 0; m < 3000; m++) {
      size_t n = orig.n;
      if (RND() % 8 == 0)
        n = RND() % (n + 1);
      unsigned char *b = malloc(n ? n : 1);
      memcpy(b, orig.b, n);
      int flips = 1 + (int)(RND() % 3);
      for (int f = 0; f < flips && n > 0; f++) {
        size_t at = RND() % n;
        switch (RND() % 4) {
        case 0:
          b[at] = (unsigned char)RND();
          break;
        case 1:
          b[at] = 0xc0; /* start of a pointer */
          break;
        case 2:
          b[at] ^= (unsigned char)(1u << (RND() % 8));
          break;
        default:
          b[at] = (unsigned char)(RND() % 64); /* a label length */
        }
      }
      struct dns_answer a;
      int rc = dns_answer_parse(b, n, c->qid, c->qname, c->qtype, true, &a);
      assert_int_equal(rc, a.err);
      assert_true(a.status <= DNS_CANCELED);
      if (a.status == DNS_ANSWER) {
        assert_true(a.nrr > 0);
        for (size_t k = 0; k < a.nrr; k++)
          assert_int_equal(a.rr[k].type, c->qtype);
        assert_true(a.cname_hops <= DNS_CNAME_MAX);
      } else {
        assert_int_equal(a.nrr, 0);
      }
      dns_answer_free(&a);
      free(b);
    }
  }
#undef RND
}

/* The AD bit means nothing unless the resolver is trusted. */
static void test_ad_needs_trust(void **state) {
  (void)state;
  struct pkt p;
  struct dns_answer a;
  b_a(&p);
  dns_answer_parse(p.b, p.n, 7, QN, DNS_T_A, false, &a);
  assert_int_equal(a.status, DNS_ANSWER);
  assert_false(a.authenticated);
  dns_answer_free(&a);
  dns_answer_parse(p.b, p.n, 7, QN, DNS_T_A, true, &a);
  assert_true(a.authenticated);
  dns_answer_free(&a);
  b_aaaa(&p); /* no AD bit */
  dns_answer_parse(p.b, p.n, 7, QN, DNS_T_AAAA, true, &a);
  assert_false(a.authenticated);
  dns_answer_free(&a);
  b_servfail(&p); /* AD on a failure is never believed */
  p.b[3] |= F_AD;
  dns_answer_parse(p.b, p.n, 7, QN, DNS_T_A, true, &a);
  assert_int_equal(a.status, DNS_TEMPFAIL);
  assert_false(a.authenticated);
  dns_answer_free(&a);
}

static void test_bad_inputs(void **state) {
  (void)state;
  struct dns_answer a;
  assert_int_equal(dns_answer_parse(NULL, 0, -1, QN, DNS_T_A, true, &a),
                   POSTERN_EDNS_MALFORMED);
  dns_answer_free(&a);
  assert_int_equal(dns_answer_parse(NULL, 0, -1, "", DNS_T_A, true, &a),
                   POSTERN_EDNS_MALFORMED);
  dns_answer_free(&a);
  dns_answer_free(&a); /* twice is safe */
  assert_string_equal(dns_status_name(DNS_NODATA), "nodata");
  assert_string_equal(dns_status_name((enum dns_status)99), "unknown");
}

/* Name reader: strictly decreasing pointers allow legal chains of
 * pointers to pointers; the root reads as ".". */
static void test_name_read(void **state) {
  (void)state;
  char out[DNS_NAME_MAX];
  /* 0: "\3org\0"; 5: "\7example" ptr 0; 15: "\3www" ptr 5; 21: ptr 15 */
  static const unsigned char pk[] = {3,   'o', 'r', 'g',  0,   7,    'e', 'x',
                                     'a', 'm', 'p', 'l',  'e', 0xc0, 0,   3,
                                     'w', 'w', 'w', 0xc0, 5,   0xc0, 15,  0};
  size_t off = 21;
  assert_int_equal(dns__name_read(pk, sizeof pk, sizeof pk, &off, out), 0);
  assert_string_equal(out, "www.example.org");
  assert_int_equal(off, 23);
  off = 23;
  assert_int_equal(dns__name_read(pk, sizeof pk, sizeof pk, &off, out), 0);
  assert_string_equal(out, ".");
  off = 0;
  assert_int_equal(dns__name_read(pk, sizeof pk, 3, &off, out), -1);
  assert_int_equal(dns__name_normalize("A.b.", out), 0);
  assert_string_equal(out, "a.b");
  assert_int_equal(dns__name_normalize("a\\.", out), 0);
  assert_string_equal(out, "a\\.");
  assert_int_equal(dns__name_normalize(".", out), 0);
  assert_string_equal(out, ".");
}

/* ---- dns_host_select: RFC 7672 §2.1.1 per address family ---- */

static void test_host_select(void **state) {
  (void)state;
  enum {
    ANS = DNS_ANSWER,
    NOD = DNS_NODATA,
    NX = DNS_NXDOMAIN,
    TMP = DNS_TEMPFAIL,
    MAL = DNS_MALFORMED
  };
  static const struct {
    const char *what;
    int a, aaaa;          /* statuses */
    bool a_ad, aaaa_ad;   /* AD bits */
    bool use_a, use_aaaa; /* addresses to connect to */
    bool authenticated;   /* DANE may apply */
  } cases[] = {
      {"both secure", ANS, ANS, true, true, true, true, true},
      {"secure A, secure NODATA AAAA", ANS, NOD, true, true, true, false, true},
      {"secure AAAA, secure NODATA A", NOD, ANS, true, true, false, true, true},
      /* The issue: a bogus (SERVFAIL) or failed AAAA must not turn the
       * validated A RRset into "not authenticated". */
      {"secure A, bogus AAAA", ANS, TMP, true, false, true, false, true},
      {"secure A, malformed AAAA", ANS, MAL, true, false, true, false, true},
      {"bogus A, secure AAAA", TMP, ANS, false, true, false, true, true},
      /* Insecure answers: no DANE, every address. */
      {"both insecure", ANS, ANS, false, false, true, true, false},
      {"insecure A, failed AAAA", ANS, TMP, false, false, true, false, false},
      {"insecure A, insecure NODATA", ANS, NOD, false, false, true, false,
       false},
      /* A secure family next to an insecure one: DANE with the secure
       * family and its addresses only. */
      {"secure A, insecure AAAA", ANS, ANS, true, false, true, false, true},
      {"insecure A, secure AAAA", ANS, ANS, false, true, false, true, true},
      /* Nothing to connect to. */
      {"both failed", TMP, TMP, false, false, false, false, false},
      {"NXDOMAIN", NX, NX, true, true, false, false, false},
      {"secure NODATA both", NOD, NOD, true, true, false, false, false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct dns_answer a;
    memset(&a, 0, sizeof a);
    a.family[DNS_FAMILY_A].status = (enum dns_status)cases[i].a;
    a.family[DNS_FAMILY_A].authenticated = cases[i].a_ad;
    a.family[DNS_FAMILY_AAAA].status = (enum dns_status)cases[i].aaaa;
    a.family[DNS_FAMILY_AAAA].authenticated = cases[i].aaaa_ad;
    bool use[2] = {true, true};
    bool auth = dns_host_select(&a, use);
    if (auth != cases[i].authenticated || use[0] != cases[i].use_a ||
        use[1] != cases[i].use_aaaa)
      fail_msg("%s: authenticated %d use A %d AAAA %d", cases[i].what, auth,
               use[0], use[1]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cases),          cmocka_unit_test(test_mutations),
      cmocka_unit_test(test_ad_needs_trust), cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_name_read),      cmocka_unit_test(test_host_select),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
