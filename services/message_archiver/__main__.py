"""`python -m services.message_archiver`."""

import asyncio

from services.message_archiver.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
