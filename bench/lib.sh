# Shared by the single-sidecar bench scripts (source it from the repo root):
# a scratch directory cleaned up on exit with every process started, demo
# backends, and a sidecar config proxying everything to them.
bin=target/release
dir=$(mktemp -d)
pids=()
backends=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

# free_port: a loopback port free at the time of asking.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# add_backend NAME [wrapper...]: starts demo-backend NAME (under the wrapper,
# e.g. `taskset -c 1`) and appends its host:port to $backends.
add_backend() {
    local name=$1
    shift
    "$@" "$bin/demo-backend" --name "$name" --listen 127.0.0.1:0 >"$dir/$name.out" &
    pids+=($!)
    until grep -q listening "$dir/$name.out" 2>/dev/null; do sleep 0.05; done
    backends+=("$(sed 's/.*http=//' "$dir/$name.out")")
}

# start_backend [wrapper...]: starts demo-backend b1 and sets $backend to its
# host:port.
start_backend() {
    add_backend b1 "$@"
    backend=${backends[0]}
}

# write_sidecar_config: $dir/sidecar.yaml, one route to the $backends.
write_sidecar_config() {
    local nodes
    nodes=$(printf '"%s": 1, ' "${backends[@]}")
    cat >"$dir/sidecar.yaml" <<YAML
listeners:
  - {name: http, address: 127.0.0.1:0}
routes:
  - {name: all, uri: /*, upstream: b}
upstreams:
  - name: b
    nodes: {${nodes%, }}
admin: {address: 127.0.0.1:0}
telemetry: {log_level: warn}
YAML
}

# start_collector [wrapper...]: starts a real OpenTelemetry Collector (OTLP
# gRPC and HTTP in, debug exporter out) and sets $collector to its gRPC
# host:port, $collector_http to its HTTP one, and $collector_pid.
start_collector() {
    local otelcol port hport
    otelcol=$(scripts/install-otelcol)
    port=$(free_port)
    hport=$(free_port)
    cat >"$dir/otelcol.yaml" <<YAML
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:$port"}
      http: {endpoint: "127.0.0.1:$hport"}
exporters:
  debug: {verbosity: basic}
service:
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
  pipelines:
    traces: {receivers: [otlp], exporters: [debug]}
YAML
    "$@" "$otelcol" --config "file:$dir/otelcol.yaml" >"$dir/otelcol.out" 2>&1 &
    collector_pid=$!
    pids+=($!)
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
    until (exec 3<>"/dev/tcp/127.0.0.1/$hport") 2>/dev/null; do sleep 0.1; done
    collector=127.0.0.1:$port
    collector_http=127.0.0.1:$hport
}
