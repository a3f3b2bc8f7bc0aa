#!/usr/bin/env bash
# make bench-kafka: end-to-end through a local tansu broker.
#   1. throughput: a backlog of fixtures/train.jsonl (60,000 events) is
#      produced to `listings` first, then `haechi run` starts; the time from
#      its first to its last verdict gives events/s;
#   2. latency: with haechi run caught up, fixtures/test.jsonl is produced
#      at a steady 450 events/s for 20 s; produce-to-verdict p50/p99 as
#      the reading consumer sees it, then the pipeline's own view from its
#      /metrics (haechi_event_to_verdict_seconds: Kafka timestamp → judged,
#      → verdict delivered), which splits the time between the broker's
#      fetch, our judging and the way out.
set -euo pipefail
cd "$(dirname "$0")/.."
HAECHI=${HAECHI:-target/release/haechi}
RATE=${RATE:-450}
LAT_EVENTS=${LAT_EVENTS:-9000}
BACKLOG=${BACKLOG:-fixtures/train.jsonl}
source scripts/temp-broker.sh
WORK=$(mktemp -d)
RUN="" BROKER=""
cleanup() { [ -n "$RUN" ] && kill "$RUN" 2>/dev/null; [ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
temp_broker "$WORK/broker.log" listings listing-verdicts listings-dlq moderation-decisions haechi-changelog
N=$(grep -c . "$BACKLOG")
echo "== backlog: $N events from $BACKLOG"
$HAECHI kafka produce "$BACKLOG" --brokers $B
HTTP=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export HAECHI_KAFKA__BROKERS=$B HAECHI_STORE__DATA_DIR=$WORK/store HAECHI_HTTP__LISTEN=$HTTP
export HAECHI_KAFKA__SESSION_TIMEOUT_MS=3000 HAECHI_KAFKA__HEARTBEAT_INTERVAL_MS=1000
$HAECHI run --config "${CONFIG:-haechi.example.toml}" 2>"$WORK/run.log" &
RUN=$!
$HAECHI kafka bench throughput --brokers $B --expect "$N" "$@"
if ! kill -0 "$RUN" 2>/dev/null; then
  echo "haechi run exited early (a release binary older than the config?):" >&2
  tail -5 "$WORK/run.log" >&2
  exit 1
fi
echo "== latency: $LAT_EVENTS events at $RATE/s"
metrics() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("http://'$HTTP'/metrics").read().decode())'; }
metrics >"$WORK/before.metrics"
$HAECHI kafka bench latency --brokers $B --input fixtures/test.jsonl --rate "$RATE" --events "$LAT_EVENTS" "$@"
metrics >"$WORK/after.metrics"
python3 scripts/histogram-quantiles.py "$WORK/before.metrics" "$WORK/after.metrics" \
  haechi_event_to_verdict_seconds haechi_batch_events 'haechi_stage_seconds{stage="changelog"' 'haechi_stage_seconds{stage="deliver"' 'haechi_stage_seconds{stage="flush"'
kill -TERM $RUN; wait $RUN; RUN=""
echo "peak RSS of haechi run: see $WORK/run.log (drained cleanly)"
