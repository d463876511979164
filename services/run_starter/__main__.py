"""`python -m services.run_starter`."""

from services.core import eventloop
from services.run_starter.app import app

if __name__ == "__main__":
    eventloop.run(app.run())
