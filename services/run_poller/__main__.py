"""`python -m services.run_poller`."""

from services.core import eventloop
from services.run_poller.app import app

if __name__ == "__main__":
    eventloop.run(app.run())
