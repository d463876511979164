"""The Thread and Message objects."""

from typing import Annotated, Literal

from pydantic import Field

from schemas.assistants import ToolResources
from schemas.common import Metadata, WireModel


class Thread(WireModel):
    """`object: "thread"`: a conversation."""

    id: str
    object: Literal["thread"] = "thread"
    created_at: int
    metadata: Metadata | None = None
    tool_resources: ToolResources | None = None


class FileCitation(WireModel):
    """Which file a citation points at."""

    file_id: str


class FileCitationAnnotation(WireModel):
    """A citation produced by file_search."""

    type: Literal["file_citation"] = "file_citation"
    text: str
    start_index: int
    end_index: int
    file_citation: FileCitation


class FilePath(WireModel):
    """Which file a path annotation points at."""

    file_id: str


class FilePathAnnotation(WireModel):
    """A link to a file the code interpreter wrote."""

    type: Literal["file_path"] = "file_path"
    text: str
    start_index: int
    end_index: int
    file_path: FilePath


Annotation = Annotated[FileCitationAnnotation | FilePathAnnotation, Field(discriminator="type")]


class Text(WireModel):
    """Text with its annotations."""

    value: str
    annotations: list[Annotation] = Field(default_factory=list)


class TextContent(WireModel):
    """A text content part."""

    type: Literal["text"] = "text"
    text: Text


ImageDetail = Literal["auto", "low", "high"]


class ImageFile(WireModel):
    """An image stored as a file."""

    file_id: str
    detail: ImageDetail | None = None


class ImageFileContent(WireModel):
    """An image-file content part."""

    type: Literal["image_file"] = "image_file"
    image_file: ImageFile


class ImageURL(WireModel):
    """An image behind a URL."""

    url: str
    detail: ImageDetail | None = None


class ImageURLContent(WireModel):
    """An image-URL content part."""

    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


class RefusalContent(WireModel):
    """A refusal by the model."""

    type: Literal["refusal"] = "refusal"
    refusal: str


MessageContent = Annotated[
    TextContent | ImageFileContent | ImageURLContent | RefusalContent,
    Field(discriminator="type"),
]


class AttachmentTool(WireModel):
    """The tool an attached file is for."""

    type: Literal["code_interpreter", "file_search"]


class Attachment(WireModel):
    """A file attached to a message."""

    file_id: str
    tools: list[AttachmentTool] = Field(default_factory=list)


class MessageIncompleteDetails(WireModel):
    """Why a message ended incomplete."""

    reason: Literal["content_filter", "max_tokens", "run_cancelled", "run_expired", "run_failed"]


MessageStatus = Literal["in_progress", "incomplete", "completed"]


class Message(WireModel):
    """`object: "thread.message"`: one message of a thread."""

    id: str
    object: Literal["thread.message"] = "thread.message"
    created_at: int
    thread_id: str
    status: MessageStatus
    incomplete_details: MessageIncompleteDetails | None = None
    completed_at: int | None = None
    incomplete_at: int | None = None
    role: Literal["user", "assistant"]
    content: list[MessageContent] = Field(default_factory=list)
    assistant_id: str | None = None
    run_id: str | None = None
    attachments: list[Attachment] | None = Field(default_factory=list)
    metadata: Metadata | None = None
