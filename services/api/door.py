"""The door every request passes: NUL bytes refused, the key checked, `/v1` rate-limited, an
`x-request-id` on every answer, and the run poll answered without the app (`hot`).

Plain ASGI: Starlette's `BaseHTTPMiddleware` ran each request's app in a task of its own with
memory streams in between, a measurable share of the API's CPU per request.
"""

import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import auth, errors, hot, limits


class Door:
    """Outermost middleware of the API."""

    def __init__(self, app: ASGIApp, gate: auth.Gate, limiter: limits.RateLimiter):
        self.app = app
        self.gate = gate
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = {"x-request-id": f"req_{uuid.uuid4().hex}"}

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        request = Request(scope)
        pool = request.app.state.runtime.pool
        refused = errors.refuse_nul(request) or await auth.authenticate(request, pool, self.gate)
        if refused is None and request.url.path.startswith("/v1"):
            client = request.client.host if request.client else None
            who = limits.RateLimiter.identity(request.headers.get("authorization"), client)
            allowed, headers = self.limiter.take(who)
            extra.update(headers)
            if allowed:
                limits.CALLER.set(limits.Caller(self.limiter, who))
            else:
                refused = limits.rate_limited(headers)
        if refused is not None:
            await refused(scope, receive, stamped)
            return
        polled = await hot.answer(scope, pool, request.app.state.settings)
        if polled is not None:
            await polled(scope, receive, stamped)
            return
        await self.app(scope, receive, stamped)
