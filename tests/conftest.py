"""Shared fixtures: a fresh data folder and config per test, real sample media, the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import config as config_mod

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "tests" / "fixtures" / "samples"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


# Tests never multicast out of the machine's real interface: zeroconf is off unless a test
# turns it on inside a network namespace of its own (tests/netns.py).
TEST_ENV = {"ACOPIO_WEB_ZEROCONF": "false"}


@pytest.fixture
def config(data_dir: Path) -> config_mod.Config:
    return config_mod.load(None, environ=TEST_ENV, data_dir=data_dir)


def run_cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
            input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m appliance` as a real separate process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    full_env.update(TEST_ENV)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "appliance", *map(os.fspath, args)],
        cwd=REPO, env=full_env, input=input, capture_output=True, timeout=timeout,
    )


def require_tool(name: str) -> str:
    """Tests never skip for a missing tool: scripts/setup installs it, so say so loudly."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run ./scripts/setup (as root) to install it")
    return path
