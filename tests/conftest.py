"""Shared fixtures: an isolated home, a real sshd, and a runner for async test bodies."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from jobtunnel.daemon.forward import parse_dynamic, parse_forward
from jobtunnel.daemon.hostkeys import HostKeyStore
from jobtunnel.daemon.tunnel import Tunnel, TunnelOptions, TunnelStatus, event_loop_factory
from sshd_server import SshServer, sshd_available

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0, loop: str = "asyncio") -> T:
    """Run an async test body with a hard time bound (no pytest-asyncio here);
    ``loop`` is "asyncio" or "uvloop"."""

    errors: list[dict[str, Any]] = []

    async def bounded() -> T:
        # Errors the loop would only log (callbacks, unretrieved task exceptions) fail
        # the test instead of scrolling by.
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        async with asyncio.timeout(timeout):
            return await coro

    with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
        result = runner.run(bounded())
    assert not errors, [e.get("message") for e in errors]
    return result


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


def dependency_missing(why: str) -> NoReturn:
    """Skip for a missing dependency, but FAIL under CI=true: CI never passes by skipping."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


def require_tool(name: str, package: str) -> str:
    """The tool's path; :func:`dependency_missing` without it."""
    path = shutil.which(name)
    if path is None:
        dependency_missing(f"{name} is not installed (Debian package {package})")
    return path


def require_sshd() -> None:
    why = sshd_available()
    if why is not None:
        dependency_missing(f"the test sshd cannot run: {why}")


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


def fast_options(sshd: SshServer, **overrides: object) -> TunnelOptions:
    values: dict[str, object] = {
        "identity_files": (str(sshd.client_key),),
        "keepalive_interval": 1.0,
        "keepalive_count_max": 2,
        "connect_timeout": 5.0,
        "initial_delay": 0.1,
        "max_delay": 1.0,
        "hold_seconds": 20.0,
        "use_ssh_config": False,
    }
    values.update(overrides)
    return TunnelOptions(**values)  # type: ignore[arg-type]


def make_tunnel(
    sshd: SshServer, specs: list[str], tmp_path: Path, user: str | None = None, **kw: object
) -> Tunnel:
    """A tunnel to the test sshd; "D:port" specs are dynamic (SOCKS) forwards."""
    forwards = [parse_dynamic(s[2:]) if s.startswith("D:") else parse_forward(s) for s in specs]
    return Tunnel(
        user or sshd.user,
        "127.0.0.1",
        sshd.port,
        forwards,
        kw.pop("options", None) or fast_options(sshd),  # type: ignore[arg-type]
        host_keys=HostKeyStore(tmp_path / "known_hosts"),
        **kw,  # type: ignore[arg-type]
    )


def is_up(st: TunnelStatus) -> bool:
    return st.state == "up"


def local_port(t: Tunnel, index: int = 0) -> int:
    port = t.status().forwards[index].local_port
    assert port is not None
    return port
