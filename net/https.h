/*
 * net/https.h - one-shot HTTPS GET and POST requests on a libuv loop
 * (libcurl multi).
 *
 * Built for MTA-STS (RFC 8461 §3.3): fetch
 * https://mta-sts.<domain>/.well-known/mta-sts.txt without ever blocking a
 * loop; and for TLS reports (RFC 8460 §3 and §5.4): POST a report to a
 * policy's https: "rua" URI. One struct https_client per libuv loop, used only
 * from that loop's thread; it owns one libcurl multi handle whose sockets and
 * timer are driven by the loop (uv_poll_t per socket, one uv_timer_t).
 *
 * What a fetch will and will not do, whatever the server says:
 * - HTTPS only, for the request and for any redirect (none are followed: a
 *   3xx answer is a failure: RFC 8461 §3.3, redirects MUST NOT be followed).
 * - The peer certificate is verified (PKIX, RFC 5280) against the request's
 *   CA file, and its name against the URL's host (RFC 6125); TLS 1.2 or
 *   later.
 * - Addresses come only from the caller (CURLOPT_RESOLVE): the system
 *   resolver is never used, no proxy is used (environment variables such
 *   as https_proxy are ignored), each fetch gets its own connection and
 *   its own DNS cache, so an address given to one fetch never leaks into
 *   another.
 * - The body is capped (64 KiB by default: a policy is a few lines); a
 *   larger body fails the fetch and reading stops. No content
 *   decoding is asked for, so the cap applies to the bytes on the wire.
 * - A timeout covers the whole fetch: connect, TLS, request and body.
 * - A POST sends its body only once TLS is up and the certificate
 *   verified (RFC 8460 §3 lets report submitters ignore certificate
 *   errors; we do not: a report tells who failed to reach whom), with a
 *   Content-Length (never chunked) and without waiting for a
 *   "100 Continue" (no Expect header). Any 2xx answer is success
 *   (RFC 8460 §5.4: "typically a 200 or 201"); a 3xx is a failure like
 *   any other code, its Location is never visited.
 *
 * Process setup: call https_global_init() once from main() before any
 * thread starts (libcurl's global initialisation is not thread-safe).
 *
 * Typical use (the mtasts policy module, on a worker loop):
 *   https_mta_sts_url(domain, url, sizeof url);
 *   dns_resolve_host(resolver, "mta-sts.<domain>", ...);   then, with the
 *   A/AAAA records as sockaddr_storage entries:
 *   struct https_request rq = {.url = url, .port = cfg_https_port,
 *       .addrs = addrs, .naddrs = n, .ca_file = cfg_ca_file,
 *       .timeout_ms = cfg_fetch_timeout_ms, .require_text_plain = true};
 *   https_fetch(client, &rq, policy_fetched, ctx, &ctx->fetch);
 * and in policy_fetched(): status 0 means res->body holds the policy text.
 *
 * A TLS report (RFC 8460 §5.4), to the rua URI's host at its addresses:
 *   struct https_request rq = {.url = rua_uri, .addrs = addrs, .naddrs = n,
 *       .post_body = gz, .post_len = gz_len,
 *       .post_content_type = "application/tlsrpt+gzip"};
 *   https_fetch(client, &rq, report_sent, ctx, &ctx->post);
 * and in report_sent(): status 0 means a 2xx answer; res->http_code is the
 * status to log either way.
 */
#ifndef NET_HTTPS_H
#define NET_HTTPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

/* Default and largest body cap, in bytes. */
#define HTTPS_BODY_MAX_DEFAULT (64 * 1024)
#define HTTPS_BODY_MAX_LIMIT (16 * 1024 * 1024)
/* Default whole-fetch timeout (mtasts { fetch_timeout 60s }). */
#define HTTPS_TIMEOUT_MS_DEFAULT 60000
/* Most addresses one fetch may be given; curl tries them in order. */
#define HTTPS_ADDRS_MAX 16
/* Longest URL accepted, with its NUL. */
#define HTTPS_URL_MAX 2048
/* Longest POST Content-Type accepted, without its NUL. */
#define HTTPS_CONTENT_TYPE_MAX 255
/* Most fetches one client holds at once (started, callback not yet
 * started; a callback may start a fetch in the slot its own fetch frees):
 * with the body cap this bounds a client's memory. */
#define HTTPS_FETCHES_MAX 256

/*
 * Initialises libcurl for the process and checks that the libcurl in use is
 * the GnuTLS build with HTTPS support (the OpenSSL build crashes next to
 * BoringSSL, see BUILD-NOTES.md). Call once from main() before any thread
 * starts; later calls return the first call's result. Returns 0,
 * POSTERN_EUNSUPPORTED (wrong libcurl flavour: no HTTPS, not GnuTLS) or
 * POSTERN_EINTERNAL (curl_global_init failed).
 */
int https_global_init(void);

/* Releases libcurl's global state; at exit, after every client is closed
 * and every thread has stopped. Optional. */
void https_global_cleanup(void);

struct https_request {
  /* "https://host[:port]/path". Other schemes, user names or passwords in
   * the URL, IP-literal hosts and non-ASCII hosts are refused (EINVAL).
   * Copied during https_fetch(). */
  const char *url;
  /* TCP port to connect to. 0: the URL's port, 443 when it names none.
   * Otherwise it replaces the port (an explicit different port in the URL
   * is EINVAL). MTA-STS uses 443; tests use another
   * (mtasts { https_port }). */
  uint16_t port;
  /* Where the URL's host is, as resolved by the caller with net/dns; only
   * the address part of each entry is used (AF_INET or AF_INET6). At
   * least one, at most HTTPS_ADDRS_MAX; read during https_fetch() only. */
  const struct sockaddr_storage *addrs;
  size_t naddrs;
  /* PEM file of trusted CAs (tls { ca_file }); NULL: the CA bundle
   * libcurl was built with (on Debian /etc/ssl/certs/ca-certificates.crt).
   * No CA directory is consulted. Read when the connection is made. */
  const char *ca_file;
  /* Whole-fetch timeout in milliseconds; 0: HTTPS_TIMEOUT_MS_DEFAULT. */
  unsigned timeout_ms;
  /* Body cap in bytes; 0: HTTPS_BODY_MAX_DEFAULT. At most
   * HTTPS_BODY_MAX_LIMIT (EINVAL above). */
  size_t body_max;
  /* Also fail (POSTERN_EHTTP) unless the Content-Type is text/plain,
   * parameters allowed (RFC 8461 §3.3). GET only: EINVAL with a POST. */
  bool require_text_plain;
  /* Non-NULL: the request is a POST of the post_len bytes at post_body
   * (0 bytes allowed), copied during https_fetch() (the caller may free
   * them once it returns). At most HTTPS_BODY_MAX_LIMIT bytes (EINVAL
   * above). NULL: a GET, and then post_len must be 0 and
   * post_content_type NULL (EINVAL otherwise). */
  const void *post_body;
  size_t post_len;
  /* The media type of a POST's body, e.g. "application/tlsrpt+gzip"
   * (RFC 8460 §5.4); required with post_body. It must read as a media type
   * (RFC 9110 §8.3.1): token "/" token, then only parameters made of
   * visible ASCII, spaces and tabs, at most HTTPS_CONTENT_TYPE_MAX bytes;
   * anything else (CR, LF, other control bytes, non-ASCII) is EINVAL, as
   * it would end up in a header line. Copied during https_fetch(). */
  const char *post_content_type;
};

/*
 * The outcome of one fetch, borrowed for the duration of the callback:
 * copy what you keep.
 */
struct https_result {
  /* 0 on success: HTTP 200 (a GET) or any 2xx (a POST) and a complete
   * answer body within the cap (and text/plain when asked). Otherwise a
   * negative code:
   *   POSTERN_ETIMEOUT      the timeout expired
   *   POSTERN_ETLS_VERIFY   the certificate did not verify (untrusted,
   *                         expired, wrong name)
   *   POSTERN_ETLS          any other TLS failure (handshake, bad CA file)
   *   POSTERN_ECONNREFUSED  no address accepted a connection (also for
   *                         unreachable addresses: the code then follows
   *                         the system error when curl reports one, e.g.
   *                         POSTERN_ENETUNREACH)
   *   POSTERN_ETOOBIG       the body exceeded the cap
   *   POSTERN_EHTTP         status other than 200 for a GET, other than
   *                         2xx for a POST (3xx included: redirects are
   *                         never followed), or not text/plain when
   *                         require_text_plain was set
   *   POSTERN_EPROTO        the server broke HTTP (garbage, short body)
   *   POSTERN_ECLOSED       the server closed without answering
   *   POSTERN_ECANCELED     https_fetch_cancel() or https_client_close()
   *   POSTERN_ENOMEM, POSTERN_EIO, POSTERN_EINTERNAL otherwise. */
  int status;
  /* HTTP status code of the answer, 0 when none arrived (for logs: a
   * POST's 201 or 204 is as good as a 200). */
  long http_code;
  /* Content-Type header of the answer as sent (NULL when absent). */
  const char *content_type;
  /* The bytes received, NUL-terminated for convenience (the body may hold
   * NULs: use body_len). Complete only when status is 0; never NULL; empty
   * for a 204 or any answer without a body. Not read at all for a status
   * that fails the request. */
  const unsigned char *body;
  size_t body_len;
  /* Human-readable reason for logs (curl's message or ours); "" on
   * success. Unescaped: may quote server text, let the logger escape it. */
  const char *error;
  /* The URL fetched (with the port applied) and the address connected to
   * ("" when none). */
  const char *url;
  const char *ip;
};

struct https_client;
struct https_fetch;

/*
 * Called once per fetch, on the client's loop, never inside the call that
 * started or cancelled it. `res` and everything it points to are freed
 * when the callback returns; the fetch handle is invalid from the moment
 * the callback starts. The callback may start new fetches, cancel others
 * or close the client.
 */
typedef void (*https_cb)(const struct https_result *res, void *arg);

/*
 * Creates a client on `loop` into *out. Returns 0, POSTERN_ENOMEM,
 * POSTERN_ESTATE (https_global_init() was not called or failed) or
 * POSTERN_EINTERNAL (libcurl or libuv refused). Nothing is allocated on
 * failure.
 */
int https_client_new(uv_loop_t *loop, struct https_client **out);

/*
 * Closes the client. Every pending fetch gets its callback with
 * POSTERN_ECANCELED (later, on the loop); then connections and libuv
 * handles are closed, the memory is freed and `cb(arg)` runs (cb may be
 * NULL) from a libuv close callback. After this call the client may only
 * be used by those callbacks, whose new fetches fail with POSTERN_ESTATE.
 * Calling it twice is a bug.
 */
void https_client_close(struct https_client *c, void (*cb)(void *arg),
                        void *arg);

/*
 * Starts a GET of req->url, or a POST when req->post_body is set (see
 * struct https_request for each field). On 0
 * `cb(result, arg)` will run exactly once and *fp (when fp is not NULL) is
 * a handle valid until then. Returns, and then cb never runs:
 *   POSTERN_EINVAL   bad URL (not https, user info, IP literal, too long),
 *                    no or too many addresses, bad address family,
 *                    conflicting port, body_max over the limit, a POST
 *                    body over the limit, a missing or bad
 *                    post_content_type, POST fields on a GET,
 *                    require_text_plain on a POST
 *   POSTERN_ESTATE   the client is closing
 *   POSTERN_EBUSY    HTTPS_FETCHES_MAX fetches are already pending
 *   POSTERN_ENOMEM   or POSTERN_EINTERNAL (libcurl refused an option).
 * No connection is made before this returns.
 */
int https_fetch(struct https_client *c, const struct https_request *req,
                https_cb cb, void *arg, struct https_fetch **fp);

/*
 * Cancels a fetch whose callback has not started yet: its connection is
 * dropped now and its callback runs later, on the loop, with
 * POSTERN_ECANCELED (even when the transfer had just finished). Calling it on a
 * fetch whose callback has started is a use after free; calling it twice is
 * harmless.
 */
void https_fetch_cancel(struct https_fetch *f);

/* ---- Helpers for MTA-STS (pure) ---- */

/*
 * Whether the Content-Type header value `ct` names the media type `want`
 * ("text/plain"): type and subtype compared case-insensitively (RFC 9110
 * §8.3.1), optional whitespace, then either the end or ';' and parameters
 * (which are not checked: "text/plain; charset=utf-8" matches). NULL or
 * "text/plainx" or "text/html" do not match.
 */
bool https_content_type_is(const char *ct, const char *want);

/*
 * Writes "https://mta-sts.<domain>/.well-known/mta-sts.txt" (RFC 8461
 * §3.3) into buf (capacity cap, NUL-terminated). `domain` is an ASCII host
 * name (letters, digits, '-', '_' and dots; A-labels for IDNs), one
 * trailing dot allowed and dropped, compared without regard to case and
 * written lower-cased. Returns the length written, POSTERN_EINVAL (empty
 * or bad domain, empty label, label over 63 or name over 253 octets with
 * the "mta-sts." prefix) or POSTERN_ETOOBIG (buf too small).
 */
int https_mta_sts_url(const char *domain, char *buf, size_t cap);

#endif
