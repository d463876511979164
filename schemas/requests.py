"""Request bodies of the HTTP API and of inbound events; unknown fields are rejected."""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from schemas.assistants import ReasoningEffort, ResponseFormat
from schemas.common import Metadata, RequestModel, Tool
from schemas.runs import ToolChoice, TruncationStrategy
from schemas.threads import Attachment, ImageDetail
from schemas.vector_stores import ToolResourcesParam as ToolResources

__all__ = ["RequestModel", "ToolResources"]


MessageText = Annotated[str, StringConstraints(max_length=256_000)]


class TextPart(RequestModel):
    """`{"type": "text", "text": "..."}`."""

    type: Literal["text"]
    text: MessageText


class ImageFilePart(RequestModel):
    """`{"type": "image_file", "image_file": {...}}`."""

    class Ref(RequestModel):
        """The file and detail of an image-file part."""

        file_id: str
        detail: ImageDetail | None = None

    type: Literal["image_file"]
    image_file: Ref


class ImageURLPart(RequestModel):
    """`{"type": "image_url", "image_url": {...}}`."""

    class Ref(RequestModel):
        """The URL and detail of an image-URL part."""

        url: str
        detail: ImageDetail | None = None

    type: Literal["image_url"]
    image_url: Ref


ContentPart = Annotated[TextPart | ImageFilePart | ImageURLPart, Field(discriminator="type")]


class MessageCreate(RequestModel):
    """A message to add to a thread."""

    role: Literal["user", "assistant"]
    content: MessageText | Annotated[list[ContentPart], Field(min_length=1)]
    attachments: list[Attachment] | None = None
    metadata: Metadata | None = None


class MessageUpdate(RequestModel):
    """Fields of a message that may change."""

    metadata: Metadata | None = None


class AssistantCreate(RequestModel):
    """Body of `POST /assistants`."""

    model: str
    name: Annotated[str, StringConstraints(max_length=256)] | None = None
    description: Annotated[str, StringConstraints(max_length=512)] | None = None
    instructions: Annotated[str, StringConstraints(max_length=256_000)] | None = None
    reasoning_effort: ReasoningEffort | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_resources: ToolResources | None = None
    metadata: Metadata | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    response_format: ResponseFormat | None = None


class AssistantUpdate(AssistantCreate):
    """Body of `POST /assistants/{id}`: every field optional, omitted ones unchanged."""

    model: str | None = None  # type: ignore[assignment]


class ThreadCreate(RequestModel):
    """Body of `POST /threads`."""

    messages: list[MessageCreate] | None = None
    tool_resources: ToolResources | None = None
    metadata: Metadata | None = None


class ThreadUpdate(RequestModel):
    """Body of `POST /threads/{id}`."""

    tool_resources: ToolResources | None = None
    metadata: Metadata | None = None


TokenLimit = Annotated[int, Field(ge=256)]


class RunOptions(RequestModel):
    """Per-run overrides shared by the HTTP API and inbound `threadbus.user_message` events."""

    model: Annotated[str, StringConstraints(max_length=256)] | None = None
    instructions: Annotated[str, StringConstraints(max_length=256_000)] | None = None
    additional_instructions: Annotated[str, StringConstraints(max_length=256_000)] | None = None
    tools: Annotated[list[Tool], Field(max_length=20)] | None = None
    metadata: Metadata | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_prompt_tokens: TokenLimit | None = None
    max_completion_tokens: TokenLimit | None = None
    truncation_strategy: TruncationStrategy | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = None


class RunCreate(RunOptions):
    """Body of `POST /threads/{thread_id}/runs`."""

    assistant_id: str
    additional_messages: list[MessageCreate] | None = None
    stream: bool | None = None


class RunUpdate(RequestModel):
    """Body of `POST /threads/{thread_id}/runs/{run_id}`."""

    metadata: Metadata | None = None


class ToolOutput(RequestModel):
    """The output of one tool call, as submitted."""

    tool_call_id: str
    output: Annotated[str, StringConstraints(max_length=512_000)]


class SubmitToolOutputsBody(RequestModel):
    """Body of `POST /threads/{thread_id}/runs/{run_id}/submit_tool_outputs`."""

    tool_outputs: Annotated[list[ToolOutput], Field(max_length=128)]
    stream: bool | None = None


class ThreadToCreate(RequestModel):
    """The `thread` of `POST /threads/runs`."""

    messages: list[MessageCreate] | None = None
    tool_resources: ToolResources | None = None
    metadata: Metadata | None = None


class ThreadAndRunCreate(RunOptions):
    """Body of `POST /threads/runs`: a new thread and a run on it."""

    assistant_id: str
    thread: ThreadToCreate | None = None
    tool_resources: ToolResources | None = None
    stream: bool | None = None
