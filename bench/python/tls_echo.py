#!/usr/bin/env python3
"""Baseline TLS echo server: Python's socketserver.ThreadingTCPServer with the ssl module.

    python3 tls_echo.py --cert CERT.pem --key KEY.pem [--addr HOST:PORT] [--backlog N]

Each accepted socket is wrapped with ``ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)`` in
``finish_request``, that is on the request's own thread (wrapping in ``get_request`` would run every
handshake on the one accepting thread), and the handshake runs there (``do_handshake_on_connect``).
The handler echoes ``rfile.read1()`` until EOF, as ``echo_servers.py``'s does. The context is
OpenSSL's defaults for a server (TLS 1.2 and 1.3, its session tickets).

Prints ``listening on HOST:PORT`` (flushed) as the first stdout line and exits 0 on SIGTERM/SIGINT
after a graceful shutdown(). The listen backlog is raised 5 -> 128 as in ``echo_servers.py``.
"""

import argparse
import signal
import socket
import socketserver
import ssl
import sys
import threading

# A client that connects and never completes its handshake must not hold a thread for ever; the
# socketserver crate's TLS handshake deadline is 10 s too.
HANDSHAKE_TIMEOUT = 10.0


class StreamEcho(socketserver.StreamRequestHandler):
    """Echo every byte back until the client closes its side."""

    def handle(self):
        while True:
            data = self.rfile.read1(65536)
            if not data:
                return
            self.wfile.write(data)


class TLSThreadingTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True  # don't keep the process alive for clients
    block_on_close = False  # server_close() must not wait for handlers
    allow_reuse_address = True

    def __init__(self, addr, handler, context, backlog):
        self.request_queue_size = backlog
        self.context = context
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            tls.settimeout(None)
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.settimeout(1.0)
                tls.unwrap()  # send our close_notify, as a well-behaved TLS server does
            except (OSError, ValueError, ssl.SSLError):
                pass
            tls.close()

    def handle_error(self, request, client_address):
        # A client that resets its connection is not worth a traceback per request.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def parse_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def format_addr(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", type=parse_addr, default=("127.0.0.1", 0))
    parser.add_argument("--cert", required=True, help="certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="private key (PEM)")
    parser.add_argument("--backlog", type=int, default=128)
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)

    class Server(TLSThreadingTCPServer):
        address_family = socket.AF_INET6 if ":" in args.addr[0] else socket.AF_INET

    server = Server(args.addr, StreamEcho, context, args.backlog)
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


if __name__ == "__main__":
    sys.exit(main())
