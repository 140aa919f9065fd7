"""Not an open relay: with `listen { accept_from 127.0.0.1/32 }`, a client
connecting from 127.0.0.2 is refused with 554 5.7.1 whatever it says
next, and nothing is queued; the same transaction from 127.0.0.1 is
accepted (the control).

Usage: open_relay_test.py POSTERN QTOOL
"""

import smtplib
import sys

import dnspeer
import faultkit as fk
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]


def main():
    dns = dnspeer.start({"records": {}})
    sink = fk.Sink()
    try:
        with Relay(POSTERN, dns.port, accept_from="127.0.0.1/32",
                   delivery=f"route * 127.0.0.1:{sink.port}") as r:
            body = fk.message("outsider").encode()
            rep = fk.smtp_dialogue(r.port, [
                b"EHLO outsider.test", b"MAIL FROM:<spam@outsider.test>",
                b"RCPT TO:<victim@far.test>", b"DATA", body + b".", b"QUIT"],
                src="127.0.0.2")
            fk.check(rep[0].startswith("554") and "5.7.1" in rep[0],
                     f"127.0.0.2 is greeted with 554 5.7.1 ({rep[0]!r})")
            fk.check(not any(x.startswith(("250", "354")) for x in rep[1:]),
                     f"no command from 127.0.0.2 is accepted ({[x[:20] for x in rep[1:]]})")
            try:
                with smtplib.SMTP("127.0.0.1", r.port, timeout=10,
                                  source_address=("127.0.0.2", 0)) as s:
                    s.ehlo("outsider.test")
                    s.sendmail("spam@outsider.test", ["victim@far.test"], body)
                refused = False
            except (smtplib.SMTPException, OSError) as e:
                refused = True
                print(f"smtplib from 127.0.0.2: {type(e).__name__}: {e}", flush=True)
            fk.check(refused, "smtplib from 127.0.0.2 cannot send")
            st = fk.qstats(QTOOL, r.state)
            fk.check(st["messages"] == 0, f"nothing queued from 127.0.0.2 ({st['messages']})")
            fk.check(any(e.get("event") == "smtpd_reject" and e.get("client") == "127.0.0.2"
                         for e in r.events()), "the refusal is logged with the client address")
            r.send("s@snd.test", ["u@far.test"], fk.message("insider"))
            fk.check(fk.wait_until(lambda: "insider" in sink.ids(), 20),
                     "control: 127.0.0.1 may send, and it is delivered")
            fk.check("outsider" not in sink.ids(), "nothing from 127.0.0.2 was delivered")
            fk.check(r.stop() == 0, "SIGTERM: exit 0")
    finally:
        sink.stop()
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
