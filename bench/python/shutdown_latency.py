#!/usr/bin/env python3
"""Baseline: how soon socketserver's serve_forever() returns after shutdown()
on an idle server, over many trials.

    python3 shutdown_latency.py [--kind tcp|threading-tcp] [--trials 100]

Each trial mirrors examples/shutdown_latency.rs: a fresh echo server on
127.0.0.1:0 runs serve_forever() (default poll_interval=0.5) on a thread,
serves one round trip, the main thread waits a random 10-60 ms, calls
shutdown() and measures until serve_forever() returns. Prints one line
``RESULT {json}`` (p50_us, p99_us, max_us, mean_us) and a short table.
"""

import argparse
import json
import os
import random
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the sources
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echo_servers import KINDS  # noqa: E402


def trial(kind):
    base, handler = KINDS[kind]
    server = base(("127.0.0.1", 0), handler)
    returned = []

    def run():
        server.serve_forever()
        returned.append(time.monotonic_ns())

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    with socket.create_connection(server.server_address, timeout=10) as s:
        s.sendall(b"ping")
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(64):
            reply += chunk
        if reply != b"ping":
            raise RuntimeError(f"echo answered {reply!r}")
    time.sleep(random.uniform(0.010, 0.060))
    asked = time.monotonic_ns()
    server.shutdown()
    worker.join(10)
    server.server_close()
    if not returned:
        raise RuntimeError("serve_forever did not return within 10 s")
    return (returned[0] - asked) / 1000.0


def quantile(sorted_us, q):
    rank = max(1, min(len(sorted_us), -(-int(q * len(sorted_us) * 1000) // 1000)))
    return sorted_us[rank - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["tcp", "threading-tcp"], default="tcp")
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    samples = sorted(trial(args.kind) for _ in range(args.trials))
    result = {
        "workload": "shutdown",
        "strategy": args.kind,
        "trials": args.trials,
        "p50_us": round(quantile(samples, 0.5), 1),
        "p99_us": round(quantile(samples, 0.99), 1),
        "max_us": round(samples[-1], 1),
        "mean_us": round(sum(samples) / len(samples), 1),
    }
    print("RESULT " + json.dumps(result, separators=(",", ":")), flush=True)
    print(f"  server    socketserver {args.kind}")
    print(f"  trials    {args.trials}")
    for key in ("p50", "p99", "max"):
        print(f"  {key:<9} {result[key + '_us'] / 1000:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
