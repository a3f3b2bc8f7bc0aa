#!/usr/bin/env bash
# Count the instructions a replay executes, thread by thread (valgrind's
# callgrind): deterministic, so two builds compare to the instruction on a
# VM whose speed drifts ±20% — use it for changes too small for
# scripts/ab-replay.sh to see. The first EVENTS lines of the 400k day set,
# resident history, one worker (decode, analysis and history on the main
# thread; the store's applier on its own).
#
#   scripts/callgrind-replay.sh [-s EVENTS] [-d] BINARY [OUT_DIR]
#     -s  events (default 20000)     -d  the default store (records in sled)
#
# Prints the instructions of the main thread and the applier (merges and
# compactions too, when the replay ran one). Not sled's own threads: they
# spin-wait for one another at startup for as long as valgrind's
# one-thread-at-a-time scheduling lets them (35M to 470M instructions,
# whatever the build). Leaves OUT_DIR/callgrind.out-NN (one per thread;
# `callgrind_annotate FILE`) and OUT_DIR/verdicts.jsonl (to `cmp` with
# another build's).
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '2,18p' "$0"; exit 2; }
events=20000 resident=--resident-history
while getopts "s:d" opt; do
  case $opt in
    s) events=$OPTARG ;;
    d) resident= ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
bin=$(realpath "$1") out=${2:-target/callgrind}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
day=target/bench/day-400000.jsonl
[ -f "$day" ] || scripts/day-set.sh 400000
rm -rf "$out" && mkdir -p "$out"
head -n "$events" "$day" > "$out/input.jsonl"
valgrind --tool=callgrind --separate-threads=yes --dump-instr=no \
  --callgrind-out-file="$out/callgrind.out" \
  "$bin" replay --workers 1 $resident --data-dir "$out/store" \
  --out "$out/verdicts.jsonl" "$out/input.jsonl" >/dev/null 2>"$out/valgrind.log"
rm -rf "$out/store" "$out/input.jsonl"
for f in "$out"/callgrind.out-*; do
  annotated=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null)
  total=$(awk '/PROGRAM TOTALS/ {print $1; exit}' <<<"$annotated")
  case $annotated in
    *haechi_stream::replay::replay*) echo "main thread  $total instructions ($events events)" ;;
    *overlay::Held::*) echo "applier      $total" ;;
    *image::merge*) echo "image merge  $total" ;;
    *compaction*) echo "compaction   $total" ;;
  esac
done
