"""message-archiver settings: the shared ones, and retention of the bookkeeping tables."""

from pydantic import Field

from services.core.settings import CoreSettings


class Settings(CoreSettings):
    """The archiver also prunes what only bookkeeping keeps (0 days: keep for ever)."""

    service_name: str = "message-archiver"
    health_port: int = 8084
    retention_interval_seconds: float = Field(
        default=3600.0, gt=0, description="How often the bookkeeping tables are pruned."
    )
    retain_processed_events_days: float = Field(
        default=7.0, ge=0,
        description="Ids of handled events, for idempotency; keep longer than the topics keep "
        "records (Kafka's default is 7 days), or a redelivered old event could apply twice.",
    )  # fmt: skip
    retain_archive_days: float = Field(
        default=30.0, ge=0, description="Archived events (`threadbus export`)."
    )
    retain_dead_outbox_days: float = Field(
        default=30.0, ge=0, description="Events the broker refused (`outbox_dead`)."
    )
    retain_run_streams_days: float = Field(
        default=7.0, ge=0,
        description="Where each run's events start on its partition (streams of finished runs); "
        "no use once the topic has dropped them.",
    )  # fmt: skip
