/*
 * policy/tlsrpt_internal.h - checks the files of the TLS reporting library
 * (tlsrpt_txt.c, tlsrpt_report.c) share. Not part of the interface
 * (policy/tlsrpt.h); names use `policy__tlsrpt_`.
 *
 * Pure: each reads only s[0..n), which need not be NUL-terminated.
 */
#ifndef POSTERN_POLICY_TLSRPT_INTERNAL_H
#define POSTERN_POLICY_TLSRPT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 §4.5.3.1: a local part has at most 64 octets, a path 256 with
 * its angle brackets, so an address at most 254. */
#define POLICY__TLSRPT_LOCAL_MAX 64
#define POLICY__TLSRPT_ADDR_MAX 254

/* RFC 5322 §3.2.3 dot-atom-text: atext runs joined by single dots. */
bool policy__tlsrpt_dot_atom_ok(const char *s, size_t n);

/* A host name we send to: postern_domain_check's base rule (ASCII
 * labels, no trailing dot), the last label not all digits (no IPv4
 * address), and at least one dot, so that a hostile record cannot name
 * "localhost" or a bare intranet name. */
bool policy__tlsrpt_host_ok(const char *s, size_t n);

/*
 * An address we send a report to or from: dot-atom local part (at most
 * 64 bytes) "@" a host as policy__tlsrpt_host_ok, at most 254 bytes.
 * Stricter than RFC 5321 on purpose (no quoted local parts, no address
 * literals, no UTF-8): the address comes from a DNS record anyone can
 * publish, and ends up as an envelope recipient and a header field.
 */
bool policy__tlsrpt_addr_ok(const char *s, size_t n);

/* A msg-id's content without its angle brackets (RFC 5322 §3.6.4):
 * dot-atom-text "@" dot-atom-text, at most 200 bytes. */
#define POLICY__TLSRPT_MSGID_MAX 200
bool policy__tlsrpt_msgid_ok(const char *s, size_t n);

#endif
