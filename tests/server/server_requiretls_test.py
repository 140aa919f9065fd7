"""SMTP server, REQUIRETLS (RFC 8689): the extension is offered in the EHLO
reply only once TLS is up (§2, §4.2.1); MAIL ... REQUIRETLS is accepted
there and the message is tagged (§4.1: the envelope's requiretls); without
TLS it is refused with 530 5.7.0 (§2: the option needs a TLS session);
a value or a repeat is a syntax error (501 5.5.4); the tag never outlives
its transaction.

usage: server_requiretls_test.py SMTPD_DRIVER"""

import ssl
import sys

import pki
from smtpd_harness import Driver, check, finish, greet_ehlo


def data(c, body="Subject: t\r\n\r\nhello\r\n"):
    c.send("RCPT TO:<b@example.org>\r\n")
    c.expect(250, "RCPT TO")
    c.send("DATA\r\n")
    c.expect(354, "DATA")
    c.send(body + ".\r\n")
    c.expect(250, "message queued", "queued as")


def by_from(d, n):
    return {e["from"]: e for e, b in d.wait_messages(n)}


drv_path = sys.argv[1]
with pki.PKI() as p:
    cert, key = p.server_cert("mx.test.example")
    ctx = ssl.create_default_context(cafile=p.ca_file)
    d = Driver(drv_path, "--tls-cert", cert, "--tls-key", key)
    try:
        # --- plaintext: not offered, refused --------------------------------
        c = d.client()
        ehlo = greet_ehlo(c)
        check(any(l[4:] == "STARTTLS" for l in ehlo), "plaintext EHLO offers STARTTLS")
        check(not any("REQUIRETLS" in l for l in ehlo),
              "plaintext EHLO does not offer REQUIRETLS (%s)" % ehlo)
        c.send("MAIL FROM:<plain@example.net> REQUIRETLS\r\n")
        c.expect(530, "MAIL REQUIRETLS without TLS refused", "5.7.0")
        c.send("RCPT TO:<b@example.org>\r\n")
        c.expect(503, "no transaction began", "5.5.1")
        c.send("MAIL FROM:<plain@example.net>\r\n")
        c.expect(250, "MAIL without REQUIRETLS still accepted")
        data(c)

        # --- after STARTTLS: offered, accepted, tagged ------------------------
        c.send("STARTTLS\r\n")
        c.expect(220, "STARTTLS", "2.0.0")
        c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.test.example")
        c.send("EHLO client.test.example\r\n")
        ehlo = c.expect(250, "EHLO under TLS")
        check(any(l[4:] == "REQUIRETLS" for l in ehlo),
              "EHLO under TLS offers REQUIRETLS (%s)" % ehlo)
        c.send("MAIL FROM:<req@example.net> REQUIRETLS\r\n")
        c.expect(250, "MAIL REQUIRETLS under TLS accepted", "2.1.0")
        data(c)
        # The tag belongs to one transaction: the next one is untagged.
        c.send("MAIL FROM:<after@example.net>\r\n")
        c.expect(250, "MAIL after a REQUIRETLS message")
        data(c)
        # RSET forgets it too.
        c.send("MAIL FROM:<rset@example.net> requiretls\r\n")
        c.expect(250, "MAIL requiretls (any case)")
        c.send("RSET\r\n")
        c.expect(250, "RSET")
        c.send("MAIL FROM:<rset@example.net>\r\n")
        c.expect(250, "MAIL after RSET")
        data(c)
        # With other parameters, pipelined, and the null sender.
        c.send("MAIL FROM:<> BODY=8BITMIME REQUIRETLS SIZE=20\r\n"
               "RCPT TO:<b@example.org>\r\nDATA\r\n")
        c.expect(250, "MAIL FROM:<> ... REQUIRETLS among other parameters")
        c.expect(250, "RCPT TO (pipelined)")
        c.expect(354, "DATA (pipelined)")
        c.send("Subject: bounce\r\n\r\nx\r\n.\r\n")
        c.expect(250, "null-sender REQUIRETLS message queued", "queued as")

        # --- syntax ------------------------------------------------------------
        c.send("MAIL FROM:<bad@example.net> REQUIRETLS=yes\r\n")
        c.expect(501, "REQUIRETLS with a value refused", "5.5.4")
        c.send("MAIL FROM:<bad@example.net> REQUIRETLS REQUIRETLS\r\n")
        c.expect(501, "REQUIRETLS twice refused", "5.5.4")
        c.send("RCPT TO:<b@example.org> REQUIRETLS\r\n")
        c.expect(555, "REQUIRETLS on RCPT refused", "5.5.4")
        c.send("QUIT\r\n")
        c.expect(221, "QUIT")
        c.close()

        env = by_from(d, 5)
        check(env.get("plain@example.net", {}).get("requiretls") == "0" and
              env.get("plain@example.net", {}).get("tls") == "0",
              "plaintext message stored untagged")
        check(env.get("req@example.net", {}).get("requiretls") == "1" and
              env.get("req@example.net", {}).get("tls") == "1",
              "REQUIRETLS message stored tagged (envelope requiretls 1)")
        check(env.get("after@example.net", {}).get("requiretls") == "0",
              "the next transaction is not tagged")
        check(env.get("rset@example.net", {}).get("requiretls") == "0",
              "RSET drops the tag")
        check(env.get("", {}).get("requiretls") == "1" and
              env.get("", {}).get("body") == "2",
              "null sender with BODY=8BITMIME and REQUIRETLS tagged")
        check("bad@example.net" not in env, "refused MAILs stored nothing")
    finally:
        d.stop()

# --- a server without a certificate never offers or accepts it -------------
d = Driver(drv_path)
try:
    c = d.client()
    ehlo = greet_ehlo(c)
    check(not any("REQUIRETLS" in l or "STARTTLS" in l for l in ehlo),
          "no TLS configured: neither STARTTLS nor REQUIRETLS offered")
    c.send("MAIL FROM:<a@example.net> REQUIRETLS\r\n")
    c.expect(530, "no TLS configured: MAIL REQUIRETLS refused", "5.7.0")
    c.send("QUIT\r\n")
    c.expect(221, "QUIT")
    c.close()
finally:
    d.stop()
finish()
