"""The model client: any OpenAI-compatible Chat Completions endpoint, streamed, with retries."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import openai
from opentelemetry.trace import SpanKind

from services.core import metrics, redaction, tracing

log = logging.getLogger(__name__)

NOT_CONFIGURED = (
    "No model endpoint is configured: set OPENAI_BASE_URL (an OpenAI-compatible /v1 endpoint,"
    " e.g. vLLM or Ollama) and/or OPENAI_API_KEY for the run-poller, then create a new run."
)


class _Unread(Exception):
    """The endpoint's answer could not be read, and nothing of it has streamed, so asking again
    repeats nothing: an answer that is not HTTP (the SDK's aiohttp transport passes aiohttp's
    error on, where the httpx transport's reaches us as `APIConnectionError`), or a stream cut
    off, or ended by an `error` event, before its first text."""


def _said(exc: BaseException) -> str:
    """What went wrong, for the run's `last_error`: the SDK's words, as over its default httpx
    transport. Over aiohttp the SDK calls a connection that could not be made "Request timed
    out." (its transport maps aiohttp's connector error to a connect timeout), and an aiohttp
    error the transport does not map (a response that is not HTTP) would name the endpoint's
    URL; both read "Connection error.", as they do over httpx. The endpoint's address is the
    operator's business: it goes to the log (`_detail`), not to API clients."""
    if isinstance(exc, _Unread) and exc.__cause__ is not None:
        exc = exc.__cause__  # what was asked again for
    if isinstance(exc, aiohttp.ClientError) or any(
        isinstance(e, aiohttp.ClientConnectorError) for e in _causes(exc)
    ):
        return "Connection error."
    return str(exc)


def _detail(exc: BaseException) -> str:
    """What went wrong, for the operator's log: the HTTP transport's own words when the SDK
    wrapped them (for a refused connection they name the host and port)."""
    cause = exc.__cause__
    if isinstance(exc, openai.APIConnectionError) and cause is not None and str(cause):
        return str(cause)
    return str(exc)


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc.__cause__ is not None and len(chain) < 10:
        exc = exc.__cause__
        chain.append(exc)
    return chain


FailureCode = Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]


class ModelFailure(Exception):
    """The model could not answer; terminal for the run."""

    def __init__(
        self, code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"], message: str
    ):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Completion:
    """What one model turn produced."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


OnDelta = Callable[[str], Awaitable[None]]


class ModelClient:
    """Calls Chat Completions with streaming; retries 429, 5xx and connection errors."""

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
    ):
        self.configured = bool(base_url or api_key)
        self.base_url = base_url or "https://api.openai.com/v1"
        self._retries = max_retries
        self._backoff = backoff
        self._secrets = [api_key]
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=api_key or "unused",
            timeout=timeout,
            max_retries=0,
            # aiohttp under the SDK: a quarter less CPU a call than httpx (bench.model_call; figures
            # in bench/RESULTS.md). It honours HTTP(S)_PROXY and NO_PROXY as httpx does.
            http_client=openai.DefaultAioHttpClient(),
        )

    def _clean(self, text: str) -> str:
        """A provider's words with our key and anything credential-shaped taken out."""
        return redaction.clean(text, self._secrets)

    async def close(self) -> None:
        """Release the HTTP connections."""
        await self._client.close()

    async def complete(
        self, request: dict[str, Any], on_delta: OnDelta | None = None
    ) -> Completion:
        """One streamed chat completion for `request` (model, messages, options)."""
        if not self.configured:
            raise ModelFailure("server_error", NOT_CONFIGURED)
        model = metrics.MODEL_NAMES(str(request.get("model")))
        began = time.perf_counter()
        with tracing.span(f"chat {request.get('model')}", kind=SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": str(request.get("model")),
            "server.address": urlsplit(self.base_url).hostname or "",
        }) as span:  # fmt: skip
            try:
                completion = await self._complete(request, on_delta, model)
            except ModelFailure as failure:
                metrics.MODEL_ERRORS.labels(model, failure.code).inc()
                metrics.MODEL_REQUEST.labels(model, "error").observe(time.perf_counter() - began)
                raise
            metrics.MODEL_REQUEST.labels(model, "ok").observe(time.perf_counter() - began)
            metrics.MODEL_TOKENS.labels(model, "prompt").inc(completion.prompt_tokens)
            metrics.MODEL_TOKENS.labels(model, "completion").inc(completion.completion_tokens)
            if span is not None:
                span.set_attributes({
                    "gen_ai.usage.input_tokens": completion.prompt_tokens,
                    "gen_ai.usage.output_tokens": completion.completion_tokens,
                    "gen_ai.response.finish_reasons": [completion.finish_reason or ""],
                })  # fmt: skip
            return completion

    async def _complete(
        self, request: dict[str, Any], on_delta: OnDelta | None, model: str
    ) -> Completion:
        for attempt in range(self._retries + 1):
            try:
                return await self._stream(request, on_delta)
            except (
                openai.RateLimitError,
                openai.InternalServerError,
                openai.APIConnectionError,
                _Unread,
            ) as exc:
                if attempt == self._retries:
                    code: FailureCode = (
                        "rate_limit_exceeded"
                        if isinstance(exc, openai.RateLimitError)
                        else "server_error"
                    )
                    log.warning("model call failed (%s); no retry left",
                                self._clean(_detail(exc)))  # fmt: skip
                    failed = self._clean(f"The model endpoint failed: {_said(exc)}")
                    raise ModelFailure(code, failed) from exc
                delay = self._backoff * 2**attempt
                metrics.MODEL_ERRORS.labels(model, "retried").inc()
                log.warning("model call failed (%s); retry %d in %.1fs",
                            self._clean(_detail(exc)), attempt + 1, delay)  # fmt: skip
                await asyncio.sleep(delay)
            except openai.APIStatusError as exc:
                refused: FailureCode = (
                    "invalid_prompt" if exc.status_code == 400 else "server_error"
                )
                raise ModelFailure(
                    refused, self._clean(f"The model endpoint refused the request: {exc}")
                ) from exc
        raise AssertionError("unreachable")

    async def _stream(self, request: dict[str, Any], on_delta: OnDelta | None) -> Completion:
        """One streamed call. Through the SDK's client (auth, errors, SSE, error events), but
        with chunks read as plain dicts: typing every chunk into pydantic models and
        re-validating the request cost a quarter of the run-poller's time per run."""
        result = Completion()
        calls: dict[int, dict[str, Any]] = {}
        body = {**request, "stream": True, "stream_options": {"include_usage": True}}
        try:
            stream = await self._client.post(
                "/chat/completions", body=body, cast_to=object, stream=True,
                stream_cls=openai.AsyncStream[object],
                options={"headers": tracing.http_headers() or {}},
            )  # fmt: skip
        except aiohttp.ClientError as exc:
            raise _Unread(_detail(exc)) from exc
        async with stream:
            try:
                await self._read(stream, result, calls, on_delta)
            except openai.APIError as exc:
                # Cut off mid-stream: the connection lost or timed out (the SDK raises
                # `APIConnectionError`), or an `error` event.
                if not result.text:
                    raise _Unread(_detail(exc)) from exc
                log.warning("model stream cut off mid-answer (%s)", self._clean(_detail(exc)))
                if result.finish_reason is None:
                    # Text already went out as deltas: asking again would repeat it. The run
                    # fails, its reply incomplete with the text so far, as the hosted API's.
                    said = _said(exc)
                    raise ModelFailure(
                        "server_error", self._clean(f"The model endpoint failed mid-answer: {said}")
                    ) from exc
                # The answer had ended (its finish reason came); only usage or [DONE] is lost.
        result.tool_calls = [calls[i] for i in sorted(calls)]
        if not result.completion_tokens:
            result.completion_tokens = max(1, len(result.text) // 4) if result.text else 0
        return result

    async def _read(
        self,
        stream: "openai.AsyncStream[object]",
        result: Completion,
        calls: dict[int, dict[str, Any]],
        on_delta: OnDelta | None,
    ) -> None:
        """Fold the stream's chunks into `result` and `calls`, passing text on as it comes."""
        async for chunk in stream:
            if not isinstance(chunk, dict):
                continue
            usage = chunk.get("usage")
            if usage:
                result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                result.completion_tokens = int(usage.get("completion_tokens") or 0)
            for choice in chunk.get("choices") or ():
                if choice.get("finish_reason"):
                    result.finish_reason = choice["finish_reason"]
                delta = choice.get("delta") or {}
                if content := delta.get("content"):
                    result.text += content
                    if on_delta is not None:
                        await on_delta(content)
                for call in delta.get("tool_calls") or ():
                    slot = calls.setdefault(
                        int(call.get("index") or 0), {"id": None, "name": "", "arguments": ""}
                    )
                    if call.get("id"):
                        slot["id"] = call["id"]
                    if function := call.get("function"):
                        slot["name"] += function.get("name") or ""
                        slot["arguments"] += function.get("arguments") or ""
