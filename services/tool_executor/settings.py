"""tool-executor settings."""

from pydantic import Field

from services.core.settings import CoreSettings


class Settings(CoreSettings):
    """Which server-side functions this executor runs, and how."""

    service_name: str = "tool-executor"
    health_port: int = 8083
    functions: str = Field(
        default="",
        description="Extra Python handlers: `name=module:attribute` pairs separated by `,`"
        " (besides the `threadbus.functions` entry points).",
    )
    function_webhooks: dict[str, str] = Field(
        default_factory=dict,
        description='Webhook handlers as JSON: {"function_name": "https://host/path", ...}.',
    )
    webhook_secret: str = Field(
        default="", description="HMAC-SHA256 key that signs webhook requests."
    )
    function_timeout_seconds: float = Field(default=30.0, gt=0)
    workers: int = Field(
        default=1, ge=1, description="Partitions consumed in parallel by this process."
    )
    heartbeat_seconds: float = Field(default=15.0, gt=0)
