"""The proxies the benchmark compares, each started with equivalent settings.

Every proxy listens on two loopback ports, one for HTTP/1.1 and one for h2c
(prior knowledge), and balances round robin over the same three backends over
HTTP/1.1 with a keep-alive pool. Each runs one worker (one thread of work), as
a sidecar sharing a core with its app would, and is pinned to the proxy core.
Access logs are off everywhere, and each adds the client to
X-Forwarded-For and passes the client's Host, as the sidecar does.
"""

import os
import pathlib
import subprocess
import time

from procs import Proc, free_port, wait_port


def sidecar_config(backends, h1, h2):
    nodes = ", ".join(f'"{b}": 1' for b in backends)
    # The sidecar serves HTTP/1.1 and h2c on one port; two listeners keep the
    # setup the same as the peers'.
    return f"""listeners:
  - {{name: h1, address: "127.0.0.1:{h1}"}}
  - {{name: h2, address: "127.0.0.1:{h2}"}}
routes:
  - {{name: all, uri: /*, upstream: b}}
upstreams:
  - name: b
    type: roundrobin
    nodes: {{{nodes}}}
    keepalive_pool: {{size: 320}}
admin: {{address: "127.0.0.1:0"}}
telemetry: {{log_level: warn}}
"""


def nginx_config(backends, h1, h2, workdir):
    servers = "\n".join(f"        server {b};" for b in backends)
    return f"""worker_processes 1;
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    upstream b {{
{servers}
        keepalive 320;
    }}
    server {{
        listen 127.0.0.1:{h1};
        listen 127.0.0.1:{h2} http2;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering on;
        }}
    }}
}}
"""


def haproxy_config(backends, h1, h2):
    servers = "\n".join(
        f"    server b{i} {b}" for i, b in enumerate(backends)
    )
    return f"""global
    nbthread 1
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend h1
    bind 127.0.0.1:{h1}
    default_backend b
frontend h2
    bind 127.0.0.1:{h2} proto h2
    default_backend b
backend b
    balance roundrobin
{servers}
"""


def envoy_config(backends, h1, h2, admin):
    endpoints = "\n".join(
        f"""            - endpoint:
                address:
                  socket_address: {{address: {b.split(':')[0]}, port_value: {b.split(':')[1]}}}"""
        for b in backends
    )

    def listener(name, port):
        return f"""  - name: {name}
    address:
      socket_address: {{address: 127.0.0.1, port_value: {port}}}
    filter_chains:
      - filters:
          - name: envoy.filters.network.http_connection_manager
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: {name}
              codec_type: AUTO
              use_remote_address: true
              route_config:
                virtual_hosts:
                  - name: all
                    domains: ["*"]
                    routes:
                      - match: {{prefix: /}}
                        route: {{cluster: b}}
              http_filters:
                - name: envoy.filters.http.router
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"""

    return f"""admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: {admin}}}
static_resources:
  listeners:
{listener("h1", h1)}
{listener("h2", h2)}
  clusters:
    - name: b
      type: STATIC
      lb_policy: ROUND_ROBIN
      connect_timeout: 5s
      load_assignment:
        cluster_name: b
        endpoints:
          - lb_endpoints:
{endpoints}
"""


class Proxy:
    """A started proxy: its name, ports and the pids whose CPU and memory count."""

    def __init__(self, name, h1, h2, procs, pids_fn):
        self.name = name
        self.h1 = h1
        self.h2 = h2
        self.procs = procs
        self.pids = pids_fn

    def stop(self):
        for p in self.procs:
            p.stop()


def start(name, tools, backends, workdir, core, repo):
    """Starts one proxy pinned to `core`; returns a Proxy once it listens.

    `sidecar-base` is the sidecar from the binary in tools["sidecar-base"]
    (an earlier build, to measure a change in the same run); `sidecar-pgo`
    the profile-guided build in tools["sidecar-pgo"]."""
    h1, h2 = free_port(), free_port()
    d = pathlib.Path(workdir) / name
    d.mkdir(parents=True, exist_ok=True)
    pin = ["taskset", "-c", str(core)]
    if name == "direct":
        # No proxy: the load goes straight to the first backend.
        host, port = backends[0].split(":")
        return Proxy(name, int(port), int(port), [], lambda: [])
    if name in ("sidecar", "sidecar-base", "sidecar-pgo"):
        cfg = d / "sidecar.yaml"
        cfg.write_text(sidecar_config(backends, h1, h2))
        exe = tools.get(name) or repo / "target" / "release" / "sidecar"
        p = Proc(name, pin + [str(exe), "--config", str(cfg)], d)
        procs = [p]
        pids = lambda: [p.pid]  # noqa: E731
    elif name == "nginx":
        cfg = d / "nginx.conf"
        cfg.write_text(nginx_config(backends, h1, h2, d))
        p = Proc(name, pin + [tools["nginx"], "-c", str(cfg), "-p", str(d)], d)
        procs = [p]
        pids = lambda: [p.pid] + children(p.pid)  # noqa: E731
    elif name == "haproxy":
        cfg = d / "haproxy.cfg"
        cfg.write_text(haproxy_config(backends, h1, h2))
        p = Proc(name, pin + [tools["haproxy"], "-db", "-f", str(cfg)], d)
        procs = [p]
        pids = lambda: [p.pid]  # noqa: E731
    elif name == "envoy":
        cfg = d / "envoy.yaml"
        cfg.write_text(envoy_config(backends, h1, h2, free_port()))
        p = Proc(
            name,
            pin
            + [
                tools["envoy"],
                "-c",
                str(cfg),
                "--concurrency",
                "1",
                "--log-level",
                "warn",
                "--disable-hot-restart",
                "--base-id",
                str(os.getpid() % 10000),
            ],
            d,
        )
        procs = [p]
        pids = lambda: [p.pid]  # noqa: E731
    else:
        raise ValueError(f"unknown proxy {name}")
    wait_port(h1, 30, procs[0])
    wait_port(h2, 30, procs[0])
    # Let the proxy settle (envoy warms its clusters) before measuring idle RSS.
    time.sleep(0.5)
    return Proxy(name, h1, h2, procs, pids)


def children(pid):
    try:
        out = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout
        return [int(x) for x in out.split()]
    except OSError:
        return []
