"""`python -m services.file_indexer`."""

import asyncio

from services.file_indexer.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
