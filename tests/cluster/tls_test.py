"""Fleet mode over TLS: a rediss:// URL (docs/fleet.md, "Redis over TLS").

A redis-server listening with TLS only, its certificate from a test CA
naming "localhost":

 1. rediss:// with the CA (redis_ca_file), AUTH by password and a client
    certificate that Redis requires (tls-auth-clients yes): the node comes
    up, takes connection leases (seen in Redis) and enters the node set;
    the tunnel leaves no socket file behind.
 2. The same Redis without a client certificate: never up (Redis refuses
    the handshake), logged as redis_tls_failed; mail is still delivered
    under local limits.
 3. A CA that did not issue Redis' certificate: never up, the reason names
    the certificate; mail still delivered.
 4. A certificate for another name: never up; mail still delivered.

`qtool cluster` reads the same Redis over TLS.

Usage: tls_test.py POSTERN_BINARY QTOOL_BINARY
"""

import json
import os
import subprocess
import sys
import tempfile
import threading

import dnspeer
import pki
import rawmx
import redispeer
from relay import Relay

POSTERN = sys.argv[1]
QTOOL = sys.argv[2]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject):
    return f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n\r\nbody\r\n"


def node(dns, sink, name, cluster):
    return Relay(POSTERN, dns.port,
                 delivery=f"route * 127.0.0.1:{sink.port}; per_domain_connections 2; "
                          "idle_timeout 1s",
                 extra=f"cluster {{ node {name}; lease_ttl 3s; {cluster} }}")


def main():
    tmp = tempfile.mkdtemp(prefix="tls-test-tmp-")
    # The tunnel makes its private socket directory under TMPDIR.
    os.environ["TMPDIR"] = tmp
    ca = pki.PKI()
    other = pki.PKI(ca_name="Some Other CA")
    cert, key = ca.server_cert("localhost")
    wrong_cert, wrong_key = ca.server_cert("redis.elsewhere.test")
    ccert, ckey = ca.server_cert("postern-node", client=True)
    dns = dnspeer.start({"ad": False, "records": {}})
    sink = rawmx.RawMX("127.0.0.1", 0)
    redis = redispeer.RedisPeer(password="s3cret", tls={
        "cert": cert, "key": key, "ca": ca.ca_file, "auth_clients": True,
        "client_cert": ccert, "client_key": ckey})
    wrong = redispeer.RedisPeer(tls={
        "cert": wrong_cert, "key": wrong_key, "ca": ca.ca_file,
        "client_cert": ccert, "client_key": ckey, "check_hostname": False})
    nodes = []
    try:
        url = redis.url(password="s3cret")
        check(url.startswith("rediss://:s3cret@localhost:"), f"a rediss URL ({url})")

        # 1. Everything right: up, leases, node set, no file left.
        good = node(dns, sink, "t1",
                    f"redis {url}; redis_ca_file {ca.ca_file}; "
                    f"redis_cert_file {ccert}; redis_key_file {ckey}")
        nodes.append(good)
        good.wait_log(lambda e: e.get("event") == "cluster_redis_up", count=2,
                      timeout=30)
        sink.hold = threading.Event()
        for i in range(3):
            good.send("s@snd.test", [f"a{i}@x.test"], msg(f"good-{i}"))
        sink.wait_for(lambda: sink.held >= 2, timeout=30, what="two held")
        keys = redis.command("KEYS", "postern:conn:*")
        check(keys.startswith("*1"), f"tls: a lease key in Redis ({keys!r})")
        members = redis.command("ZCARD", "postern:nodes")
        check(members.startswith(":1"), f"tls: the node is in the node set ({members!r})")
        out = subprocess.run([QTOOL, "-c", good.conf, "cluster", "--json"],
                             capture_output=True, text=True, timeout=20)
        view = json.loads(out.stdout) if out.returncode == 0 else {}
        check([n["node"] for n in view.get("nodes", [])] == ["t1"] and
              len(view.get("leases", [{}])[0].get("holders", [])) == 2,
              f"tls: qtool cluster over TLS ({out.stdout[:300]} {out.stderr[-500:]})")
        sink.hold.set()
        sink.hold = None
        sink.wait(3, timeout=30)
        left = os.listdir(tmp)
        check(left == [], f"tls: the tunnel removed its socket and directory ({left})")
        good.close()
        nodes.remove(good)

        def refused(name, cluster, what, reason_has):
            r = node(dns, sink, name, cluster)
            nodes.append(r)
            ev = r.wait_log(lambda e: e.get("event") == "redis_tls_failed",
                            timeout=30)
            reason = ev[0].get("reason", "")
            check(reason_has in reason.lower(),
                  f"{what}: redis_tls_failed says why ({reason!r})")
            before = len(sink.messages)
            r.send("s@snd.test", ["z@x.test"], msg(f"{name}-mail"))
            sink.wait(before + 1, timeout=60)
            check(not any(e.get("event") == "cluster_redis_up" for e in r.events()),
                  f"{what}: never up")
            check("s3cret" not in "\n".join(r.lines()),
                  f"{what}: the password is never logged")
            r.close()
            nodes.remove(r)

        # 2. Redis wants a client certificate; none given.
        refused("t2", f"redis {url}; redis_ca_file {ca.ca_file}",
                "no client certificate", "certificate")
        # 3. Roots that did not issue Redis' certificate.
        refused("t3", f"redis {url}; redis_ca_file {other.ca_file}",
                "unknown CA", "certificate")
        # 4. Redis' certificate names another host.
        refused("t4", f"redis {wrong.url()}; redis_ca_file {ca.ca_file}",
                "wrong name", "localhost")
    finally:
        for r in nodes:
            r.close()
        sink.stop()
        redis.close()
        wrong.close()
        dns.stop()
        ca.cleanup()
        other.cleanup()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
