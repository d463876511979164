"""A webhook receiver for server-side functions: checks the HMAC signature, records calls."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.tool_executor.registry import signature

SECRET = "test-webhook-secret"


class WebhookServer:
    """`POST /ship_order` answers `shipped <order_id>`; a bad signature gets 401."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                expected = signature(SECRET, self.headers.get("X-Threadbus-Timestamp", ""), body)
                valid = self.headers.get("X-Threadbus-Signature") == expected
                owner.calls.append(
                    {"path": self.path, "body": json.loads(body), "valid": valid,
                     "tool_call_id": self.headers.get("X-Threadbus-Tool-Call-Id"),
                     "idempotency_key": self.headers.get("Idempotency-Key")}
                )  # fmt: skip
                answer = f"shipped {json.loads(body).get('order_id')}" if valid else "bad signature"
                self.send_response(200 if valid else 401)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "WebhookServer":
        """Serve in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
