#!/usr/bin/env bash
# Profile the history criterion bench (issue 6's cycles) with perf, and
# print where the measured routine's samples went: only samples inside
# criterion's `iter_batched` count, so the million-seller setup (about half
# of the run) stays out of the shares.
#
#   scripts/profile-history-bench.sh [-d] [-t SECONDS]
#     -d  the default store (records in sled) instead of resident_history
#     -t  seconds criterion runs the routine for (default 10)
#
# Leaves target/profile-bench/perf.txt for scripts/perf-threads.py, e.g.
#   scripts/perf-threads.py --only iter_batched target/profile-bench/perf.txt TID Tx::commit 2
set -euo pipefail
cd "$(dirname "$0")/.."
filter=resident_history seconds=10
while getopts "dt:" opt; do
  case $opt in
    d) filter='record$' ;;
    t) seconds=$OPTARG ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
cargo bench -p haechi-store --bench history --no-run 2>/dev/null
bench=$(ls -t target/release/deps/history-* | grep -v '\.d$' | head -1)
out=target/profile-bench
rm -rf "$out" && mkdir -p "$out"
perf record -F 499 --call-graph dwarf,32768 -o "$out/perf.data" -- \
  "$bench" --bench "$filter" --profile-time "$seconds" 2>&1 | grep -E 'measured thread|store with' || true
perf script -i "$out/perf.data" -F comm,tid,ip,sym --no-inline 2>/dev/null > "$out/perf.txt"
rm -f "$out/perf.data"
scripts/perf-threads.py --only iter_batched "$out/perf.txt"
# The measured thread is the bench's main thread: named after the binary.
main=$(scripts/perf-threads.py --only iter_batched "$out/perf.txt" | awk '$1 ~ /^history/ {print $2}' | head -1)
for frame in iter_batched Store::snapshot_with Store::record_with Tx::commit Inner::materialize; do
  depth=1
  [ "$frame" = iter_batched ] && depth=3
  scripts/perf-threads.py --only iter_batched "$out/perf.txt" "$main" "$frame" "$depth" | head -10 || true
done
