"""`python -m services.file_indexer`."""

from services.core import eventloop
from services.file_indexer.app import app

if __name__ == "__main__":
    eventloop.run(app.run())
