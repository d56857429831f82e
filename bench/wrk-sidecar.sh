#!/usr/bin/env bash
# Quick HTTP/1.1 comparison: wrk straight to one demo backend, then through
# the sidecar (round robin over that backend, keep-alive pool). wrk runs on
# CPU 0; the backend and the sidecar share CPU 1, as a sidecar shares a core
# with its app. Prints requests/s, the sidecar's CPU time per request (from
# /proc/<pid>/stat) and its peak RSS. Not a test: numbers vary by machine.
#
# Usage: bench/wrk-sidecar.sh [duration-seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-50}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
cargo build --release --locked --quiet -p sidecar -p integration --bins
. bench/lib.sh

start_backend taskset -c 1

write_sidecar_config
taskset -c 1 "$bin/sidecar" --config "$dir/sidecar.yaml" >"$dir/sidecar.out" 2>"$dir/sidecar.log" &
spid=$!
pids+=($spid)
until grep -q listening "$dir/sidecar.out" 2>/dev/null; do sleep 0.05; done
proxy=$(sed 's/.* http=//' "$dir/sidecar.out")

ticks() { awk '{print $14 + $15}' "/proc/$spid/stat"; }
run() {
    taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency "http://$1/" 2>&1
}
echo "== direct to the backend ($backend), $conns connections, ${secs}s"
run "$backend" | grep -E "Requests/sec|50%|99%"
echo "== through the sidecar ($proxy)"
before=$(ticks)
out=$(run "$proxy")
after=$(ticks)
echo "$out" | grep -E "Requests/sec|50%|99%"
reqs=$(echo "$out" | awk '/requests in/ {print $1}')
hz=$(getconf CLK_TCK)
awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" \
    'BEGIN { printf "sidecar CPU per request: %.1f us (%d ticks over %d requests)\n", t / hz * 1e6 / n, t, n }'
grep -E "VmHWM|VmRSS" "/proc/$spid/status"
