"""A tiny HTTP server for a worker's probes, `/healthz` (the loop answers) and `/readyz`, and
its Prometheus metrics, `/metrics`."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from services.core import metrics

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[bool]]


class HealthServer:
    """Answers GET /healthz with 200 while the event loop runs, /readyz with 200 or 503."""

    def __init__(self, port: int, ready: ReadyCheck, host: str = "0.0.0.0"):
        self._port = port
        self._host = host
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; a port already taken is logged, not fatal (several workers on one host)."""
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._port)
        except OSError as exc:
            log.warning("health server not started on port %d: %s", self._port, exc)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            path = line.decode(errors="replace").split(" ")[1] if line.count(b" ") >= 2 else ""
            body, kind = b"", "text/plain"
            if path == "/healthz":
                status = "200 OK"
            elif path == "/metrics":
                status = "200 OK"
                body, kind = metrics.exposition()
            elif path == "/readyz":
                try:
                    ok = await asyncio.wait_for(self._ready(), 5)
                except (TimeoutError, OSError):
                    ok = False
                status = "200 OK" if ok else "503 Service Unavailable"
            else:
                status = "404 Not Found"
            body = body or status.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
