"""`python -m services.api`."""

import asyncio
import sys

import uvicorn

from services.api.app import create_app
from services.api.settings import Settings
from services.core import eventloop
from services.core.keys import check_exposure

if __name__ == "__main__":
    settings = Settings()
    settings.configure_logging()
    refusal = asyncio.run(check_exposure(
        settings.database_url, settings.api_host, settings.allow_unauthenticated_network_access
    ))  # fmt: skip
    if refusal:
        sys.exit(refusal)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (`logs`), not its coloured ones
        access_log=False,
        timeout_graceful_shutdown=10,
        loop=eventloop.choice(),
    )
