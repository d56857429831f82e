"""The load generators: wrk (HTTP/1.1 saturation), h2load (h2c saturation)
and oha (a fixed rate, with latency correction), each pinned to the load
core. Each returns requests, requests/s and p50/p99/p99.9 in milliseconds."""

import json
import os
import pathlib
import subprocess
import tempfile

HERE = pathlib.Path(__file__).resolve().parent


def pinned(core, argv):
    return ["taskset", "-c", str(core)] + argv


def wrk(tools, core, port, secs, conns):
    out = subprocess.run(
        pinned(core, [tools["wrk"], "-t1", f"-c{conns}", f"-d{secs}s",
                      "-s", str(HERE / "report.lua"), f"http://127.0.0.1:{port}/"]),
        capture_output=True, text=True, check=True,
    ).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    r = json.loads(line)
    n = r["requests"]
    return {
        "requests": n,
        "rps": n / (r["duration_us"] / 1e6),
        "errors": r["errors"],
        "p50": r["p50"] / 1000, "p99": r["p99"] / 1000, "p999": r["p999"] / 1000,
    }


def h2load(tools, core, port, secs, conns, streams):
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "h2load.log")
        out = subprocess.run(
            pinned(core, [tools["h2load"], "-t1", f"-c{conns}", f"-m{streams}",
                          "-D", str(secs), "--log-file", log,
                          f"http://127.0.0.1:{port}/"]),
            capture_output=True, text=True,
        ).stdout
        # Each log line: start (µs since epoch), status, duration (µs).
        lat = []
        with open(log) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] == "200":
                    lat.append(int(parts[2]))
    lat.sort()
    done = len(lat)
    failed = 0
    rps = 0.0
    for l in out.splitlines():
        if l.startswith("finished in"):
            rps = float(l.split(",")[1].split()[0])
        if l.startswith("requests:"):
            failed = int(l.split(",")[4].split()[0])
    return {"requests": done, "rps": rps, "errors": failed,
            **percentiles(lat, 1000)}


def oha(tools, core, port, secs, rate, conns):
    out = subprocess.run(
        pinned(core, [tools["oha"], "-z", f"{secs}s", "-q", str(rate),
                      "--latency-correction", "-c", str(conns), "--no-tui",
                      "--output-format", "json", f"http://127.0.0.1:{port}/"]),
        capture_output=True, text=True, check=True,
    ).stdout
    r = json.loads(out)
    s = r["summary"]
    p = r["latencyPercentiles"]
    codes = r.get("statusCodeDistribution", {})
    n = sum(codes.values())
    return {
        "requests": n,
        "rps": s["requestsPerSec"],
        "errors": n - codes.get("200", 0) + sum(r.get("errorDistribution", {}).values()),
        "p50": p["p50"] * 1000, "p99": p["p99"] * 1000, "p999": p["p99.9"] * 1000,
    }


def percentiles(sorted_values, divisor):
    def at(q):
        if not sorted_values:
            return float("nan")
        i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
        return sorted_values[i] / divisor
    return {"p50": at(0.50), "p99": at(0.99), "p999": at(0.999)}
