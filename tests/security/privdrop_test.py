"""Privilege drop: started as root with `user nobody`, postern binds its
listener, then runs as nobody (every Uid and Gid in /proc/PID/status, no
supplementary groups of root), owns its state directory, and still
accepts, queues and delivers mail, also after a restart.

It runs outside Bazel (tests/outside/privdrop.sh): Bazel's linux-sandbox maps
only root into its user namespace, where no process can become nobody, so
inside it this test could only ever skip. Skipped (with a SKIP line, which
tools/test counts as skipped) only when not running as root; as root, a
machine where no process can become nobody is a failure, not a skip.

Usage: privdrop_test.py POSTERN QTOOL
"""

import os
import pwd
import subprocess
import sys

import dnspeer
import faultkit as fk
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]


class OpenRelay(Relay):
    """The temp directory must be searchable by nobody."""

    def start(self):
        os.chmod(self.dir, 0o755)
        super().start()


def ids(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            k, _, v = l.partition(":")
            if k in ("Uid", "Gid", "Groups"):
                out[k] = v.split()
    return out


def main():
    if os.geteuid() != 0:
        print("SKIP: not running as root, so there is no privilege to drop", flush=True)
        fk.finish()
    nobody = pwd.getpwnam("nobody")
    # As root the switch must work: a failure here is a failure of the
    # environment the relay promises to run in, not a reason to skip.
    probe = subprocess.run(
        [sys.executable, "-c",
         f"import os; os.setgroups([]); os.setgid({nobody.pw_gid}); os.setuid({nobody.pw_uid})"],
        capture_output=True)
    if probe.returncode != 0:
        why = probe.stderr.decode(errors="replace").strip().splitlines()[-1:]
        fk.check(False, f"as root, a process can switch to uid {nobody.pw_uid}: {why}")
        fk.finish()
    dns = dnspeer.start({"records": {}})
    sink = fk.Sink()
    try:
        with OpenRelay(POSTERN, dns.port, top="user nobody",
                       delivery=f"route * 127.0.0.1:{sink.port}") as r:
            st = ids(r.pid)
            print(f"/proc/{r.pid}/status: {st}", flush=True)
            fk.check(st["Uid"] == [str(nobody.pw_uid)] * 4,
                     f"every uid is nobody ({nobody.pw_uid}): {st['Uid']}")
            fk.check(st["Gid"] == [str(nobody.pw_gid)] * 4,
                     f"every gid is nobody's group ({nobody.pw_gid}): {st['Gid']}")
            fk.check("0" not in st.get("Groups", []), f"no root group kept: {st.get('Groups')}")
            fk.check(any(e.get("event") == "privileges_dropped" for e in r.events()),
                     "privileges_dropped is logged")
            fk.check(os.stat(r.state).st_uid == nobody.pw_uid, "the state directory belongs to nobody")
            r.send("s@snd.test", ["u@far.test"], fk.message("priv1"))
            fk.check(fk.wait_until(lambda: "priv1" in sink.ids(), 20),
                     "as nobody: mail accepted, queued and delivered")
            fk.check(r.stop() == 0, "SIGTERM: exit 0")
            r.start()
            fk.check(ids(r.pid)["Uid"] == [str(nobody.pw_uid)] * 4, "after a restart: nobody again")
            r.send("s@snd.test", ["u@far.test"], fk.message("priv2"))
            fk.check(fk.wait_until(lambda: "priv2" in sink.ids(), 20),
                     "after a restart: the queue opens and mail flows")
            fk.check(r.stop() == 0, "SIGTERM: exit 0")
    finally:
        sink.stop()
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
