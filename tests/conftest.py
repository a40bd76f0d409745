"""Shared fixtures: an isolated home, a real sshd, and a runner for async test bodies."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sshd_server import SshServer, sshd_available  # noqa: E402

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run an async test body with a hard time bound (no pytest-asyncio here)."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME and XDG dirs in tmp: no real ~/.ssh, agent, config or state leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("JOBTUNNEL_CONFIG", raising=False)
    return home


def require_sshd() -> None:
    """Skip without sshd, but FAIL under CI=true: CI must never pass by skipping."""
    why = sshd_available()
    if why is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the test sshd cannot run: {why}")
    pytest.skip(why)


@pytest.fixture
def sshd(tmp_path: Path, isolated_home: Path) -> Iterator[SshServer]:
    require_sshd()
    server = SshServer(tmp_path / "sshd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
