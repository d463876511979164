"""run-poller settings."""

from typing import Literal

from pydantic import AliasChoices, Field

from services.core.settings import CoreSettings


class Settings(CoreSettings):
    """How the run-poller leases, sweeps and calls the model."""

    service_name: str = "run-poller"
    relay_first_choice: bool = True  # its claims and turn ends write most of a run's events
    lease_seconds: float = Field(default=30.0, gt=0, description="A run's lease; renewed at 1/3.")
    sweep_interval_seconds: float = Field(default=2.0, gt=0)
    wakeup_grace_seconds: float = Field(
        default=5.0, ge=0, description="A queued run nobody claimed for this long is re-driven."
    )
    max_concurrent_runs: int = Field(default=64, ge=1)
    max_steps: int = Field(default=32, ge=1, description="A run fails after this many steps.")
    tool_wait_seconds: float = Field(
        default=60.0, gt=0, description="Re-send server-side calls with no result after this."
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "THREADBUS_OPENAI_BASE_URL")
    )
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "THREADBUS_OPENAI_API_KEY")
    )
    model_timeout_seconds: float = Field(default=120.0, gt=0)
    model_max_retries: int = Field(default=3, ge=0)
    model_retry_backoff_seconds: float = Field(default=0.5, ge=0)
    model_max_tokens_param: Literal["max_completion_tokens", "max_tokens"] = Field(
        default="max_completion_tokens",
        description="How the model endpoint is told the completion limit (older servers:"
        " max_tokens).",
    )
    file_search_wait_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a run waits for files still being indexed in its thread's store.",
    )
    context_tokens: int = Field(
        default=128_000, ge=256, description="Prompt budget when a run sets no max_prompt_tokens."
    )
