/*
 * net/https_internal.h - helpers of net/https.c exposed for its unit tests.
 * Not for other modules: use net/https.h.
 */
#ifndef NET_HTTPS_INTERNAL_H
#define NET_HTTPS_INTERNAL_H

#include "net/https.h"

#include <curl/curl.h>

/* Longest host name kept, with its NUL (a DNS name is at most 253). */
#define HTTPS__HOST_MAX 256

/*
 * Checks `in` as a URL a fetch may use and normalises it: scheme https
 * only, no user, password or login options, a host that is an ASCII DNS
 * name (letters, digits, '-', '_', dots; lower-cased here) and not an IP
 * literal (curl would connect to it without asking us), a port that agrees
 * with `port` (0: the URL's, else 443; non-zero: the URL may name only that
 * port, and it is written into the URL when absent). Fills url (cap
 * HTTPS_URL_MAX), host (cap HTTPS__HOST_MAX) and *port_out. Returns 0,
 * POSTERN_EINVAL (anything refused) or POSTERN_ENOMEM. Pure: no network.
 */
int https__url_prepare(const char *in, uint16_t port, char *url, char *host,
                       uint16_t *port_out);

/*
 * Formats the CURLOPT_RESOLVE entry "host:port:addr[,addr...]" (IPv6
 * addresses in brackets) into buf (capacity cap). Returns its length,
 * POSTERN_EINVAL (no address, too many, or a family other than AF_INET and
 * AF_INET6) or POSTERN_ETOOBIG (buf too small).
 */
int https__resolve_entry(const char *host, uint16_t port,
                         const struct sockaddr_storage *addrs, size_t n,
                         char *buf, size_t cap);

/*
 * Maps a failed transfer's curl code (and the system errno curl saw, 0 when
 * none) to a Postern code; see struct https_result for the meanings. Never
 * returns 0.
 */
int https__err_from_curl(CURLcode rc, long os_errno);

/*
 * Whether `ct` may be sent as a POST's Content-Type: a media type (RFC 9110
 * §8.3.1), type "/" subtype made of token characters, optionally followed
 * by OWS ";" and parameters of visible ASCII, spaces and tabs; at most
 * HTTPS_CONTENT_TYPE_MAX bytes. False for NULL, "", "text", "text/",
 * "a/b c", and anything with CR, LF or another control byte (header
 * injection) or a byte over 0x7e.
 */
bool https__media_type_ok(const char *ct);

#endif
