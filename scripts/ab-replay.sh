#!/usr/bin/env bash
# Compare two haechi builds on a whole-pipeline replay, the way the figures
# in BENCHMARKS.md were taken on a noisy 2-core VM: interleaved runs (the
# order alternates each pair, so a drifting host favours neither), a fresh
# store each time, medians of events/s and CPU seconds, and whether the two
# builds wrote the same verdicts byte for byte.
#
#   scripts/ab-replay.sh [-n PAIRS] [-s EVENTS] [-w WORKERS] [-r] OLD_BINARY NEW_BINARY
#     -n  pairs of runs (default 3)          -s  day-set size (default 400000)
#     -w  replay workers (default 2)         -r  --resident-history
#
# Keep a build to compare with: `cp target/release/haechi /tmp/haechi-before`.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=3 size=400000 workers=2 resident=""
while getopts "n:s:w:r" opt; do
  case $opt in
    n) pairs=$OPTARG ;;
    s) size=$OPTARG ;;
    w) workers=$OPTARG ;;
    r) resident=--resident-history ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -ne 2 ]; then
  sed -n '2,13p' "$0"
  exit 2
fi
old=$1 new=$2
for b in "$old" "$new"; do
  [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }
done
input=$(scripts/day-set.sh "$size")
cat "$input" > /dev/null # into the page cache: the first run would read it from disk
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One run: prints "events/s cpu_seconds rss_mb wall_seconds".
run() {
  local bin=$1 tag=$2
  rm -rf "$work/store"
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$bin" replay "$input" \
    --out "$work/verdicts-$tag.jsonl" --data-dir "$work/store" --workers "$workers" \
    --no-progress --json $resident > "$work/summary.json"
  python3 - "$work/summary.json" "$work/time" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
wall, user, system, rss = open(sys.argv[2]).read().split()[-4:]
print(f"{s['events_per_second']:.0f} {float(user) + float(system):.1f} {int(rss) // 1024} {wall}")
PY
}

echo "replay of $input, $workers worker(s) ${resident:-(default mode)}, $pairs pair(s)"
printf "%-5s %-4s %10s %8s %8s %8s\n" pair run "events/s" "CPU s" "RSS MB" "wall s"
: > "$work/old" && : > "$work/new"
for i in $(seq 1 "$pairs"); do
  order="old new"
  [ $((i % 2)) -eq 0 ] && order="new old"
  for which in $order; do
    bin=$old
    [ "$which" = new ] && bin=$new
    read -r eps cpu rss wall < <(run "$bin" "$which")
    echo "$eps $cpu" >> "$work/$which"
    printf "%-5s %-4s %10s %8s %8s %8s\n" "$i" "$which" "$eps" "$cpu" "$rss" "$wall"
  done
done
python3 - "$work/old" "$work/new" <<'PY'
import statistics, sys
def load(p):
    rows = [tuple(map(float, l.split())) for l in open(p) if l.strip()]
    return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
(oe, oc), (ne, nc) = load(sys.argv[1]), load(sys.argv[2])
print(f"median: old {oe:,.0f} events/s, {oc:.1f} s CPU; new {ne:,.0f} events/s, {nc:.1f} s CPU "
      f"({100 * (ne / oe - 1):+.1f}% events/s, {100 * (nc / oc - 1):+.1f}% CPU)")
# Pair by pair (each pair ran back to back): how often the new build won,
# a guard against a median moved by one noisy run.
old = [float(l.split()[0]) for l in open(sys.argv[1]) if l.strip()]
new = [float(l.split()[0]) for l in open(sys.argv[2]) if l.strip()]
ratios = [100 * (n / o - 1) for o, n in zip(old, new)]
print(f"pairs: new faster in {sum(r > 0 for r in ratios)} of {len(ratios)} "
      f"({', '.join(f'{r:+.1f}%' for r in ratios)})")
PY
if cmp -s "$work/verdicts-old.jsonl" "$work/verdicts-new.jsonl"; then
  echo "verdicts: identical"
else
  echo "verdicts: DIFFERENT (cmp $work/verdicts-old.jsonl $work/verdicts-new.jsonl)"
fi
