"""SMTP server, CHUNKING/BDAT (RFC 3030): chunks pipelined with their
commands, content taken as it is (no dot-unstuffing), BDAT 0 LAST, a final
line without CRLF, refused chunks whose bytes are still skipped, oversize,
bare LF across a chunk boundary, DATA/RCPT inside a BDAT transaction, and
an unparsable BDAT closing the session.

usage: server_bdat_test.py SMTPD_DRIVER"""

import sys

from smtpd_harness import Driver, check, finish, greet_ehlo


def stored(d, sender):
    return [b for e, b in d.messages() if e["from"] == sender]


def body_of(raw):
    """The client's content: everything after our Received: header."""
    i = raw.index(b" +0000\r\n") + len(b" +0000\r\n")
    return raw[i:]


drv_path = sys.argv[1]
d = Driver(drv_path, "--max-size", "50000")
try:
    c = d.client()
    ehlo = greet_ehlo(c)
    check("250-CHUNKING" in ehlo, "EHLO advertises CHUNKING")

    # Two chunks and LAST, all pipelined with MAIL and RCPT in one write.
    part1 = b"Subject: bdat\r\n\r\n.not stuffed\r\n"
    part2 = b"..two dots stay\r\n.\r\nend\r\n"
    c.send(b"MAIL FROM:<chunks@example.net>\r\nRCPT TO:<b@example.org>\r\n" +
           b"BDAT %d\r\n" % len(part1) + part1 +
           b"BDAT %d LAST\r\n" % len(part2) + part2)
    c.expect(250, "MAIL")
    c.expect(250, "RCPT")
    c.expect(250, "first chunk", "%d octets received" % len(part1))
    c.expect(250, "LAST chunk queued", "queued as")
    m = stored(d, "chunks@example.net")
    check(len(m) == 1 and body_of(m[0]) == part1 + part2,
          "BDAT content stored byte for byte, dots untouched")

    # BDAT 0 LAST ends a message; a final line without CRLF is completed.
    c.send(b"MAIL FROM:<zero@example.net>\r\nRCPT TO:<b@example.org>\r\n"
           b"BDAT 11\r\nSubject: z\rBDAT 4\r\n\n\r\nxBDAT 0 LAST\r\n")
    for what in ("MAIL", "RCPT", "chunk 1", "chunk 2"):
        c.expect(250, what)
    c.expect(250, "BDAT 0 LAST", "queued as")
    m = stored(d, "zero@example.net")
    check(len(m) == 1 and body_of(m[0]) == b"Subject: z\r\n\r\nx\r\n",
          "chunks joined (CRLF split across them), missing final CRLF added")

    # Refused BDAT (no MAIL): its chunk is skipped, not read as commands.
    c.send(b"BDAT 12\r\nNOOP\r\nNOOP\r\nRSET\r\n")
    c.expect(503, "BDAT without a transaction", "5.5.1")
    c.expect(250, "command after the skipped chunk (only one reply)")
    c.send(b"MAIL FROM:<a@example.net>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    c.expect(250, "MAIL")
    c.expect(554, "BDAT without recipients", "5.5.1")
    c.expect(250, "NOOP after the skipped chunk")

    # Oversize: refused at once, chunk skipped, transaction over.
    big = b"x" * 60 + b"\r\n"
    c.send(b"RSET\r\nMAIL FROM:<big@example.net>\r\nRCPT TO:<b@example.org>\r\n"
           b"BDAT 60000 LAST\r\n" + (big * 1000)[:60000] + b"NOOP\r\n")
    c.expect(250, "RSET")
    c.expect(250, "MAIL")
    c.expect(250, "RCPT")
    c.expect(552, "oversize BDAT", "5.3.4")
    c.expect(250, "NOOP after the oversize chunk")
    c.send(b"MAIL FROM:<big2@example.net>\r\nRCPT TO:<b@example.org>\r\n"
           b"BDAT 40000\r\n" + big * 645 + b"y" * 10 +
           b"BDAT 20000 LAST\r\n" + b"z" * 20000)
    c.expect(250, "MAIL"); c.expect(250, "RCPT")
    c.expect(250, "first 40000 octets")
    c.expect(552, "second chunk crosses the limit", "5.3.4")
    c.send("RCPT TO:<b@example.org>\r\n")
    c.expect(503, "transaction gone after an oversize chunk", "5.5.1")
    check(stored(d, "big@example.net") == [] and stored(d, "big2@example.net") == [],
          "nothing oversize stored")

    # Bare LF split across chunks, and a bare CR at the very end.
    c.send(b"MAIL FROM:<lf@example.net>\r\nRCPT TO:<b@example.org>\r\n"
           b"BDAT 4\r\nab\r\rBDAT 3 LAST\r\nx\r\n")
    c.expect(250, "MAIL"); c.expect(250, "RCPT"); c.expect(250, "chunk")
    c.expect(554, "bare CR across a chunk boundary", "5.6.0")
    c.send(b"MAIL FROM:<lf@example.net>\r\nRCPT TO:<b@example.org>\r\n"
           b"BDAT 4 LAST\r\nab\r\n")
    c.expect(250, "MAIL"); c.expect(250, "RCPT")
    c.expect(250, "CRLF-terminated chunk accepted", "queued as")
    c.send(b"MAIL FROM:<lf@example.net>\r\nRCPT TO:<b@example.org>\r\n"
           b"BDAT 3 LAST\r\nab\r")
    c.expect(250, "MAIL"); c.expect(250, "RCPT")
    c.expect(554, "trailing lone CR", "5.6.0")
    c.send(b"MAIL FROM:<lf@example.net>\r\nRCPT TO:<b@example.org>\r\n"
           b"BDAT 5 LAST\r\na\nb\r\n")
    c.expect(250, "MAIL"); c.expect(250, "RCPT")
    c.expect(554, "bare LF in a chunk", "5.6.0")
    c.send(b"MAIL FROM:<lf@example.net>\r\nRCPT TO:<b@example.org>\r\n"
           b"BDAT 1003 LAST\r\n" + b"w" * 1001 + b"\r\n")
    c.expect(250, "MAIL"); c.expect(250, "RCPT")
    c.expect(500, "1003-octet line in a chunk", "5.5.2")
    check(len(stored(d, "lf@example.net")) == 1, "only the clean chunked message stored")

    # DATA and RCPT inside a BDAT transaction.
    c.send(b"MAIL FROM:<mix@example.net>\r\nRCPT TO:<b@example.org>\r\n"
           b"BDAT 3\r\nab\nDATA\r\nRCPT TO:<c@example.org>\r\nRSET\r\n")
    c.expect(250, "MAIL"); c.expect(250, "RCPT"); c.expect(250, "chunk")
    c.expect(503, "DATA after BDAT", "5.5.1")
    c.expect(503, "RCPT after BDAT", "5.5.1")
    c.expect(250, "RSET ends the BDAT transaction")

    # An unparsable BDAT cannot be resynchronised: 501, 421, close.
    c.send(b"BDAT lots\r\nMAIL FROM:<x@example.net>\r\n")
    c.expect(501, "BDAT without a number", "5.5.4")
    c.expect(421, "then the session ends", "4.5.0")
    check(c.closed(), "closed after a bad BDAT")
    c.close()
    check(d.alive(), "driver alive")
finally:
    d.stop()
finish()
