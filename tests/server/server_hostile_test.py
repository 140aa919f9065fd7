"""SMTP server, hostile input: overlong command and text lines, bare LF,
bare CR, NUL, SMTP smuggling, 10,000 pipelined RCPTs, oversize DATA,
too many errors, an early talker, idle and slowloris timeouts. After each
one the right reply comes, and the server keeps serving other clients
(checked with swaks while the hostile sessions are open).

usage: server_hostile_test.py SMTPD_DRIVER"""

import subprocess
import sys
import threading
import time

from smtpd_harness import Driver, check, finish, greet_ehlo, send_message


def swaks_ok(d, what):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % d.port,
                        "--from", "ok@example.net", "--to", "ok@example.org"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0 and "queued as" in r.stdout,
          "server still serves others: %s" % what)


def n_from(d, sender):
    return len([e for e, b in d.messages() if e["from"] == sender])


drv_path = sys.argv[1]
d = Driver(drv_path, "--max-size", "100000", "--timeout-ms", "1500",
           "--max-errors", "30")
try:
    # --- command lines --------------------------------------------------
    c = d.client()
    greet_ehlo(c)
    c.send("NOOP " + "x" * 600 + "\r\n")
    c.expect(500, "600-octet command line", "5.5.2 Line too long")
    c.send("NOOP\r\n")
    c.expect(250, "session sane after an overlong line (only one reply)")
    c.send("MAIL FROM:<" + "a" * 20000 + "@example.net>\r\nNOOP\r\n")
    c.expect(500, "20000-octet command line", "5.5.2")
    c.expect(250, "next command after the overlong line")
    c.send("NOOP\n")
    c.expect(500, "bare LF line end in a command", "5.5.2")
    c.send("NO\rOP\r\n")
    c.expect(500, "bare CR in a command", "5.5.2")
    c.send(b"NOOP a\x00b\r\n")
    c.expect(500, "NUL in a command", "5.5.2")
    c.send(b"\xff\xfe\x00\x01\r\n")
    c.expect(500, "binary garbage", "5.5.2")
    c.send("RSET\r\n")
    c.expect(250, "session still usable after garbage")
    swaks_ok(d, "after hostile command lines")

    # --- DATA content -----------------------------------------------------
    def data(body, what, code, text):
        c.send("MAIL FROM:<hostile@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        c.expect(250, what + ": MAIL")
        c.expect(250, what + ": RCPT")
        c.expect(354, what + ": DATA")
        c.send(body)
        c.expect(code, what, text)

    data(b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n.\r\n",
         "1202-octet text line", 500, "5.5.2 Line too long")
    data(b"Subject: x\r\n\r\n" + b"y" * 998 + b"\r\n.\r\n",
         "1000-octet text line accepted", 250, "queued as")
    data(b"Subject: x\r\n\r\nbare\nLF\r\n.\r\n",
         "bare LF in content (RFC 5321 2.3.8)", 554, "5.6.0")
    data(b"Subject: x\r\n\r\nbare\rCR\r\n.\r\n",
         "bare CR in content", 554, "5.6.0")
    data(b"Subject: x\r\n\r\nnul\x00byte\r\n.\r\n",
         "NUL in content", 554, "5.6.0")
    # SMTP smuggling: "\n.\r\n" must not end DATA, so the smuggled MAIL is
    # content, and the message (holding a bare LF) is refused as a whole.
    data(b"Subject: x\r\n\r\nhi\n.\r\nMAIL FROM:<smuggled@example.net>\r\n"
         b"RCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n.\r\n",
         "smuggling with <LF>.<CR><LF>", 554, "5.6.0")
    data(b"Subject: x\r\n\r\nhi\r\n.\nMAIL FROM:<smuggled@example.net>\r\n.\r\n",
         "smuggling with <CR><LF>.<LF>", 554, "5.6.0")
    check(n_from(d, "smuggled@example.net") == 0, "nothing smuggled into the queue")
    # Oversize: the limit is 100000 bytes; the server reads to the dot.
    big = b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 2000
    data(big + b".\r\n", "oversize DATA (160 kB > 100 kB)", 552, "5.3.4")
    c.send("MAIL FROM:<a@example.net> SIZE=100001\r\n")
    c.expect(552, "SIZE= above max_message_size", "5.3.4")
    c.send("RSET\r\n")
    c.expect(250, "RSET after oversize")
    code, _ = send_message(c, mail="after-big@example.net")
    check(code == 250, "next message after oversize is accepted")
    check(n_from(d, "hostile@example.net") == 1, "only the 1000-octet-line message was queued")
    swaks_ok(d, "after hostile DATA")
    c.send("QUIT\r\n")
    c.close()

    # --- 10,000 recipients, pipelined -------------------------------------
    c = d.client()
    greet_ehlo(c)
    cmds = "MAIL FROM:<many@example.net>\r\n" + "".join(
        "RCPT TO:<r%d@example.org>\r\n" % i for i in range(10000)) + "DATA\r\n"
    # Send from a thread while reading replies, as a pipelining client must.
    sender = threading.Thread(target=c.send, args=(cmds,))
    sender.start()
    c.expect(250, "MAIL before 10,000 RCPTs")
    codes = {}
    for i in range(10000):
        code, lines = c.reply()
        codes.setdefault(code, []).append(i)
        if code is None:
            break
        if code == 452 and "4.5.3" not in lines[-1]:
            codes.setdefault("bad452", []).append(i)
    check(len(codes.get(250, [])) == 1000 and codes[250] == list(range(1000)),
          "first 1000 RCPTs accepted")
    check(len(codes.get(452, [])) == 9000 and "bad452" not in codes,
          "9000 further RCPTs get 452 4.5.3")
    sender.join()
    c.expect(354, "DATA after 10,000 RCPTs")
    c.send("Subject: many\r\n\r\nx\r\n.\r\n")
    c.expect(250, "message to 1000 recipients queued", "queued as")
    m = [e for e, b in d.wait_messages(n_from(d, "many@example.net")) if e["from"] == "many@example.net"]
    check(len(m) == 1 and len(m[0]["rcpt"]) == 1000, "stored with 1000 recipients")
    c.send("QUIT\r\n")
    c.close()

    # --- too many errors ---------------------------------------------------
    c = d.client()
    greet_ehlo(c)
    c.send("BOGUS\r\n" * 40)
    got = [c.reply()[0] for _ in range(31)]
    check(got[:30] == [500] * 30 and got[30] == 421,
          "30 errors then 421 4.7.0 (max_errors 30): %s" % got[-3:])
    check(c.closed(), "connection closed after too many errors")
    c.close()

    # --- junk commands (NOOP/RSET/VRFY/HELP/EXPN, repeated EHLO) -------------
    c = d.client()
    greet_ehlo(c)
    c.send("NOOP\r\n" * 60 + "VRFY x\r\n" * 60)
    got = [c.reply()[0] for _ in range(102)]
    check(got[:60] == [250] * 60 and got[60:100] == [252] * 40 and got[100] == 252
          and got[101] == 421, "101 junk commands then 421 4.7.0 (%s)" % got[98:])
    check(c.closed(), "closed after too many junk commands")
    c.close()

    # --- idle timeout and slowloris -----------------------------------------
    c = d.client()
    greet_ehlo(c)
    t0 = time.time()
    c.expect(421, "idle client times out", "4.4.2")
    check(time.time() - t0 < 10, "idle timeout bounded")
    check(c.closed(), "closed after idle timeout")
    c.close()

    # Slowloris: one byte every 300 ms of a command that never ends. Partial
    # lines do not reset the timer, so the session still ends.
    c = d.client()
    greet_ehlo(c)
    end = time.time() + 8
    code = None
    try:
        c.sock.settimeout(0.3)
        while time.time() < end:
            try:
                c.send("N")
            except OSError:
                break
            try:
                data_in = c.sock.recv(4096)
                if data_in:
                    c.buf += data_in
                    break
            except OSError:
                pass
    finally:
        c.sock.settimeout(5)
    code, lines = c.reply()
    check(code == 421 and "4.4.2" in lines[-1], "slowloris command line times out (%s)" % lines)
    c.close()

    # Slowloris inside DATA: lines keep it alive only while they come.
    c = d.client()
    greet_ehlo(c)
    c.send("MAIL FROM:<slow@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    c.expect(250, "MAIL"); c.expect(250, "RCPT"); c.expect(354, "DATA")
    for i in range(4):
        c.send("line %d\r\n" % i)
        time.sleep(0.5)
    c.send("half a line")
    c.expect(421, "DATA stalls mid-line: timeout", "4.4.2")
    c.close()
    check(n_from(d, "slow@example.net") == 0, "stalled message not queued")
    swaks_ok(d, "after timeouts")
    check(d.alive(), "driver alive after hostile input")
finally:
    d.stop()

# --- a pipelining client that reads no replies for a while ------------------
# Its receive window is tiny, so the server's replies back up, the server
# stops taking input, and the client's sends block. Once the client reads,
# everything must flow again: the server resumes reading by itself.
d = Driver(drv_path, "--max-junk", "1000000")
try:
    c = d.client()
    c.sock.close()
    import socket as _socket
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 4096)
    s.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, 4096)
    s.settimeout(15)
    s.connect(("127.0.0.1", d.port))
    c.sock, c.buf = s, b""
    greet_ehlo(c)
    n = 40000
    sender = threading.Thread(target=c.send, args=("HELP\r\n" * n,))
    sender.start()
    time.sleep(1.5)
    got = 0
    while got < n:
        code, _ = c.reply()
        if code != 214:
            break
        got += 1
    sender.join(timeout=15)
    check(got == n, "all %d pipelined replies arrive after the stall (%d)" % (n, got))
    c.send("QUIT\r\n")
    c.expect(221, "QUIT after the stall")
    c.close()
finally:
    d.stop()

# --- early talker (separate server with a greeting delay) ------------------
d = Driver(drv_path, "--greet-delay-ms", "700")
try:
    c = d.client()
    c.send("EHLO eager.example\r\n")
    c.expect(554, "early talker before the greeting", "5.5.0")
    check(c.closed(), "early talker disconnected")
    c.close()
    check(len(d.messages()) == 0, "nothing queued from the early talker")
    c = d.client()
    c.expect(220, "patient client gets the greeting after the delay")
    c.send("EHLO patient.example\r\n")
    c.expect(250, "and is served")
    c.close()
    swaks_ok(d, "with greet delay")
finally:
    d.stop()

# --- total session time ------------------------------------------------------
d = Driver(drv_path, "--session-timeout-ms", "1500", "--timeout-ms", "60000")
try:
    c = d.client()
    greet_ehlo(c)
    t0 = time.time()
    code = None
    while time.time() - t0 < 10:
        c.send("NOOP\r\n")
        code, lines = c.reply()
        if code != 250:
            break
        time.sleep(0.2)
    check(code == 421 and "4.4.2" in lines[-1],
          "busy session ends at session_timeout (%s)" % lines)
    c.close()
finally:
    d.stop()
finish()
