"""run-starter settings."""

from pydantic import Field

from services.core.settings import CoreSettings


class Settings(CoreSettings):
    """The shared settings, and how often the inbound events' offsets commit."""

    service_name: str = "run-starter"
    health_port: int = 8082
    inbound_commit_ms: float = Field(
        default=100.0,
        gt=0,
        le=60_000,
        description="The offsets of handled inbound events commit together at most this often"
        " (one offset commit per event cost the run-starter and the broker a request each);"
        " the events of the last interval before a crash are read again, and seen as duplicates"
        " (`processed_events`).",
    )
