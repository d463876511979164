"""tool-executor settings."""

from services.core.settings import CoreSettings


class Settings(CoreSettings):
    """The tool-executor needs only the shared settings for now."""

    service_name: str = "tool-executor"
    health_port: int = 8083
