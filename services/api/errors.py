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


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    # drop pydantic's union-branch labels such as "str" / "list[...]" / "function"
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "[" in str(part) or str(part) in {"str", "int", "float", "bool", "dict"}:
            continue
        else:
            text += f".{part}" if text else str(part)
    return text or None


def _from_validation(errors: list[dict[str, Any]]) -> ErrorBody:
    first = errors[0]
    param = _param(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif kind == "missing":
        message = f"Missing required parameter: {param!r}."
    elif kind == "json_invalid":
        message = "We could not parse the JSON body of your request."
        param = None
    else:
        message = f"Invalid value for {param!r}: {first.get('msg', 'invalid')}."
    return ErrorBody(message=message, type="invalid_request_error", param=param, code=None)


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into OpenAI-shaped errors."""

    @app.exception_handler(ThreadbusError)
    async def _threadbus(_: Request, exc: ThreadbusError) -> JSONResponse:
        return error_response(exc.status, exc.body())

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
