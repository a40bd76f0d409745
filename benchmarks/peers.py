"""The processes one benchmark run starts: the test sshd, the services behind it, and the
peers measured against each other (the jobtunnel daemon, OpenSSH ``ssh -N -L``, autossh).

Every process is started here and ended by its pid (descendants first) in ``stop()``;
callers use them as context managers so that nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

# The test helpers are the one copy of how to run a throw-away sshd and a Chrome download.
from tests.helpers.daemonproc import chrome_download  # noqa: E402
from tests.helpers.sshd import (  # noqa: E402
    SshServer,
    descendants,
    free_port,
)
from tests.helpers.userenv import isolated_env  # noqa: E402

__all__ = [
    "AutosshPeer",
    "Daemon",
    "Services",
    "SshPeer",
    "SshServer",
    "chrome_download",
    "free_port",
    "kill_tree",
    "start_sshd",
]

SAME_CIPHER = "aes128-gcm@openssh.com"


def kill_tree(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
    """End ``proc`` and everything it forked, by pid; SIGKILL what outlives ``wait``."""
    if proc.poll() is not None:
        return
    kids = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(wait)
    for pid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# sshd's MAX_LISTEN_SOCKS is 16.
MAX_PORTS_PER_SSHD = 10


def start_sshd(workdir: Path, extra_ports: int = 0, also_trust: Any = None) -> Any:
    """A started :class:`SshServer`; ``extra_ports`` more ``Port`` lines (for many
    endpoints on one server; at most ``MAX_PORTS_PER_SSHD`` in all). ``server.ports``
    lists all of them, the main one first. ``also_trust``: another server whose client
    key may log in here too."""
    assert extra_ports < MAX_PORTS_PER_SSHD
    server = SshServer(workdir)
    ports = [server.port] + [free_port() for _ in range(extra_ports)]
    with server.config.open("a") as out:
        out.writelines(f"Port {p}\n" for p in ports[1:])
    if also_trust is not None:
        with server.authorized_keys.open("a") as out:
            out.write(Path(f"{also_trust.client_key}.pub").read_text())
    server.ports = ports
    server.start()
    return server


class Services:
    """``bench_services.py`` in its own process: ``ports`` has echo, http and stream."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("bench_services.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the services process did not start")
        self.ports: dict[str, int] = json.loads(line)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc, signal.SIGKILL)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Daemon:
    """``python -m jobtunnel.daemon run`` as a user of its own (HOME, XDG dirs, config)
    against the test sshd. Every setting is the default except what the test sshd needs
    (its user as the username pattern, loopback allowed, its client key) and ``settings``
    (section -> key -> value)."""

    def __init__(
        self,
        home: Path,
        sshd: Any,
        forwards: list[str],
        settings: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.home = home
        self.sshd = sshd
        self.logs = home / "JobLogs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.runtime = Path(tempfile.mkdtemp(prefix="jt-"))
        self.env = isolated_env(home, self.runtime)
        sections: dict[str, dict[str, Any]] = {
            "detect": {"username_pattern": sshd.user, "allow_private_addresses": True},
            "watch": {"folders": [str(self.logs)]},
            "ssh": {"identity_files": [str(sshd.client_key)], "use_ssh_config": False},
            # Every endpoint of a phase connects: the benchmark measures tunnels, not bounds.
            "tunnels": {
                "forwards": forwards,
                "max_automatic": 100,
                "max_per_file": 100,
                "new_per_minute": 1000,
            },
        }
        for name, values in (settings or {}).items():
            sections.setdefault(name, {}).update(values)
        config = home / ".config" / "jobtunnel" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        # JSON scalars and arrays of them are valid TOML values.
        config.write_text(
            "".join(
                f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                for name, values in sections.items()
            )
        )
        self.log_path = home / "daemon.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobtunnel.daemon", "run"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobtunnel.daemon", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
            check=False,
        )

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.cli("status", "--json").returncode == 0:
                return
            time.sleep(0.1)
        text = self.text()
        self.stop()
        raise RuntimeError(f"the jobtunnel daemon did not come up:\n{text}")

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        if result.returncode != 0:
            raise RuntimeError(f"status failed: {result.stderr}")
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def up_endpoints(self) -> list[dict[str, Any]]:
        return [ep for ep in self.status()["endpoints"] if ep["state"] == "up"]

    def drop_log(self, port: int, name: str | None = None) -> None:
        """A job log naming the sshd on ``port`` arrives as a Chrome download."""
        line = f"You can ssh to the cluster: ssh -p {port} {self.sshd.user}@{self.sshd.listen}\n"
        chrome_download(self.logs, name or f"job-{port}.log", line)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        kill_tree(self.proc)
        shutil.rmtree(self.runtime, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ssh_options(sshd: Any, port: int | None = None, cipher: str | None = None) -> list[str]:
    opts = [
        "-F",
        "/dev/null",
        "-N",
        "-i",
        str(sshd.client_key),
        "-p",
        str(port or sshd.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "LogLevel=ERROR",
    ]
    if cipher:
        opts += ["-o", f"Ciphers={cipher}"]
    return opts


class SshPeer:
    """``ssh -N -L ...`` (``cipher`` None: OpenSSH's default order)."""

    argv0: ClassVar[list[str]] = ["ssh"]

    def __init__(
        self,
        home: Path,
        sshd: Any,
        forwards: list[str],
        *,
        port: int | None = None,
        cipher: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        env = isolated_env(home)
        env.update(self.extra_env())
        argv = [*self.argv0, *ssh_options(sshd, port, cipher), *(extra or [])]
        for spec in forwards:
            argv += ["-L", spec]
        argv.append(f"{sshd.user}@{sshd.listen}")
        self.log_path = home / "ssh.log"
        with self.log_path.open("ab") as err:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )

    @staticmethod
    def extra_env() -> dict[str, str]:
        return {}

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ssh_pid(self) -> int | None:
        """The ssh process carrying the tunnel (itself here; autossh's child there)."""
        return self.proc.pid if self.proc.poll() is None else None

    def stop(self) -> None:
        kill_tree(self.proc)

    def __enter__(self) -> SshPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AutosshPeer(SshPeer):
    """``AUTOSSH_GATETIME=0 autossh -M 0 -N -o ServerAliveInterval=5
    -o ServerAliveCountMax=2 -L ...`` (design notes, Peers)."""

    argv0: ClassVar[list[str]] = ["autossh", "-M", "0"]

    def __init__(self, home: Path, sshd: Any, forwards: list[str], alive_interval: int = 5) -> None:
        super().__init__(
            home,
            sshd,
            forwards,
            extra=["-o", f"ServerAliveInterval={alive_interval}", "-o", "ServerAliveCountMax=2"],
        )

    @staticmethod
    def extra_env() -> dict[str, str]:
        return {"AUTOSSH_GATETIME": "0", "AUTOSSH_PATH": "/usr/bin/ssh"}

    def ssh_pid(self) -> int | None:
        kids = descendants(self.proc.pid)
        return kids[0] if kids else None


def port_listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
