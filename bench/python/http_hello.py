#!/usr/bin/env python3
"""Baseline HTTP/1.1 server: http.server.ThreadingHTTPServer answering every
GET with a fixed ``hello\\n`` body (Content-Length set, keep-alive).

    python3 http_hello.py [--addr HOST:PORT]

Prints ``listening on HOST:PORT`` (flushed) first; exits 0 on SIGTERM/SIGINT.
"""

import argparse
import http.server
import os
import socket
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the sources
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echo_servers import parse_addr, serve  # noqa: E402

BODY = b"hello\n"


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive by default
    # Headers and body go out in two writes; with Nagle on, the body waits
    # for the client's delayed ACK (~40 ms per request). TCP_NODELAY avoids
    # measuring that artefact instead of the server.
    disable_nagle_algorithm = True

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format, *args):  # noqa: A002 - silence access log
        pass


def main():
    parser = argparse.ArgumentParser(description="HTTP hello baseline")
    parser.add_argument("--addr", type=parse_addr, default=("127.0.0.1", 0))
    args = parser.parse_args()

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in args.addr[0] else socket.AF_INET
        request_queue_size = 128
        block_on_close = False

    with Server(args.addr, Hello) as server:
        return serve(server)


if __name__ == "__main__":
    sys.exit(main())
