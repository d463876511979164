"""tool-executor composition root: settings, broker, handlers, heartbeat."""

import contextlib
import logging
import shutil
import sys
from collections.abc import AsyncIterator

import httpx
from faststream import FastStream

from services.core import bus, metrics
from services.core.blobs import open_store
from services.core.embeddings import open_embedder
from services.core.runtime import open_runtime, periodic
from services.tool_executor.bwrap import Limits
from services.tool_executor.code_interpreter import CodeInterpreter, Options
from services.tool_executor.executor import BuiltinTool, Executor
from services.tool_executor.file_search import FileSearch
from services.tool_executor.handlers import EXECUTOR, build_router
from services.tool_executor.registry import load_handlers
from services.tool_executor.sessions import Sessions
from services.tool_executor.settings import Settings

log = logging.getLogger(__name__)

settings = Settings()
settings.configure_logging()
broker = bus.make_broker(settings.kafka_bootstrap_servers, settings.service_name)
broker.include_router(build_router(settings.workers))


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Load the handlers, advertise them, and answer calls until shutdown."""
    async with (
        open_runtime(settings) as runtime,
        httpx.AsyncClient(
            timeout=settings.function_timeout_seconds, follow_redirects=False
        ) as client,
        open_embedder(settings) as embedder,
    ):
        handlers = load_handlers(
            functions=settings.functions,
            webhooks=settings.function_webhooks,
            secret=settings.webhook_secret,
            timeout=settings.function_timeout_seconds,
            client=client,
            max_response_bytes=settings.webhook_max_response_bytes,
        )
        sessions, unavailable = open_sessions(settings)
        code = CodeInterpreter(
            runtime.pool,
            open_store(settings, runtime.pool),
            sessions,
            Options(
                timeout_seconds=settings.sandbox_timeout_seconds,
                max_file_bytes=settings.sandbox_file_bytes,
            ),
            unavailable=unavailable,
        )
        builtins: dict[str, BuiltinTool] = {
            "file_search": FileSearch(runtime.pool, embedder),
            "code_interpreter": code,
        }
        executor = Executor(runtime.pool, handlers, runtime.owner, builtins)
        EXECUTOR.set(executor)
        loops = runtime.task_owner()
        loops.start(periodic(settings.heartbeat_seconds, executor.advertise, "advertise"), "ads")
        if sessions is not None:
            sessions.top_up()
            every = min(30.0, settings.sandbox_idle_seconds / 4)
            loops.start(periodic(every, sessions.sweep, "sandbox sweep"), "sandboxes")
        try:
            yield
        finally:
            await loops.stop()
            if sessions is not None:
                await sessions.close()


def open_sessions(settings: Settings) -> tuple[Sessions | None, str]:
    """The code-interpreter sessions, or None and why they are off."""
    if not settings.code_interpreter:
        return None, "it is turned off (THREADBUS_CODE_INTERPRETER=false)."
    if shutil.which("bwrap") is None:
        log.warning("code_interpreter is off: bubblewrap (bwrap) is not installed")
        return None, "bubblewrap is not installed on the tool-executor."
    limits = Limits(
        memory_bytes=settings.sandbox_memory_bytes,
        processes=settings.sandbox_processes,
        file_bytes=settings.sandbox_file_bytes,
        disk_bytes=settings.sandbox_disk_bytes,
    )
    sessions = Sessions(
        settings.sandbox_python or sys.executable,
        limits,
        idle_seconds=settings.sandbox_idle_seconds,
        max_kernels=settings.sandbox_max_kernels,
        spares=settings.sandbox_spares,
    )
    metrics.SANDBOX_KERNELS.set_function(lambda: sessions.count)
    return sessions, ""


app = FastStream(broker, lifespan=lifespan)
