"""`python -m services.tool_executor`."""

import asyncio

from services.tool_executor.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
