"""`python -m services.run_poller`."""

import asyncio

from services.run_poller.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
