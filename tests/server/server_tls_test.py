"""SMTP server, STARTTLS (RFC 3207) with a test CA: swaks --tls with
certificate verification, the STARTTLS command injection attack (pipelined
plaintext after STARTTLS is discarded, RFC 3207 §6), the state reset after
TLS (§4.2), STARTTLS sequencing errors, a broken handshake, and the
Received: protocol ESMTPS.

usage: server_tls_test.py SMTPD_DRIVER"""

import re
import ssl
import subprocess
import sys

import pki
from smtpd_harness import Driver, check, finish, greet_ehlo, send_message

drv_path = sys.argv[1]
with pki.PKI() as p:
    cert, key = p.server_cert("mx.test.example")
    d = Driver(drv_path, "--tls-cert", cert, "--tls-key", key)
    try:
        # --- swaks with verification against the test CA ----------------
        r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % d.port,
                            "--tls", "--tls-verify", "--tls-ca-path", p.ca_file,
                            "--tls-sni", "mx.test.example",
                            "--from", "tls@example.net", "--to", "b@example.org"],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode == 0, "swaks --tls --tls-verify delivers (rc=%d)" % r.returncode)
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-2000:])
        check("250 2.0.0 Ok: queued as" in r.stdout, "queued over TLS")
        msgs = d.wait_messages(1)
        if check(len(msgs) == 1, "TLS message stored"):
            env, body = msgs[0]
            check(env["tls"] == "1", "envelope says tls")
            check(re.search(rb"with ESMTPS id ", body) is not None,
                  "Received: says ESMTPS")

        ctx = ssl.create_default_context(cafile=p.ca_file)

        # --- STARTTLS command injection ------------------------------------
        c = d.client()
        ehlo = greet_ehlo(c)
        check("250-STARTTLS" in ehlo, "EHLO advertises STARTTLS with a certificate")
        c.send("STARTTLS\r\nMAIL FROM:<inject@example.net>\r\nRCPT TO:<v@example.org>\r\n")
        c.expect(220, "STARTTLS", "2.0.0")
        check(c.buf == b"", "no reply to the injected commands before TLS")
        c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.test.example")
        check(c.sock.version() is not None, "handshake done (%s)" % c.sock.version())
        c.send("MAIL FROM:<after@example.net>\r\n")
        c.expect(503, "injected EHLO state forgotten: MAIL needs EHLO again", "5.5.1")
        c.send("EHLO client.test.example\r\n")
        ehlo2 = c.expect(250, "first reply under TLS is for our EHLO")
        check(ehlo2 and ehlo2[0].startswith("250-mx.test.example"), "EHLO reply, not an injected reply")
        check("250-STARTTLS" not in ehlo2 and "250 STARTTLS" not in ehlo2,
              "no STARTTLS offered once TLS is on")
        c.send("STARTTLS\r\n")
        c.expect(503, "second STARTTLS refused", "5.5.1")
        code, lines = send_message(c, mail="after@example.net")
        check(code == 250, "message over the upgraded session (%s)" % lines)
        # A large message and many pipelined commands under TLS: decrypted
        # input backs up in TLS while the session's buffer is full.
        big = "".join("line %06d %s\r\n" % (i, "x" * 60) for i in range(5000))
        c.send("MAIL FROM:<big@example.net>\r\n" +
               "".join("RCPT TO:<r%d@example.org>\r\n" % i for i in range(900)) +
               "DATA\r\n")
        codes = [c.reply()[0] for _ in range(902)]
        check(codes == [250] * 901 + [354], "900 pipelined RCPTs (22 kB) under TLS")
        c.send("Subject: big\r\n\r\n" + big + ".\r\n")
        c.expect(250, "350 kB message under TLS", "queued as")
        c.send("QUIT\r\n")
        c.expect(221, "QUIT under TLS")
        c.close()
        froms = [e["from"] for e, b in d.wait_messages(3)]
        check("inject@example.net" not in froms, "injected transaction never happened")
        check("after@example.net" in froms, "post-TLS transaction stored")
        bigm = [b for e, b in d.messages() if e["from"] == "big@example.net"]
        check(len(bigm) == 1 and bigm[0].endswith(("Subject: big\r\n\r\n" + big).encode()),
              "large TLS message stored intact")

        # --- sequencing ------------------------------------------------------
        c = d.client()
        c.expect(220, "greeting")
        c.send("STARTTLS\r\n")
        c.expect(503, "STARTTLS before EHLO", "5.5.1")
        c.send("EHLO x.example\r\nMAIL FROM:<a@example.net>\r\nSTARTTLS\r\n")
        c.expect(250, "EHLO")
        c.expect(250, "MAIL")
        c.expect(503, "STARTTLS inside a transaction", "5.5.1")
        c.close()

        # --- a client that sends garbage instead of a ClientHello --------------
        c = d.client()
        greet_ehlo(c)
        c.send("STARTTLS\r\n")
        c.expect(220, "STARTTLS")
        c.send(b"\x16\x03\x01\x00\x05hello garbage, not TLS at all\r\n" * 4)
        check(c.closed(), "broken handshake closes the session")
        c.close()
        check(d.alive(), "driver alive after a broken handshake")
        r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % d.port, "--tls",
                            "--from", "again@example.net", "--to", "b@example.org"],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode == 0, "still serving TLS clients")
    finally:
        d.stop()
    log = d.log()
    check("event=smtpd_tls " in log and "version=TLSv1.3" in log, "TLS sessions logged with version")
finish()
