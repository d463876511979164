"""api settings."""

from pydantic import Field

from services.core.settings import CoreSettings


class Settings(CoreSettings):
    """Where the API listens and how it paces pollers."""

    service_name: str = "api"
    db_idle_transaction_seconds: float = Field(
        default=0,
        ge=0,
        description="Off: a request's transaction can wait on the embedder or the blob store.",
    )
    api_host: str = Field(
        default="127.0.0.1",
        description="Interface to listen on; beyond loopback only with API keys (or the next).",
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=0,
        description="Largest request body (file uploads: THREADBUS_MAX_FILE_BYTES); 0: no cap.",
    )
    rate_limit_per_minute: int = Field(
        default=6000, ge=0, description="Requests per minute per API key, per API process; 0: off."
    )
    max_streams_per_key: int = Field(
        default=50, ge=0, description="Open SSE streams per API key, per API process; 0: no cap."
    )
    allow_unauthenticated_network_access: bool = Field(
        default=False,
        description="Listen beyond loopback although no API key exists: anyone who reaches the"
        " port can use the API. For a trusted network only.",
    )
    api_port: int = Field(default=8000, description="Port to listen on.")
    poll_after_ms: int = Field(
        default=200, ge=0, description="`openai-poll-after-ms` on run reads: how often SDKs poll."
    )
