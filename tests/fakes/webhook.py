"""A webhook receiver for server-side functions: checks each request as the README tells
receivers to (`registry.verify`: constant-time signature check, replay window), records calls.

`POST /ship_order` (signed with `SHIP_SECRET`, its own) answers `shipped <order_id>`;
`POST /redirect` answers 302 to `/ship_order`; `POST /huge` answers 600,000 bytes; the others
are signed with `SECRET`. A request that fails the check gets 401.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.tool_executor.registry import verify

SECRET = "test-webhook-secret"
SHIP_SECRET = "ship-order-own-secret"


class WebhookServer:
    """Serves the webhooks of the suite's tool-executor (see the module docstring)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                secret = SHIP_SECRET if self.path == "/ship_order" else SECRET
                headers = dict(self.headers.items())
                valid = verify(secret, headers, body)
                owner.calls.append(
                    {"path": self.path, "body": json.loads(body), "valid": valid,
                     "tool_call_id": self.headers.get("X-Threadbus-Tool-Call-Id"),
                     "idempotency_key": self.headers.get("Idempotency-Key"),
                     "headers": headers, "raw": body}
                )  # fmt: skip
                if valid and self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/ship_order")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if valid and self.path == "/huge":
                    answer = "x" * 600_000
                elif valid:
                    answer = f"shipped {json.loads(body).get('order_id')}"
                else:
                    answer = "bad signature"
                self.send_response(200 if valid else 401)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer.encode())))
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
