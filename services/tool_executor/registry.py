"""Server-side function handlers: Python callables (entry points or settings) and webhooks."""

import asyncio
import hashlib
import hmac
import importlib
import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

import httpx
from pydantic import BaseModel

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "threadbus.functions"


@dataclass(frozen=True)
class ToolCall:
    """What a handler is told about the call it answers (the id makes retries idempotent)."""

    tool_call_id: str
    run_id: str
    thread_id: str
    name: str

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt at this call, and unique to it (a provider's call ids
        may repeat across runs): make a retried side effect harmless with it."""
        return f"{self.run_id}/{self.tool_call_id}"


class Handler(Protocol):
    """Answers one call of one function."""

    kind: str
    timeout: float

    async def __call__(self, arguments: str, call: ToolCall) -> str: ...


class HandlerError(Exception):
    """The handler failed; the message is what the model reads."""


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise HandlerError(
            f"the handler returned {type(value).__name__}, not text or JSON"
        ) from exc


@dataclass
class PythonHandler:
    """A sync or async callable `fn(arguments: dict, call: ToolCall) -> str | JSON value`.

    A `threadbus_timeout` attribute on the callable overrides the default timeout.
    """

    fn: Callable[..., Any]
    timeout: float
    kind: str = "python"

    async def __call__(self, arguments: str, call: ToolCall) -> str:
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise HandlerError(f"the arguments are not valid JSON: {exc}") from exc
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(parsed, call)
        else:
            result = await asyncio.to_thread(self.fn, parsed, call)
        return _as_text(result)


REPLAY_WINDOW_SECONDS = 300
"""How old (or how far ahead) a signed webhook request may be and still be accepted."""


def signed_part(timestamp: str, call_id: str, function: str, body: bytes) -> bytes:
    """What the signature covers: `v1:<timestamp>:<tool call id>:<function>:` then the body."""
    return f"v1:{timestamp}:{call_id}:{function}:".encode() + body


def signature(secret: str, timestamp: str, call_id: str, function: str, body: bytes) -> str:
    """The `X-Threadbus-Signature` value of a webhook request: `v1=<hex HMAC-SHA256>`."""
    digest = hmac.new(secret.encode(), signed_part(timestamp, call_id, function, body),
                      hashlib.sha256)  # fmt: skip
    return f"v1={digest.hexdigest()}"


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    window: float = REPLAY_WINDOW_SECONDS,
) -> bool:
    """What a webhook receiver runs on each request: the signature matches (compared in
    constant time) and the timestamp is within `window` seconds of now. A receiver should
    also drop a repeated `Idempotency-Key` it has answered, to make a replay inside the window
    harmless; header names are matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get("x-threadbus-timestamp", "")
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > window:
        return False
    expected = signature(secret, timestamp, lower.get("x-threadbus-tool-call-id", ""),
                         lower.get("x-threadbus-function", ""), body)  # fmt: skip
    return hmac.compare_digest(expected, lower.get("x-threadbus-signature", ""))


@dataclass
class WebhookHandler:
    """POSTs the arguments (JSON) to a URL; the response body is the output.

    Headers: `Idempotency-Key` (the same for every attempt at one call), `X-Threadbus-Tool-Call-Id`,
    `X-Threadbus-Run-Id`, `X-Threadbus-Function`, `X-Threadbus-Timestamp`, and, with a secret,
    `X-Threadbus-Signature` (see `signature`; receivers check it with `verify`). Redirects are
    not followed; a response must be 2xx, arrive within the timeout and stay under
    `max_response_bytes`.
    """

    url: str
    client: httpx.AsyncClient
    secret: str
    timeout: float
    max_response_bytes: int = 512_000
    kind: str = "webhook"

    async def __call__(self, arguments: str, call: ToolCall) -> str:
        body = (arguments or "{}").encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": call.idempotency_key,
            "X-Threadbus-Tool-Call-Id": call.tool_call_id,
            "X-Threadbus-Run-Id": call.run_id,
            "X-Threadbus-Function": call.name,
            "X-Threadbus-Timestamp": timestamp,
        }
        if self.secret:
            headers["X-Threadbus-Signature"] = signature(
                self.secret, timestamp, call.tool_call_id, call.name, body
            )
        try:
            request = self.client.build_request("POST", self.url, content=body, headers=headers)
            response = await self.client.send(request, stream=True, follow_redirects=False)
            try:
                if response.is_redirect:
                    raise HandlerError(
                        f"the webhook answered HTTP {response.status_code} (a redirect, which"
                        " is not followed)"
                    )
                if not response.is_success:
                    raise HandlerError(f"the webhook answered HTTP {response.status_code}")
                received = bytearray()
                async for chunk in response.aiter_bytes():
                    received += chunk
                    if len(received) > self.max_response_bytes:
                        raise HandlerError(
                            f"the webhook's answer is larger than {self.max_response_bytes} bytes"
                        )
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise HandlerError(f"the webhook could not be reached: {exc}") from exc
        return received.decode(response.encoding or "utf-8", errors="replace")


class WebhookTarget(BaseModel):
    """One webhook of `THREADBUS_FUNCTION_WEBHOOKS`: its URL and its own secret."""

    url: str
    secret: str | None = None


def _load(target: str) -> Callable[..., Any]:
    module, _, attribute = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


def load_handlers(
    *,
    functions: str,
    webhooks: Mapping[str, str | WebhookTarget],
    secret: str,
    timeout: float,
    client: httpx.AsyncClient,
    max_response_bytes: int = 512_000,
) -> dict[str, Handler]:
    """Every handler this process offers, by function name (settings win over entry points)."""
    handlers: dict[str, Handler] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            fn = entry.load()
        except (ImportError, AttributeError) as exc:
            log.error("entry point %s = %s failed to load: %s", entry.name, entry.value, exc)
            continue
        handlers[entry.name] = PythonHandler(fn, getattr(fn, "threadbus_timeout", timeout))
    for pair in filter(None, (p.strip() for p in functions.split(","))):
        name, _, target = pair.partition("=")
        fn = _load(target.strip())
        handlers[name.strip()] = PythonHandler(fn, getattr(fn, "threadbus_timeout", timeout))
    for name, given in webhooks.items():
        hook = WebhookTarget(url=given) if isinstance(given, str) else given
        own = hook.secret if hook.secret is not None else secret
        handlers[name] = WebhookHandler(hook.url, client, own, timeout, max_response_bytes)
    return handlers
