#!/usr/bin/env python3
"""Baseline echo servers built on Python's socketserver module.

    python3 echo_servers.py KIND [--addr HOST:PORT] [--backlog N]

KIND is one of: tcp, threading-tcp, forking-tcp, udp, threading-udp,
forking-udp.  Prints ``listening on HOST:PORT`` (flushed) as the first
stdout line, serves a byte echo, and exits 0 on SIGTERM/SIGINT after a
graceful shutdown().

Two socketserver defaults are raised so the baselines measure the server
rather than its admission limits (both are flags):

* listen backlog (request_queue_size) 5 -> --backlog 128 (Rust std's value),
  so bursts of connects are not SYN retransmits;
* ForkingMixIn.max_children 40 -> --max-children 1024, so the forking server
  can hold the 256 persistent connections of the tcp-rr workload (with 40 it
  stops accepting until a child exits).
"""

import argparse
import signal
import socketserver
import sys
import threading


class StreamEcho(socketserver.StreamRequestHandler):
    """Echo every byte back until the client closes its side."""

    def handle(self):
        while True:
            data = self.rfile.read1(65536)
            if not data:
                return
            self.wfile.write(data)


class DatagramEcho(socketserver.DatagramRequestHandler):
    """Reply to each datagram with the same bytes (sent by finish())."""

    def handle(self):
        self.wfile.write(self.rfile.read())


KINDS = {
    "tcp": (socketserver.TCPServer, StreamEcho),
    "threading-tcp": (socketserver.ThreadingTCPServer, StreamEcho),
    "forking-tcp": (socketserver.ForkingTCPServer, StreamEcho),
    "udp": (socketserver.UDPServer, DatagramEcho),
    "threading-udp": (socketserver.ThreadingUDPServer, DatagramEcho),
    "forking-udp": (socketserver.ForkingUDPServer, DatagramEcho),
}


def parse_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def format_addr(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve(server):
    """Run serve_forever() in a thread; return 0 once SIGTERM/SIGINT arrives."""
    stop = threading.Event()

    def on_signal(_signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    worker.start()
    print(f"listening on {format_addr(server.server_address)}", flush=True)
    while not stop.wait(0.5):
        if not worker.is_alive():
            print("serve_forever stopped unexpectedly", file=sys.stderr)
            return 1
    server.shutdown()
    server.server_close()
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--addr", type=parse_addr, default=("127.0.0.1", 0))
    parser.add_argument("--backlog", type=int, default=128)
    parser.add_argument("--max-children", type=int, default=1024)
    args = parser.parse_args()

    base, handler = KINDS[args.kind]
    host = args.addr[0]

    class Server(base):
        address_family = socketserver.socket.AF_INET6 if ":" in host else socketserver.socket.AF_INET
        request_queue_size = args.backlog
        allow_reuse_address = True
        daemon_threads = True  # threading: don't keep the process alive for clients
        block_on_close = False  # server_close() must not wait for handlers
        max_children = args.max_children  # ForkingMixIn only

    with Server(args.addr, handler) as server:
        return serve(server)


if __name__ == "__main__":
    sys.exit(main())
