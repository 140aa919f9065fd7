#!/usr/bin/env bash
# tools/setup on a machine it has never seen, without touching the machine:
# shims on PATH stand in for dpkg-query (which packages are installed),
# apt-get (records its calls, can be told to fail) and debconf-set-selections,
# and POSTERN_POLICY_RC_D points the policy-rc.d guard at a file of the
# test's own. Cases:
#   1. packages missing, no policy-rc.d before: exit 0; during apt-get the
#      guard exists and refuses service starts (exit 101); afterwards it is
#      gone again;
#   2. packages missing, a policy-rc.d already there (every container image
#      has one): exit 0, and the existing file is untouched (the first-run
#      failure: the EXIT trap ended in a false test under set -e);
#   3. apt-get fails: setup fails, and a guard it made is removed;
#   4. nothing missing: exit 0 and apt-get is never called.
set -uo pipefail

setup=${1:-tools/setup}
[ -x "$setup" ] || { echo "FAIL: $setup is not executable"; exit 1; }
setup=$(cd "$(dirname "$setup")" && pwd)/$(basename "$setup")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
shims=$tmp/bin
mkdir -p "$shims"
failures=0

check() {
  if eval "$1"; then
    echo "ok   $2"
  else
    echo "FAIL $2"
    failures=$((failures + 1))
  fi
}

# dpkg-query -W -f='${Status}' PKG: "installed" unless PKG is listed in
# $tmp/missing.
cat >"$shims/dpkg-query" <<EOF
#!/usr/bin/env bash
pkg=\${@: -1}
if grep -qx "\$pkg" "$tmp/missing" 2>/dev/null; then
  exit 1
fi
printf 'install ok installed'
EOF
# apt-get: logs its arguments and the guard's state at that moment; fails
# when $tmp/apt-fail exists.
cat >"$shims/apt-get" <<EOF
#!/usr/bin/env bash
echo "apt-get \$*" >>"$tmp/apt.log"
if [ -x "\$POSTERN_POLICY_RC_D" ]; then
  "\$POSTERN_POLICY_RC_D" nsd start
  echo "guard=\$?" >>"$tmp/apt.log"
else
  echo "guard=absent" >>"$tmp/apt.log"
fi
[ -e "$tmp/apt-fail" ] && exit 100
exit 0
EOF
printf '#!/bin/sh\ncat >/dev/null\n' >"$shims/debconf-set-selections"
# id -u: root, so that setup does not reach for sudo.
printf '#!/bin/sh\n[ "$1" = -u ] && { echo 0; exit 0; }\nexec /usr/bin/id "$@"\n' >"$shims/id"
chmod 755 "$shims"/*

run_setup() {
  rm -f "$tmp/apt.log"
  PATH="$shims:$PATH" POSTERN_POLICY_RC_D="$tmp/policy-rc.d" \
    "$setup" >"$tmp/out" 2>&1
}

# 1. No policy-rc.d before.
echo "nsd" >"$tmp/missing"
rm -f "$tmp/policy-rc.d"
run_setup
rc=$?
check '[ $rc -eq 0 ]' "missing packages, no policy-rc.d: exit 0 (got $rc: $(tr '\n' ' ' <"$tmp/out"))"
check 'grep -q "install .*nsd" "$tmp/apt.log"' "apt-get installs the missing package"
check 'grep -qx "guard=101" "$tmp/apt.log"' "service starts are refused during the install"
check '[ ! -e "$tmp/policy-rc.d" ]' "the temporary policy-rc.d is removed afterwards"

# 2. A policy-rc.d that was there before.
printf '#!/bin/sh\n# the image'"'"'s own\nexit 101\n' >"$tmp/policy-rc.d"
chmod 755 "$tmp/policy-rc.d"
cp "$tmp/policy-rc.d" "$tmp/policy-rc.d.orig"
run_setup
rc=$?
check '[ $rc -eq 0 ]' "missing packages, policy-rc.d present: exit 0 (got $rc: $(tr '\n' ' ' <"$tmp/out"))"
check 'cmp -s "$tmp/policy-rc.d" "$tmp/policy-rc.d.orig"' "the existing policy-rc.d is left as it was"

# 3. apt-get fails.
rm -f "$tmp/policy-rc.d"
touch "$tmp/apt-fail"
run_setup
rc=$?
check '[ $rc -ne 0 ]' "a failed install fails setup (got $rc)"
check '[ ! -e "$tmp/policy-rc.d" ]' "the temporary policy-rc.d is removed after a failed install"
rm -f "$tmp/apt-fail"

# 4. Nothing missing.
: >"$tmp/missing"
run_setup
rc=$?
check '[ $rc -eq 0 ]' "nothing missing: exit 0 (got $rc)"
check '[ ! -e "$tmp/apt.log" ]' "nothing missing: apt-get is not called"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
