#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: deterministic where
# wall-clock runs on this machine are not (CPU steal). Runs the release
# sidecar under valgrind in front of demo backends (one; BACKENDS=3 as in
# bench/run), warms up, zeroes the
# counters, sends a fixed number of requests with oha, dumps, and prints the
# total and per-request instruction counts and the top functions (inclusive
# and self). Not a test. Callgrind counts each byte of a `rep movsb` copy as
# an instruction: large memcpys weigh more here than on the CPU.
#
# Usage: bench/callgrind.sh [requests] [connections] [-- extra env for the sidecar]
#   SIDECAR=path   profile another sidecar build
#   PROTO=h2c      drive the sidecar with HTTP/2 prior knowledge
#   COLLECTOR=1    start a real OpenTelemetry Collector and trace every
#                  request to it (100% sampled)
#   OTLP_PROTOCOL=grpc  export to it over gRPC instead of HTTP (the default)
#   PROXY=nginx    profile nginx instead (one process, the proxy settings of
#                  bench/run): the CPU comparison of the benchmark counted
#                  in instructions, which CPU steal does not move
#   PROXY=haproxy  the same for HAProxy (bench/run's settings, -db)
#   e.g. bench/callgrind.sh 20000 10 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
conns=${2:-10}
shift $(( $# >= 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind"; exit 1; }
oha=$(grep '^oha=' /tmp/tools.txt 2>/dev/null | cut -d= -f2 || true)
[ -x "${oha:-}" ] || oha=$(bench/install-peers | grep '^oha=' | cut -d= -f2)
cargo build --release --locked --quiet -p sidecar -p integration --bin sidecar --bin demo-backend
. bench/lib.sh
sidecar=${SIDECAR:-$bin/sidecar}
for i in $(seq 1 "${BACKENDS:-1}"); do add_backend "b$i"; done
write_sidecar_config
extra=()
if [ -n "${COLLECTOR:-}" ]; then
    start_collector
    if [ "${OTLP_PROTOCOL:-http/protobuf}" = grpc ]; then
        extra+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://$collector" OTEL_EXPORTER_OTLP_PROTOCOL=grpc)
    else
        extra+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://$collector_http")
    fi
fi
peer=${PROXY:-sidecar}
if [ "$peer" = haproxy ] || [ "$peer" = nginx ]; then
    exe=$(bench/install-peers | grep "^$peer=" | cut -d= -f2)
    port=$(free_port)
    h2port=$(free_port)
    # bench/proxies.py's settings, in one process: nginx with no master,
    # HAProxy in the foreground (-db) as bench/run starts it.
    python3 - "$peer" "$port" "$h2port" "$dir" "${backends[@]}" >"$dir/$peer.conf" <<'PY'
import sys
sys.path.insert(0, "bench")
from proxies import haproxy_config, nginx_config
peer, h1, h2, d, backends = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
if peer == "nginx":
    print(nginx_config(backends, h1, h2, d).replace("master_process on;", "master_process off;"))
else:
    print(haproxy_config(backends, h1, h2))
PY
    if [ "$peer" = nginx ]; then
        args=(-c "$dir/nginx.conf" -p "$dir")
    else
        args=(-db -f "$dir/haproxy.conf")
    fi
    valgrind --tool=callgrind ${CG_OPTS:-} --callgrind-out-file="$dir/cg.out" \
        "$exe" "${args[@]}" >"$dir/sidecar.out" 2>"$dir/sidecar.log" &
    spid=$!
    pids+=($spid)
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.2; done
    proxy=127.0.0.1:$port
    [ "${PROTO:-}" = h2c ] && proxy=127.0.0.1:$h2port
else
    env "${extra[@]}" "$@" valgrind --tool=callgrind ${CG_OPTS:-} --callgrind-out-file="$dir/cg.out" \
        "$sidecar" --config "$dir/sidecar.yaml" --workers 1 >"$dir/sidecar.out" 2>"$dir/sidecar.log" &
    spid=$!
    pids+=($spid)
    until grep -q listening "$dir/sidecar.out" 2>/dev/null; do sleep 0.2; done
    proxy=$(sed 's/.* http=\([^ ]*\).*/\1/' "$dir/sidecar.out")
fi
flags=()
[ "${PROTO:-}" = h2c ] && flags+=(--http2)
"$oha" --no-tui -n 2000 -c "$conns" "${flags[@]}" "http://$proxy/" >/dev/null
callgrind_control -z "$spid" >/dev/null
"$oha" --no-tui -n "$n" -c "$conns" "${flags[@]}" "http://$proxy/" | grep -E 'Success rate|Requests/sec' || true
callgrind_control -d "$spid" >/dev/null
sleep 0.5
out=$(ls -t "$dir"/cg.out* | grep -v '\.out$' | head -1 || true)
[ -n "$out" ] || out="$dir/cg.out"
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}' || true)
echo "requests $n  instructions $total  per request $(( total / n ))"
if [ -n "${KEEP:-}" ]; then cp "$out" "$KEEP"; echo "kept $KEEP"; fi
callgrind_annotate --threshold=100 --inclusive=no "$out" 2>/dev/null \
    | grep -E '^ *[0-9,]+ \(' | grep -v -E 'PROGRAM TOTALS|below main|libc_start|lang_start|::main|block_on|run_task|enter_runtime|backtrace' \
    | sed 's#/root/.cargo/registry/src/[^/]*/##; s#/rustc/[0-9a-f]*/##' | cut -c1-200 | head -30 || true
