/*
 * engine/dkim.h - DKIM signatures (RFC 6376) on messages the relay writes
 * itself (mailed TLS reports, RFC 8460 §3). dkim.c has the details.
 */
#ifndef POSTERN_ENGINE_DKIM_H
#define POSTERN_ENGINE_DKIM_H

#include <stddef.h>
#include <time.h>

struct dkim_key;

/*
 * Loads a PEM private key (RSA of at least 1024 bits, or Ed25519) that
 * signs for d=domain with selector s=selector. Returns 0 and *out (free
 * with dkim_key_free), a mapped errno (unreadable file), POSTERN_EPROTO
 * (not a PEM private key), POSTERN_EUNSUPPORTED (another key type, or a
 * short RSA key), POSTERN_EINVAL (a bad domain or selector) or
 * POSTERN_ENOMEM.
 */
int dkim_key_load(const char *path, const char *domain, const char *selector,
                  struct dkim_key **out);
void dkim_key_free(struct dkim_key *k);

/*
 * Signs msg (len bytes, CRLF line ends, header then an empty line then the
 * body): the header fields named in names[] (case-insensitive; a name the
 * message lacks is left out of h=), relaxed/relaxed, the whole body, t=now.
 * On 0 *out is a new malloc'd message (the DKIM-Signature field on top,
 * then msg), NUL-terminated, *outlen its length. Returns POSTERN_EINVAL
 * (no header/body separation, a field without a colon), POSTERN_ETOOBIG
 * (more than 128 header fields), POSTERN_ENOMEM or POSTERN_EINTERNAL (the
 * signature failed).
 */
int dkim_sign(const struct dkim_key *k, const char *msg, size_t len,
              const char *const *names, size_t nnames, time_t now, char **out,
              size_t *outlen);

/* The canonical forms (RFC 6376 §3.4.4 body, §3.4.2 one header field
 * without its final CRLF), for the tests. */
int dkim__canon_body(const char *body, size_t len, char **out, size_t *outlen);
int dkim__canon_header(const char *field, size_t len, char **out,
                       size_t *outlen);

#endif
