#!/usr/bin/env bash
# Profile a whole-pipeline replay with perf (call graphs by DWARF: the
# release build keeps line tables), then print where each thread's samples
# went. How the figures in BENCHMARKS.md ("where the CPU goes") were taken.
#
#   scripts/profile-replay.sh [-s EVENTS] [-w WORKERS] [-r] [-b BINARY]
#     -s  day-set size (default 400000)   -w  replay workers (default 2)
#     -r  --resident-history              -b  haechi binary (default target/release/haechi)
#
# Leaves target/profile/perf.data and target/profile/perf.txt (the script
# output) for scripts/perf-threads.py, e.g.
#   scripts/perf-threads.py target/profile/perf.txt TID Store::snapshot_with 2
set -euo pipefail
cd "$(dirname "$0")/.."
size=400000 workers=2 resident="" bin=target/release/haechi
while getopts "s:w:rb:" opt; do
  case $opt in
    s) size=$OPTARG ;;
    w) workers=$OPTARG ;;
    r) resident=--resident-history ;;
    b) bin=$OPTARG ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
input=$(scripts/day-set.sh "$size")
out=target/profile
rm -rf "$out" && mkdir -p "$out"
# 499 Hz with 32 KB stacks: ~300 MB of data for the 400k set.
perf record -F 499 --call-graph dwarf,32768 -o "$out/perf.data" -- \
  "$bin" replay "$input" --out "$out/verdicts.jsonl" --data-dir "$out/store" \
  --workers "$workers" $resident --no-progress --json > "$out/summary.json"
python3 -c 'import json,sys; print("%.0f events/s" % json.load(open(sys.argv[1]))["events_per_second"])' "$out/summary.json"
perf script -i "$out/perf.data" -F comm,tid,ip,sym --no-inline 2>/dev/null > "$out/perf.txt"
scripts/perf-threads.py "$out/perf.txt"
# The history (writer) thread is the process's first: the lowest tid.
main=$(scripts/perf-threads.py "$out/perf.txt" | awk '$1 == "haechi" {print $2}' | sort -n | head -1)
for frame in decide_and_record Store::snapshot_with Store::record_with Overlay::flush_layer; do
  scripts/perf-threads.py "$out/perf.txt" "$main" "$frame" | head -8
done
