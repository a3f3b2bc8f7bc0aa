#!/usr/bin/env bash
# Whole-pipeline benchmark: replays generated day sets (100k, 400k, 1M
# events; generated on first use, not committed) with the default rules and
# model into a fresh store, 1 and 2 workers, the history in sled (default)
# and resident (`--resident-history`), and reports events/s, work per event
# p50/p99, CPU seconds (user + system, all threads: on a noisy VM a steadier
# comparison than events/s), peak RSS and the store's size on disk (then the
# store is removed: the 1M ones take 1–1.5 GB each).
#   SIZES="100000 400000" WORKERS="2" MODES="resident" scripts/bench-pipeline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
HAECHI=${HAECHI:-target/release/haechi}
SIZES=${SIZES:-"100000 400000 1000000"}
WORKERS=${WORKERS:-"1 2"}
MODES=${MODES:-"default resident"}
mkdir -p target/bench
printf "%-9s %-7s %-9s %12s %10s %10s %8s %12s %12s\n" events workers history "events/s" "p50 µs" "p99 µs" "CPU s" "peak RSS" "store"
for n in $SIZES; do
  f=$(scripts/day-set.sh "$n")
  for w in $WORKERS; do
    for mode in $MODES; do
      store=target/bench/store-$n-$w-$mode
      rm -rf "$store"
      flag=()
      [ "$mode" = resident ] && flag=(--resident-history)
      env -u HAECHI_RESIDENT_HISTORY /usr/bin/time -f "%M %U %S" -o target/bench/rss "$HAECHI" replay "$f" \
        --out target/bench/verdicts.jsonl --data-dir "$store" --workers "$w" "${flag[@]}" \
        --no-progress --json > target/bench/summary.json
      python3 - "$n" "$w" "$mode" "$store" <<'PY'
import json, os, sys
n, w, mode, store = sys.argv[1:5]
s = json.load(open("target/bench/summary.json"))
rss_kb, user, system = open("target/bench/rss").read().split()[-3:]
rss_kb, cpu = int(rss_kb), float(user) + float(system)
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(store) for f in fs)
print(f"{n:<9} {w:<7} {mode:<9} {s['events_per_second']:>12,.0f} {s['latency_p50_us']:>10} {s['latency_p99_us']:>10} {cpu:>8.1f} {rss_kb/1024:>9,.0f} MB {size/2**20:>9,.0f} MB")
PY
      rm -rf "$store"
    done
  done
done
