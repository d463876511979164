"""A second real client: the official openai Node.js SDK runs the Math Tutor flow."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes.model_server import ScriptedModelServer
from tests.system import API_KEY, System

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def test_math_tutor_through_the_node_sdk(system: System, model: ScriptedModelServer) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("Node.js and tests/node/node_modules are needed: run scripts/test")
    model.script("Node asks", reply="x = 1, because 3 * 1 + 11 = 14.")
    result = subprocess.run(
        [node, str(NODE_DIR / "math_tutor.mjs")],
        env={**os.environ, "THREADBUS_URL": system.api_url, "THREADBUS_API_KEY": API_KEY},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["assistant"].startswith("asst_")
    assert seen["run"]["status"] == "completed"
    usage = seen["run"]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert [m["role"] for m in seen["messages"]] == ["assistant", "user"]
    assert seen["messages"][0]["text"] == "x = 1, because 3 * 1 + 11 = 14."
    assert seen["messages"][0]["run_id"] == seen["run"]["id"]
    assert seen["missing"]["status"] == 404
    assert "asst_missing" in seen["missing"]["message"]
