#!/usr/bin/env bash
# scripts/instructions.sh — user-space instructions per echoed message.
#
# Each server runs under valgrind's callgrind with instrumentation off; a
# first `echo-lab bench` connects and warms it up, then instrumentation is
# switched on for a second, measured bench run of CONNECTIONS connections,
# and off again. The count of instructions executed in user space (the
# server's own code, std and libc; not the kernel) is divided by the
# messages that run echoed. Counting instructions does not depend on what
# else the machine is doing, so unlike a rate it is the same from run to
# run within about a percent (the batch sizes the kernel hands the loop
# still vary); it does not see the kernel, where a one-thread server
# spends over 90% of its time (docs/performance.md).
#
# Usage: scripts/instructions.sh        (about 2 minutes; needs valgrind)
#        CONNECTIONS=1000 scripts/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-100}
if ! command -v valgrind > /dev/null || ! command -v callgrind_control > /dev/null; then
    echo "instructions.sh needs valgrind (with callgrind_control); skipped" >&2
    exit 0
fi
cargo build --release --quiet --bin echo-lab --example tokio_echo --example reference_servers
LAB=target/release/echo-lab
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Prints one table row for the server started by "$@" (which must accept
# port 0 and print `listening on HOST:PORT`).
measure() {
    local name=$1
    shift
    : > "$tmp/listening"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/$name.out" \
        "$@" > "$tmp/listening" 2> "$tmp/valgrind.log" &
    local server=$!
    until grep -q listening "$tmp/listening"; do sleep 0.1; done
    local addr
    addr=$(sed -n 's/^listening on //p' "$tmp/listening")
    "$LAB" bench --addr "$addr" -c "$CONNECTIONS" --duration 1s --warmup 0s > /dev/null
    callgrind_control --instr=on "$server" > /dev/null 2>&1
    "$LAB" bench --addr "$addr" -c "$CONNECTIONS" --duration 3s --warmup 0s --json > "$tmp/bench.json"
    callgrind_control --instr=off "$server" > /dev/null 2>&1
    kill -TERM "$server"
    wait "$server" || true
    local messages instructions
    messages=$(grep -o '"messages": [0-9]*' "$tmp/bench.json" | head -1 | grep -o '[0-9]*$')
    instructions=$(callgrind_annotate "$tmp/$name.out"* 2> /dev/null \
        | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    awk -v n="$name" -v m="$messages" -v i="$instructions" \
        'BEGIN { printf "| %s | %d | %.0f |\n", n, m, i / m }'
}

echo "## User-space instructions per echoed message, $CONNECTIONS connections (callgrind)"
echo
echo "| server | messages counted | instructions/msg |"
echo "| --- | ---: | ---: |"
for mode in selector statemachine async; do
    measure "$mode" "$LAB" serve --mode "$mode" --addr 127.0.0.1:0 --quiet
done
measure tokio target/release/examples/tokio_echo 0
measure raw-epoll target/release/examples/reference_servers raw-epoll 0
