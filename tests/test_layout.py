"""The house rules a reader relies on: service boundaries, same files everywhere, small modules."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ["api", "run_starter", "run_poller", "tool_executor", "message_archiver", "file_indexer"]
SERVICE_FILES = ["__main__.py", "app.py", "handlers.py", "settings.py", "README.md"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_services_never_import_each_other(service: str) -> None:
    others = [s for s in SERVICES if s != service]
    for path in (ROOT / "services" / service).rglob("*.py"):
        for module in imported_modules(path):
            assert not any(module.startswith(f"services.{o}") for o in others), (path, module)


def test_core_and_schemas_import_no_service() -> None:
    for folder, allowed in (("services/core", "services.core"), ("schemas", "schemas")):
        for path in (ROOT / folder).rglob("*.py"):
            for module in imported_modules(path):
                if module.startswith("services."):
                    assert module.startswith("services.core"), (path, module)
                if folder == "schemas":
                    assert not module.startswith("services"), (path, module)
                    io_libraries = {"asyncpg", "aiokafka", "faststream", "httpx", "openai"}
                    assert module.split(".")[0] not in io_libraries, (path, module)
        assert allowed


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_same_files(service: str) -> None:
    for name in SERVICE_FILES:
        assert (ROOT / "services" / service / name).is_file(), f"services/{service}/{name}"


def test_modules_stay_small() -> None:
    too_big = [
        f"{p.relative_to(ROOT)} ({n} lines)"
        for p in [*(ROOT / "services").rglob("*.py"), *(ROOT / "schemas").rglob("*.py")]
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not too_big, "split these modules by noun: " + ", ".join(too_big)
