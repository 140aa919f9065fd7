"""Drives the `postern` binary's configuration handling from the outside.

Checks: the example config passes --check and its printed effective
configuration re-reads to the same text; errors come out as
FILE:LINE:COL: message with exit status 1 (an error at line 7 column 3 in
several flavours); {env:} substitution; --version, --help and usage errors;
the man page renders with man -l without warnings; the man page and the
example state each directive's default (and the man page its range) as
`postern --directives` reports them from the schema.

usage: postern_cli_test.py POSTERN EXAMPLE_CONF MAN_PAGE
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

POSTERN, EXAMPLE, MANPAGE = (os.path.abspath(p) for p in sys.argv[1:4])
failures = 0


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1
        if detail:
            print("     " + detail.replace("\n", "\n     "))


def run(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([POSTERN, *args], capture_output=True, env=e,
                       timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace"), \
        p.stderr.decode("utf-8", "replace")


tmp = tempfile.mkdtemp(prefix="postern_cli_")


def write(name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    return path


def body(text):
    """The printed config without its first line (which names the file)."""
    return text.split("\n", 1)[1] if "\n" in text else ""


# --- the example passes --check, and its output re-reads identically -----
rc, out, err = run("-c", EXAMPLE, "--check")
check(rc == 0, "example config: --check exits 0", err)
check(err == "", "example config: nothing on stderr", err)
check(out.startswith("# Effective configuration of " + EXAMPLE),
      "output starts with a header naming the file", out[:200])
check("state_dir /var/tmp/postern\n" in out, "example's state_dir printed")
check("listen 127.0.0.1:2525 {\n" in out, "example's listener printed")
check("  retry_max 1h\n" in out and "  map_size 16G\n" in out,
      "defaults filled in")
m = re.search(r"^  workers (\d+)$", out, re.M)
check(m is not None and int(m.group(1)) == os.cpu_count(),
      "workers 0 printed as the number of cores (%s)" % os.cpu_count(),
      m.group(0) if m else out)

printed = write("printed.conf", out)
rc2, out2, err2 = run("-c", printed, "--check")
check(rc2 == 0, "printed config passes --check", err2)
check(body(out2) == body(out), "printed config re-reads to the same config",
      out2)

rc, out_long, _ = run("--config=" + EXAMPLE, "-n")
check(rc == 0 and body(out_long) == body(out),
      "--config=FILE and -n are accepted")

# --- errors: FILE:7:3: message, exit status 1 ------------------------------
head = "# line 1\n# line 2\nstate_dir /var/tmp/p\n\n"  # lines 1-4
cases = [
    ("unknown directive",
     head + "listen 127.0.0.1:2525 {\n  max_sessions 10\n  bogus 1\n}\n",
     "unknown directive 'bogus' in the listen block"),
    ("misspelt directive",
     head + "listen 127.0.0.1:2525 {\n  max_sessions 10\n  max_sesions 1\n}\n",
     "unknown directive 'max_sesions' in the listen block; did you mean "
     "'max_sessions'?"),
    ("duplicate",
     head + "listen 127.0.0.1:2525 {\n  timeout 1m\n  timeout 2m\n}\n",
     "duplicate 'timeout' (first at line 6)"),
    ("unterminated string",
     head + "listen 127.0.0.1:2525\n\n  \"open\n",
     "unterminated string (strings end on the same line)"),
    ("stray brace",
     head + "listen 127.0.0.1:2525\nqueue {\n  { }\n}\n",
     "'{' must follow a directive name"),
    ("unclosed block",
     head + "listen 127.0.0.1:2525\n\nq {\n",
     "block opened here is never closed (missing '}')"),
    ("NUL byte",
     head + "listen 127.0.0.1:2525\n\n  \0\n",
     "NUL byte in the file"),
    ("range",
     head + "listen 127.0.0.1:2525\n\n  queue { retry_factor 11 }\n",
     None),
]
for name, text, msg in cases:
    path = write("err.conf", text)
    rc, out, err = run("-c", path, "--check")
    lines = err.strip("\n").split("\n")
    if msg is None:  # positioned elsewhere on line 7: check the prefix only
        ok = rc == 1 and re.match(re.escape(path) + r":7:\d+: ", lines[0])
        check(bool(ok) and len(lines) == 1,
              "%s: exit 1 with %s:7:COL: ..." % (name, path), err)
        continue
    want = "%s:7:3: %s" % (path, msg)
    check(rc == 1 and lines == [want] and out == "",
          "%s: exit 1 with '%s'" % (name, want),
          "rc=%d stderr=%r" % (rc, err))
    # Without --check the same file is refused the same way.
    rc, out, err = run("-c", path)
    check(rc == 1 and err.strip("\n") == want,
          "%s: refused without --check too" % name, err)

rc, out, err = run("-c", os.path.join(tmp, "missing.conf"), "--check")
check(rc == 1 and err.startswith(os.path.join(tmp, "missing.conf") +
                                 ": cannot open: "),
      "missing file: exit 1 and says so", err)

path = write("garbage.conf", bytes(range(256)) * 64)
rc, out, err = run("-c", path, "--check")
check(rc == 1 and err.startswith(path + ":1:"),
      "binary garbage: exit 1 with a position", err)

path = write("deep.conf", "a{" * 10000)
rc, out, err = run("-c", path, "--check")
check(rc == 1 and err.strip() == path + ":1:18: blocks nested more than 8 deep",
      "10,000 nested blocks: exit 1, clear error", err)

path = write("empty.conf", "")
rc, out, err = run("-c", path, "--check")
check(rc == 1 and err.strip() == path + ":1:1: no 'listen' directive: at "
      "least one listener is required", "empty file: exit 1", err)

if not os.path.exists("/etc/postern/postern.conf"):
    rc, out, err = run("--check")
    check(rc == 1 and err.startswith("/etc/postern/postern.conf: cannot open"),
          "default path is /etc/postern/postern.conf", err)

# --- environment substitution ---------------------------------------------
path = write("env.conf", "listen 127.0.0.1:{env:PT_PORT}\n"
             "state_dir \"{env:PT_DIR}/q\"\n")
rc, out, err = run("-c", path, "--check",
                   env={"PT_PORT": "2600", "PT_DIR": "/srv/p t"})
check(rc == 0 and "listen 127.0.0.1:2600 {" in out and
      'state_dir "/srv/p t/q"' in out, "{env:NAME} substituted", err + out)
rc, out, err = run("-c", path, "--check", env={"PT_PORT": "2600"})
check(rc == 1 and err.strip() == path + ":2:12: environment variable PT_DIR "
      "is not set", "unset variable is an error naming it", err)

# --- options ----------------------------------------------------------------
rc, out, err = run("--version")
check(rc == 0 and re.fullmatch(r"postern \d+\.\d+\.\d+\n", out),
      "--version prints the version", out)
rc, out, err = run("--help")
check(rc == 0 and "-c, --config FILE" in out and "--check" in out and
      "/etc/postern/postern.conf" in out, "--help describes the options", out)
rc, out, err = run("--bogus")
check(rc == 2 and "unknown option" in err, "unknown option: exit 2", err)
rc, out, err = run("-c")
check(rc == 2 and "needs an argument" in err, "-c without FILE: exit 2", err)
rc, out, err = run("-c", EXAMPLE, "extra")
check(rc == 2, "stray argument: exit 2", err)

# --- documentation covers every directive ------------------------------------
full = write("full.conf", "listen 127.0.0.1:1\nmetrics { listen 127.0.0.1:2 }\n"
             "tlsrpt { }\n"
             "cluster { redis redis://127.0.0.1; node n1 }\n"
             "destination example.com { tls_fingerprint sha256:" + "00" * 32 +
             "; tls_names mx.example.com }\n"
             "policy { local; mtasts; dnssec; dane }\n")
rc, out, err = run("-c", full, "--check")
check(rc == 0, "config with every module passes", err)
names = set()
for line in out.splitlines()[1:]:
    words = line.strip().lstrip("# ").split()
    if words and words[0] != "}":
        names.add(words[0])
check(len(names) >= 45, "printer shows all directives (%d)" % len(names),
      " ".join(sorted(names)))

env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80")
p = subprocess.run(["man", "-l", MANPAGE], capture_output=True, env=env,
                   timeout=60)
page = p.stdout.decode("utf-8", "replace")
check(p.returncode == 0 and "POSTERN.CONF(5)" in page,
      "man -l renders the man page", p.stderr.decode())
p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", MANPAGE],
                   capture_output=True, timeout=60)
check(p.returncode == 0 and p.stderr == b"", "groff reports no warnings",
      p.stderr.decode())
with open(EXAMPLE) as f:
    example = f.read()
for n in sorted(names):
    check(re.search(r"(^|\s)%s\b" % re.escape(n), page, re.M) is not None,
          "man page describes '%s'" % n)

# --- documentation agrees with the schema ------------------------------------
# `postern --directives` prints the schema itself (name, arguments, default,
# range, purpose); the man page must state the same default and range under
# the right section, and the example must show each default.
rc, out, err = run("--directives")
rows = [line.split("\t") for line in out.splitlines()]
check(rc == 0 and all(len(r) == 5 and r[4] for r in rows) and
      {r[0].split(".")[-1] for r in rows} == names,
      "--directives lists %d directives, each with a description" % len(rows),
      out)
p = subprocess.run(["groff", "-man", "-Tutf8", "-rLL=200n", "-rHY=0",
                    "-P-cbou", MANPAGE], capture_output=True, timeout=60)
plain = p.stdout.decode("utf-8", "replace")
for a, b in (("\u2212", "-"), ("\u2010", "-"), ("\u2019", "'")):
    plain = plain.replace(a, b)
sections = {}
current = None
for line in plain.splitlines():
    if re.match(r"^[A-Z][A-Z -]+$", line):
        current = line.strip()
        sections[current] = []
    elif current:
        sections[current].append(line)
section_of = {"": "TOP-LEVEL DIRECTIVES", "listen": "LISTEN BLOCK",
              "queue": "QUEUE BLOCK", "delivery": "DELIVERY BLOCK",
              "dns": "DNS BLOCK", "tls": "TLS BLOCK", "policy": "POLICY BLOCK",
              "log": "LOG BLOCK", "metrics": "METRICS BLOCK",
              "tlsrpt": "TLSRPT BLOCK", "cluster": "CLUSTER BLOCK",
              "destination": "DESTINATION BLOCK"}


def man_entry(full):
    """The text the man page gives for directive `full`, or None."""
    parts = full.split(".")
    lines = sections.get(section_of["" if len(parts) == 1 else parts[0]], [])
    leaf = parts[-1]
    for i, line in enumerate(lines):
        m = re.match(r"^( +)%s( |$)" % re.escape(leaf), line)
        if not m or len(m.group(1)) > 14:
            continue
        ind = len(m.group(1))
        j = i + 1
        while j < len(lines) and lines[j].strip() and \
                len(lines[j]) - len(lines[j].lstrip()) == ind:
            j += 1  # tags sharing one paragraph (.TQ)
        body = []
        while j < len(lines) and (not lines[j].strip() or
                                  len(lines[j]) - len(lines[j].lstrip()) > ind):
            body.append(lines[j])
            j += 1
        return " ".join(" ".join(body).split())
    return None


for name, synopsis, default, rng, purpose in (r for r in rows if len(r) == 5):
    leaf = name.split(".")[-1]
    text = man_entry(name)
    check(text is not None, "man page has an entry for %s" % name)
    if text is None or synopsis == "" or synopsis.startswith("{") or \
            default == "":
        continue  # sections, modules, listen: their entries were found
    if default.startswith("unset: "):
        why = default[len("unset: "):]
        ok = ("Default: not set" in text or ("Default: " + why) in text or
              (why == "required" and "Required" in text))
        check(ok, "man page: %s is unset by default" % name, text)
        ok = re.search(r"^\s*#\s*%s\b" % re.escape(leaf), example, re.M)
        check(ok is not None, "example shows %s (commented out)" % name)
    else:
        check(("Default: " + default) in text,
              "man page: %s defaults to %s" % (name, default), text)
        ok = re.search(r"^\s*#?\s*%s\s+%s(\s|$)" %
                       (re.escape(leaf), re.escape(default)), example, re.M)
        check(ok is not None, "example shows %s %s" % (leaf, default))
    if rng:
        lo, hi = rng.split("..")
        check("Range %s to %s" % (lo, hi) in text,
              "man page: %s range %s to %s" % (name, lo, hi), text)

shutil.rmtree(tmp, ignore_errors=True)
print("%d failure(s)" % failures)
sys.exit(1 if failures else 0)
