"""Queue full: (1) a tiny LMDB map (`queue { map_size 1M }`) and (2) a
full filesystem (the state directory on a 3 MB tmpfs; needs root and
`mount -t tmpfs`, skipped with a message otherwise). The MX is down, so
mail piles up until clients get `452 4.3.1`. Then: everything acked is
still queued and intact, space comes back (on the full filesystem a
ballast file is removed first; messages are deleted with qtool, then the
MX returns and delivery drains the queue), new mail is accepted
again, and every acked message that was not deleted arrives byte for
byte.

Usage: queue_full_test.py POSTERN QTOOL
"""

import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile

import dnspeer
import faultkit as fk
import mxpeer
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
SIZE = 20000


def send_one(r, mid):
    """Returns (code, text): 250 when queued."""
    try:
        with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
            s.ehlo("client.test")
            s.sendmail("s@snd.test", ["r@dst.test"], fk.message(mid, SIZE))
        return 250, ""
    except smtplib.SMTPDataError as e:
        return e.smtp_code, e.smtp_error.decode(errors="replace")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        return code, text.decode(errors="replace")


def queued_mids(r):
    p = subprocess.run([QTOOL, "-d", r.state, "list", "--json"], capture_output=True,
                       timeout=60, check=True)
    out = {}
    for e in json.loads(p.stdout or b"[]"):
        b = subprocess.run([QTOOL, "-d", r.state, "show", e["id"], "--body"],
                           capture_output=True, timeout=60).stdout
        m = fk.mids(b)
        out[e["id"]] = m[0] if m else None
    return out


def qtool_run(r, *args):
    p = subprocess.run([QTOOL, "-d", r.state] + list(args), capture_output=True, timeout=60)
    fk.check(p.returncode == 0, f"qtool {' '.join(args)[:40]}: exit 0 ({p.returncode}"
             f"{', ' + p.stderr.decode(errors='replace').strip() if p.returncode else ''})")
    return p


def scenario(name, dns, extra, state_dir=None, ballast=None):
    print(f"--- {name}", flush=True)
    port = mxpeer.free_port()
    sink = None
    r = Relay(POSTERN, dns.port, delivery=f"route * 127.0.0.1:{port}; connect_timeout 1s",
              extra=extra)
    if state_dir:
        # Point the state at the small filesystem and restart.
        r.stop()
        with open(r.conf) as f:
            conf = f.read().replace(f"state_dir {r.state}", f"state_dir {state_dir}")
        with open(r.conf, "w") as f:
            f.write(conf)
        r.state = state_dir
        r.start()
    try:
        acked, refusals = [], []
        for i in range(400):
            code, text = send_one(r, f"{name}{i}")
            if code == 250:
                acked.append(f"{name}{i}")
            else:
                refusals.append((code, text))
                if len(refusals) >= 3:
                    break
        print(f"{len(acked)} accepted before the queue filled; refusals: {refusals[:1]}",
              flush=True)
        fk.check(len(acked) >= 5, f"{name}: some mail fit ({len(acked)})")
        fk.check(refusals and all(c == 452 and "4.3.1" in t for c, t in refusals),
                 f"{name}: clients get 452 4.3.1 when full ({refusals[:1]})")
        fk.check(any(e.get("event") in ("queue_full", "enqueue_failed") for e in r.events()),
                 f"{name}: the relay logs the full queue")
        q = queued_mids(r)
        fk.check(sorted(q.values()) == sorted(acked),
                 f"{name}: every acked message is queued and readable ({len(q)}/{len(acked)})")
        if ballast:
            # On a completely full filesystem LMDB may find no page to
            # write even a deletion (qtool delete failed so once, under
            # load): the operator first frees some disk (a ballast file).
            os.unlink(ballast)
        # Space returns: the operator deletes three messages.
        victims = list(q)[:3]
        qtool_run(r, "delete", *victims)
        deleted = {q[v] for v in victims}
        code, text = send_one(r, f"{name}-after-delete")
        fk.check(code == 250, f"{name}: accepted again after qtool delete ({code} {text})")
        if code == 250:
            acked.append(f"{name}-after-delete")
        # The MX returns: delivery drains the queue.
        sink = fk.Sink(port=port)
        want = set(acked) - deleted
        ok = fk.wait_until(lambda: want <= set(sink.ids()), 60)
        fk.check(ok, f"{name}: every acked message not deleted is delivered "
                 f"({len(want & set(sink.ids()))}/{len(want)})")
        intact = True
        with sink.lock:
            for _, _, data in sink.messages:
                mid = fk.mids(data)[0]
                body = fk.message(mid, SIZE).encode()
                if not data.replace(b"\r\n", b"\n").endswith(body.replace(b"\r\n", b"\n")):
                    intact = False
        fk.check(intact, f"{name}: delivered messages are byte-identical to what was sent")
        fk.check(not (deleted & set(sink.ids())), f"{name}: deleted messages were not sent")
        code, text = send_one(r, f"{name}-after-drain")
        fk.check(code == 250, f"{name}: service resumed after delivery freed space")
        fk.check(fk.wait_until(lambda: f"{name}-after-drain" in sink.ids(), 30),
                 f"{name}: and that message is delivered")
        fk.check(fk.wait_until(lambda: fk.qstats(QTOOL, r.state)["messages"] == 0, 30),
                 f"{name}: queue empty at the end")
        fk.check(r.stop() == 0, f"{name}: SIGTERM: exit 0")
    finally:
        r.close()
        if sink:
            sink.stop()


def fill(path):
    """Writes `path` until the filesystem has no block left."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    try:
        with open(path, "ab") as f:
            while True:
                f.write(b"\0")
                f.flush()
    except OSError:
        pass


def full_at_start(dns, d):
    """The filesystem is already full when postern opens an LMDB
    environment. LMDB writes its lock file through a shared mapping: a page
    with no block behind it kills the process with SIGBUS instead of
    failing. Postern reserves the lock file's blocks first, so (1) an MTA-STS
    cache opened on a full disk (here by the policy maintenance pass, one
    second after start, with the queue already in place) is a logged error,
    the relay stays up and answers mail with 452 4.3.1; and (2) a relay
    whose queue cannot even be created exits with a clear error, not a
    signal."""
    print("--- fullstart", flush=True)
    state = os.path.join(d, "state-full")
    port = mxpeer.free_port()
    r = Relay(POSTERN, dns.port, delivery=f"route * 127.0.0.1:{port}")
    try:
        r.stop()
        with open(r.conf) as f:
            conf = f.read().replace(f"state_dir {r.state}", f"state_dir {state}")
        with open(r.conf, "w") as f:
            f.write(conf)
        r.state = state
        r.start()  # creates the queue (and maybe the policy cache) ...
        r.stop()
        shutil.rmtree(os.path.join(state, "mtasts"), ignore_errors=True)
        ballast = os.path.join(d, "ballast-full")
        fill(ballast)  # ... then the disk fills up
        r.start()
        r.wait_log(lambda e: e.get("event") == "mtasts_cache_unavailable",
                   timeout=15, since_start=True)
        fk.check(r.proc.poll() is None,
                 "fullstart: the MTA-STS cache cannot be opened on a full disk, "
                 "and the relay lives on")
        code, text = send_one(r, "fullstart-1")
        fk.check(code == 452 and "4.3.1" in text,
                 f"fullstart: mail is refused with 452 4.3.1 ({code} {text})")
        fk.check(r.stop() == 0, "fullstart: SIGTERM: exit 0")
        # A state directory that does not exist yet, on the full disk.
        with open(r.conf) as f:
            conf = f.read().replace(f"state_dir {state}", f"state_dir {state}-new")
        with open(r.conf, "w") as f:
            f.write(conf)
        p = subprocess.run([POSTERN, "-c", r.conf], capture_output=True, timeout=60)
        out = (p.stdout + p.stderr).decode(errors="replace")
        with open(r.log, errors="replace") as f:
            out += f.read()[-4000:]
        fk.check(p.returncode > 0,
                 f"fullstart: a queue that cannot be created is an exit "
                 f"status, not a signal ({p.returncode})")
        fk.check("space" in out.lower(), "fullstart: the error says there is no space")
        os.unlink(ballast)
    finally:
        r.close()


def try_tmpfs():
    d = tempfile.mkdtemp(prefix="postern-tmpfs-")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", d],
                       capture_output=True)
    if p.returncode != 0:
        os.rmdir(d)
        return None, p.stderr.decode(errors="replace").strip()
    return d, ""


def main():
    dns = dnspeer.start({"records": {}})
    try:
        scenario("mapfull", dns, "queue { map_size 1M; retry_initial 1s; retry_max 2s }")
        d, why = try_tmpfs()
        if d is None:
            print(f"SKIP tmpfs half: cannot mount a tmpfs here ({why})", flush=True)
        else:
            try:
                ballast = os.path.join(d, "ballast")
                with open(ballast, "wb") as f:
                    f.write(b"\0" * 256 * 1024)
                scenario("diskfull", dns, "queue { retry_initial 1s; retry_max 2s }",
                         state_dir=os.path.join(d, "state"), ballast=ballast)
                shutil.rmtree(os.path.join(d, "state"), ignore_errors=True)
                full_at_start(dns, d)
            finally:
                subprocess.run(["umount", d])
                os.rmdir(d)
    finally:
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
