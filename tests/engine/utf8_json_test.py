"""UTF-8 addresses through JSON: a message sent with SMTPUTF8 from
"jöran@snd.test" to "josé@dst.test" (UTF-8 local parts) must come out intact
in `qtool list --json`, `qtool show --json` and the relay's JSON log lines,
as readable UTF-8, never as \\u00XX bytes; the text output shows it intact
too. swaks (which has no SMTPUTF8 option) sending the same UTF-8 sender
without the SMTPUTF8 parameter gets 553 5.6.7 (RFC 6531 §3.7.4.1), and
nothing is queued. `qtool stats --json` with -c reads the running relay's counters
from its metrics endpoint (libcurl) into its "relay" object.

Usage: utf8_json_test.py POSTERN QTOOL
"""

import json
import smtplib
import subprocess
import sys

import dnspeer
import mxpeer
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
failures = []
SENDER = "jöran@snd.test"
RCPT = "josé@dst.test"


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def qtool(r, *args):
    p = subprocess.run([QTOOL, "-c", r.conf] + list(args), capture_output=True, timeout=60)
    check(p.returncode == 0, f"qtool {' '.join(args)}: exit 0 ({p.stderr.decode(errors='replace')})")
    return p.stdout


def main():
    dns = dnspeer.start({"records": {}})
    down = mxpeer.free_port()  # nothing listens: the message stays queued
    mport = mxpeer.free_port()
    try:
        with Relay(POSTERN, dns.port,
                   delivery=f"route * 127.0.0.1:{down}; connect_timeout 1s",
                   log_extra="format json",
                   extra="queue { retry_initial 1h }\n"
                         f"metrics {{ listen 127.0.0.1:{mport} }}") as r:
            with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
                s.ehlo("client.test")
                check(s.has_extn("smtputf8"), "the relay offers SMTPUTF8")
                s.sendmail(SENDER, [RCPT],
                           "From: a@snd.test\r\nSubject: utf8\r\n\r\nhi\r\n".encode(),
                           ["SMTPUTF8"])
            sw = subprocess.run(["swaks", "--server", f"127.0.0.1:{r.port}",
                                 "--from", SENDER, "--to", "b@dst.test"],
                                capture_output=True, timeout=30)
            out = sw.stdout.decode("utf-8", "replace")
            check(sw.returncode != 0 and "553 5.6.7" in out,
                  f"swaks: a UTF-8 sender without SMTPUTF8 gets 553 5.6.7 ({out[-300:]!r})")
            ev = r.wait_log(lambda e: e.get("event") == "delivery", timeout=30)[-1]
            # The JSON log: every line parses, the address is as sent.
            raw = open(r.log, "rb").read().decode("utf-8")
            lines = [json.loads(l) for l in raw.splitlines() if l.strip()]
            check(len(lines) > 3, f"every log line is a JSON object ({len(lines)})")
            deliv = [l for l in lines if l.get("event") == "delivery"]
            check(deliv and deliv[0].get("rcpt") == RCPT,
                  f"JSON log: rcpt is {RCPT!r} ({deliv[0].get('rcpt') if deliv else None!r})")
            check(RCPT in raw and "\\u00" not in raw,
                  "JSON log: UTF-8 written as UTF-8, not as \\u00XX escapes")

            out = qtool(r, "list", "--json").decode("utf-8")
            msgs = json.loads(out)
            check(len(msgs) == 1 and msgs[0]["sender"] == SENDER,
                  f"qtool list --json: sender {msgs[0]['sender'] if msgs else None!r}")
            mid = msgs[0]["id"] if msgs else ""
            check(SENDER in out, "qtool list --json: UTF-8 as UTF-8")

            out = qtool(r, "show", mid, "--json").decode("utf-8")
            show = json.loads(out)
            check(show["recipients"][0]["addr"] == RCPT,
                  f"qtool show --json: recipient {show['recipients'][0]['addr']!r}")
            check(show["sender"] == SENDER, "qtool show --json: sender")
            check(RCPT in out and "\\u00" not in out, "qtool show --json: UTF-8 as UTF-8")

            text = qtool(r, "show", mid).decode("utf-8")
            check(RCPT in text and "\\x" not in text,
                  "qtool show (text): well-formed UTF-8 shown intact")

            st = json.loads(qtool(r, "stats", "--json"))
            check(st["messages"] == 1, f"qtool stats --json: 1 message ({st['messages']})")
            check(isinstance(st.get("relay"), dict) and st["relay"]["accepted"] >= 1,
                  f"qtool stats --json: the relay's counters over HTTP ({st.get('relay')})")
            check(st["relay"]["deferred"] >= 1 if st.get("relay") else False,
                  "qtool stats --json: the deferral is counted")
            check(ev.get("status") == "deferred", "the message was deferred (MX down)")
    finally:
        dns.stop()
    print("all checks passed" if not failures else f"{len(failures)} failed checks")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
