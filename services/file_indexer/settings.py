"""file-indexer settings."""

from pydantic import Field

from services.core.settings import CoreSettings


class Settings(CoreSettings):
    """How many files an indexer takes at once, and how it leases and retries them."""

    service_name: str = "file-indexer"
    health_port: int = 8085
    concurrency: int = Field(default=2, ge=1, description="Files indexed at once by a process.")
    lease_seconds: float = Field(
        default=120.0, gt=0, description="A claimed file is taken over if not renewed this long."
    )
    poll_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often an idle indexer looks for waiting files."
    )
    embed_batch: int = Field(default=16, ge=1, description="Chunks embedded per call.")
    max_attempts: int = Field(
        default=3, ge=1, description="A file fails with server_error after this many attempts."
    )
    retry_delay_seconds: float = Field(default=2.0, ge=0)
