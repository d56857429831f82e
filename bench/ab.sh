#!/usr/bin/env bash
# Two sidecar builds side by side: wrk through each in turn, alternating over
# several rounds (wrk on CPU 0; the backend and both sidecars on CPU 1), and
# the median requests/s, CPU per request and peak RSS of each. For before /
# after a change, where a single run would be lost in CPU steal. Not a test.
#
# Usage: bench/ab.sh before-binary after-binary [seconds] [rounds] [ENV=value...]
#   COLLECTOR=1   trace every request to a real Collector (on CPU 0 at the
#                 lowest priority, as in otel-overhead.sh)
set -euo pipefail
A=$(realpath "${1:?usage: bench/ab.sh before after [seconds] [rounds]}")
B=$(realpath "${2:?usage: bench/ab.sh before after [seconds] [rounds]}")
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
cargo build --release --locked --quiet -p integration --bin demo-backend
secs=${3:-6}; rounds=${4:-5}
shift $(( $# >= 4 ? 4 : $# ))
. bench/lib.sh
start_backend taskset -c 1
write_sidecar_config
extra=("$@")
if [ -n "${COLLECTOR:-}" ]; then start_collector nice -n 19 taskset -c 0; extra+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://$collector_http"); fi
declare -A proxy spid
for n in A B; do
  bin_=${!n}
  env "${extra[@]}" taskset -c 1 "$bin_" --config "$dir/sidecar.yaml" >"$dir/$n.out" 2>"$dir/$n.log" &
  spid[$n]=$!; pids+=($!)
  until grep -q listening "$dir/$n.out" 2>/dev/null; do sleep 0.05; done
  proxy[$n]=$(sed 's/.* http=\([^ ]*\).*/\1/' "$dir/$n.out")
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for n in A B; do taskset -c 0 wrk -t1 -c50 -d2s "http://${proxy[$n]}/" >/dev/null; done
declare -A res ticks reqs
for r in $(seq 1 "$rounds"); do
  for n in A B; do
    b=$(cpu "${spid[$n]}")
    out=$(taskset -c 0 wrk -t1 -c50 -d"${secs}s" "http://${proxy[$n]}/")
    a=$(cpu "${spid[$n]}")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    res[$n]="${res[$n]:-} $rps"; ticks[$n]=$(( ${ticks[$n]:-0} + a - b ))
    reqs[$n]=$(( ${reqs[$n]:-0} + $(echo "$out" | awk '/requests in/ {print $1}') ))
  done
done
for n in A B; do
  m=$(echo "${res[$n]}" | tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  rss=$(awk '/VmHWM/ {print $2}' /proc/${spid[$n]}/status)
  echo "$n median $m req/s  cpu $(awk -v t=${ticks[$n]} -v r=${reqs[$n]} -v hz=$(getconf CLK_TCK) 'BEGIN{printf "%.2f", t/hz*1e6/r}') us/req  peakRSS ${rss} kB  runs:${res[$n]}"
done
