"""Rendering every failure as OpenAI's error shape, in one place."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.common import ErrorBody, ErrorResponse
from services.core.errors import ThreadbusError


def error_response(status: int, body: ErrorBody) -> JSONResponse:
    """`{"error": {...}}` with the status."""
    return JSONResponse(ErrorResponse(error=body).model_dump(mode="json"), status_code=status)


def threadbus_error(exc: ThreadbusError) -> JSONResponse:
    """A client-facing error with its status and headers."""
    response = error_response(exc.status, exc.body())
    response.headers.update(exc.headers)
    return response


def _param(loc: tuple[Any, ...]) -> str | None:
    """`tools[0].function.name` from pydantic's location of the error.

    Left out: where the value came from (body, query), and the labels pydantic adds for union
    branches: a type name (`str`, `list[...]`, `literal['auto']`), or a tag that names the
    field that follows it (`function`, `function` → `function`).
    """
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    text = ""
    for i, part in enumerate(parts):
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        name = str(part)
        is_type_label = (
            any(c in name for c in "[]'(")
            or name in {"str", "int", "float", "bool"}
            or name.startswith("constrained-")
        )
        if is_type_label or (i + 1 < len(parts) and parts[i + 1] == part):
            continue
        text += f".{name}" if text else name
    return text or None


def _from_validation(errors: list[dict[str, Any]]) -> ErrorBody:
    # A value that fits no branch of a union fails every branch; the deepest error is the
    # one that says what is wrong.
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    param = _param(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif kind == "missing":
        message = f"Missing required parameter: {param!r}."
    elif kind == "json_invalid":
        message = "We could not parse the JSON body of your request."
        param = None
    elif param is None:
        detail = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        message = f"Invalid request: {detail}."
    else:
        message = f"Invalid value for {param!r}: {first.get('msg', 'invalid')}."
    return ErrorBody(message=message, type="invalid_request_error", param=param, code=None)


def refuse_nul(request: Request) -> JSONResponse | None:
    """A 400 for a NUL character in the path or a query parameter (Postgres cannot store it,
    and no id or filter contains it), or None."""
    if "\x00" in request.url.path:
        return error_response(400, ErrorBody(
            message="The URL path contains the NUL character (\\u0000).",
            type="invalid_request_error",
        ))  # fmt: skip
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            return error_response(400, ErrorBody(
                message=f"Query parameter '{name}' contains the NUL character (\\u0000).",
                type="invalid_request_error", param=name.replace("\x00", ""),
            ))  # fmt: skip
    return None


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into OpenAI-shaped errors."""

    @app.exception_handler(ThreadbusError)
    async def _threadbus(_: Request, exc: ThreadbusError) -> JSONResponse:
        return threadbus_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _from_validation(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = (
            f"Invalid URL ({request.method} {request.url.path})"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        body = ErrorBody(message=message, type="invalid_request_error")
        return error_response(exc.status_code, body)
