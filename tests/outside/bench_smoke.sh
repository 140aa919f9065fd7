#!/usr/bin/env bash
# The benchmark harnesses still work: a tiny tools/bench/relay run (Postern
# only) and a tiny tools/bench/queue-scale run, both on the default build,
# must deliver every message exactly once and write their JSON. Speed is not
# checked here (benchmarks measure it; tests assert behaviour).
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

tools/bench/relay --fastbuild --only postern --runs 1 -n 300 \
  --variant 'queue commit_interval 0; chain_threshold 0' \
  --json "$tmp/relay.json" >"$tmp/relay.out" 2>&1 ||
  { cat "$tmp/relay.out"; exit 1; }
tools/bench/queue-scale --fastbuild --count 3000 -n 300 --runs 1 \
  --json "$tmp/scale.json" >"$tmp/scale.out" 2>&1 ||
  { cat "$tmp/scale.out"; exit 1; }

python3 - "$tmp/relay.json" "$tmp/scale.json" <<'PY'
import json, sys
relay = json.load(open(sys.argv[1]))
scale = json.load(open(sys.argv[2]))
bad = []
for name, runs in relay["runs"].items():
    for r in runs:
        if not r.get("counts_match") or r.get("sink_messages") != 300:
            bad.append(f"relay {name}: {r.get('sink_messages')} messages, "
                       f"counts_match={r.get('counts_match')}")
if set(relay["runs"]) != {"postern", "postern[queue commit_interval 0; chain_threshold 0]"}:
    bad.append(f"relay: unexpected systems {sorted(relay['runs'])}")
print("relay:", {k: [r["end_to_end_msgs"] for r in v] for k, v in relay["runs"].items()})
print("scale:", json.dumps(scale)[:400])
if bad:
    print("\n".join(bad))
    sys.exit(1)
PY
