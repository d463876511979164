"""A TCP port that forwards every connection to another port (tests only)."""

import contextlib
import selectors
import socket
import socketserver
import threading
from typing import Any


class Forwarder:
    """Listens on 127.0.0.1:`port` and pipes each connection to 127.0.0.1:`target`."""

    def __init__(self, port: int, target: int):
        target_address = ("127.0.0.1", target)

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.create_connection(target_address, timeout=10) as upstream:
                    upstream.settimeout(None)
                    _pump(self.request, upstream)

        self._server = _Server(("127.0.0.1", port), Pipe)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "Forwarder":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # the port a stopped broker just left
    daemon_threads = True


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    other: dict[Any, socket.socket] = {a: b, b: a}
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ)
        selector.register(b, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    with contextlib.suppress(OSError):
                        other[source].shutdown(socket.SHUT_WR)
                    return
                other[source].sendall(data)
