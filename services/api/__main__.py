"""`python -m services.api`."""

import uvicorn

from services.api.app import create_app
from services.api.settings import Settings

if __name__ == "__main__":
    settings = Settings()
    settings.configure_logging()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
