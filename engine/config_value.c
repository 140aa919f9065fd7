/*
 * config_value.c - the value parsers of postern.conf: one word of text to
 * a value, and the canonical text of a value, for whole numbers, durations,
 * sizes, decimals, IP addresses with or without a port, CIDR networks and
 * host names (docs/postern.conf.5, VALUES). Durations, sizes and host
 * names are the shared ones of base/postern_units.h and postern_domain.h,
 * in their config form.
 *
 * Invariants: pure functions, no allocation, no state; a word is `s`, `n`
 * bytes, not necessarily NUL-terminated, and nothing outside s[0..n) is
 * ever read. Errors are POSTERN_ECONFIG (malformed) or POSTERN_ERANGE
 * (overflow) with a static explanation in *why, which the caller puts in
 * its message; a value is never silently truncated or wrapped.
 */
#include "engine/config_internal.h"

#include "base/postern_domain.h"
#include "base/postern_err.h"
#include "base/postern_idna.h"
#include "base/postern_utf8.h"
#include "base/postern_units.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* The shared parsers (base/postern_units.h) say POSTERN_EINVAL for
 * malformed text; in a configuration file that is POSTERN_ECONFIG. */
static int config_code(int rc) {
  return rc == POSTERN_EINVAL ? POSTERN_ECONFIG : rc;
}

int config__uint_parse(const char *s, size_t n, uint64_t *v, const char **why) {
  size_t i = 0;
  int rc = postern_digits_read(s, n, &i, v, why);
  if (rc == POSTERN_EINVAL || (rc == 0 && i != n)) {
    *why = "expected a whole number (digits only)";
    return POSTERN_ECONFIG;
  }
  return rc;
}

int config__duration_parse(const char *s, size_t n, uint64_t *ms,
                           const char **why) {
  return config_code(postern_duration_parse(s, n, 0, ms, why));
}

void config__duration_format(uint64_t ms, char *buf, size_t cap) {
  postern_duration_format(ms, 0, buf, cap);
}

int config__size_parse(const char *s, size_t n, uint64_t *bytes,
                       const char **why) {
  return config_code(postern_size_parse(s, n, bytes, why));
}

void config__size_format(uint64_t bytes, char *buf, size_t cap) {
  postern_size_format(bytes, buf, cap);
}

int config__decimal_parse(const char *s, size_t n, uint64_t *micro,
                          const char **why) {
  size_t i = 0;
  uint64_t ip;
  int rc = postern_digits_read(s, n, &i, &ip, why);
  if (rc == POSTERN_EINVAL)
    *why = "expected a decimal number like 2 or 1.5";
  if (rc)
    return config_code(rc);
  uint64_t frac = 0;
  unsigned nfrac = 0;
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && is_digit(s[i])) {
      if (++nfrac > 6) {
        *why = "at most 6 decimals";
        return POSTERN_ECONFIG;
      }
      frac = frac * 10 + (uint64_t)(s[i] - '0');
      i++;
    }
    if (nfrac == 0) {
      *why = "expected digits after '.'";
      return POSTERN_ECONFIG;
    }
  }
  if (i != n) {
    *why = "expected a decimal number like 2 or 1.5";
    return POSTERN_ECONFIG;
  }
  for (; nfrac < 6; nfrac++)
    frac *= 10;
  if (ip > (UINT64_MAX - frac) / 1000000) {
    *why = "number too large";
    return POSTERN_ERANGE;
  }
  *micro = ip * 1000000 + frac;
  return 0;
}

void config__decimal_format(uint64_t micro, char *buf, size_t cap) {
  uint64_t ip = micro / 1000000, frac = micro % 1000000;
  if (frac == 0) {
    snprintf(buf, cap, "%llu", (unsigned long long)ip);
    return;
  }
  char f[8];
  snprintf(f, sizeof f, "%06llu", (unsigned long long)frac);
  for (int k = 5; k > 0 && f[k] == '0'; k--)
    f[k] = 0;
  snprintf(buf, cap, "%llu.%s", (unsigned long long)ip, f);
}

int config__ip_parse(const char *s, size_t n, struct sockaddr_storage *sa,
                     socklen_t *salen, const char **why) {
  char tmp[INET6_ADDRSTRLEN + 1];
  memset(sa, 0, sizeof *sa);
  if (n == 0 || n >= sizeof tmp) {
    *why = "not an IP address";
    return POSTERN_ECONFIG;
  }
  memcpy(tmp, s, n);
  tmp[n] = 0;
  struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
  if (inet_pton(AF_INET, tmp, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    *salen = sizeof *v4;
    return 0;
  }
  if (inet_pton(AF_INET6, tmp, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    *salen = sizeof *v6;
    return 0;
  }
  *why = "not an IP address";
  return POSTERN_ECONFIG;
}

static int port_parse(const char *s, size_t n, uint16_t *port,
                      const char **why) {
  uint64_t v;
  if (n == 0 || n > 5 || config__uint_parse(s, n, &v, why) != 0 || v > 65535) {
    *why = "port must be a number from 0 to 65535";
    return POSTERN_ECONFIG;
  }
  *port = (uint16_t)v;
  return 0;
}

static void set_port(struct sockaddr_storage *sa, uint16_t port) {
  if (sa->ss_family == AF_INET)
    ((struct sockaddr_in *)sa)->sin_port = htons(port);
  else
    ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

int config__addr_parse(const char *s, size_t n, int default_port,
                       struct sockaddr_storage *sa, socklen_t *salen,
                       const char **why) {
  const char *host = s, *port = NULL;
  size_t hn = n, pn = 0;
  if (n > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', n);
    if (close == NULL) {
      *why = "missing ']'";
      return POSTERN_ECONFIG;
    }
    host = s + 1;
    hn = (size_t)(close - host);
    size_t rest = n - (size_t)(close + 1 - s);
    if (rest > 0) {
      if (close[1] != ':') {
        *why = "expected ':PORT' after ']'";
        return POSTERN_ECONFIG;
      }
      port = close + 2;
      pn = rest - 1;
    }
  } else {
    const char *colon = memchr(s, ':', n);
    if (colon != NULL && memchr(colon + 1, ':', n - (size_t)(colon + 1 - s))) {
      /* Two colons: a bare IPv6 address, which cannot carry a port. */
      if (default_port < 0) {
        *why = "write an IPv6 address with its port as [ADDR]:PORT";
        return POSTERN_ECONFIG;
      }
    } else if (colon != NULL) {
      hn = (size_t)(colon - s);
      port = colon + 1;
      pn = n - hn - 1;
    }
  }
  if (config__ip_parse(host, hn, sa, salen, why) != 0) {
    *why = "not an IP address (host names are not allowed here)";
    return POSTERN_ECONFIG;
  }
  uint16_t p;
  if (port != NULL) {
    if (port_parse(port, pn, &p, why))
      return POSTERN_ECONFIG;
  } else if (default_port >= 0) {
    p = (uint16_t)default_port;
  } else {
    *why = "missing ':PORT'";
    return POSTERN_ECONFIG;
  }
  set_port(sa, p);
  return 0;
}

void config__addr_format(const struct sockaddr_storage *sa, char *buf,
                         size_t cap) {
  char ip[INET6_ADDRSTRLEN];
  if (sa->ss_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
    snprintf(buf, cap, "%s:%u", ip, (unsigned)ntohs(v4->sin_port));
  } else {
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
    snprintf(buf, cap, "[%s]:%u", ip, (unsigned)ntohs(v6->sin6_port));
  }
}

int config__cidr_parse(const char *s, size_t n, struct config_cidr *out,
                       const char **why) {
  const char *slash = memchr(s, '/', n);
  size_t hn = slash ? (size_t)(slash - s) : n;
  struct sockaddr_storage sa;
  socklen_t salen;
  memset(out, 0, sizeof *out);
  if (config__ip_parse(s, hn, &sa, &salen, why) != 0) {
    *why = "not an address or network (like 192.0.2.0/24 or 2001:db8::/32)";
    return POSTERN_ECONFIG;
  }
  out->family = sa.ss_family;
  unsigned bits = sa.ss_family == AF_INET ? 32 : 128;
  if (sa.ss_family == AF_INET)
    memcpy(out->addr, &((struct sockaddr_in *)&sa)->sin_addr, 4);
  else
    memcpy(out->addr, &((struct sockaddr_in6 *)&sa)->sin6_addr, 16);
  out->prefix = bits;
  if (slash != NULL) {
    uint64_t p;
    size_t pn = n - hn - 1;
    if (pn == 0 || pn > 3 || config__uint_parse(slash + 1, pn, &p, why) ||
        p > bits) {
      *why = sa.ss_family == AF_INET ? "prefix length must be 0 to 32"
                                     : "prefix length must be 0 to 128";
      out->family = 0; /* only a host-bits error leaves a network */
      return POSTERN_ECONFIG;
    }
    out->prefix = (unsigned)p;
  }
  /* Host bits must be zero: 10.1.2.3/8 is more likely a typo than a wish
   * for 10.0.0.0/8. The masked network is left in *out for the message. */
  bool host_bits = false;
  for (unsigned b = out->prefix; b < bits; b++) {
    uint8_t mask = (uint8_t)(0x80u >> (b % 8));
    if (out->addr[b / 8] & mask) {
      host_bits = true;
      out->addr[b / 8] &= (uint8_t)~mask;
    }
  }
  if (host_bits) {
    *why = "host bits are set";
    return POSTERN_ECONFIG;
  }
  return 0;
}

int config__hostname_check(const char *s, size_t n, const char **why) {
  return config_code(
      postern_domain_check(s, n, POSTERN_DOMAIN_TRAILING_DOT, NULL, why));
}

int config__domain_alabel(const char *s, size_t n, char *out, size_t cap,
                          const char **why) {
  char tmp[1024];
  if (n == 0 || n >= sizeof tmp || memchr(s, 0, n) != NULL) {
    *why = n == 0 ? "empty" : "too long";
    return POSTERN_ECONFIG;
  }
  if (!postern_has_8bit(s, n)) {
    if (config__hostname_check(s, n, why) != 0)
      return POSTERN_ECONFIG;
    if (s[n - 1] == '.')
      n--;
    if (n + 1 > cap) {
      *why = "too long";
      return POSTERN_ECONFIG;
    }
    for (size_t i = 0; i < n; i++)
      out[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] - 'A' + 'a') : s[i];
    out[n] = '\0';
    return 0;
  }
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  if (tmp[n - 1] == '.')
    tmp[n - 1] = '\0';
  const char *iw = NULL;
  if (postern_idna_to_ascii(tmp, out, cap, &iw) != 0) {
    *why = iw ? iw : "not a valid internationalized domain name";
    return POSTERN_ECONFIG;
  }
  return config__hostname_check(out, strlen(out), why) != 0 ? POSTERN_ECONFIG
                                                            : 0;
}
