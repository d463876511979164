"""Scripted, OpenAI-compatible Chat Completions server for tests, served over real HTTP.

Replies come from an ordered rule list: a rule matches when its ``match`` is a substring of the
content of the request's last ``user``/``tool`` message (``None`` matches anything); with no
matching rule the reply is ``"Echo: <that text>"``. Rules are added in-process with
``server.script(...)`` or, from other processes, via the control API on the same port:
``POST /_control/rules`` (JSON: the ``script`` arguments), ``DELETE /_control/rules`` (clears
rules and the request log), ``GET /_control/requests`` (request bodies received, in order).

Usage is word-based: prompt tokens = words of all message contents + ``PER_MESSAGE_TOKENS`` per
message; completion tokens = words of the reply and of each tool call's name and arguments.

``POST /v1/embeddings`` answers with deterministic vectors (a hash of each input seeds them;
``dimensions`` as asked, else 384), unit length, with one token per word as usage; the inputs
are logged (``server.embedded``) so tests can see what was embedded.

Standalone: ``python -m tests.fakes.model_server --port 9999`` serves until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Self

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, PrivateAttr

PER_MESSAGE_TOKENS = 3
_ARG_FRAGMENT_CHARS = 8
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class ToolCall(BaseModel):
    name: str
    arguments: str = ""  # a JSON document, as OpenAI sends it


class Rule(BaseModel):
    """One scripted behaviour; the JSON body of ``POST /_control/rules``."""

    model_config = ConfigDict(extra="forbid")

    match: str | None = None
    reply: str | None = None
    tool_calls: list[ToolCall] | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    status: int | None = None
    error_times: int | None = None
    error_message: str | None = None
    finish_reason: str | None = None
    times: int | None = None
    cut_after: int | None = None  # hang up before text chunk N + 1 (or, after the last, its end)
    stream_error: str | None = None  # at the cut, send an `error` event with this message
    _used: int = PrivateAttr(default=0)


def _text(content: Any) -> str:
    """Plain text of a message ``content`` (a string or a list of content parts)."""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def last_input_text(body: dict[str, Any]) -> str:
    """Content of the last ``user`` or ``tool`` message of a chat completion request body."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") in ("user", "tool"):
            return _text(message.get("content"))
    return ""


def _error(status: int, message: str) -> JSONResponse:
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "api_error", None))
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def _tool_call(name: str, arguments: str) -> dict[str, Any]:
    function = {"name": name, "arguments": arguments}
    return {"id": f"call_{secrets.token_hex(12)}", "type": "function", "function": function}


def _usage(messages: list[Any], reply: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    prompt = sum(len(_text(m.get("content")).split()) + PER_MESSAGE_TOKENS for m in messages)
    completion = len(reply.split())
    completion += sum(len(" ".join(c["function"].values()).split()) for c in calls)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage["total_tokens"] = prompt + completion
    return usage | {"prompt_tokens_details": {"cached_tokens": 0}}


def _deltas(reply: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stream deltas as OpenAI sends them: role, content words, then each call's head + args."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "" if reply else None}]
    deltas += [{"content": piece} for piece in re.split(r"(?<=\s)(?=\S)", reply) if piece]
    for index, call in enumerate(calls):
        name, args = call["function"]["name"], call["function"]["arguments"]
        head = {"index": index, **call, "function": {"name": name, "arguments": ""}}
        deltas.append({"tool_calls": [head]})
        for i in range(0, len(args), _ARG_FRAGMENT_CHARS):
            fragment = {"arguments": args[i : i + _ARG_FRAGMENT_CHARS]}
            deltas.append({"tool_calls": [{"index": index, "function": fragment}]})
    return deltas


def fake_embedding(text: str, dims: int) -> list[float]:
    """A unit vector determined by the text (its words' hashes summed, so texts that share
    words point alike: enough for a search to find the obviously related text)."""
    vector = [0.0] * dims
    for word in text.lower().split():
        digest = hashlib.sha256(word.encode()).digest()
        for k in range(4):
            slot = int.from_bytes(digest[4 * k : 4 * k + 4], "big") % dims
            vector[slot] += 1.0 if digest[16 + k] % 2 else -1.0
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


class ScriptedModelServer:
    """A uvicorn-served fake of ``/v1/chat/completions`` driven by scripted rules."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._rules: list[Rule] = []
        self._requests: list[dict[str, Any]] = []
        self._traceparents: list[str | None] = []
        self.first_token_at = {}
        self.embedded: list[str] = []
        # IPPROTO_TCP, not 0: asyncio turns Nagle off only for sockets that say TCP, and with
        # Nagle on each streamed chunk after the first waited for the client's delayed ACK
        # (40 ms a response on a kept-alive connection).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        # asyncio's loop and h11, whatever is installed: the model stands for a provider
        # elsewhere, and benchmarks that share its process must not change with the services'.
        options: dict[str, Any] = {
            "log_level": "warning", "lifespan": "off", "ws": "none", "loop": "asyncio",
            "http": "h11",
        }  # fmt: skip
        config = uvicorn.Config(self._build_app(), timeout_graceful_shutdown=1, **options)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("server already started")
        run = functools.partial(self._server.run, sockets=[self._sock])
        self._thread = threading.Thread(target=run, name="scripted-model-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("model server failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Shut down (in-flight responses get 1s, then are cut) and release the port."""
        thread, self._thread = self._thread, None
        self._server.should_exit = True
        if thread is not None:
            thread.join(timeout=5)
            self._server.force_exit = True
            thread.join(timeout=5)
        self._sock.close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (standalone use)."""
        self._server.run(sockets=[self._sock])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(
        self,
        match: str | None,
        *,
        reply: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        status: int | None = None,
        error_times: int | None = None,
        error_message: str | None = None,
        finish_reason: str | None = None,
        times: int | None = None,
        cut_after: int | None = None,
        stream_error: str | None = None,
    ) -> None:
        """Append a rule (see the module docstring); the arguments are the fields of `Rule`."""
        self.add_rule(Rule(**{k: v for k, v in locals().items() if k != "self"}))

    def add_rule(self, rule: Rule) -> None:
        with self._cond:
            self._rules.append(rule)

    def reset(self) -> None:
        """Clear all rules and the request log."""
        with self._cond:
            self._rules.clear()
            self._requests.clear()
            self._traceparents.clear()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Parsed bodies of all chat completion requests received so far, oldest first."""
        with self._cond:
            return copy.deepcopy(self._requests)

    @property
    def traceparents(self) -> list[str | None]:
        """The `traceparent` header of each chat completion request, in the order of
        `requests`."""
        with self._cond:
            return list(self._traceparents)

    def wait_for_request(
        self, match: str, timeout: float = 10.0, *, since: int = 0
    ) -> dict[str, Any]:
        """Block until a request (log index >= ``since``) whose last user/tool message contains
        ``match`` has arrived; it may still be being answered. Raises ``TimeoutError``."""

        def find() -> dict[str, Any] | None:
            return next((b for b in self._requests[since:] if match in last_input_text(b)), None)

        with self._cond:
            if (body := self._cond.wait_for(find, timeout)) is None:
                raise TimeoutError(f"no request matching {match!r} arrived within {timeout}s")
            return copy.deepcopy(body)

    first_token_at: dict[str, float]
    """Last user/tool text of a streamed request -> `time.monotonic()` of its first token (the
    first chunk with content or a tool call; the role-only chunk before it carries none)."""

    def _record_and_pick(self, body: dict[str, Any], traceparent: str | None) -> Rule | None:
        """Log the request, then return the rule to apply (None: the default echo)."""
        text = last_input_text(body)
        with self._cond:
            self._requests.append(copy.deepcopy(body))
            self._traceparents.append(traceparent)
            self._cond.notify_all()
            for rule in self._rules:
                if rule.match is not None and rule.match not in text:
                    continue
                limits = (rule.times, rule.error_times if rule.status is not None else None)
                if any(n is not None and rule._used >= n for n in limits):
                    continue  # used up, or its scripted errors are spent: fall through
                rule._used += 1
                return rule
        return None

    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                return _error(400, "Expected a JSON body with a 'messages' list.")
            rule = self._record_and_pick(body, request.headers.get("traceparent"))
            if rule is not None and rule.status is not None:
                await asyncio.sleep(rule.delay_s)
                message = rule.error_message or f"Scripted error (HTTP {rule.status})."
                return _error(rule.status or 500, message)
            return await self._respond(body, rule)

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> Response:
            body = await request.json()
            inputs = body.get("input")
            texts = [inputs] if isinstance(inputs, str) else inputs
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                return _error(400, "Expected 'input' to be a string or a list of strings.")
            with self._cond:
                self.embedded.extend(texts)
            dims = int(body.get("dimensions") or 384)
            data = [
                {"object": "embedding", "index": i, "embedding": fake_embedding(t, dims)}
                for i, t in enumerate(texts)
            ]
            words = sum(len(t.split()) for t in texts)
            usage = {"prompt_tokens": words, "total_tokens": words}
            model = body.get("model") or "fake-embedding"
            return JSONResponse({"object": "list", "data": data, "model": model, "usage": usage})

        app.add_api_route("/_control/rules", self.add_rule, methods=["POST"])
        app.add_api_route("/_control/rules", self.reset, methods=["DELETE"])
        app.add_api_route("/_control/requests", lambda: self.requests, methods=["GET"])
        return app

    async def _respond(self, body: dict[str, Any], rule: Rule | None) -> Response:
        rule = rule or Rule(reply=f"Echo: {last_input_text(body)}")
        reply = rule.reply or ""
        calls = [_tool_call(c.name, c.arguments) for c in rule.tool_calls or []]
        finish = rule.finish_reason or ("tool_calls" if calls else "stop")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None and len(reply.split(" ")) > int(limit):
            reply, finish = " ".join(reply.split(" ")[: int(limit)]), "length"  # a real cut-off
        usage = _usage(body["messages"], reply, calls)
        base = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time())}
        base |= {"model": body.get("model") or "fake-model", "system_fingerprint": "fp_scripted"}
        if not body.get("stream"):
            await asyncio.sleep(rule.delay_s)
            content = reply if reply or not calls else None
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            message |= {"annotations": [], **({"tool_calls": calls} if calls else {})}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            completion = {"object": "chat.completion", "choices": [choice], "usage": usage}
            return JSONResponse(base | completion)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def event(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
            data = base | {"object": "chat.completion.chunk", "choices": choices}
            data |= {"usage": usage} if include_usage else {}
            return f"data: {json.dumps(data)}\n\n"

        def one(delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

        async def events() -> AsyncIterator[str]:
            await asyncio.sleep(rule.delay_s)
            stamped, texts = False, 0
            for n, delta in enumerate(_deltas(reply, calls)):
                if n and rule.chunk_delay_s:
                    await asyncio.sleep(rule.chunk_delay_s)
                if delta.get("content"):
                    if texts == rule.cut_after and rule.stream_error is not None:
                        error = {"message": rule.stream_error, "type": "server_error"}
                        yield f"data: {json.dumps({'error': error})}\n\n"
                        return
                    if texts == rule.cut_after:  # after the chunks before it went out
                        raise ConnectionAbortedError("scripted: the stream is cut off")
                    texts += 1
                if not stamped and (delta.get("content") or delta.get("tool_calls")):
                    # When the first token left (not the role-only chunk before it), for
                    # latency benchmarks.
                    stamped = True
                    with self._cond:
                        self.first_token_at[last_input_text(body)] = time.monotonic()
                yield event(one(delta))
            yield event(one({}, finish))
            if rule.cut_after is not None and texts == rule.cut_after:  # all text and the finish
                raise ConnectionAbortedError("scripted: the stream is cut off before its usage")
            if include_usage:
                yield event([], usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    cli = parser.parse_args()
    ScriptedModelServer(cli.host, cli.port).serve_forever()
