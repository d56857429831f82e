"""The proxy benchmark: the sidecar against nginx, HAProxy and Envoy over the
same three backends, the same load, alternating proxies over several rounds.

Load generators run on one core, each proxy and the backends on the other, so
a proxy competes for its core as a sidecar does with its app. Per proxy and
load it prints requests/s, p50/p99/p99.9, the proxy's CPU µs per request (from
/proc), idle and peak RSS, and ratios to direct and to the sidecar; results
also go to bench/results/<time>.{json,csv}. Then the discovery figures:
registry change to traffic, adapter fan-out to 1,000 subscribers, and the
sidecar's memory with 100 upstreams x 100 endpoints.

Run it with bench/run (it builds and installs what is missing first).
"""

import argparse
import csv
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import load
import proxies
from procs import Proc, cpu_ticks, free_port, rss_kib, wait_port

REPO = pathlib.Path(__file__).resolve().parent.parent
LOAD_CORE, PROXY_CORE = 0, 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=10, help="seconds per load run")
    ap.add_argument("--conns", type=int, default=50, help="wrk connections")
    ap.add_argument("--h2-conns", type=int, default=10)
    ap.add_argument("--h2-streams", type=int, default=10)
    ap.add_argument("--rate", type=int, default=5000, help="oha requests/s")
    ap.add_argument("--proxies", default="direct,sidecar,sidecar-pgo,nginx,haproxy,envoy",
                    help="sidecar-pgo is the profile-guided build of scripts/build-pgo")
    ap.add_argument("--loads", default="h1,h2,rate")
    ap.add_argument("--skip-discovery", action="store_true",
                    help="only the proxy comparison")
    ap.add_argument("--max-steal", type=float, default=5.0,
                    help="a run during which the hypervisor took more than this share "
                         "of the CPUs (percent) is measured again")
    ap.add_argument("--retries", type=int, default=2,
                    help="extra attempts for a run over --max-steal; the least stolen is kept")
    ap.add_argument("--baseline", help="an earlier sidecar binary, measured as sidecar-base")
    ap.add_argument("--tools", required=True, help="name=path lines from install-peers")
    args = ap.parse_args()
    tools = dict(l.split("=", 1) for l in open(args.tools).read().split() if "=" in l)
    if "sidecar-pgo" in args.proxies.split(",") and "sidecar-pgo" not in tools:
        ap.error("sidecar-pgo needs scripts/build-pgo's line in --tools (bench/run "
                 "adds it unless NO_PGO=1); or leave it out of --proxies")
    if args.baseline:
        tools["sidecar-base"] = args.baseline
        args.proxies += ",sidecar-base"

    print(f"load generators pinned to CPU {LOAD_CORE}; each proxy and the three "
          f"backends pinned to CPU {PROXY_CORE} (a sidecar shares its core with its app)")
    print(f"{args.rounds} rounds x {args.secs}s per load; proxies alternate within each round; "
          f"a run with over {args.max_steal:g}% CPU steal is repeated up to {args.retries} "
          f"times and the least stolen attempt kept\n")
    names = args.proxies.split(",")
    loads = args.loads.split(",")
    work = tempfile.mkdtemp(prefix="tributary-bench-")
    backends, started = [], []
    try:
        for i in range(3):
            backends.append(start_backend(f"b{i + 1}", work, started))
        running = {}
        for n in names:
            running[n] = proxies.start(n, tools, backends, work, PROXY_CORE, REPO)
            started.append(running[n])
            check(running[n])
        idle = {n: rss_kib(p.pids()) for n, p in running.items()}
        results = {n: {l: [] for l in loads} for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                for l in loads:
                    res = screened(running[n], l, args, tools)
                    results[n][l].append(res)
                    print(f"round {r + 1} {n:11} {l:5} {res['rps']:9.0f} req/s  "
                          f"p50 {res['p50']:.2f} ms  p99 {res['p99']:.2f} ms  "
                          f"cpu {res['cpu_us']:.1f} us/req  steal {res['steal_pct']:.0f}%"
                          + (f" (attempt {res['attempts']})" if res["attempts"] > 1 else ""),
                          flush=True)
        peak = {n: rss_kib(p.pids(), "VmHWM") for n, p in running.items()}
        rows = summarize(results, idle, peak, names, loads, args.max_steal)
        print_table(rows, loads)
        stamp = save(rows, {}, args)
        if not args.skip_discovery:
            save(rows, discovery(work), args, stamp)
    finally:
        for p in reversed(started):
            p.stop()


def start_backend(name, work, started):
    exe = REPO / "target" / "release" / "demo-backend"
    port = free_port()
    p = Proc(name, ["taskset", "-c", str(PROXY_CORE), str(exe), "--name", name,
                    "--listen", f"127.0.0.1:{port}"], work)
    started.append(p)
    wait_port(port, 10, p)
    return f"127.0.0.1:{port}"


def check(proxy):
    """One request through the proxy must succeed before it is measured."""
    for _ in range(50):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{proxy.h1}/", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{proxy.name} does not answer on 127.0.0.1:{proxy.h1}")


def steal_ticks():
    """Ticks the hypervisor took from this VM's CPUs (/proc/stat)."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8])


def screened(proxy, kind, args, tools):
    """One run of `kind` against `proxy`, measured again while the hypervisor
    took more than --max-steal of the CPUs: on a shared VM, steal moves a
    proxy's figures more than the differences between proxies. Of the
    attempts, the one with the least steal is kept; `attempts` says how many
    were made."""
    best = None
    for attempt in range(1, args.retries + 2):
        res = measure(proxy, kind, args, tools)
        if best is None or res["steal_pct"] < best["steal_pct"]:
            best = res
        if res["steal_pct"] <= args.max_steal:
            break
    best["attempts"] = attempt
    return best


def measure(proxy, kind, args, tools):
    stolen = steal_ticks()
    before = cpu_ticks(proxy.pids())
    if kind == "h1":
        res = load.wrk(tools, LOAD_CORE, proxy.h1, args.secs, args.conns)
    elif kind == "h2":
        res = load.h2load(tools, LOAD_CORE, proxy.h2, args.secs, args.h2_conns,
                          args.h2_streams)
    elif kind == "rate":
        res = load.oha(tools, LOAD_CORE, proxy.h1, args.secs, args.rate, args.conns)
    else:
        raise ValueError(kind)
    ticks = cpu_ticks(proxy.pids()) - before
    res["steal_pct"] = ((steal_ticks() - stolen) / os.sysconf("SC_CLK_TCK")
                        / (2 * args.secs) * 100)
    res["cpu_us"] = (ticks / os.sysconf("SC_CLK_TCK") * 1e6 / res["requests"]
                     if proxy.pids() and res["requests"] else float("nan"))
    return res


def summarize(results, idle, peak, names, loads, max_steal):
    """The median of the rounds for each proxy and load, with ratios, and how
    many of the rounds stayed over `max_steal` after their retries."""
    med = {}
    for n in names:
        for l in loads:
            runs = results[n][l]
            med[(n, l)] = {k: statistics.median(r[k] for r in runs)
                           for k in ("rps", "p50", "p99", "p999", "cpu_us", "errors", "steal_pct")}
            med[(n, l)]["over_steal"] = sum(r["steal_pct"] > max_steal for r in runs)
    rows = []
    for l in loads:
        for n in names:
            m = med[(n, l)]
            d = med.get(("direct", l))
            s = med.get(("sidecar", l))
            rows.append({
                "load": l, "proxy": n, **m,
                "rss_idle_mb": idle[n] / 1024, "rss_peak_mb": peak[n] / 1024,
                "rps_vs_direct": m["rps"] / d["rps"] if d else float("nan"),
                "rps_vs_sidecar": m["rps"] / s["rps"] if s else float("nan"),
                "added_p50_ms": m["p50"] - d["p50"] if d else float("nan"),
                "added_p99_ms": m["p99"] - d["p99"] if d else float("nan"),
            })
    return rows


def print_table(rows, loads):
    titles = {"h1": "HTTP/1.1 saturation (wrk)", "h2": "HTTP/2 h2c saturation (h2load)",
              "rate": "fixed rate (oha, latency-corrected)"}
    for l in loads:
        print(f"\n== {titles[l]} (medians)")
        print(f"{'proxy':11} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} "
              f"{'cpu us':>7} {'idle MB':>7} {'peak MB':>7} {'x direct':>8} "
              f"{'x sidecar':>9} {'+p50':>6} {'+p99':>6} {'errors':>6} {'steal%':>6} {'stolen':>6}")
        for r in rows:
            if r["load"] != l:
                continue
            print(f"{r['proxy']:11} {r['rps']:9.0f} {r['p50']:7.2f} {r['p99']:7.2f} "
                  f"{r['p999']:7.2f} {r['cpu_us']:7.1f} {r['rss_idle_mb']:7.1f} "
                  f"{r['rss_peak_mb']:7.1f} {r['rps_vs_direct']:8.2f} "
                  f"{r['rps_vs_sidecar']:9.2f} {r['added_p50_ms']:6.2f} "
                  f"{r['added_p99_ms']:6.2f} {r['errors']:6.0f} {r['steal_pct']:6.1f} "
                  f"{r['over_steal']:6d}")


def discovery(work):
    """Registry change to traffic, adapter fan-out, and memory at scale."""
    out = {}
    exe = REPO / "target" / "release"
    print("\n== discovery")
    for name, argv in [
        ("change", [str(exe / "bench-discovery"), "change", "--changes", "50"]),
        ("fanout", [str(exe / "bench-discovery"), "fanout", "--subscribers", "1000",
                    "--updates", "10"]),
        ("memory", [str(exe / "bench-discovery"), "memory", "--upstreams", "100",
                    "--endpoints", "100"]),
    ]:
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{name}: failed ({r.returncode}):\n{r.stderr[-2000:]}")
            continue
        line = [l for l in r.stdout.splitlines() if l.startswith("{")][-1]
        out[name] = json.loads(line)
        for l in r.stdout.splitlines():
            if not l.startswith("{"):
                print(l)
    return out


def save(rows, extra, args, stamp=None):
    d = REPO / "bench" / "results"
    d.mkdir(exist_ok=True)
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    with open(d / f"{stamp}.json", "w") as f:
        json.dump({"args": vars(args), "proxies": rows, "discovery": extra}, f, indent=1)
    with open(d / f"{stamp}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print(f"\nresults: bench/results/{stamp}.json and .csv")
    return stamp


if __name__ == "__main__":
    sys.exit(main())
