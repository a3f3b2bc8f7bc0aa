# Sourced by the benchmark scripts: a tansu broker of their own (memory
# storage) on a free local port, apart from `scripts/broker.sh up`'s shared one.
#
#   temp_broker LOG TOPIC...   start it (output to LOG), wait until it answers,
#                              create the topics (4 partitions); sets B
#                              (host:port), BROKER (its pid) and TANSU.
temp_broker() {
  local log=$1 port t
  shift
  scripts/broker.sh install >/dev/null
  TANSU=$(scripts/broker.sh path)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  B=127.0.0.1:$port
  "$TANSU" broker --listener-url "tcp://$B" --advertised-listener-url "tcp://$B" \
    --storage-engine memory://tansu/ >"$log" 2>&1 &
  BROKER=$!
  until "$TANSU" topic list --broker "tcp://$B" >/dev/null 2>&1; do sleep 0.1; done
  for t in "$@"; do
    "$TANSU" topic create --broker "tcp://$B" --partitions 4 "$t" >/dev/null
  done
}
