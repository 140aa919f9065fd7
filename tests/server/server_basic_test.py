"""SMTP server, normal operation: swaks and smtp-source as clients, the EHLO
extension list, the Received: header, dot-unstuffing, DSN and SMTPUTF8
parameters reaching the engine, PIPELINING, command sequencing, VRFY/EXPN/
HELP/NOOP/RSET, and a clean shutdown.

usage: server_basic_test.py SMTPD_DRIVER"""

import re
import subprocess
import sys

from smtpd_harness import Driver, check, finish, greet_ehlo, send_message

drv_path = sys.argv[1]
d = Driver(drv_path, "--delay-ms", "20")
try:
    # --- swaks, a full independent client --------------------------------
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % d.port,
                        "--from", "sender@example.net",
                        "--to", "rcpt@example.org",
                        "--helo", "swaks.test.example",
                        "--body", "line one\n.leading dot\n..two dots\nend\n"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "swaks delivers a message (rc=%d)" % r.returncode)
    m = re.search(r"250 2\.0\.0 Ok: queued as (\S+)", r.stdout)
    check(m is not None, "swaks got '250 2.0.0 Ok: queued as <id>'")
    msgs = d.wait_messages(1)
    check(len(msgs) == 1, "one message in the spool")
    if msgs and m:
        env, body = msgs[0]
        check(env["id"] == m.group(1), "queue id in reply matches the stored one")
        check(env["from"] == "sender@example.net", "envelope sender")
        check(env["rcpt"] == ["rcpt@example.org notify=0 orcpt=-"], "envelope recipient")
        check(env["helo"] == "swaks.test.example", "HELO name handed over")
        check(env["client"] == "127.0.0.1", "client address handed over")
        check(body.startswith(b"Received: from swaks.test.example ([127.0.0.1])\r\n"
                              b"\tby mx.test.example (Postern) with ESMTP id " +
                              m.group(1).encode() + b"\r\n\tfor <rcpt@example.org>;\r\n\t"),
              "Received: header first, with helo, ip, host, protocol, id, for")
        check(re.search(rb"\r\n\t\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n", body)
              is not None, "Received: ends with an RFC 5322 date")
        check(b"\r\n.leading dot\r\n..two dots\r\nend\r\n" in body,
              "swaks' dot-stuffed lines stored as the original text")
        check(b"\n" not in body.replace(b"\r\n", b""), "body lines all end in CRLF")
        check(int(env["size"]) == len(body), "body length handed over")

    # --- EHLO reply and simple commands ----------------------------------
    c = d.client()
    ehlo = greet_ehlo(c)
    exts = [l[4:] for l in ehlo[1:]]
    for e in ("PIPELINING", "SIZE 33554432", "8BITMIME", "ENHANCEDSTATUSCODES",
              "SMTPUTF8", "DSN"):
        check(e in exts, "EHLO advertises %s" % e)
    check("STARTTLS" not in exts, "no STARTTLS without a certificate")
    check(ehlo[0].startswith("250-mx.test.example Hello client.test.example [127.0.0.1]"),
          "EHLO first line names host, client and its address")
    c.send("NOOP\r\n"); c.expect(250, "NOOP", "2.0.0")
    c.send("VRFY someone@example.org\r\n"); c.expect(252, "VRFY (RFC 5321 3.5.3)", "2.0.0")
    c.send("EXPN list\r\n"); c.expect(502, "EXPN", "5.5.1")
    c.send("HELP\r\n"); c.expect(214, "HELP", "2.0.0")
    c.send("STARTTLS\r\n"); c.expect(502, "STARTTLS without certificate", "5.5.1")
    c.send("FOO\r\n"); c.expect(500, "unknown command", "5.5.1")
    c.send("RCPT TO:<x@example.org>\r\n"); c.expect(503, "RCPT before MAIL", "5.5.1")
    c.send("DATA\r\n"); c.expect(503, "DATA before MAIL", "5.5.1")
    c.send("MAIL FROM:<a@example.net>\r\n"); c.expect(250, "MAIL", "2.1.0")
    c.send("MAIL FROM:<a@example.net>\r\n"); c.expect(503, "nested MAIL", "5.5.1")
    c.send("DATA\r\n"); c.expect(554, "DATA without recipients", "5.5.1")
    c.send("RCPT TO:<postmaster>\r\n"); c.expect(550, "bare postmaster on a relay", "5.1.1")
    c.send("RCPT TO:<j\u00f6rg@example.org>\r\n"); c.expect(553, "UTF-8 rcpt without SMTPUTF8", "5.6.7")
    c.send("RSET\r\n"); c.expect(250, "RSET", "2.0.0")
    c.send("MAIL FROM:<a@example.net> SIZE=40000000\r\n"); c.expect(552, "SIZE above limit", "5.3.4")
    c.send("MAIL FROM:<a@example.net> SIZE=99999999999999999999999\r\n")
    c.expect(552, "SIZE= overflowing 64 bits", "5.3.4")
    c.send("MAIL FROM:<a@example.net> FOO=BAR\r\n"); c.expect(555, "unknown MAIL parameter", "5.5.4")
    c.send("MAIL FROM:<a@@example.net>\r\n"); c.expect(501, "bad sender address", "5.1.7")
    c.send("QUIT\r\n"); c.expect(221, "QUIT", "2.0.0")
    check(c.closed(), "server closes after QUIT")
    c.close()

    c = d.client()
    c.expect(220, "greeting")
    c.send("MAIL FROM:<a@example.net>\r\n"); c.expect(503, "MAIL before EHLO", "5.5.1")
    c.send("HELO old.example\r\n"); c.expect(250, "HELO")
    code, _ = send_message(c, body="Subject: helo\r\n\r\nx\r\n")
    check(code == 250, "message after HELO accepted")
    c.close()

    # --- DSN and SMTPUTF8 parameters reach the engine ---------------------
    before = len(d.messages())
    c = d.client()
    greet_ehlo(c)
    c.send("MAIL FROM:<j\u00f6rg@b\u00fccher.example> SMTPUTF8 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1 SIZE=100\r\n")
    c.expect(250, "MAIL with SMTPUTF8 BODY RET ENVID SIZE")
    c.send("RCPT TO:<\u7530\u4e2d@example.jp> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2By@example.jp\r\n")
    c.expect(250, "RCPT with UTF-8 address, NOTIFY, ORCPT")
    c.send("RCPT TO:<plain@example.org> NOTIFY=NEVER\r\n")
    c.expect(250, "second RCPT NOTIFY=NEVER")
    c.send("DATA\r\n"); c.expect(354, "DATA")
    c.send("Subject: \u00fcber\r\n\r\n8bit body \u00e9\r\n.\r\n".encode())
    c.expect(250, "UTF-8 message queued", "queued as")
    msgs = d.wait_messages(before + 1)
    env = [e for e, b in msgs if e["from"].startswith("j\u00f6rg")]
    if check(len(env) == 1, "SMTPUTF8 message stored"):
        e = env[0]
        check(e["smtputf8"] == "1" and e["body"] == "2" and e["ret"] == "2",
              "SMTPUTF8, BODY=8BITMIME, RET=HDRS handed over")
        check(e["envid"] == "QQ+2B1", "ENVID handed over as raw xtext")
        check(e["rcpt"] == ["\u7530\u4e2d@example.jp notify=6 orcpt=rfc822;x+2By@example.jp",
                            "plain@example.org notify=1 orcpt=-"],
              "recipients with NOTIFY flags and ORCPT")
        body = [b for e2, b in msgs if e2 is e][0]
        check(b"with UTF8SMTP id" in body, "Received: says UTF8SMTP (RFC 6531 3.7.3)")
        check(b"\r\n\tfor <" not in body, "no 'for' clause with two recipients")

    # --- PIPELINING: a whole transaction in one write ---------------------
    before = len(d.messages())
    c.send("RSET\r\nMAIL FROM:<p@example.net>\r\nRCPT TO:<q1@example.org>\r\n"
           "RCPT TO:<bad address>\r\nRCPT TO:<q2@example.org>\r\nDATA\r\n")
    c.expect(250, "pipelined RSET")
    c.expect(250, "pipelined MAIL")
    c.expect(250, "pipelined RCPT 1")
    c.expect(501, "pipelined bad RCPT", "5.1.3")
    c.expect(250, "pipelined RCPT 2")
    c.expect(354, "pipelined DATA")
    # Content, end of data and the next commands in one write too.
    c.send("Subject: pipelined\r\n\r\nbody\r\n..x\r\n...\r\n. \r\n.\r\nNOOP\r\nMAIL FROM:<>\r\n"
           "RCPT TO:<r@example.org>\r\nDATA\r\n")
    c.expect(250, "pipelined message queued", "queued as")
    c.expect(250, "NOOP after the dot, answered after the queue reply")
    c.expect(250, "null sender MAIL FROM:<>")
    c.expect(250, "RCPT")
    c.expect(354, "DATA")
    c.send("Subject: bounce\r\n\r\nx\r\n.\r\nQUIT\r\n")
    c.expect(250, "second pipelined message queued", "queued as")
    c.expect(221, "QUIT")
    c.close()
    msgs = d.wait_messages(before + 2)
    pip = [e for e, b in msgs if e["from"] == "p@example.net"]
    check(len(pip) == 1 and pip[0]["rcpt"] == ["q1@example.org notify=0 orcpt=-",
                                               "q2@example.org notify=0 orcpt=-"],
          "pipelined message has the two good recipients")
    check(any(e["from"] == "" for e, b in msgs), "null sender stored as ''")
    pipb = [b for e, b in msgs if e["from"] == "p@example.net"]
    check(len(pipb) == 1 and pipb[0].endswith(b"\r\n\r\nbody\r\n.x\r\n..\r\n \r\n"),
          "dot-unstuffing: '..x' -> '.x', '...' -> '..', '. ' -> ' '")

    # --- smtp-source: 20 sessions, 1 KiB, many messages per session -------
    before = len(d.messages())
    r = subprocess.run(["smtp-source", "-s", "20", "-m", "400", "-l", "1024",
                        "-f", "src@example.net", "-t", "dst@example.org",
                        "127.0.0.1:%d" % d.port],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, "smtp-source 400 messages over 20 sessions (rc=%d %s)"
          % (r.returncode, r.stderr.strip()[:200]))
    msgs = d.wait_messages(before + 400)
    check(len(msgs) == before + 400, "all 400 smtp-source messages stored (%d)"
          % (len(msgs) - before))
    loops = {e["loop"] for e, b in msgs}
    check(loops == {"0", "1"}, "sessions spread over both loops (%s)" % sorted(loops))
    r = subprocess.run(["smtp-source", "-s", "5", "-m", "50", "-r", "3", "-l", "300",
                        "-f", "src@example.net", "-t", "dst@example.org",
                        "127.0.0.1:%d" % d.port],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, "smtp-source with 3 recipients per message")
    check(d.alive(), "driver still running")
finally:
    d.stop()
log = d.log()
check("event=smtpd_queued" in log, "queued messages are logged")
finish()
