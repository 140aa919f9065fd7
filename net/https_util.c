/*
 * net/https_util.c - the pure parts of net/https: the checks every request
 * goes through before libcurl sees it (URL, addresses, a POST's media
 * type), the mapping of curl's codes to Postern's, and the MTA-STS helpers.
 * No I/O, no loop, no allocation that outlives a call: any thread may call
 * these at once. https.c drives the transfers; https_internal.h documents
 * the internal helpers for it and for net/https_util_test.c.
 */
#include "net/https.h"

#include "net/https_internal.h"
#include "base/postern_domain.h"
#include "base/postern_err.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Checks a lower-cased host name: labels of 1-63 letters, digits, '-' or
 * '_', at most 253 octets, and not an IPv4 address in any of the forms curl
 * accepts (a numeric last label, RFC 3696 §2). */
static int host_check(const char *h) {
  return postern_domain_check(h, strlen(h), POSTERN_DOMAIN_URL_HOST, NULL,
                              NULL);
}

static int parse_port(const char *s, uint16_t *out) {
  unsigned long v = 0;
  if (*s == '\0')
    return POSTERN_EINVAL;
  for (; *s; s++) {
    if (!isdigit((unsigned char)*s))
      return POSTERN_EINVAL;
    v = v * 10 + (unsigned long)(*s - '0');
    if (v > 65535)
      return POSTERN_EINVAL;
  }
  if (v == 0)
    return POSTERN_EINVAL;
  *out = (uint16_t)v;
  return 0;
}

int https__url_prepare(const char *in, uint16_t port, char *url, char *host,
                       uint16_t *port_out) {
  int rc = POSTERN_EINVAL;
  char *part = NULL;
  uint16_t uport = 0;
  CURLUcode uc;
  if (in == NULL || strlen(in) >= HTTPS_URL_MAX)
    return POSTERN_EINVAL;
  /* Only printable ASCII: a space or a control byte has no business in a
   * URL we build, and curl would otherwise have to guess. */
  for (const unsigned char *p = (const unsigned char *)in; *p; p++)
    if (*p <= 0x20 || *p >= 0x7f)
      return POSTERN_EINVAL;
  /* curl is lenient ("https:///p" has host "p"); we want the plain form. */
  if (strncasecmp(in, "https://", 8) != 0 || in[8] == '/' || in[8] == '\\')
    return POSTERN_EINVAL;
  CURLU *u = curl_url();
  if (u == NULL)
    return POSTERN_ENOMEM;
  uc = curl_url_set(u, CURLUPART_URL, in, 0);
  if (uc != CURLUE_OK) {
    rc = uc == CURLUE_OUT_OF_MEMORY ? POSTERN_ENOMEM : POSTERN_EINVAL;
    goto out;
  }
  if (curl_url_get(u, CURLUPART_SCHEME, &part, 0) != CURLUE_OK ||
      strcmp(part, "https") != 0)
    goto out;
  curl_free(part);
  part = NULL;
  /* Credentials in the URL would be sent to whoever answers. */
  if (curl_url_get(u, CURLUPART_USER, &part, 0) != CURLUE_NO_USER ||
      curl_url_get(u, CURLUPART_PASSWORD, &part, 0) != CURLUE_NO_PASSWORD ||
      curl_url_get(u, CURLUPART_OPTIONS, &part, 0) != CURLUE_NO_OPTIONS)
    goto out;
  if (curl_url_get(u, CURLUPART_HOST, &part, 0) != CURLUE_OK ||
      strlen(part) >= HTTPS__HOST_MAX)
    goto out;
  for (char *p = part; *p; p++)
    *p = (char)tolower((unsigned char)*p);
  if (host_check(part) != 0)
    goto out;
  strcpy(host, part);
  curl_free(part);
  part = NULL;
  if (curl_url_set(u, CURLUPART_HOST, host, 0) != CURLUE_OK)
    goto out;
  uc = curl_url_get(u, CURLUPART_PORT, &part, 0);
  if (uc == CURLUE_OK) {
    if (parse_port(part, &uport) != 0)
      goto out;
  } else if (uc != CURLUE_NO_PORT) {
    goto out;
  }
  curl_free(part);
  part = NULL;
  if (port != 0 && uport != 0 && port != uport)
    goto out;
  if (port != 0 && uport == 0) {
    char ps[8];
    snprintf(ps, sizeof ps, "%u", (unsigned)port);
    if (curl_url_set(u, CURLUPART_PORT, ps, 0) != CURLUE_OK)
      goto out;
  }
  *port_out = port ? port : (uport ? uport : 443);
  if (curl_url_get(u, CURLUPART_URL, &part, 0) != CURLUE_OK ||
      strlen(part) >= HTTPS_URL_MAX)
    goto out;
  strcpy(url, part);
  rc = 0;
out:
  curl_free(part);
  curl_url_cleanup(u);
  return rc;
}

int https__resolve_entry(const char *host, uint16_t port,
                         const struct sockaddr_storage *addrs, size_t n,
                         char *buf, size_t cap) {
  if (n == 0 || n > HTTPS_ADDRS_MAX || addrs == NULL)
    return POSTERN_EINVAL;
  int w = snprintf(buf, cap, "%s:%u:", host, (unsigned)port);
  if (w < 0 || (size_t)w >= cap)
    return POSTERN_ETOOBIG;
  size_t len = (size_t)w;
  for (size_t i = 0; i < n; i++) {
    char a[INET6_ADDRSTRLEN];
    const struct sockaddr_storage *ss = &addrs[i];
    if (ss->ss_family == AF_INET) {
      const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
      inet_ntop(AF_INET, &s4->sin_addr, a, sizeof a);
      w = snprintf(buf + len, cap - len, "%s%s", i ? "," : "", a);
    } else if (ss->ss_family == AF_INET6) {
      const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
      inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof a);
      w = snprintf(buf + len, cap - len, "%s[%s]", i ? "," : "", a);
    } else {
      return POSTERN_EINVAL;
    }
    if (w < 0 || (size_t)w >= cap - len)
      return POSTERN_ETOOBIG;
    len += (size_t)w;
  }
  return (int)len;
}

int https__err_from_curl(CURLcode rc, long os_errno) {
  switch (rc) {
  case CURLE_OK:
    return POSTERN_EINTERNAL;
  case CURLE_OPERATION_TIMEDOUT:
    return POSTERN_ETIMEOUT;
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    return POSTERN_ETLS_VERIFY;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_USE_SSL_FAILED:
    return POSTERN_ETLS;
  case CURLE_COULDNT_CONNECT:
    /* curl reports the last address's errno; refused is the common case
     * and the default when it gives none. */
    if (os_errno != 0 && os_errno != ECONNREFUSED)
      return postern_err_from_errno((int)os_errno);
    return POSTERN_ECONNREFUSED;
  case CURLE_FILESIZE_EXCEEDED:
    return POSTERN_ETOOBIG;
  case CURLE_TOO_MANY_REDIRECTS:
  case CURLE_HTTP_RETURNED_ERROR:
    return POSTERN_EHTTP;
  case CURLE_URL_MALFORMAT:
    return POSTERN_EINVAL;
  case CURLE_GOT_NOTHING:
    return POSTERN_ECLOSED;
  /* URLs are checked before curl sees them, so an unsupported protocol
   * can only be an HTTP/0.9 (that is, non-HTTP) answer. */
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_BAD_CONTENT_ENCODING:
    return POSTERN_EPROTO;
  case CURLE_OUT_OF_MEMORY:
    return POSTERN_ENOMEM;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    /* Every fetch carries its addresses; reaching a resolver is our bug. */
    return POSTERN_EINTERNAL;
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  default:
    return POSTERN_EIO;
  }
}

bool https_content_type_is(const char *ct, const char *want) {
  if (ct == NULL || want == NULL)
    return false;
  size_t n = strlen(want);
  if (n == 0 || strncasecmp(ct, want, n) != 0)
    return false;
  const char *p = ct + n;
  while (*p == ' ' || *p == '\t')
    p++;
  return *p == '\0' || *p == ';';
}

int https_mta_sts_url(const char *domain, char *buf, size_t cap) {
  static const char pre[] = "https://mta-sts.";
  static const char post[] = "/.well-known/mta-sts.txt";
  char host[HTTPS__HOST_MAX];
  if (domain == NULL)
    return POSTERN_EINVAL;
  size_t n = strlen(domain);
  if (n > 0 && domain[n - 1] == '.')
    n--;
  /* "mta-sts." + domain must itself be a name of at most 253 octets. */
  if (n == 0 || n + 8 > 253)
    return POSTERN_EINVAL;
  for (size_t i = 0; i < n; i++)
    host[i] = (char)tolower((unsigned char)domain[i]);
  host[n] = '\0';
  if (host_check(host) != 0)
    return POSTERN_EINVAL;
  int w = snprintf(buf, cap, "%s%s%s", pre, host, post);
  if (w < 0 || (size_t)w >= cap)
    return POSTERN_ETOOBIG;
  return w;
}

/* RFC 9110 §5.6.2: tchar. */
static bool is_tchar(unsigned char ch) {
  return isalnum(ch) || (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

bool https__media_type_ok(const char *ct) {
  if (ct == NULL)
    return false;
  size_t n = strnlen(ct, HTTPS_CONTENT_TYPE_MAX + 1);
  if (n == 0 || n > HTTPS_CONTENT_TYPE_MAX)
    return false;
  const unsigned char *p = (const unsigned char *)ct;
  /* type "/" subtype */
  size_t t = 0;
  while (is_tchar(p[t]))
    t++;
  if (t == 0 || p[t] != '/')
    return false;
  p += t + 1;
  for (t = 0; is_tchar(p[t]);)
    t++;
  if (t == 0)
    return false;
  p += t;
  if (*p == '\0')
    return true;
  /* Then parameters: OWS ";" and the rest, which is never parsed but goes
   * into the header line as it is, so it may hold only what a field value
   * may (RFC 9110 §5.5): visible ASCII, spaces and tabs. No CR or LF. */
  const unsigned char *q = p;
  while (*q == ' ' || *q == '\t')
    q++;
  if (*q != ';')
    return false;
  for (; *p; p++)
    if (*p != '\t' && (*p < 0x20 || *p >= 0x7f))
      return false;
  return true;
}
