"""message-archiver settings."""

from services.core.settings import CoreSettings


class Settings(CoreSettings):
    """The archiver needs only the shared settings."""

    service_name: str = "message-archiver"
    health_port: int = 8084
