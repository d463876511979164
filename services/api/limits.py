"""Limits per request and per key: body size, request rate, concurrent streams.

The rate is a token bucket per API key (or per client address while the API runs without
keys), refilled continuously; a request that finds it empty gets 429 with `retry-after` and
the `x-ratelimit-*` headers OpenAI's SDKs read (they wait that long and retry). Streams (SSE
responses) are counted while open. Both are per API process: with N replicas a key gets up to
N times the rate; put the cap per replica accordingly.
"""

import hashlib
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from schemas.common import ErrorBody
from services.api.errors import error_response
from services.core.errors import RateLimited

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOADS = ("/v1/files", "/v1/uploads")
"""Multipart uploads: streamed to the blob store and capped by the file limit instead."""


def too_large(limit: int) -> Any:
    return error_response(413, ErrorBody(
        message=f"The request body is larger than {limit} bytes.",
        type="invalid_request_error", code="request_too_large",
    ))  # fmt: skip


class BodyLimit:
    """413 for a request body over `max_bytes` (declared or counted while streaming)."""

    def __init__(self, app: App, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or self.max_bytes <= 0 or path.startswith(UPLOADS):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0
        started = answered = False

        async def counting() -> Message:
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not answered:
                    # Answer now, and tell the app the client went away: it stops reading,
                    # and whatever it sends after this is dropped.
                    answered = True
                    if not started:
                        await too_large(self.max_bytes)(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting, tracking)


@dataclass
class Bucket:
    """Requests a key may still make, refilled at `per_minute` a minute."""

    tokens: float
    stamp: float = field(default_factory=time.monotonic)


class RateLimiter:
    """Token buckets and open-stream counts per key, in this process."""

    def __init__(self, per_minute: int, max_streams: int):
        self.per_minute = per_minute
        self.max_streams = max_streams
        self._buckets: dict[str, Bucket] = {}
        self._streams: dict[str, int] = {}

    @staticmethod
    def identity(authorization: str | None, client: str | None) -> str:
        """Whom a request counts against: its key (hashed), else its address."""
        if authorization:
            return hashlib.sha256(authorization.encode()).hexdigest()[:32]
        return f"addr:{client or '-'}"

    def take(self, who: str) -> tuple[bool, dict[str, str]]:
        """Spend one request of `who`'s bucket: (allowed, the headers to answer with)."""
        if self.per_minute <= 0:
            return True, {}
        now = time.monotonic()
        rate = self.per_minute / 60.0
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) > 100_000:  # forget idle buckets (they would be full again)
                self._buckets.clear()
            bucket = self._buckets[who] = Bucket(tokens=float(self.per_minute), stamp=now)
        bucket.tokens = min(self.per_minute, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        allowed = bucket.tokens >= 1
        if allowed:
            bucket.tokens -= 1
        until_one = 0.0 if allowed else (1 - bucket.tokens) / rate
        until_full = (self.per_minute - bucket.tokens) / rate
        headers = {
            "x-ratelimit-limit-requests": str(self.per_minute),
            "x-ratelimit-remaining-requests": str(math.floor(bucket.tokens)),
            "x-ratelimit-reset-requests": _duration(until_full),
        }
        if not allowed:
            headers["retry-after"] = str(max(1, math.ceil(until_one)))
            headers["retry-after-ms"] = str(max(1, math.ceil(until_one * 1000)))
        return allowed, headers

    def open_stream(self, who: str) -> bool:
        """Count a stream opening; False (and not counted) when `who` is at the cap."""
        if self.max_streams <= 0:
            return True
        if self._streams.get(who, 0) >= self.max_streams:
            return False
        self._streams[who] = self._streams.get(who, 0) + 1
        return True

    def close_stream(self, who: str) -> None:
        """A stream of `who` ended."""
        left = self._streams.get(who, 0) - 1
        if left > 0:
            self._streams[who] = left
        else:
            self._streams.pop(who, None)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `20ms`."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def rate_limited(headers: dict[str, str]) -> Any:
    """The 429 for a key over its rate."""
    response = error_response(429, ErrorBody(
        message="Rate limit reached for requests on this API key. Please try again in"
        f" {headers.get('retry-after', '1')}s.",
        type="requests", code="rate_limit_exceeded",
    ))  # fmt: skip
    response.headers.update(headers)
    return response


@dataclass(frozen=True)
class Caller:
    """The limiter and whom the current request counts against (set by the middleware)."""

    limiter: RateLimiter
    who: str


CALLER: ContextVar[Caller | None] = ContextVar("threadbus_caller", default=None)


def claim_stream() -> Callable[[], None]:
    """Count a stream opening for the current caller; returns its release. RateLimited when
    the caller has as many streams open as allowed."""
    caller = CALLER.get()
    if caller is None:
        return lambda: None
    if not caller.limiter.open_stream(caller.who):
        raise RateLimited(
            f"Too many concurrent streams on this API key (at most"
            f" {caller.limiter.max_streams}); close one and try again.",
            code="rate_limit_exceeded",
        )
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            caller.limiter.close_stream(caller.who)

    return release
