"""The daemon as a real process for an isolated user: its config, CLI, status and log.

The endpoint's username is the local user (the test sshd can only log in real users), so
the config sets ``detect.username_pattern`` to it and allows loopback addresses.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .services import http_get
from .sshd import SshServer, free_port
from .userenv import isolated_env

TIMEOUT = 20.0


@dataclass
class Env:
    """An isolated user: home, XDG dirs, config, watched folder."""

    home: Path
    logs: Path
    config: Path
    sshd: SshServer
    http_port: int
    vars: dict[str, str]

    def config_text(self, forwards: list[str]) -> str:
        return f"""
[detect]
username_pattern = '{self.sshd.user}'
allow_private_addresses = true
[watch]
folders = ['{self.logs}']
[ssh]
identity_files = ['{self.sshd.client_key}']
keepalive_interval = 1
connect_timeout = 5
use_ssh_config = false
[tunnels]
forwards = {json.dumps(forwards)}
hold_seconds = 10
discover_interval = 0
[reconnect]
initial_delay = 0.1
max_delay = 1
[daemon]
probe_interval = 1
rescan_interval = 2
"""

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobtunnel.daemon", *args],
            capture_output=True,
            text=True,
            env=self.vars,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def log_line(self, port: int | None = None) -> str:
        port = port or self.sshd.port
        return f"You can ssh to the cluster: ssh -p {port} {self.sshd.user}@127.0.0.1\n"


def make_env(home: Path, sshd: SshServer, service_port: int) -> Env:
    """An isolated user in ``home`` (created) whose tunnels forward to ``service_port``;
    shared with the soak and hostile-input tests."""
    home.mkdir()
    variables = isolated_env(home)
    e = Env(
        home,
        home / "JobLogs",
        home / ".config" / "jobtunnel" / "config.toml",
        sshd,
        service_port,
        variables,
    )
    e.config.parent.mkdir(parents=True)
    e.config.write_text(e.config_text([f"{free_port()}:127.0.0.1:{service_port}"]))
    return e


class Daemon:
    """``jobtunnel run`` for ``env``; ``wrapper``: a command line that ends by exec-ing the
    words it is given (to run the daemon in a namespace of its own, say); ``verbose``:
    ``run --verbose`` (debug logging, where secrets would leak first)."""

    def __init__(self, env: Env, wrapper: Sequence[str] = (), *, verbose: bool = False) -> None:
        self.env = env
        self.log = env.home / f"daemon-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *wrapper,
                    sys.executable,
                    "-m",
                    "jobtunnel.daemon",
                    "run",
                    *(["--verbose"] if verbose else []),
                ],
                env=env.vars,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        wait_for(
            lambda: self.env.cli("status", "--json").returncode == 0 or self.dead(),
            "the control API",
        )
        assert not self.dead(), self.text()

    def dead(self) -> bool:
        return self.proc.poll() is not None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(10)


def wait_for(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def endpoint_up(env: Env, port: int | None = None) -> dict[str, Any] | None:
    for ep in env.status()["endpoints"]:
        if ep["port"] == (port or env.sshd.port) and ep["state"] == "up":
            return ep  # type: ignore[no-any-return]
    return None


def get(port: int) -> bytes:
    return asyncio.run(http_get(port, timeout=10))


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def chrome_download(folder: Path, name: str, text: str) -> None:
    """Chrome's sequence: hidden temp file, .crdownload written in pieces, then a rename."""
    folder.mkdir(parents=True, exist_ok=True)
    hidden = folder / ".com.google.Chrome.aB3xYz"
    hidden.write_bytes(b"")
    partial = folder / f"{name}.crdownload"
    hidden.rename(partial)
    with partial.open("ab") as out:
        for i in range(0, len(text), 16):
            out.write(text[i : i + 16].encode())
            out.flush()
    partial.rename(folder / name)
