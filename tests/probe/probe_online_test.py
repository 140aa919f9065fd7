"""postern-probe DOMAIN: the relay's MX loop run against scripted DNS and
real STARTTLS peers, without sending mail.

Usage: probe_online_test.py POSTERN_PROBE
"""

import json
import os
import subprocess
import sys
import tempfile

import dnspeer
import mxpeer
import pki
import smtpd_peer

PROBE = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def probe(conf, domain, *extra):
    p = subprocess.run([PROBE, "-c", conf, "--json", *extra, domain],
                       capture_output=True, timeout=60)
    try:
        return p.returncode, json.loads(p.stdout), p
    except ValueError:
        return p.returncode, None, p


def main():
    tmp = tempfile.mkdtemp(prefix="probe", dir=os.environ.get("TEST_TMPDIR"))
    with pki.PKI() as ca:
        port = mxpeer.free_port("127.0.0.2")
        good_crt, good_key = ca.server_cert("mx2.p.test")
        self_crt, self_key = ca.server_cert("mx3.p.test", self_signed=True)
        good = smtpd_peer.Peer(host="127.0.0.2", port=port,
                               tls_cert=good_crt, tls_key=good_key)
        selfsigned = smtpd_peer.Peer(host="127.0.0.3", port=port,
                                     tls_cert=self_crt, tls_key=self_key)
        plain = smtpd_peer.Peer(host="127.0.0.5", port=port)
        zone = {"ad": False, "records": {
            # MX 5 refuses connections, MX 10 is fine with a valid cert
            "p.test": {"MX": [[5, "dead.p.test"], [10, "mx2.p.test"]]},
            "dead.p.test": {"A": ["127.0.0.4"]},
            "mx2.p.test": {"A": ["127.0.0.2"]},
            "self.test": {"MX": [[10, "mx3.p.test"]]},
            "mx3.p.test": {"A": ["127.0.0.3"]},
            "plain.test": {"MX": [[10, "mx5.p.test"]]},
            "mx5.p.test": {"A": ["127.0.0.5"]},
            "nullmx.test": {"MX": [[0, "."]]},
        }}
        dns = dnspeer.start(zone)
        try:
            def conf(policy):
                path = os.path.join(tmp, "p.conf")
                with open(path, "w") as f:
                    f.write(f"hostname probe.test\nstate_dir {tmp}/state\n"
                            "listen 127.0.0.1:0\n"
                            f"dns {{ servers 127.0.0.1:{dns.port}; timeout 1s; attempts 1 }}\n"
                            f"delivery {{ port {port}; connect_timeout 2s }}\n"
                            f"tls {{ ca_file {ca.ca_file} }}\n"
                            f"policy {{ {policy} }}\n")
                return path

            c = conf("local")
            rc, res, p = probe(c, "p.test")
            check(res is not None, "JSON output (%s)" % p.stderr.decode()[-300:])
            if res:
                check(rc == 0 and res["verdict"] == "deliver", "p.test: would deliver")
                hosts = [m["host"] for m in res["mx"]]
                check(hosts == ["dead.p.test", "mx2.p.test"],
                      f"every MX reported in preference order ({hosts})")
                dead, mx2 = res["mx"]
                check(not dead["acceptable"] and dead["status"].startswith("4.")
                      and "127.0.0.4" in dead["reason"], "refused MX: temporary, with reason")
                check(mx2["acceptable"] and mx2["tls_level"] == "authenticated"
                      and "starttls=done" in mx2["tls"],
                      "valid certificate: tls_level authenticated")
                check(mx2["addresses"] == [f"127.0.0.2:{port}"], "addresses listed")
            check(good.messages == [], "no mail was sent")

            rc, res, _ = probe(conf("local { min_tls_level authenticated }"), "self.test")
            check(rc == 1 and res and res["verdict"] == "defer"
                  and res["mx"][0]["tls_level"] == "encrypted"
                  and res["status"] == "4.7.5",
                  "self-signed with min_tls_level authenticated: defer 4.7.5")
            rc, res, _ = probe(conf("local"), "self.test")
            check(rc == 0 and res["mx"][0]["tls_level"] == "encrypted",
                  "self-signed, opportunistic: deliver encrypted")
            rc, res, _ = probe(conf("local { min_tls_level encrypted }"), "plain.test")
            check(rc == 1 and res["mx"][0]["tls_level"] == "none"
                  and res["verdict"] == "defer", "plaintext peer, encrypted required: defer")
            rc, res, _ = probe(conf("local"), "nullmx.test")
            check(rc == 1 and res["verdict"] == "bounce" and res["status"] == "5.1.10",
                  "null MX: bounce 5.1.10")
            rc, res, _ = probe(conf("local"), "nx.test")
            check(rc == 1 and res["verdict"] == "bounce", "NXDOMAIN: bounce")
            p = subprocess.run([PROBE, "-c", c, "p.test"], capture_output=True, timeout=60)
            out = p.stdout.decode()
            check(p.returncode == 0 and "verdict: would deliver to mx2.p.test" in out
                  and "MX 10 mx2.p.test" in out, "text output")
            p = subprocess.run([PROBE, "-c", os.path.join(tmp, "none.conf"), "p.test"],
                               capture_output=True, timeout=60)
            check(p.returncode == 2 and b"none.conf" in p.stderr, "missing config: exit 2")
            p = subprocess.run([PROBE], capture_output=True, timeout=60)
            check(p.returncode == 2, "no domain: usage error")
        finally:
            dns.stop()
            for s in (good, selfsigned, plain):
                s.stop()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


main()
