"""SMTP server, access and capacity: accept_from refusal (127.0.0.2 when
only 127.0.0.1 may connect), max_sessions across loops (421 4.3.2), queue
full (452 4.3.1, then the next message succeeds), a client that leaves
before the engine finished committing, shutdown while a commit is pending,
and an IPv6 listener with an IPv6 access list.

usage: server_limits_test.py SMTPD_DRIVER"""

import signal
import socket
import subprocess
import sys
import time

from smtpd_harness import Client, Driver, check, finish, greet_ehlo, send_message

drv_path = sys.argv[1]

# --- accept_from ----------------------------------------------------------
d = Driver(drv_path, "--accept", "127.0.0.1")
try:
    c = d.client(source="127.0.0.2")
    c.expect(554, "client outside accept_from refused at connect", "5.7.1")
    try:
        c.send("EHLO x\r\nMAIL FROM:<a@example.net>\r\n")
    except OSError:
        pass
    check(c.closed(), "refused client gets nothing else and is disconnected")
    c.close()
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % d.port,
                        "--local-interface", "127.0.0.2",
                        "--from", "a@example.net", "--to", "b@example.org"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode != 0 and "554 5.7.1" in r.stdout,
          "swaks from 127.0.0.2 sees 554 5.7.1")
    check(len(d.messages()) == 0, "nothing queued from outside accept_from")
    c = d.client(source="127.0.0.1")
    greet_ehlo(c)
    code, _ = send_message(c)
    check(code == 250, "client inside accept_from is served")
    c.close()
finally:
    d.stop()
check("reason=accept_from" in d.log(), "refusal is logged")

# --- error limit counts errors since the last accepted message ------------
d = Driver(drv_path, "--max-errors", "3")
try:
    c = d.client()
    greet_ehlo(c)
    c.send("BOGUS\r\nBOGUS\r\n")
    c.expect(500, "error 1"); c.expect(500, "error 2")
    code, _ = send_message(c, mail="reset@example.net")
    check(code == 250, "message accepted between errors")
    c.send("BOGUS\r\nBOGUS\r\nNOOP\r\n")
    c.expect(500, "error 1 after the message"); c.expect(500, "error 2 after the message")
    c.expect(250, "an accepted message reset the error count")
    c.send("BOGUS\r\n")
    c.expect(500, "third error since the message")
    c.expect(421, "then 421 4.7.0 (max_errors 3)", "4.7.0")
    c.close()
finally:
    d.stop()

# --- max_sessions, counted across both loops -------------------------------
d = Driver(drv_path, "--max-sessions", "4", "--loops", "2")
try:
    held = []
    for i in range(4):
        c = d.client()
        c.expect(220, "session %d of 4 greeted" % (i + 1))
        held.append(c)
    c = d.client()
    c.expect(421, "fifth session refused", "4.3.2")
    check(c.closed(), "fifth session closed")
    c.close()
    held.pop().close()
    time.sleep(0.3)  # let the server see the close
    c = d.client()
    c.expect(220, "a new session is accepted after one closed")
    held.append(c)
    for c in held:
        c.send("QUIT\r\n")
        c.close()
finally:
    d.stop()

# --- queue full, and txn_done after the client left ---------------------------
d = Driver(drv_path, "--delay-ms", "400")
try:
    c = d.client()
    greet_ehlo(c)
    d.set_qfull()
    code, lines = send_message(c, mail="qfull@example.net")
    check(code == 452 and "4.3.1" in lines[-1], "queue full -> 452 4.3.1 (%s)" % lines)
    code, lines = send_message(c, mail="retry@example.net")
    check(code == 250, "next message on the same session succeeds (%s)" % lines)
    msgs = d.wait_messages(1)
    check([e["from"] for e, b in msgs] == ["retry@example.net"],
          "only the retried message is stored")

    # The client sends the final dot and leaves at once; the engine reports
    # 400 ms later. The server must survive that and keep serving.
    c2 = d.client()
    greet_ehlo(c2)
    c2.send("MAIL FROM:<gone@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    c2.expect(250, "MAIL"); c2.expect(250, "RCPT"); c2.expect(354, "DATA")
    c2.send("Subject: gone\r\n\r\nbye\r\n.\r\n")
    c2.sock.shutdown(socket.SHUT_RDWR)
    c2.close()
    msgs = d.wait_messages(2)
    check(any(e["from"] == "gone@example.net" for e, b in msgs),
          "message of the departed client still committed")
    time.sleep(0.3)
    code, _ = send_message(c, mail="still@example.net")
    check(code == 250, "server still serves after a departed client")

    # A client that sends everything and half-closes (printf | nc) still
    # gets every reply, the queue reply included, then the server closes.
    c3 = d.client()
    c3.send("EHLO halfclose.example\r\nMAIL FROM:<half@example.net>\r\n"
            "RCPT TO:<b@example.org>\r\nDATA\r\nSubject: half\r\n\r\nx\r\n.\r\n"
            "QUIT\r\n")
    c3.sock.shutdown(socket.SHUT_WR)
    got = [c3.reply()[0] for _ in range(6)]
    check(got == [220, 250, 250, 250, 354, 250], "half-closed client gets all replies (%s)" % got)
    c3.expect(221, "QUIT answered after the half-close")
    check(c3.closed(), "server closes after a half-close")
    c3.close()
    c3 = d.client()
    c3.send("EHLO halfclose.example\r\nMAIL FROM:<half2@example.net>\r\n"
            "RCPT TO:<b@example.org>\r\nDATA\r\nSubject: cut\r\n")
    c3.sock.shutdown(socket.SHUT_WR)
    got = [c3.reply()[0] for _ in range(5)]
    check(got == [220, 250, 250, 250, 354], "half-close in DATA: replies so far")
    check(c3.closed(), "then the session closes without queueing")
    c3.close()
    time.sleep(0.6)
    froms = [e["from"] for e, b in d.messages()]
    check("half@example.net" in froms and "half2@example.net" not in froms,
          "complete half-closed message stored, cut one not")

    # Shutdown while a commit is pending: the reply still comes, then 421.
    c.send("MAIL FROM:<last@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    c.expect(250, "MAIL"); c.expect(250, "RCPT"); c.expect(354, "DATA")
    c.send("Subject: last\r\n\r\nx\r\n.\r\n")
    time.sleep(0.1)
    idle = d.client()
    idle.expect(220, "an idle session")
    d.terminate()
    c.expect(250, "pending message answered during shutdown", "queued as")
    c.expect(421, "then 421 4.3.2 shutting down", "4.3.2")
    idle.expect(421, "idle session gets 421 at shutdown", "4.3.2")
    c.close()
    idle.close()
finally:
    d.stop()

# --- smtp_server_stop: no new sessions, existing ones go on -----------------
d = Driver(drv_path, "--loops", "2")
try:
    c = d.client()
    greet_ehlo(c)
    d.proc.send_signal(signal.SIGUSR1)
    refused = False
    for _ in range(50):
        try:
            x = Client("127.0.0.1", d.port)
            x.close()
            time.sleep(0.1)
        except (ConnectionRefusedError, ConnectionResetError):
            # Reset: the connection sat in the backlog of the listener that
            # just closed.
            refused = True
            break
    check(refused, "after stop, new connections are refused")
    code, _ = send_message(c, mail="afterstop@example.net")
    check(code == 250, "existing session still delivers after stop")
    c.send("QUIT\r\n")
    c.expect(221, "QUIT")
    c.close()
finally:
    d.stop()

# --- IPv6 ------------------------------------------------------------------------
try:
    s = socket.socket(socket.AF_INET6)
    s.bind(("::1", 0))
    s.close()
    have_v6 = True
except OSError:
    have_v6 = False
if have_v6:
    d = Driver(drv_path, "--accept", "::1", listen="[::1]:0")
    try:
        c = d.client()
        greet_ehlo(c)
        code, _ = send_message(c, mail="v6@example.net")
        check(code == 250, "message over IPv6 accepted")
        msgs = d.wait_messages(1)
        check(len(msgs) == 1 and msgs[0][0]["client"] == "::1", "client ::1 handed over")
        check(len(msgs) == 1 and b"([IPv6:::1])" in msgs[0][1],
              "Received: uses the IPv6 address literal")
        c.close()
    finally:
        d.stop()
else:
    print("skip IPv6: ::1 not available")
finish()
