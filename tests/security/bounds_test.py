"""Resource bounds from the configuration, through a real postern:
`listen { max_message_size 10K; max_recipients 5; max_sessions 3 }`.

  message size   552 5.3.4, both when announced (MAIL SIZE=) and when
                 only the body is too big
  recipients     the 6th RCPT gets 452 4.5.3, the message goes to 5
  sessions       the 4th concurrent session gets 421
  line length    a 1,000-byte command line gets 500 5.5.2
Nothing refused is queued.

Usage: bounds_test.py POSTERN QTOOL
"""

import socket
import time
import sys

import dnspeer
import faultkit as fk
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]


def main():
    dns = dnspeer.start({"records": {}})
    sink = fk.Sink()
    try:
        with Relay(POSTERN, dns.port, delivery=f"route * 127.0.0.1:{sink.port}",
                   listen_extra="max_message_size 10K; max_recipients 5; max_sessions 3"
                   ) as r:
            big = fk.message("big", 20000).encode()
            rep = fk.smtp_dialogue(r.port, [b"EHLO c.test",
                                            b"MAIL FROM:<s@snd.test> SIZE=20000"])
            fk.check(rep[2].startswith("552") and "5.3.4" in rep[2],
                     f"MAIL SIZE=20000 over 10K: {rep[2]!r}")
            rep = fk.smtp_dialogue(r.port, [b"EHLO c.test", b"MAIL FROM:<s@snd.test>",
                                            b"RCPT TO:<u@x.test>", b"DATA", big + b"."])
            fk.check(rep[5].startswith("552") and "5.3.4" in rep[5],
                     f"a 20 KB body without SIZE: {rep[5]!r}")
            rcpts = [f"RCPT TO:<u{i}@x.test>".encode() for i in range(6)]
            rep = fk.smtp_dialogue(r.port, [b"EHLO c.test", b"MAIL FROM:<s@snd.test>"]
                                   + rcpts + [b"DATA", fk.message("five").encode() + b"."])
            fk.check(all(x.startswith("250") for x in rep[3:8]), "RCPTs 1-5 accepted")
            fk.check(rep[8].startswith("452") and "4.5.3" in rep[8], f"RCPT 6: {rep[8]!r}")
            fk.check(rep[10].startswith("250"), "the message goes to the first five")
            long_line = b"MAIL FROM:<" + b"a" * 990 + b"@x.test>"
            rep = fk.smtp_dialogue(r.port, [b"EHLO c.test", long_line, b"NOOP"])
            fk.check(rep[2].startswith("500") and "5.5.2" in rep[2],
                     f"a {len(long_line)}-byte command line: {rep[2]!r}")
            # The sessions above must be gone on the server's side too.
            fk.wait_until(lambda: sum(e.get("event") == "smtpd_disconnect" for e in r.events())
                          >= sum(e.get("event") == "smtpd_connect" for e in r.events()), 20)
            held = [socket.create_connection(("127.0.0.1", r.port), timeout=10)
                    for _ in range(3)]
            greets = [s.recv(512).decode() for s in held]
            fk.check(all(g.startswith("220") for g in greets), "3 sessions admitted")
            rep = fk.smtp_dialogue(r.port, [])
            fk.check(rep[0].startswith("421"), f"the 4th concurrent session: {rep[0]!r}")
            for s in held:
                s.close()
            fk.check(fk.wait_until(lambda: "five" in sink.ids(), 20), "'five' delivered")
            with sink.lock:
                rc = [m[1] for m in sink.messages if b"five@fault.test" in m[2]]
            fk.check(rc and len(rc[0]) == 5, f"to exactly 5 recipients ({rc})")
            fk.check(fk.wait_until(lambda: fk.qstats(QTOOL, r.state)["messages"] == 0, 20),
                     "nothing refused was queued (queue empty)")
            fk.check(set(sink.ids()) == {"five"}, f"only 'five' was delivered ({set(sink.ids())})")
            fk.check(r.stop() == 0, "SIGTERM: exit 0")
    finally:
        sink.stop()
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
