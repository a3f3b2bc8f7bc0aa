#!/usr/bin/env bash
# The local broker alone: produce-to-consume latency of one hop through tansu
# (no haechi in the path), in rounds on ONE broker so the topic grows:
# `haechi kafka bench latency --read listings` produces fixtures/test.jsonl
# to `listings` at RATE/s and reads `listings` back from its end. Compare
# with `make bench-kafka`, whose events make two such hops (listings → haechi,
# listing-verdicts → reader) plus haechi's own work.
set -euo pipefail
cd "$(dirname "$0")/.."
HAECHI=${HAECHI:-target/release/haechi}
RATE=${RATE:-450}
EVENTS=${EVENTS:-4500}
ROUNDS=${ROUNDS:-5}
source scripts/temp-broker.sh
LOG=$(mktemp)
BROKER=""
trap '[ -n "$BROKER" ] && kill $BROKER 2>/dev/null; rm -f "$LOG"' EXIT
temp_broker "$LOG" listings
for r in $(seq 1 "$ROUNDS"); do
  echo -n "round $r ($(( (r - 1) * EVENTS )) messages in the topic before): "
  $HAECHI kafka bench latency --brokers $B --input fixtures/test.jsonl --rate "$RATE" --events "$EVENTS" --read listings
done
