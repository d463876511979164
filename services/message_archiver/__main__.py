"""`python -m services.message_archiver`."""

from services.core import eventloop
from services.message_archiver.app import app

if __name__ == "__main__":
    eventloop.run(app.run())
