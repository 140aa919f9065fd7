#!/usr/bin/env bash
# The short fuzzing run of tools/test: every libFuzzer target in tests/fuzz/
# first replays its regression inputs (tests/fuzz/regressions/TARGET/), then
# fuzzes from its checked-in seed corpus for 10 s (60 s when POSTERN_LONG=1,
# as tools/test --long sets it; POSTERN_FUZZ_SECONDS overrides both). Prints
# libFuzzer's execution count and rate per target and exits non-zero on any
# finding (crash, leak, UBSan error, timeout, out-of-memory), naming the
# reproducer. Longer runs of one target: tools/fuzz TARGET SECONDS.
set -uo pipefail
cd "$(dirname "$0")/../.."

if ! command -v clang >/dev/null; then
  echo "fuzz.sh: clang is not installed (tools/setup installs it)"
  exit 1
fi
secs=10
[ "${POSTERN_LONG:-0}" = 1 ] && secs=60
secs=${POSTERN_FUZZ_SECONDS:-$secs}
echo "fuzz.sh: every target for ${secs} s"
exec tools/fuzz --all "$secs"
