"""Shared field types: metadata, usage, tools, errors, list pages and delete envelopes."""

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(max_length=16, description="Up to 16 string pairs; keys <= 64 chars, values <= 512."),
]
FunctionName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class WireModel(BaseModel):
    """Base of every wire object: unknown fields are kept out, field order is the API's."""

    model_config = ConfigDict(extra="ignore")


def _nul_at(value: Any, path: str) -> str | None:
    """Where a NUL character is in a JSON-like value (keys included), if anywhere."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return here
            if (found := _nul_at(item, here)) is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _nul_at(item, f"{path}[{index}]")) is not None:
                return found
    return None


class RequestModel(BaseModel):
    """Base of request bodies: unknown arguments are a 400, as in the hosted API.

    Text may not contain NUL (U+0000): Postgres cannot store it, and no API text needs it.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if (where := _nul_at(data, "")) is not None:
            raise ValueError(f"{where or 'the value'} contains the NUL character (\\u0000)")
        return data


class Usage(WireModel):
    """Token usage of a run or a run step."""

    completion_tokens: int
    prompt_tokens: int
    total_tokens: int


class FunctionDefinition(WireModel):
    """A function the model may call."""

    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(WireModel):
    """`{"type": "function", "function": {...}}`."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class CodeInterpreterTool(WireModel):
    """`{"type": "code_interpreter"}`."""

    type: Literal["code_interpreter"] = "code_interpreter"


class RankingOptions(WireModel):
    """Ranking options of the file_search tool."""

    ranker: Literal["auto", "default_2024_08_21"] = "auto"
    score_threshold: Annotated[float, Field(ge=0, le=1)]


class FileSearchOptions(WireModel):
    """Options of the file_search tool."""

    max_num_results: Annotated[int, Field(ge=1, le=50)] | None = None
    ranking_options: RankingOptions | None = None


class FileSearchTool(WireModel):
    """`{"type": "file_search", "file_search": {...}}`."""

    type: Literal["file_search"] = "file_search"
    file_search: FileSearchOptions | None = None


Tool = Annotated[FunctionTool | CodeInterpreterTool | FileSearchTool, Field(discriminator="type")]


class ErrorBody(WireModel):
    """The body of an API error, as OpenAI shapes it."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(WireModel):
    """`{"error": {...}}`."""

    error: ErrorBody


T = TypeVar("T")


class Page(WireModel, Generic[T]):
    """A cursor page of a list endpoint."""

    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Deleted(WireModel):
    """The envelope every delete endpoint returns."""

    id: str
    object: str
    deleted: bool = True
