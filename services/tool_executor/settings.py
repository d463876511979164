"""tool-executor settings."""

from pydantic import Field

from services.core.settings import CoreSettings
from services.tool_executor.registry import WebhookTarget


class Settings(CoreSettings):
    """Which server-side functions this executor runs, and how."""

    service_name: str = "tool-executor"
    health_port: int = 8083
    db_idle_transaction_seconds: float = Field(
        default=0, ge=0, description="Off: a file search awaits the embedder in a transaction."
    )
    functions: str = Field(
        default="",
        description="Extra Python handlers: `name=module:attribute` pairs separated by `,`"
        " (besides the `threadbus.functions` entry points).",
    )
    function_webhooks: dict[str, str | WebhookTarget] = Field(
        default_factory=dict,
        description='Webhook handlers as JSON: {"function_name": "https://host/path", ...}, or'
        ' {"function_name": {"url": "https://...", "secret": "its own key"}, ...}.',
    )
    webhook_secret: str = Field(
        default="", description="HMAC-SHA256 key of the webhooks that have no secret of their own."
    )
    webhook_max_response_bytes: int = Field(
        default=512_000, gt=0, description="Largest webhook answer; a larger one is an error."
    )
    function_timeout_seconds: float = Field(default=30.0, gt=0)
    workers: int = Field(
        default=1, ge=1, description="Partitions consumed in parallel by this process."
    )
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    code_interpreter: bool = Field(
        default=True, description="Run code_interpreter calls here (needs bubblewrap)."
    )
    sandbox_python: str = Field(
        default="",
        description="The interpreter of the sandboxed kernels (with ipykernel, numpy, pandas,"
        " matplotlib); empty: this process's own.",
    )
    sandbox_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Wall time of one cell; longer cells are interrupted."
    )
    sandbox_idle_seconds: float = Field(
        default=3600.0, gt=0, description="A thread's session ends after this long unused."
    )
    sandbox_max_kernels: int = Field(
        default=32, ge=1, description="Sessions per executor; the least recently used ends."
    )
    sandbox_spares: int = Field(
        default=1, ge=0, description="Kernels started ahead of need, for a fast first call."
    )
    sandbox_memory_bytes: int = Field(
        default=2_000_000_000, ge=100_000_000, description="Address space per kernel process."
    )
    sandbox_processes: int = Field(
        default=64, ge=16, description="Processes and threads per sandbox."
    )
    sandbox_file_bytes: int = Field(
        default=100_000_000, ge=1, description="Largest file a sandbox may write."
    )
    sandbox_disk_bytes: int = Field(
        default=500_000_000, ge=1_000_000, description="Size of a thread's /mnt/data."
    )
