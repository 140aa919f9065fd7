#!/usr/bin/env bash
# The benchmark harnesses still work: a tiny tools/bench/relay run (Postern
# only), a tiny tools/bench/queue-scale run and a tiny tools/bench/delivery
# run (Postern only: 50 domains, 300 messages over DANE, MTA-STS and
# opportunistic TLS), all on the default build, must deliver every message
# exactly once and write their JSON; the delivery run must also rank every
# DANE and MTA-STS delivery as expected. Speed is not checked here
# (benchmarks measure it; tests assert behaviour). The delivery bench needs
# root (ports 25/53/443 on 127.14.x.y); without root it is skipped.
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

if [ "$(id -u)" -eq 0 ]; then
  tools/bench/delivery --fastbuild --only postern --runs 1 --domains 50 -n 300 \
    --json "$tmp/delivery.json" >"$tmp/delivery.out" 2>&1 ||
    { cat "$tmp/delivery.out"; exit 1; }
else
  echo "SKIP tools/bench/delivery: needs root"
fi

python3 - "$tmp/relay.json" "$tmp/scale.json" "$tmp/delivery.json" <<'PY'
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
try:
    delivery = json.load(open(sys.argv[3]))
except FileNotFoundError:
    delivery = None
if delivery is not None:
    runs = delivery["runs"].get("postern", [])
    if len(runs) != 1:
        bad.append(f"delivery: {len(runs)} postern runs")
    for r in runs:
        if not (r.get("exact") and r.get("sink_recipients") == 300
                and r.get("levels_as_expected") and r.get("deferred") == 0):
            bad.append("delivery postern: " + json.dumps(
                {k: r.get(k) for k in ("sink_recipients", "missing", "duplicates",
                                       "levels_as_expected", "deferred",
                                       "verdicts", "warnings")}))
        if not r.get("https_policy_fetches") or not r.get("dns_queries"):
            bad.append("delivery postern: no policy fetch or DNS query counted")
    print("delivery:", [(r["end_to_end_msgs"], r["verdicts"]) for r in runs])
print("scale:", json.dumps(scale)[:400])
if bad:
    print("\n".join(bad))
    sys.exit(1)
PY
