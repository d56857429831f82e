#!/usr/bin/env python3
"""A discovery.v1 subscriber in Python, built from the .proto file alone.

It checks that the contract is language-neutral: the message and service code
is generated at run time with grpc_tools.protoc from the given .proto file
(nothing from the Rust tree), then the script watches one service and prints
every update as one JSON line on standard output:

    {"version": 1, "kind": "snapshot", "not_found": false, "endpoints": [...]}
    {"version": 2, "kind": "delta", "upserts": [...], "removals": ["id"]}
    {"version": 2, "kind": "status", "state": "SYNC_STATE_STALE", "message": "...",
     "last_sync_unix_ms": 0}

An endpoint is {"id", "address", "port", "weight" (null when absent), "health"
(the enum name), "zone", "metadata"}.

It exits 0 after --count messages, 3 when --timeout passes first (the call's
gRPC deadline), and 2 on any other RPC error.

Needs grpcio and grpcio-tools: scripts/install-python-grpc installs them.
"""

import argparse
import importlib
import importlib.resources
import json
import os
import sys
import tempfile


def generate(proto, out_dir):
    """Compiles `proto` into `out_dir` and returns its (pb2, pb2_grpc) modules."""
    from grpc_tools import protoc

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    proto_dir, proto_file = os.path.split(os.path.abspath(proto))
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            proto_file,
        ]
    )
    if code != 0:
        sys.exit(f"watch.py: protoc failed on {proto} (exit {code})")
    sys.path.insert(0, out_dir)
    stem = os.path.splitext(proto_file)[0]
    return importlib.import_module(f"{stem}_pb2"), importlib.import_module(f"{stem}_pb2_grpc")


def endpoint(pb2, e):
    """An Endpoint as a plain dict."""
    return {
        "id": e.id,
        "address": e.address,
        "port": e.port,
        "weight": e.weight if e.HasField("weight") else None,
        "health": pb2.Health.Name(e.health),
        "zone": e.zone,
        "metadata": dict(e.metadata),
    }


def update(pb2, u):
    """An EndpointUpdate as a plain dict."""
    kind = u.WhichOneof("kind")
    out = {"version": u.version, "kind": kind}
    if kind == "snapshot":
        out["not_found"] = u.snapshot.not_found
        out["endpoints"] = [endpoint(pb2, e) for e in u.snapshot.endpoints]
    elif kind == "delta":
        out["upserts"] = [endpoint(pb2, e) for e in u.delta.upserts]
        out["removals"] = list(u.delta.removals)
    elif kind == "status":
        out["state"] = pb2.SyncState.Name(u.status.state)
        out["message"] = u.status.message
        out["last_sync_unix_ms"] = u.status.last_sync_unix_ms
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proto", required=True, help="path of discovery.proto")
    p.add_argument("--target", required=True, help="adapter address, host:port")
    p.add_argument("--service", required=True, help="service to watch")
    p.add_argument("--arg", action="append", default=[], help="watch argument key=value")
    p.add_argument("--count", type=int, default=1, help="exit after this many messages")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before giving up")
    args = p.parse_args()

    import grpc

    with tempfile.TemporaryDirectory(prefix="tributary-py-") as out_dir:
        pb2, pb2_grpc = generate(args.proto, out_dir)
        request = pb2.WatchRequest(
            service=args.service,
            args=dict(a.split("=", 1) for a in args.arg),
            subscriber_id="python/watch.py",
        )
        with grpc.insecure_channel(args.target) as channel:
            stub = pb2_grpc.EndpointDiscoveryStub(channel)
            call = stub.Watch(request, timeout=args.timeout)
            seen = 0
            try:
                for u in call:
                    print(json.dumps(update(pb2, u)), flush=True)
                    seen += 1
                    if seen >= args.count:
                        call.cancel()
                        return 0
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    print(f"watch.py: {seen} of {args.count} messages within {args.timeout}s",
                          file=sys.stderr)
                    return 3
                print(f"watch.py: {e.code().name}: {e.details()}", file=sys.stderr)
                return 2
            print(f"watch.py: the stream ended after {seen} messages", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
