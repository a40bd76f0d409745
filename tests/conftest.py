"""Fixtures: an isolated home, a real sshd, and the daemon as a process for an isolated user.

Helpers that tests import live in :mod:`tests.helpers`; this file holds fixtures only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.daemonproc import Daemon, Env, make_env
from tests.helpers.deps import require_sshd
from tests.helpers.services import http_server
from tests.helpers.sshd import SshServer


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


@pytest.fixture
def sshd(tmp_path: Path, isolated_home: Path) -> Iterator[SshServer]:
    require_sshd()
    server = SshServer(tmp_path / "sshd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bastion(sshd: SshServer, tmp_path: Path) -> Iterator[SshServer]:
    """A second sshd, a bastion (``ssh.proxy_jump``) in front of ``sshd``."""
    server = SshServer(tmp_path / "bastion")
    server.authorize(sshd.client_key)  # the same key logs in to both, as in open_link
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def env(tmp_path: Path, sshd: SshServer) -> Iterator[Env]:
    with http_server() as http_port:
        yield make_env(tmp_path / "user", sshd, http_port)


@pytest.fixture
def daemons(env: Env) -> Iterator[Callable[[], Daemon]]:
    started: list[Daemon] = []

    def start() -> Daemon:
        daemon = Daemon(env)
        started.append(daemon)
        daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        if not daemon.dead():
            daemon.kill()
