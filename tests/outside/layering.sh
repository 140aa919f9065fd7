#!/usr/bin/env bash
# The module rule of DESIGN.md is enforced by the build, not by review:
# queue/, net/ and policy/ never depend on engine/; queue/ and net/ never
# on each other; net/ and queue/ never on policy/. For each forbidden edge
# a throw-away package inside the depending module asks for the other
# module's library, and `bazel build` must refuse it as "not visible". An
# allowed edge (policy/ -> net/) is built the same way and must succeed,
# so the check cannot pass by failing for another reason.
set -uo pipefail
cd "$(dirname "$0")/../.."

probes=()
cleanup() { rm -rf "${probes[@]}"; }
trap cleanup EXIT

failures=0
# probe FROM_DIR TARGET EXPECT(refused|allowed)
probe() {
  local from=$1 target=$2 expect=$3
  local dir="$from/zz_layering_probe"
  probes+=("$dir")
  mkdir -p "$dir"
  printf 'int layering_probe(void) { return 0; }\n' >"$dir/probe.c"
  cat >"$dir/BUILD.bazel" <<BUILD
cc_library(
    name = "probe",
    srcs = ["probe.c"],
    deps = ["$target"],
)
BUILD
  local out
  out=$(bazel build "//$dir:probe" 2>&1)
  local rc=$?
  if [ "$expect" = refused ]; then
    if [ $rc -ne 0 ] && grep -q "is not visible" <<<"$out"; then
      echo "ok   $from/ may not depend on $target"
    else
      echo "FAIL $from/ may depend on $target (rc=$rc)"
      failures=$((failures + 1))
    fi
  else
    if [ $rc -eq 0 ]; then
      echo "ok   $from/ may depend on $target"
    else
      echo "FAIL $from/ cannot depend on $target: $(grep -m1 ERROR <<<"$out")"
      failures=$((failures + 1))
    fi
  fi
  rm -rf "$dir"
}

probe queue //engine:relay refused
probe net //engine:relay refused
probe policy //engine:relay refused
probe queue //net:dns refused
probe net //queue refused
probe net //policy refused
probe queue //policy refused
probe policy //queue refused
probe policy //net:dns allowed
probe engine //queue allowed

if [ "$failures" -ne 0 ]; then
  echo "$failures layering check(s) failed"
  exit 1
fi
echo "all layering checks passed"
