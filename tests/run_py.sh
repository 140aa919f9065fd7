#!/usr/bin/env bash
# Runs one Python integration test under Bazel with Debian's interpreter (the
# test peers, aiosmtpd and dnspython, are Debian packages importable only by
# /usr/bin/python3) and with tests/peers on the module path.
set -euo pipefail
root="${TEST_SRCDIR:-$PWD}/${TEST_WORKSPACE:-postern}"
[ -d "$root" ] || root="$PWD"
export PYTHONPATH="$root/tests/peers${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
script=$1
shift
exec /usr/bin/python3 "$script" "$@"
