"""Settings every service reads from the environment (prefix `THREADBUS_`)."""

import logging

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CoreSettings(BaseSettings):
    """Connection and behaviour settings shared by all services. Instantiate once per process."""

    model_config = SettingsConfigDict(env_prefix="THREADBUS_", env_file=".env", extra="ignore")

    database_url: str = Field(description="Postgres DSN, e.g. postgresql://u:p@host:5432/db.")
    kafka_bootstrap_servers: str = Field(description="Kafka bootstrap servers, host:port[,...].")
    partitions: int = Field(default=8, ge=1, description="Partitions of every Threadbus topic.")
    log_level: str = Field(default="INFO")
    db_pool_size: int = Field(default=10, ge=1)
    health_port: int = Field(default=8081, description="Port of a worker's /healthz and /readyz.")
    run_expires_seconds: int = Field(
        default=600, ge=1, description="A run expires this long after it was created."
    )
    service_name: str = Field(default="threadbus", description="Names the process in logs.")

    def configure_logging(self) -> None:
        """Set up plain, timestamped logs on stderr."""
        logging.basicConfig(
            level=self.log_level.upper(),
            format=f"%(asctime)s %(levelname)s {self.service_name} %(name)s: %(message)s",
        )
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
