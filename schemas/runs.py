"""The Run and RunStep objects, and the run status vocabulary."""

from typing import Annotated, Any, Literal

from pydantic import Field

from schemas.assistants import ResponseFormat
from schemas.common import Metadata, Tool, Usage, WireModel

RunStatus = Literal[
    "queued",
    "in_progress",
    "requires_action",
    "cancelling",
    "cancelled",
    "failed",
    "completed",
    "incomplete",
    "expired",
]
ToolType = Literal["function", "code_interpreter", "file_search"]
"""The kinds of tool a run step's tool call can be."""
ACTIVE_STATUSES: tuple[RunStatus, ...] = ("queued", "in_progress", "requires_action", "cancelling")
TERMINAL_STATUSES: tuple[RunStatus, ...] = (
    "cancelled",
    "failed",
    "completed",
    "incomplete",
    "expired",
)


class FunctionCall(WireModel):
    """The function and arguments the model asked for."""

    name: str
    arguments: str


class RequiredActionToolCall(WireModel):
    """A call the client must answer."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SubmitToolOutputs(WireModel):
    """The calls awaiting outputs."""

    tool_calls: list[RequiredActionToolCall]


class RequiredAction(WireModel):
    """What the client must do for the run to continue."""

    type: Literal["submit_tool_outputs"] = "submit_tool_outputs"
    submit_tool_outputs: SubmitToolOutputs


class LastError(WireModel):
    """Why a run failed."""

    code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]
    message: str


class RunIncompleteDetails(WireModel):
    """Why a run ended incomplete."""

    reason: Literal["max_completion_tokens", "max_prompt_tokens"] | None = None


class TruncationStrategy(WireModel):
    """Which messages of the thread the model sees."""

    type: Literal["auto", "last_messages"]
    last_messages: Annotated[int, Field(ge=1)] | None = None


class ToolChoiceFunction(WireModel):
    """The function a named tool choice forces."""

    name: str


class NamedToolChoice(WireModel):
    """A tool the model must use."""

    type: Literal["function", "code_interpreter", "file_search"]
    function: ToolChoiceFunction | None = None


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class Run(WireModel):
    """`object: "thread.run"`: one invocation of an assistant on a thread."""

    id: str
    object: Literal["thread.run"] = "thread.run"
    created_at: int
    thread_id: str
    assistant_id: str
    status: RunStatus
    required_action: RequiredAction | None = None
    last_error: LastError | None = None
    expires_at: int | None = None
    started_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    incomplete_details: RunIncompleteDetails | None = None
    model: str
    instructions: str
    tools: list[Tool] = Field(default_factory=list)
    metadata: Metadata | None = None
    usage: Usage | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: TruncationStrategy | None = None
    tool_choice: ToolChoice | None = "auto"
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = "auto"


class MessageCreation(WireModel):
    """Which message a message_creation step wrote."""

    message_id: str


class MessageCreationStepDetails(WireModel):
    """Details of a message_creation step."""

    type: Literal["message_creation"] = "message_creation"
    message_creation: MessageCreation


class ToolCallsStepDetails(WireModel):
    """Details of a tool_calls step: the calls, each shaped by its tool type."""

    type: Literal["tool_calls"] = "tool_calls"
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)


StepDetails = Annotated[
    MessageCreationStepDetails | ToolCallsStepDetails, Field(discriminator="type")
]


class StepLastError(WireModel):
    """Why a step failed."""

    code: Literal["server_error", "rate_limit_exceeded"]
    message: str


class RunStep(WireModel):
    """`object: "thread.run.step"`: one step of a run."""

    id: str
    object: Literal["thread.run.step"] = "thread.run.step"
    created_at: int
    assistant_id: str
    thread_id: str
    run_id: str
    type: Literal["message_creation", "tool_calls"]
    status: Literal["in_progress", "cancelled", "failed", "completed", "expired"]
    step_details: StepDetails
    last_error: StepLastError | None = None
    expired_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    metadata: Metadata | None = None
    usage: Usage | None = None
