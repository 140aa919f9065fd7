/*
 * cidr.c - address prefixes for access lists (see cidr.h).
 *
 * Invariant: a parsed struct cidr never has bits set below its prefix
 * length, so matching compares whole bytes and one masked byte.
 */
#include "net/cidr.h"

#include "base/postern_err.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

int cidr_parse(const char *s, struct cidr *out) {
  char host[INET6_ADDRSTRLEN + 1];
  const char *slash = strchr(s, '/');
  size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
  if (hlen == 0 || hlen >= sizeof host)
    return POSTERN_ESYNTAX;
  memcpy(host, s, hlen);
  host[hlen] = '\0';

  memset(out, 0, sizeof *out);
  unsigned maxbits;
  if (inet_pton(AF_INET, host, out->addr) == 1) {
    out->family = AF_INET;
    maxbits = 32;
  } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
    out->family = AF_INET6;
    maxbits = 128;
  } else {
    return POSTERN_ESYNTAX;
  }

  unsigned bits = maxbits;
  if (slash) {
    const char *p = slash + 1;
    /* Digits only, no sign, no leading zeros beyond "0", at most 3. */
    size_t n = strspn(p, "0123456789");
    if (n == 0 || n > 3 || p[n] != '\0' || (n > 1 && p[0] == '0'))
      return POSTERN_ESYNTAX;
    bits = 0;
    for (size_t i = 0; i < n; i++)
      bits = bits * 10 + (unsigned)(p[i] - '0');
    if (bits > maxbits)
      return POSTERN_ESYNTAX;
  }
  out->bits = bits;

  /* Reject host bits below the prefix. */
  for (unsigned i = 0; i < maxbits / 8; i++) {
    unsigned keep = bits >= (i + 1) * 8 ? 8 : bits > i * 8 ? bits - i * 8 : 0;
    uint8_t mask = keep == 0 ? 0 : (uint8_t)(0xffu << (8 - keep));
    if (out->addr[i] & (uint8_t)~mask)
      return POSTERN_ESYNTAX;
  }
  return 0;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *net, unsigned bits) {
  unsigned full = bits / 8, rest = bits % 8;
  if (memcmp(a, net, full) != 0)
    return false;
  if (rest == 0)
    return true;
  uint8_t mask = (uint8_t)(0xffu << (8 - rest));
  return (a[full] & mask) == net[full];
}

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool cidr_match(const struct cidr *c, const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    if (c->family != AF_INET)
      return false;
    return prefix_eq((const uint8_t *)&in->sin_addr, c->addr, c->bits);
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    const uint8_t *a = in6->sin6_addr.s6_addr;
    if (c->family == AF_INET6)
      return prefix_eq(a, c->addr, c->bits);
    if (c->family == AF_INET && memcmp(a, v4mapped, 12) == 0)
      return prefix_eq(a + 12, c->addr, c->bits);
  }
  return false;
}

bool cidr_list_match(const struct cidr *list, size_t n,
                     const struct sockaddr *sa) {
  for (size_t i = 0; i < n; i++)
    if (cidr_match(&list[i], sa))
      return true;
  return false;
}

char *cidr_format(const struct cidr *c, char *buf, size_t cap) {
  char host[INET6_ADDRSTRLEN];
  if (inet_ntop(c->family, c->addr, host, sizeof host) == NULL)
    host[0] = '\0';
  snprintf(buf, cap, "%s/%u", host, c->bits);
  return buf;
}
