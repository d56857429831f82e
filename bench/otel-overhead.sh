#!/usr/bin/env bash
# What tracing costs the proxy: wrk through three sidecars over one demo
# backend, alternating, several rounds:
#   off   - no exporter configured (the default)
#   dead  - OTEL_EXPORTER_OTLP_ENDPOINT at a closed loopback port, 100% sampled
#   live  - 100% sampled to a real OpenTelemetry Collector (debug exporter)
# wrk runs on CPU 0; the backend and the sidecars on CPU 1; the collector
# unpinned. Prints requests/s per run, the median per configuration, and the
# span export counters. Not a test: numbers vary with the machine's load.
#
# Usage: bench/otel-overhead.sh [seconds] [rounds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
conns=${3:-50}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
# SIDECAR=path runs another sidecar build (for example target/debug/sidecar)
# against the release backend.
if [ -n "${SIDECAR:-}" ]; then
    cargo build --release --locked --quiet -p integration --bin demo-backend
else
    cargo build --release --locked --quiet -p sidecar -p integration --bin sidecar --bin demo-backend
fi
. bench/lib.sh
sidecar=${SIDECAR:-$bin/sidecar}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_backend taskset -c 1

start_collector
dead=$(free_port)

write_sidecar_config
declare -A proxy admin spid
start() { # name, env...
    local name=$1; shift
    env "$@" taskset -c 1 "$sidecar" --config "$dir/sidecar.yaml" >"$dir/$name.out" 2>"$dir/$name.log" &
    spid[$name]=$!
    pids+=($!)
    until grep -q listening "$dir/$name.out" 2>/dev/null; do sleep 0.05; done
    proxy[$name]=$(sed 's/.* http=//' "$dir/$name.out")
    admin[$name]=$(sed 's/.*admin=\([^ ]*\).*/\1/' "$dir/$name.out")
}
start off
start dead OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$dead"
start live OTEL_EXPORTER_OTLP_ENDPOINT="http://$collector"

declare -A results ticks cticks reqs
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "wrk -t1 -c$conns -d${secs}s, $rounds rounds, order off dead live"
for name in off dead live; do taskset -c 0 wrk -t1 -c"$conns" -d2s "http://${proxy[$name]}/" >/dev/null; done
for r in $(seq 1 "$rounds"); do
    for name in off dead live; do
        before=$(cpu "${spid[$name]}")
        cbefore=$(cpu "$collector_pid")
        out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" "http://${proxy[$name]}/")
        after=$(cpu "${spid[$name]}")
        cticks[$name]=$(( ${cticks[$name]:-0} + $(cpu "$collector_pid") - cbefore ))
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        results[$name]="${results[$name]:-} $rps"
        ticks[$name]=$(( ${ticks[$name]:-0} + after - before ))
        reqs[$name]=$(( ${reqs[$name]:-0} + $(echo "$out" | awk '/requests in/ {print $1}') ))
        echo "round $r  $name  $rps req/s"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
off=$(echo "${results[off]}" | median)
for name in off dead live; do
    m=$(echo "${results[$name]}" | median)
    awk -v n="$name" -v m="$m" -v o="$off" -v all="${results[$name]}" \
        'BEGIN { printf "%-5s median %9.0f req/s  %+6.1f%% vs off   (runs:%s)\n", n, m, (m / o - 1) * 100, all }'
done
hz=$(getconf CLK_TCK)
for name in off dead live; do
    awk -v n="$name" -v t="${ticks[$name]}" -v hz="$hz" -v r="${reqs[$name]}" \
        'BEGIN { printf "%-5s sidecar CPU %.1f us per request (all threads, export included)\n", n, t / hz * 1e6 / r }'
done
awk -v t="${cticks[live]}" -v hz="$hz" -v r="${reqs[live]}" \
    'BEGIN { printf "live  collector CPU %.1f us per request (unpinned: it takes from both cores)\n", t / hz * 1e6 / r }'
for name in dead live; do
    echo "$name: $(curl -s "http://${admin[$name]}/metrics" | grep -E '^sidecar_trace_(spans_(exported|dropped|failed)_total|shed_episodes_total)' | tr '\n' ' ')"
done
