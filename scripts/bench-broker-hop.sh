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
scripts/broker.sh install >/dev/null
TANSU=$(scripts/broker.sh path)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
B=127.0.0.1:$PORT
LOG=$(mktemp)
"$TANSU" broker --listener-url tcp://$B --advertised-listener-url tcp://$B --storage-engine memory://tansu/ >"$LOG" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; rm -f "$LOG"' EXIT
until "$TANSU" topic list --broker tcp://$B >/dev/null 2>&1; do sleep 0.1; done
"$TANSU" topic create --broker tcp://$B --partitions 4 listings >/dev/null
for r in $(seq 1 "$ROUNDS"); do
  echo -n "round $r ($(( (r - 1) * EVENTS )) messages in the topic before): "
  $HAECHI kafka bench latency --brokers $B --input fixtures/test.jsonl --rate "$RATE" --events "$EVENTS" --read listings
done
