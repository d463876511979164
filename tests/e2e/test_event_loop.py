"""The services on a run's path run on uvloop (`services/core/eventloop.py`)."""

from pathlib import Path

from tests.system import System

ON_UVLOOP = {"api", "run_starter", "run_poller", "message_archiver", "file_indexer"}


def test_the_services_of_a_run_have_uvloop_loaded(system: System) -> None:
    """Each process has uvloop's compiled loop mapped (it is imported only to run on it);
    the tool-executor, which stays on asyncio's loop, does not."""
    loaded = {}
    for label, service in system.services.items():
        assert service.proc is not None, label
        assert service.proc.poll() is None, label
        maps = Path(f"/proc/{service.proc.pid}/maps").read_text()
        loaded[label] = "/uvloop/loop." in maps
    assert {label for label, yes in loaded.items() if yes} == ON_UVLOOP, loaded
