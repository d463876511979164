"""Server-side function handlers: Python callables (entry points or settings) and webhooks."""

import asyncio
import hashlib
import hmac
import importlib
import inspect
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

import httpx

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


@dataclass
class WebhookHandler:
    """POSTs the arguments (JSON) to a URL; the response body is the output.

    Headers: `Idempotency-Key` (the same for every attempt at one call), `X-Threadbus-Tool-Call-Id`,
    `X-Threadbus-Function`, `X-Threadbus-Timestamp`, and `X-Threadbus-Signature: sha256=<hex HMAC
    of "<timestamp>.<body>">` when a secret is set.
    """

    url: str
    client: httpx.AsyncClient
    secret: str
    timeout: float
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
            digest = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
            headers["X-Threadbus-Signature"] = f"sha256={digest.hexdigest()}"
        try:
            response = await self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise HandlerError(f"the webhook could not be reached: {exc}") from exc
        if response.is_error:
            raise HandlerError(f"the webhook answered HTTP {response.status_code}")
        return response.text


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Threadbus-Signature` value a webhook receiver should expect."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


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
    webhooks: dict[str, str],
    secret: str,
    timeout: float,
    client: httpx.AsyncClient,
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
    for name, url in webhooks.items():
        handlers[name] = WebhookHandler(url, client, secret, timeout)
    return handlers
