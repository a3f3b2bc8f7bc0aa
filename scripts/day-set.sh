#!/usr/bin/env bash
# The generated day set of N events (target/bench/day-N.jsonl): generated on
# first use (not committed), its path printed. Shared by the bench scripts.
#   input=$(scripts/day-set.sh 400000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: scripts/day-set.sh EVENTS}
f=target/bench/day-$n.jsonl
mkdir -p target/bench
[ -f "$f" ] || cargo run --release --quiet -p haechi-fixtures -- day --events "$n" --out "$f" >/dev/null
echo "$f"
