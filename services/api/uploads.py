"""Reading a multipart upload as it arrives: the file part goes straight into the blob store.

Starlette's form parser spools a whole upload to a temporary file before the endpoint runs;
here the body is parsed incrementally (python-multipart, as Starlette does) and the file's
bytes are handed to the blob store part by part while the client is still sending, so an
upload costs neither memory nor local disk, and a limit is enforced as the bytes come.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from services.core.blobs import BlobStore
from services.core.errors import InvalidRequest, PayloadTooLarge

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 8


@dataclass
class Upload:
    """What a multipart upload carried besides the file's bytes (which are stored)."""

    size: int = 0
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    disposition: bytes = b""
    data: bytearray = field(default_factory=bytearray)


class _Reader:
    """python-multipart callbacks: fields are kept, file bytes queued for the store."""

    def __init__(self, upload: Upload, limit: int):
        self.upload = upload
        self.limit = limit
        self.pending: list[bytes] = []
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""

    def on_part_begin(self) -> None:
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._part.disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.disposition)
        self._part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options and self._part.name == "file":
            if self.upload.filename is not None:
                raise InvalidRequest("Upload exactly one 'file'.", param="file")
            self._part.filename = options[b"filename"].decode("utf-8", "replace")
            self.upload.filename = self._part.filename.replace("\x00", "") or "upload"

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self._part.filename is not None:
            self.upload.size += len(piece)
            if self.upload.size > self.limit:
                raise PayloadTooLarge(
                    f"File is too large: the maximum size is {self.limit} bytes.",
                    param="file",
                    code="file_too_large",
                )
            self.pending.append(piece)
            return
        if len(self._part.data) + len(piece) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"The form field {self._part.name!r} is too large.")
        self._part.data += piece

    def on_part_end(self) -> None:
        if self._part.filename is None:
            if len(self.upload.fields) >= MAX_FIELDS:
                raise InvalidRequest("Too many form fields.")
            self.upload.fields[self._part.name] = self._part.data.decode("utf-8", "replace")


async def receive(request: Request, blobs: BlobStore, key: str, limit: int) -> Upload:
    """Store the `file` part of a multipart request under `key`; returns the rest.

    Raises InvalidRequest for a body that is not multipart or has no file, PayloadTooLarge past
    `limit` bytes; nothing stays in the store then.
    """
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "Expected a multipart/form-data body with 'file' and 'purpose'.", param="file"
        )
    upload = Upload()
    reader = _Reader(upload, limit)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": reader.on_part_begin,
            "on_part_data": reader.on_part_data,
            "on_part_end": reader.on_part_end,
            "on_header_field": reader.on_header_field,
            "on_header_value": reader.on_header_value,
            "on_header_end": reader.on_header_end,
            "on_headers_finished": reader.on_headers_finished,
        },
    )

    async def file_bytes() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            parser.write(chunk)
            for piece in reader.pending:
                yield piece
            reader.pending.clear()
        parser.finalize()

    try:
        await blobs.put(key, file_bytes())
    except FormParserError as exc:
        raise InvalidRequest(f"The multipart body could not be parsed: {exc}.") from None
    if upload.filename is None:
        await blobs.delete(key)
        raise InvalidRequest("Missing required parameter: 'file'.", param="file")
    return upload
