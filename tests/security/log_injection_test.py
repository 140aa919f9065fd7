"""Log injection: CR, LF, NUL, escape sequences, DEL, 8-bit bytes, quotes
and forged `key=value` text in what clients send (EHLO name, envelope
addresses, as far as the SMTP server accepts them) and in what remote
servers reply (greeting, EHLO, RCPT refusal). Postern's log file is then
read back byte by byte, in logfmt and in JSON: one event per line, every
line parses completely, no key appears twice, so no `event=` or `status=`
key was forged. logfmt lines hold only printable ASCII; JSON lines are
valid UTF-8 (text that is UTF-8 stays readable) with no raw control
character at all - C0, DEL or the C1 range that terminals may obey. The
injected text must be in the log (escaped), or the test proves nothing.

Usage: log_injection_test.py POSTERN QTOOL
"""

import json
import re
import sys

import dnspeer
import faultkit as fk
import hostile_mx
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
BARE = rb'[^ "=\\\x00-\x20\x7f-\xff]*'
QUOTED = rb'"(?:[^"\\\x00-\x1f\x7f-\xff]|\\.)*"'
PAIR = re.compile(rb'([a-zA-Z0-9_]+)=(' + QUOTED + rb'|' + BARE + rb')')

ATTEMPTS = [
    [b"EHLO client\x01 event=forged"],
    [b"EHLO c.test", b'MAIL FROM:<"evil event=forged level=error"@snd.test>',
     b"RCPT TO:<u1@inj.test>"],
    [b"EHLO c.test", b'MAIL FROM:<"a\x01\x1b[2Jb"@snd.test>', b"RCPT TO:<u2@inj.test>"],
    [b"EHLO c.test", b"MAIL FROM:<s@snd.test>",
     b'RCPT TO:<"r\\" event=forged status=sent"@inj.test>'],
    [b"EHLO c.test", b"MAIL FROM:<s@snd.test>", b"RCPT TO:<r\x7f\x80\xff@inj.test>"],
    [b"EHLO c.test", b"MAIL FROM:<s@snd.test>", b"RCPT TO:<r\x00 event=forged@inj.test>"],
    [b"EHLO c.test", b"MAIL FROM:<s@snd.test>", b'RCPT TO:<"a\rb event=forged"@inj.test>'],
    [b"EHLO c.test", b"MAIL FROM:<s@snd.test>", b"RCPT TO:<a\nevent=forged@inj.test>"],
]


def check_logfmt(raw):
    bad = []
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, line in enumerate(lines):
        if re.search(rb"[\x00-\x1f\x7f-\xff]", line):
            bad.append((n, "control or 8-bit byte", line[:120]))
            continue
        keys, pos = [], 0
        while pos < len(line):
            m = PAIR.match(line, pos)
            if not m:
                bad.append((n, f"does not parse at byte {pos}", line[:160]))
                break
            keys.append(m.group(1))
            pos = m.end()
            if pos < len(line):
                if line[pos:pos + 1] != b" ":
                    bad.append((n, f"no separator at byte {pos}", line[:160]))
                    break
                pos += 1
        else:
            if keys[:3] != [b"ts", b"level", b"event"] or len(set(keys)) != len(keys):
                bad.append((n, f"keys {keys}", line[:160]))
    return len(lines), bad


def check_json(raw):
    bad = []
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, line in enumerate(lines):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append((n, f"not UTF-8: {e}", line[:120]))
            continue
        if re.search("[\x00-\x1f\x7f-\x9f]", text):
            bad.append((n, "raw control character", line[:120]))
            continue
        pairs = []
        try:
            json.loads(line, object_pairs_hook=lambda p: pairs.append([k for k, _ in p]) or {})
        except ValueError as e:
            bad.append((n, f"not JSON: {e}", line[:160]))
            continue
        keys = pairs[-1] if pairs else []
        if "event" not in keys or len(set(keys)) != len(keys):
            bad.append((n, f"keys {keys}", line[:160]))
    return len(lines), bad


def run(fmt, dns, hostile, sink):
    print(f"--- log format {fmt}", flush=True)
    delivery = (f"route inj.test 127.0.0.20:{hostile.port}; "
                f"route * 127.0.0.1:{sink.port}")
    r = Relay(POSTERN, dns.port, delivery=delivery, log_extra=f"format {fmt}",
              extra="queue { retry_initial 1h }")
    try:
        accepted = 0
        for lines in ATTEMPTS:
            rep = fk.smtp_dialogue(r.port, lines + [b"DATA", fk.message("inj").encode() + b".",
                                                    b"QUIT"])
            ok = len(rep) > 5 and rep[-2].startswith("250")
            accepted += ok
            print(f"{lines[-1][:50]!r}: {[x[:24] for x in rep[1:len(lines) + 1]]}"
                  f"{' queued' if ok else ''}", flush=True)
        fk.check(accepted >= 2, f"{fmt}: some hostile envelopes were accepted ({accepted})")
        r.wait_log(lambda e: e.get("event") == "delivery" and e.get("domain") == "inj.test",
                   count=accepted, timeout=30)
        fk.check(r.stop() == 0, f"{fmt}: SIGTERM: exit 0")
        with open(r.log, "rb") as f:
            raw = f.read()
        n, bad = (check_logfmt if fmt == "logfmt" else check_json)(raw)
        fk.check(not bad, f"{fmt}: all {n} log lines are clean single events "
                 f"({len(bad)} bad: {bad[:3]})")
        esc = rb"\\u001[bB]" if fmt == "json" else rb"\\x1b"
        fk.check(re.search(esc + rb"\[2J", raw) is not None,
                 f"{fmt}: the escape sequence is in the log, escaped")
        fk.check(b"event=delivery status=sent dsn=2.0.0" in raw,
                 f"{fmt}: the forged keys from the remote reply are in the log, as text")
        fk.check(b"forged" in raw, f"{fmt}: the forged client text is in the log, as text")
        sent = [e for e in r.events() if e.get("event") == "delivery"
                and e.get("domain") == "inj.test" and e.get("status") == "sent"]
        fk.check(not sent, f"{fmt}: no delivery to inj.test is logged as sent ({len(sent)})")
    finally:
        r.close()


def main():
    dns = dnspeer.start({"records": {}})
    hostile = hostile_mx.Hostile({"127.0.0.20": "inject"})
    sink = fk.Sink()
    try:
        run("logfmt", dns, hostile, sink)
        run("json", dns, hostile, sink)
    finally:
        sink.stop()
        hostile.stop()
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
