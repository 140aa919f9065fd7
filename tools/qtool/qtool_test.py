"""qtool against a queue filled by qfill: every command, --json parsed back,
exit codes, and changes seen by a process that keeps the queue open (the
relay's view through queue_due_scan) while qtool runs.

usage: qtool_test.py QTOOL QFILL MTASTS_CACHE_FILL
"""
import json
import os
import subprocess
import sys
import tempfile

QTOOL, QFILL, MTSFILL = sys.argv[1], sys.argv[2], sys.argv[3]
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1


def qtool(state, *args, expect=0):
    p = subprocess.run([QTOOL, "-d", state] + list(args), capture_output=True,
                       timeout=60)
    check(p.returncode == expect,
          "qtool %s exits %d (got %d%s)" % (" ".join(args), expect,
                                            p.returncode,
                                            ", stderr: " + p.stderr.decode(
                                                errors="replace").strip()
                                            if p.returncode != expect else ""))
    return p


def qjson(state, *args):
    p = qtool(state, *args)
    try:
        return json.loads(p.stdout)
    except ValueError as e:
        check(False, "qtool %s prints JSON (%s)" % (" ".join(args), e))
        return None


tmp = tempfile.mkdtemp(prefix="qtool", dir=os.environ.get("TEST_TMPDIR"))
state = os.path.join(tmp, "state")
os.mkdir(state)

# 30 messages over three domains, the first 6 deferred. qfill stays open
# ("serve") like a running relay and reports what is due on request.
fill = subprocess.Popen([QFILL, state, "30", "a.test,b.test,c.test", "6",
                         "serve"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
try:
    ids = [fill.stdout.readline().decode().strip() for _ in range(30)]
    check(all(len(i) == 26 for i in ids), "qfill printed 30 ids")

    def relay_due():
        fill.stdin.write(b"due\n")
        fill.stdin.flush()
        return int(fill.stdout.readline())

    check(relay_due() == 24, "relay sees 24 due (6 deferred)")

    # stats
    st = qjson(state, "stats", "--json")
    check(st["messages"] == 30, "stats: messages == 30 at top level")
    check(st["active"] == 24 and st["deferred"] == 6 and st["held"] == 0,
          "stats: 24 active, 6 deferred, 0 held")
    check(st["recipients"] == 30, "stats: 30 recipients left")
    check(st["bytes"] == 30 * len(b"Subject: qfill\r\n\r\nbody line\r\n"),
          "stats: bytes")
    check(st["domain_count"] == 3, "stats: 3 domains")
    check(sorted((d["domain"], d["messages"]) for d in st["domains"]) ==
          [("a.test", 10), ("b.test", 10), ("c.test", 10)],
          "stats: 10 messages per domain")
    st1 = qjson(state, "stats", "--json", "--top", "1")
    check(len(st1["domains"]) == 1, "stats --top 1 lists one domain")
    p = qtool(state, "stats")
    check(b"messages: 30" in p.stdout, "stats text has the total")

    # stats: the MTA-STS policy cache, absent at first, then 500 policies
    # in a 2 MiB map (read-only: nothing is created while absent)
    check(st["mtasts_cache"] is None, "stats --json: no MTA-STS cache yet")
    check(b"mtasts cache: none" in p.stdout, "stats text: no MTA-STS cache")
    check(not os.path.exists(os.path.join(state, "mtasts")),
          "stats creates no MTA-STS cache")
    subprocess.run([MTSFILL, state, "500", str(2 << 20)], check=True,
                   timeout=60)
    mc = qjson(state, "stats", "--json")["mtasts_cache"]
    check(mc is not None and mc["entries"] == 500 and mc["map_size"] == 2 << 20
          and 0 < mc["used_bytes"] < mc["map_size"],
          "stats --json: MTA-STS cache entries and map use (%s)" % mc)
    p = qtool(state, "stats")
    check(b"mtasts cache: 500 policies, " in p.stdout and
          b" of 2097152 bytes used (" in p.stdout,
          "stats text: MTA-STS cache line (%s)" % p.stdout.decode())

    # list
    lst = qjson(state, "list", "--json")
    check([m["id"] for m in lst] == ids, "list --json: every id, in order")
    check(all(m["sender"] == "sender@qfill.test" and m["recipients"] == 1
              for m in lst), "list --json: sender and recipient count")
    check([m["state"] for m in lst[:6]] == ["deferred"] * 6 and
          all(m["state"] == "active" for m in lst[6:]), "list --json: states")
    check(lst[0]["last_status"] == "4.2.0" and
          lst[0]["last_reply"] == "451 try later", "list --json: last status")
    check(len(qjson(state, "list", "--json", "--limit", "4")) == 4,
          "list --limit 4")
    dom = qjson(state, "list", "--json", "--domain", "B.test")
    check([m["id"] for m in dom] == ids[1::3], "list --domain (any case)")
    dfr = qjson(state, "list", "--json", "--state", "deferred")
    check([m["id"] for m in dfr] == ids[:6], "list --state deferred")
    check(qjson(state, "list", "--json", "--older-than", "1d") == [],
          "list --older-than 1d is empty")
    check(len(qjson(state, "list", "--json", "--older-than", "0s")) == 30,
          "list --older-than 0s has all")
    p = qtool(state, "list")
    lines = p.stdout.decode().splitlines()
    check(len(lines) == 30 and lines[0].startswith(ids[0]),
          "list: one line per message")

    # show
    sh = qjson(state, "show", ids[0], "--json")
    check(sh["id"] == ids[0] and sh["state"] == "deferred", "show --json")
    r = sh["recipients"][0]
    check(r["addr"] == "user0@a.test" and r["state"] == "deferred" and
          r["attempts"] == 1 and r["status"] == "4.2.0" and
          r["reply"] == "451 try later" and r["notify"] == "FAILURE",
          "show --json: recipient state, attempts, last reply")
    check(sh["client_addr"] == "127.0.0.1:25" and
          sh["client_helo"] == "qfill.test", "show --json: client")
    p = qtool(state, "show", ids[1], "--body")
    check(p.stdout == b"Subject: qfill\r\n\r\nbody line\r\n", "show --body")
    shb = qjson(state, "show", ids[1], "--json", "--body")
    check(shb["body"] == "Subject: qfill\r\n\r\nbody line\r\n",
          "show --json --body")
    p = qtool(state, "show", ids[8])
    check(b"user8@c.test" in p.stdout and b"pending" in p.stdout,
          "show: text")

    # hold / release, seen by the relay process
    p = qtool(state, "hold", ids[10], ids[11])
    check(p.stdout.strip() == b"held 2 messages", "hold two ids")
    check(relay_due() == 22, "relay no longer sees held messages")
    held = qjson(state, "list", "--json", "--state", "held")
    check([m["id"] for m in held] == ids[10:12], "list --state held")
    qtool(state, "release", ids[10], ids[11])
    check(relay_due() == 24, "relay sees released messages")
    p = qtool(state, "hold", "--domain", "a.test")
    check(p.stdout.strip() == b"held 10 messages", "hold --domain")
    check(qjson(state, "stats", "--json")["held"] == 10, "stats: 10 held")
    qtool(state, "release", "--all")
    check(qjson(state, "stats", "--json")["held"] == 0, "release --all")

    # retry: deferred messages become due now
    p = qtool(state, "retry", "--domain", "a.test")
    check(relay_due() == 26, "retry --domain makes deferred a.test mail due")
    qtool(state, "retry", "--all")
    check(relay_due() == 30, "retry --all makes everything due")
    check(qjson(state, "stats", "--json")["deferred"] == 0,
          "retried messages are active")

    # delete
    p = qtool(state, "delete", ids[0])
    check(p.stdout.strip() == b"deleted 1 message", "delete one")
    qtool(state, "show", ids[0], expect=1)
    check(relay_due() == 29, "relay no longer sees the deleted message")
    p = qtool(state, "delete", "--domain", "c.test")
    check(p.stdout.strip() == b"deleted 10 messages", "delete --domain")
    check(qjson(state, "stats", "--json")["messages"] == 19, "19 left")

    # unknown ids: exit 1, known ones still applied
    p = qtool(state, "hold", ids[1], "01ZZZZZZZZZZZZZZZZZZZZZZZZ", expect=1)
    check(b"unknown id" in p.stderr, "hold reports the unknown id")
    check(qjson(state, "stats", "--json")["held"] == 1,
          "the known id was held anyway")
    qtool(state, "show", "not-an-id", expect=1)
    qtool(state, "release", "nope", expect=1)

    # usage errors: exit 2
    qtool(state, expect=2)
    qtool(state, "frobnicate", expect=2)
    qtool(state, "list", "--bogus", expect=2)
    qtool(state, "list", "--limit", "many", expect=2)
    qtool(state, "list", "--state", "sleeping", expect=2)
    qtool(state, "list", "--older-than", "5x", expect=2)
    qtool(state, "hold", expect=2)
    qtool(state, "hold", "--all", ids[1], expect=2)
    qtool(state, "show", expect=2)
    # -c CONFIG: the queue named by the configuration's state_dir
    p = subprocess.run([QTOOL, "-c", os.path.join(tmp, "nope.conf"), "list"],
                       capture_output=True, timeout=60)
    check(p.returncode == 1 and b"nope.conf" in p.stderr,
          "-c with a missing file: exit 1 naming it")
    conf = os.path.join(tmp, "postern.conf")
    with open(conf, "w") as f:
        f.write("hostname relay.test\nstate_dir %s\nlisten 127.0.0.1:0\n"
                "delivery {\n  workers 1\n  bogus 1\n}\n" % state)
    p = subprocess.run([QTOOL, "-c", conf, "stats"], capture_output=True,
                       timeout=60)
    check(p.returncode == 1 and b"postern.conf:6:3:" in p.stderr,
          "-c with a bad config: exit 1 with file:line:col")
    with open(conf, "w") as f:
        f.write("hostname relay.test\nstate_dir %s\nlisten 127.0.0.1:0\n"
                % state)
    p = subprocess.run([QTOOL, "-c", conf, "stats", "--json"],
                       capture_output=True, timeout=60)
    check(p.returncode == 0 and json.loads(p.stdout)["messages"] == 19,
          "-c CONFIG opens the configured queue")

    # bounce: recipients fail now, one DSN per message to its sender
    victim = qjson(state, "list", "--domain", "a.test", "--json")[0]["id"]
    p = qtool(state, "bounce", victim)
    check(p.stdout.strip() == b"bounced 1 recipient, 1 DSN queued",
          "bounce ID: one recipient, one DSN")
    qtool(state, "show", victim, expect=1)
    msgs = qjson(state, "list", "--json")
    dsns = [m for m in msgs if m["sender"] == ""]
    check(len(dsns) == 1 and len(msgs) == 19, "the DSN replaced the message")
    sh = qjson(state, "show", dsns[0]["id"], "--json")
    check(sh["recipients"][0]["addr"] == "sender@qfill.test",
          "the DSN goes to the original sender")
    body = qtool(state, "show", dsns[0]["id"], "--body").stdout
    check(b"report-type=delivery-status" in body and
          b"Status: 5.0.0" in body and b"Action: failed" in body and
          b"qtool bounce" in body and victim.encode() in body,
          "the DSN is a delivery-status report naming the message")
    qtool(state, "bounce", "01ZZZZZZZZZZZZZZZZZZZZZZZZ", expect=1)
    qtool(state, "bounce", expect=2)
    qtool(state, "bounce", "--all", expect=2)
    before = qjson(state, "stats", "--json")
    bdom = [d["messages"] for d in before["domains"] if d["domain"] == "b.test"]
    p = qtool(state, "bounce", "--domain", "b.test")
    n = bdom[0] if bdom else 0
    check(p.stdout.strip() == ("bounced %d recipients, %d DSNs queued"
                               % (n, n)).encode(),
          "bounce --domain: every message of the domain (%d)" % n)
    after = qjson(state, "stats", "--json")
    check(not [d for d in after["domains"] if d["domain"] == "b.test"],
          "bounce --domain: nothing left for b.test")
    qtool(state, "delete", "--domain", "qfill.test")

    # a queue that cannot be opened: exit 1, nothing created
    missing = os.path.join(tmp, "missing")
    p = qtool(missing, "stats", expect=1)
    check(b"cannot open" in p.stderr and not os.path.exists(missing),
          "missing queue: clear message, nothing created")
    qtool(missing, "list", "--bogus", expect=2)

    # delete --all empties it
    qtool(state, "delete", "--all")
    st = qjson(state, "stats", "--json")
    check(st["messages"] == 0 and st["recipients"] == 0 and st["bytes"] == 0
          and st["domains"] == [], "delete --all: empty, counters zero")
    check(qjson(state, "list", "--json") == [], "list of an empty queue")
    check(relay_due() == 0, "relay sees nothing due")

    # UTF-8 addresses (SMTPUTF8) are shown intact, in text and JSON.
    u8state = os.path.join(tmp, "u8state")
    os.mkdir(u8state)
    u8 = subprocess.run([QFILL, u8state, "1", "b\u00fccher.test", "0"],
                        capture_output=True)
    uid = u8.stdout.decode().split()[0] if u8.returncode == 0 else ""
    p = qtool(u8state, "show", uid)
    check("user0@b\u00fccher.test" in p.stdout.decode("utf-8", "replace"),
          "show: a UTF-8 address intact (%r)" % p.stdout[:300])
    p = qtool(u8state, "stats")
    check("b\u00fccher.test" in p.stdout.decode("utf-8", "replace"),
          "stats: a UTF-8 domain intact (%r)" % p.stdout[-300:])
    sh = qjson(u8state, "show", uid, "--json")
    check(sh and sh["recipients"][0]["addr"] == "user0@b\u00fccher.test",
          "show --json: a UTF-8 address intact")
finally:
    try:
        fill.stdin.write(b"quit\n")
        fill.stdin.close()
        fill.wait(timeout=10)
    except Exception:
        fill.kill()
        fill.wait()
    subprocess.run(["rm", "-rf", tmp])

print("%d failure(s)" % failures)
sys.exit(1 if failures else 0)
