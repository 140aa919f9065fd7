"""dnssec_zone - real DNSSEC for Postern's tests: nsd serving test zones
signed with ldns-signzone, behind a validating unbound.

    import dnssec_zone
    zones = {
        "secure.test": {"signed": True, "records": [
            "@ MX 10 mx1",
            "mx1 A 127.0.0.11",
            "_2525._tcp.mx1 TLSA 3 1 1 ab12...",
        ], "bogus": [("_2525._tcp.mx1", "TLSA")]},
        "plain.test": {"signed": False, "records": ["@ MX 10 mx", "mx A 127.0.0.12"]},
    }
    with dnssec_zone.Fixture(zones) as dns:
        dns.port        # unbound's port on 127.0.0.1 (UDP and TCP)
        dns.nsd_port    # nsd's port (authoritative only, no AD bits)
        dns.query("mx1.secure.test", "A")  # dnspython answer via unbound
        dns.reload(new_zones)  # restart both on the same ports, new data

Records are zone-file lines relative to the zone's origin (`@` is the apex);
SOA and NS are added. A zone's "ttl" (default 300) is every record's TTL
and its negative TTL: zones a test changes with reload() while a relay
runs take a short one, since the relay caches answers for their TTL. Each signed zone gets its own ECDSA P-256 key from
ldns-keygen (a KSK that signs everything, as a combined signing key) and is
signed with ldns-signzone, inception one hour ago so clock skew cannot make
signatures "not yet valid". unbound gets that key as its trust anchor
(islands of security: there is no signed parent), so answers from the signed
zone validate (AD set) while the unsigned zone, which no anchor covers, is
insecure (AD clear).

`bogus` lists (owner, type) pairs whose RRSIG is corrupted after signing
(one byte of the signature flipped): unbound then answers SERVFAIL for
them, as a validating resolver must (RFC 4035 §5.5).

Both servers run on 127.0.0.1 on free unprivileged ports with their own
config, state and log files in a temp directory, never as daemons, and are
killed on exit. A benchmark may choose the addresses and ports
(`Fixture(zones, address="127.14.0.53", port=53, nsd_address=...,
nsd_port=...)`: a resolver that Postfix can use must be on port 53) and ask
for unbound's remote control on a unix socket in that directory
(`control=True`; then `dns.control("flush_zone", "x.test")` runs
unbound-control and `dns.stats()` returns its counters as a dict, e.g.
"total.num.queries", without resetting them). unbound forwards nothing: stub zones point at nsd for each
test zone and nothing else is reachable (`do-not-query-localhost: no` lets
it talk to nsd on loopback).

From the shell (prints ports as JSON, runs until SIGTERM/SIGINT):

    /usr/bin/python3 tests/peers/dnssec_zone.py ZONES.json
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

NSD = "/usr/sbin/nsd"
UNBOUND = "/usr/sbin/unbound"
UNBOUND_CONTROL = "/usr/sbin/unbound-control"
KEYGEN = "/usr/bin/ldns-keygen"
SIGNZONE = "/usr/bin/ldns-signzone"


def _free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(100):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            t.close()
            u.close()
        return port
    raise RuntimeError("no free port")



def on_common_port(starters):
    """Starts each (name, fn(port)) on one shared free port; retries.
    Returns (port, {name: started}); what was started is stopped when a
    later one cannot bind."""
    for _ in range(20):
        port = _free_port()
        started = {}
        try:
            for name, fn in starters:
                started[name] = fn(port)
            return port, started
        except OSError:
            for s in started.values():
                s.stop()
    raise RuntimeError("no common free port")

def _run(args, cwd):
    r = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s%s" % (" ".join(args), r.stdout, r.stderr))
    return r.stdout


def _corrupt(signed_path, origin, owner, rtype):
    """Flips one byte of the signature of the RRSIG covering (owner, rtype)."""
    fqdn = origin + "." if owner in ("@", "") else "%s.%s." % (owner, origin)
    out, hit = [], False
    with open(signed_path) as f:
        for line in f:
            parts = line.split()
            if (len(parts) > 12 and parts[0].lower() == fqdn.lower()
                    and parts[3] == "RRSIG" and parts[4] == rtype.upper()):
                sig = base64.b64decode("".join(parts[12:]))
                sig = bytes([sig[0] ^ 0x55]) + sig[1:]
                line = "\t".join(parts[:12] + [base64.b64encode(sig).decode()]) + "\n"
                hit = True
            out.append(line)
    if not hit:
        raise RuntimeError("no RRSIG %s for %s in %s" % (rtype, fqdn, signed_path))
    with open(signed_path, "w") as f:
        f.writelines(out)


class Fixture:
    def __init__(self, zones, directory=None, address="127.0.0.1", port=None,
                 nsd_address="127.0.0.1", nsd_port=None, control=False):
        self.dir = directory or tempfile.mkdtemp(prefix="postern-dnssec-")
        self._own = directory is None
        self.procs = []
        self.address, self.nsd_address = address, nsd_address
        self.nsd_port = nsd_port or _free_port()
        self.port = port or _free_port()
        self.control_enabled = control
        self.anchors = []
        try:
            self._zones(zones)
            self._start_nsd(zones)
            self._start_unbound(zones)
        except Exception:
            self.close()
            raise

    # -- zones ----------------------------------------------------------------
    def _zones(self, zones):
        zdir = os.path.join(self.dir, "zones")
        os.makedirs(zdir, exist_ok=True)
        self.zone_files = {}
        for origin, spec in zones.items():
            path = os.path.join(zdir, origin + ".zone")
            with open(path, "w") as f:
                # "ttl": every record's TTL and the negative TTL (default
                # 300 s). Tests that change a zone with reload() while a
                # relay runs give it a short one: the relay caches answers
                # for their TTL, as any resolver does.
                ttl = int(spec.get("ttl", 300))
                f.write("$ORIGIN %s.\n$TTL %d\n" % (origin, ttl))
                f.write("@ SOA ns.%s. hostmaster.%s. 1 3600 600 86400 %d\n"
                        % (origin, origin, ttl))
                f.write("@ NS ns.%s.\n" % origin)
                f.write("ns A 127.0.0.1\n")
                for rec in spec.get("records", []):
                    f.write(rec + "\n")
            if spec.get("signed"):
                base = _run([KEYGEN, "-a", "ECDSAP256SHA256", "-k", origin],
                            zdir).strip()
                now = int(time.time())
                _run([SIGNZONE, "-i", str(now - 3600), "-e", str(now + 30 * 86400),
                      "-f", path + ".signed", path, base], zdir)
                for owner, rtype in spec.get("bogus", []):
                    _corrupt(path + ".signed", origin, owner, rtype)
                with open(os.path.join(zdir, base + ".key")) as f:
                    self.anchors.append(f.read().split(";")[0].strip())
                path = path + ".signed"
            self.zone_files[origin] = path

    # -- nsd ------------------------------------------------------------------
    def _start_nsd(self, zones):
        d = os.path.join(self.dir, "nsd")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nsd.conf")
        with open(conf, "w") as f:
            f.write(
                "server:\n"
                "  ip-address: %s\n"
                "  port: %d\n"
                "  username: \"\"\n"
                "  chroot: \"\"\n"
                "  zonesdir: \"%s\"\n"
                "  database: \"\"\n"
                "  zonelistfile: \"%s/zone.list\"\n"
                "  xfrdfile: \"%s/xfrd.state\"\n"
                "  xfrdir: \"%s\"\n"
                "  pidfile: \"%s/nsd.pid\"\n"
                "  logfile: \"%s/nsd.log\"\n"
                "  server-count: 1\n"
                "  verbosity: 1\n"
                "remote-control:\n"
                "  control-enable: no\n"
                % (self.nsd_address, self.nsd_port, d, d, d, d, d, d))
            for origin, path in self.zone_files.items():
                f.write("zone:\n  name: \"%s\"\n  zonefile: \"%s\"\n" % (origin, path))
        self.procs.append(subprocess.Popen([NSD, "-d", "-c", conf],
                                           stdout=subprocess.DEVNULL,
                                           stderr=open(os.path.join(d, "nsd.err"), "w")))
        self._wait_port(self.nsd_address, self.nsd_port, "nsd",
                        os.path.join(d, "nsd.log"))

    # -- unbound --------------------------------------------------------------
    def _start_unbound(self, zones):
        d = os.path.join(self.dir, "unbound")
        os.makedirs(d, exist_ok=True)
        anchors = os.path.join(d, "anchors.key")
        with open(anchors, "w") as f:
            for a in self.anchors:
                f.write(a + "\n")
        conf = os.path.join(d, "unbound.conf")
        with open(conf, "w") as f:
            f.write(
                "server:\n"
                "  interface: %s\n"
                "  port: %d\n"
                "  do-ip6: no\n"
                "  username: \"\"\n"
                "  chroot: \"\"\n"
                "  directory: \"%s\"\n"
                "  pidfile: \"%s/unbound.pid\"\n"
                "  logfile: \"%s/unbound.log\"\n"
                "  use-syslog: no\n"
                "  do-daemonize: no\n"
                "  num-threads: 1\n"
                "  verbosity: 1\n"
                "  val-log-level: 2\n"
                "  module-config: \"validator iterator\"\n"
                "  do-not-query-localhost: no\n"
                "  access-control: 127.0.0.0/8 allow\n"
                "  qname-minimisation: no\n"
                # Answers keep the zone's (canonical) record order, so a
                # test can place records at the end of a large RRset.
                "  rrset-roundrobin: no\n"
                "  harden-dnssec-stripped: yes\n"
                "  val-permissive-mode: no\n"
                "  root-hints: \"\"\n"
                "  extended-statistics: yes\n"
                % (self.address, self.port, d, d, d))
            if self.anchors:
                f.write("  trust-anchor-file: \"%s\"\n" % anchors)
            # Names outside the test zones have nowhere to go.
            f.write("  local-zone: \".\" refuse\n")
            for origin in self.zone_files:
                f.write("  local-zone: \"%s.\" transparent\n" % origin)
                if not zones[origin].get("signed"):
                    f.write("  domain-insecure: \"%s\"\n" % origin)
            if self.control_enabled:
                f.write("remote-control:\n  control-enable: yes\n"
                        "  control-interface: \"%s/unbound.ctl\"\n"
                        "  control-use-cert: no\n" % d)
            else:
                f.write("remote-control:\n  control-enable: no\n")
            for origin in self.zone_files:
                f.write("stub-zone:\n  name: \"%s\"\n  stub-addr: %s@%d\n"
                        "  stub-prime: no\n"
                        % (origin, self.nsd_address, self.nsd_port))
        self.procs.append(subprocess.Popen([UNBOUND, "-d", "-c", conf],
                                           stdout=subprocess.DEVNULL,
                                           stderr=open(os.path.join(d, "unbound.err"), "w")))
        self.unbound_conf = conf
        self._wait_port(self.address, self.port, "unbound",
                        os.path.join(d, "unbound.log"))

    def _wait_port(self, address, port, what, log):
        deadline = time.time() + 20
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError("%s exited: %s" % (what, self._tail(log)))
            try:
                with socket.create_connection((address, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not listen on %d: %s" % (what, port, self._tail(log)))

    @staticmethod
    def _tail(path):
        out = ""
        for p in (path, path.rsplit(".", 1)[0] + ".err"):
            try:
                with open(p) as f:
                    out += f.read()[-2000:]
            except OSError:
                pass
        return out

    def reload(self, zones):
        """Serves new zone contents: both servers restart on the same ports
        (new keys for signed zones, an empty resolver cache)."""
        self._stop_procs()
        self.anchors = []
        self._zones(zones)
        self._start_nsd(zones)
        self._start_unbound(zones)

    def query(self, name, rtype):
        """Asks unbound (dnspython); returns (rcode text, AD bit, [rdata text])."""
        import dns.flags
        import dns.message
        import dns.query
        import dns.rcode
        q = dns.message.make_query(name, rtype, want_dnssec=True)
        q.flags |= dns.flags.AD
        r = dns.query.udp(q, self.address, port=self.port, timeout=5)
        if r.flags & dns.flags.TC:  # a large RRset: ask again over TCP
            r = dns.query.tcp(q, self.address, port=self.port, timeout=5)
        rd = [x.to_text() for rrset in r.answer for x in rrset
              if rrset.rdtype == dns.rdatatype.from_text(rtype)]
        return dns.rcode.to_text(r.rcode()), bool(r.flags & dns.flags.AD), rd

    def control(self, *args):
        """Runs unbound-control (Fixture(control=True)); returns its output."""
        r = subprocess.run([UNBOUND_CONTROL, "-c", self.unbound_conf] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("unbound-control %s: %s%s"
                               % (" ".join(args), r.stdout, r.stderr))
        return r.stdout

    def stats(self):
        """unbound's counters (name -> number), not reset by reading."""
        out = {}
        for line in self.control("stats_noreset").splitlines():
            k, _, v = line.partition("=")
            try:
                out[k] = float(v)
            except ValueError:
                pass
        return out

    def pids(self):
        """{"nsd": pid, "unbound": pid} of the running servers."""
        return dict(zip(("nsd", "unbound"), (p.pid for p in self.procs)))

    def close(self):
        self._stop_procs()
        if self._own:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_procs(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: dnssec_zone.py ZONES.json\n")
        return 2
    with open(argv[1]) as f:
        zones = json.load(f)
    fx = Fixture(zones)
    print(json.dumps({"port": fx.port, "nsd_port": fx.nsd_port, "dir": fx.dir}),
          flush=True)
    done = []
    signal.signal(signal.SIGTERM, lambda *_: done.append(1))
    signal.signal(signal.SIGINT, lambda *_: done.append(1))
    try:
        while not done:
            time.sleep(0.2)
    finally:
        fx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
