# Shared by the single-sidecar bench scripts (source it from the repo root):
# a scratch directory cleaned up on exit with every process started, one demo
# backend, and a sidecar config proxying everything to it.
bin=target/release
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

# start_backend [wrapper...]: starts demo-backend b1 (under the wrapper, e.g.
# `taskset -c 1`) and sets $backend to its host:port.
start_backend() {
    "$@" "$bin/demo-backend" --name b1 --listen 127.0.0.1:0 >"$dir/b1.out" &
    pids+=($!)
    until grep -q listening "$dir/b1.out" 2>/dev/null; do sleep 0.05; done
    backend=$(sed 's/.*http=//' "$dir/b1.out")
}

# write_sidecar_config: $dir/sidecar.yaml, one route to $backend.
write_sidecar_config() {
    cat >"$dir/sidecar.yaml" <<YAML
listeners:
  - {name: http, address: 127.0.0.1:0}
routes:
  - {name: all, uri: /*, upstream: b}
upstreams:
  - name: b
    nodes: {"$backend": 1}
admin: {address: 127.0.0.1:0}
telemetry: {log_level: warn}
YAML
}
