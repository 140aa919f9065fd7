/*
 * net/smtp_syntax.h - character-level SMTP syntax that the client and the
 * server check alike: RFC 5322 atext, well-formed UTF-8 (RFC 3629, as RFC
 * 6531 lets it into addresses), RFC 3461 §4 xtext and the ORCPT value.
 *
 * The server checks what clients send it (net/smtp_server_parse.c); the
 * client checks what it is asked to send (net/smtp_client_cmd.c), so a
 * value one side accepts is one the other side accepts too.
 *
 * Pure: every function reads only p[0..n) and allocates nothing.
 */
#ifndef POSTERN_NET_SMTP_SYNTAX_H
#define POSTERN_NET_SMTP_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* RFC 5322 §3.2.3 atext (ASCII only). Inline: the server's address parser
 * calls it for every byte of every path. */
static inline bool smtp_syntax_is_atext(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') ||
         (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * RFC 3461 §4 xtext: every byte is an xchar ("!" to "~" except "+" and
 * "=") or a hexchar ("+" and two upper-case hexadecimal digits). The empty
 * string is xtext. No length limit: each parameter has its own.
 */
bool smtp_syntax_xtext_ok(const char *p, size_t n);

/*
 * An ORCPT value (RFC 3461 §4.2): addr-type ";" xtext, the addr-type an
 * RFC 5322 atom, the address not empty. For the addr-type "utf-8" (RFC 6533
 * §3, any case) the address is checked leniently: printable non-space
 * ASCII but "=", or well-formed UTF-8, which admits both the
 * utf-8-addr-xtext and the utf-8-addr-unitext forms (and "+" or "\"
 * outside an escape, which RFC 6533 does not). No length limit (RFC 3461
 * §4.2's 500 is the server's).
 */
bool smtp_syntax_orcpt_ok(const char *p, size_t n);

#endif
