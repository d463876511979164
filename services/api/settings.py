"""api settings."""

from pydantic import Field

from services.core.settings import CoreSettings


class Settings(CoreSettings):
    """Where the API listens and how it paces pollers."""

    service_name: str = "api"
    api_host: str = Field(default="0.0.0.0", description="Interface to listen on.")
    api_port: int = Field(default=8000, description="Port to listen on.")
    poll_after_ms: int = Field(
        default=200, ge=0, description="`openai-poll-after-ms` on run reads: how often SDKs poll."
    )
