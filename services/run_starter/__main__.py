"""`python -m services.run_starter`."""

import asyncio

from services.run_starter.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
