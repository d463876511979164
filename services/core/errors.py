"""The one error tree; the API renders it as OpenAI's error shape, workers record it."""

from schemas.common import ErrorBody


class ThreadbusError(Exception):
    """Base of errors a client can be told about."""

    status = 500
    type = "server_error"
    headers: dict[str, str] = {}  # noqa: RUF012 - read only, replaced by subclasses

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> ErrorBody:
        """The error as `{message, type, param, code}`."""
        return ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code)


class InvalidRequest(ThreadbusError):
    """The request is invalid or conflicts with the current state (400, never 409)."""

    status = 400
    type = "invalid_request_error"


class NotFound(ThreadbusError):
    """No object with that id (404)."""

    status = 404
    type = "invalid_request_error"

    @classmethod
    def of(cls, kind: str, object_id: str) -> "NotFound":
        """`No thread found with id 'thread_x'.`"""
        return cls(f"No {kind} found with id {object_id!r}.")


class PayloadTooLarge(ThreadbusError):
    """The request body or upload is larger than allowed (413)."""

    status = 413
    type = "invalid_request_error"


class RateLimited(ThreadbusError):
    """Over a per-key limit (429; the SDKs wait `retry-after` and try again)."""

    status = 429
    type = "requests"
    headers = {"retry-after": "1"}  # noqa: RUF012
