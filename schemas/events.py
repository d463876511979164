"""Events and commands on Kafka: inbound CloudEvents, outbound stream events, internal orders."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from schemas.common import ErrorBody, Metadata
from schemas.requests import ContentPart, MessageText, RequestModel, RunOptions, ToolOutput
from schemas.runs import Run, RunStep, ToolType
from schemas.threads import Attachment, Message, Thread
from schemas.vector_stores import VectorStoreFile

ThreadId = Annotated[
    str,
    StringConstraints(pattern=r"^thread_[A-Za-z0-9_-]{1,64}$"),
    Field(description="A thread id: `thread_` followed by 1-64 letters, digits, `_` or `-`."),
]


class CloudEventBase(BaseModel):
    """CloudEvents 1.0 attributes (structured JSON mode) shared by every Threadbus event."""

    model_config = ConfigDict(extra="ignore")

    specversion: Literal["1.0"] = Field(description="CloudEvents version; always `1.0`.")
    id: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="Unique per event; the idempotency key."
    )
    source: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="Who sent the event (a URI reference)."
    )
    time: datetime | None = Field(default=None, description="When the event happened.")
    datacontenttype: str | None = Field(default="application/json")


# --- inbound (threadbus.inbound) -------------------------------------------------------------


class InboundBase(CloudEventBase):
    """What every inbound event carries besides the CloudEvents attributes."""

    project: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="The project the event acts in, by name (a CloudEvents extension"
        " attribute); absent: the project `default`. Its thread and assistant must be that"
        " project's.",
    )


class UserMessageData(RequestModel):
    """A user's message for the thread named by `subject`; queues a run of `assistant_id`."""

    assistant_id: str = Field(description="The assistant that answers.")
    content: MessageText | Annotated[list[ContentPart], Field(min_length=1)] = Field(
        description="The message text, or content parts as in the Assistants API."
    )
    attachments: list[Attachment] | None = None
    metadata: Metadata | None = None
    run: RunOptions | None = Field(default=None, description="Per-run overrides.")


class UserMessage(InboundBase):
    """`threadbus.user_message`: append a user message and run the assistant."""

    type: Literal["threadbus.user_message"]
    subject: ThreadId = Field(description="The thread id; a new id creates the thread.")
    data: UserMessageData


class SubmitToolOutputsData(RequestModel):
    """Outputs for every pending tool call of a run."""

    run_id: str
    tool_outputs: Annotated[list[ToolOutput], Field(max_length=128)]


class SubmitToolOutputs(InboundBase):
    """`threadbus.submit_tool_outputs`: answer a run in `requires_action`."""

    type: Literal["threadbus.submit_tool_outputs"]
    subject: ThreadId
    data: SubmitToolOutputsData


class CancelRunData(RequestModel):
    """The run to cancel."""

    run_id: str


class CancelRun(InboundBase):
    """`threadbus.cancel_run`: cancel an active run."""

    type: Literal["threadbus.cancel_run"]
    subject: ThreadId
    data: CancelRunData


InboundEvent = Annotated[UserMessage | SubmitToolOutputs | CancelRun, Field(discriminator="type")]
INBOUND: TypeAdapter[InboundEvent] = TypeAdapter(InboundEvent)


# --- outbound (threadbus.events) -------------------------------------------------------------


class OutboundBase(CloudEventBase):
    """Attributes of every event Threadbus publishes on `threadbus.events`."""

    subject: str = Field(description="The thread id (also the Kafka key).")
    causationid: str | None = Field(
        default=None, description="Id of the inbound event (or API request) that caused this."
    )
    runid: str | None = Field(
        default=None, description="The run this event belongs to, if any (a stream's filter)."
    )


class ThreadEvent(OutboundBase):
    """A thread was created."""

    type: Literal["thread.created"]
    data: Thread


class RunEvent(OutboundBase):
    """A run changed status; `data` is the whole Run."""

    type: Literal[
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.requires_action",
        "thread.run.completed",
        "thread.run.incomplete",
        "thread.run.failed",
        "thread.run.cancelling",
        "thread.run.cancelled",
        "thread.run.expired",
    ]
    data: Run


class RunStepEvent(OutboundBase):
    """A run step changed; `data` is the whole RunStep."""

    type: Literal[
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.completed",
        "thread.run.step.failed",
        "thread.run.step.cancelled",
        "thread.run.step.expired",
    ]
    data: RunStep


class MessageEvent(OutboundBase):
    """A message changed; `data` is the whole Message."""

    type: Literal[
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.completed",
        "thread.message.incomplete",
    ]
    data: Message


class DeltaEvent(OutboundBase):
    """A delta of a message or run step being written (`data` is the Assistants delta object)."""

    type: Literal["thread.message.delta", "thread.run.step.delta"]
    data: dict[str, Any]


class VectorStoreFileEvent(OutboundBase):
    """A file of a vector store changed status (`subject` and the Kafka key: the store's id)."""

    type: Literal[
        "vector_store.file.in_progress",
        "vector_store.file.completed",
        "vector_store.file.failed",
        "vector_store.file.cancelled",
    ]
    data: VectorStoreFile


class ErrorData(BaseModel):
    """What went wrong with an inbound event."""

    error: ErrorBody
    event_id: str | None = Field(description="Id of the inbound event that was rejected.")


class ErrorEvent(OutboundBase):
    """An inbound event was rejected; it is on `threadbus.dlq`."""

    type: Literal["error"]
    data: ErrorData


class DroppedData(BaseModel):
    """Which event the broker refused."""

    event_id: str | None = Field(description="Id of the event that was not delivered.")
    type: str | None = Field(description="Its type, e.g. `thread.run.completed`.")
    reason: str


class DroppedEvent(OutboundBase):
    """An event was too large for the broker; it is kept in `outbox_dead`, and this takes its
    place (same key, same `runid`), so that a stream waiting for it ends with an error."""

    type: Literal["threadbus.event.dropped"]
    data: DroppedData


OutboundEvent = Annotated[
    ThreadEvent
    | RunEvent
    | RunStepEvent
    | MessageEvent
    | DeltaEvent
    | VectorStoreFileEvent
    | ErrorEvent
    | DroppedEvent,
    Field(discriminator="type"),
]
OUTBOUND: TypeAdapter[OutboundEvent] = TypeAdapter(OutboundEvent)


# --- internal orders -------------------------------------------------------------------------


class ProcessRun(BaseModel):
    """Order to the run-poller (`threadbus.runs`): drive this run. A wake-up, not the truth."""

    type: Literal["ProcessRun"] = "ProcessRun"
    id: str = Field(description="Unique id of this order.")
    run_id: str
    thread_id: str


class ExecuteToolCall(BaseModel):
    """Order to the tool-executor (`threadbus.tool_calls`): run one server-side tool call."""

    type: Literal["ExecuteToolCall"] = "ExecuteToolCall"
    id: str
    run_id: str
    thread_id: str
    tool_call_id: str
    tool_type: ToolType
    name: str | None = None
    arguments: str = ""


class ToolCallResult(BaseModel):
    """Result of a server-side tool call (`threadbus.tool_results`), back to the run-poller."""

    type: Literal["ToolCallResult"] = "ToolCallResult"
    id: str
    run_id: str
    thread_id: str
    tool_call_id: str
    output: str
    is_error: bool = False
    details: dict[str, Any] | None = Field(
        default=None, description="The call's structured result (file_search: its results)."
    )


class IndexFile(BaseModel):
    """Order to the file-indexer (`threadbus.ingest`, key = vector store id): index a file.

    A wake-up, not the truth: the vector store file row decides; an order whose `generation`
    is not the row's is stale (the file was attached again since).
    """

    type: Literal["IndexFile"] = "IndexFile"
    id: str
    vector_store_id: str
    file_id: str
    generation: int


class DeadLetter(BaseModel):
    """A record that could not be handled (`threadbus.dlq`), with the reason."""

    id: str = Field(description="Unique id of this DLQ entry.")
    reason: str = Field(description="Why the record was rejected.")
    event_id: str | None = Field(description="The rejected record's event id, if it had one.")
    consumer: str | None = Field(
        default=None, description="The consumer group that gave up on the record."
    )
    attempts: int | None = Field(
        default=None, description="How many times it was handled before it was given up."
    )
    topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    value: str = Field(description="The rejected record's value, as text.")
    failed_at: datetime
