"""run-starter settings."""

from services.core.settings import CoreSettings


class Settings(CoreSettings):
    """The run-starter needs only the shared settings."""

    service_name: str = "run-starter"
    health_port: int = 8082
