"""HTTP routes, one module per Assistants resource."""

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel


def out(model: BaseModel, *, headers: dict[str, str] | None = None) -> JSONResponse:
    """A wire object as JSON with every field (nulls included), aliases as on the wire."""
    return JSONResponse(model.model_dump(mode="json", by_alias=True), headers=headers)


def deleted(object_id: str, kind: str) -> dict[str, Any]:
    """The delete envelope."""
    return {"id": object_id, "object": kind, "deleted": True}
