"""The services on a run's path run on uvloop (`services/core/eventloop.py`)."""

from pathlib import Path

from services.core.supervisor import SERVICES
from tests.system import System

ON_UVLOOP = {"api", "run_starter", "run_poller", "message_archiver", "file_indexer"}


def test_the_services_of_a_run_have_uvloop_loaded(system: System) -> None:
    """Each live process has uvloop's compiled loop mapped (it is imported only to run on it)
    if it is one of those services; the tool-executor, on asyncio's loop, does not. (Replicas
    that earlier tests started and killed are not looked at.)"""
    loaded: dict[str, bool] = {}
    names = set()
    for label, process in system.services.items():
        if process.proc is None or not process.alive:
            continue
        names.add(process.name)
        maps = Path(f"/proc/{process.proc.pid}/maps").read_text()
        loaded[label] = "/uvloop/loop." in maps
        assert loaded[label] == (process.name in ON_UVLOOP), (label, loaded)
    assert names == set(SERVICES), names  # every service was looked at
