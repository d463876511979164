"""The Assistant object and its shared option types (response format, tool resources)."""

from typing import Annotated, Any, Literal

from pydantic import Field

from schemas.common import FunctionName, Metadata, Tool, WireModel


class JSONSchemaFormat(WireModel):
    """The `json_schema` member of a `json_schema` response format."""

    name: FunctionName
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class ResponseFormatText(WireModel):
    """`{"type": "text"}`."""

    type: Literal["text"]


class ResponseFormatJSONObject(WireModel):
    """`{"type": "json_object"}`."""

    type: Literal["json_object"]


class ResponseFormatJSONSchema(WireModel):
    """`{"type": "json_schema", "json_schema": {...}}`."""

    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = (
    Literal["auto"]
    | Annotated[
        ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema,
        Field(discriminator="type"),
    ]
)


class CodeInterpreterResources(WireModel):
    """Files the code interpreter sees."""

    file_ids: Annotated[list[str], Field(max_length=20)] = Field(default_factory=list)


class FileSearchResources(WireModel):
    """Vector stores the file_search tool searches."""

    vector_store_ids: Annotated[list[str], Field(max_length=1)] = Field(default_factory=list)


class ToolResources(WireModel):
    """Resources of an assistant or a thread, keyed by tool."""

    code_interpreter: CodeInterpreterResources | None = None
    file_search: FileSearchResources | None = None


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class Assistant(WireModel):
    """`object: "assistant"`: a model, its instructions and tools."""

    id: str
    object: Literal["assistant"] = "assistant"
    created_at: int
    name: str | None = None
    description: str | None = None
    model: str
    instructions: str | None = None
    tools: list[Tool] = Field(default_factory=list)
    tool_resources: ToolResources | None = None
    metadata: Metadata | None = None
    temperature: float | None = None
    top_p: float | None = None
    response_format: ResponseFormat | None = "auto"
    reasoning_effort: ReasoningEffort | None = None
