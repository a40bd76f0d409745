"""A real, throw-away OpenSSH server on a free loopback port, for the tunnel tests.

Its host key and the client key are generated at test time; ``AuthorizedKeysFile``
points at a temp file. Helpers stop, restart, kill or freeze (SIGSTOP) it, either the
listening daemon or the per-connection session processes it forked.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

SSHD = "/usr/sbin/sshd"  # sshd refuses to start unless run by its absolute path
SSH_KEYGEN = "ssh-keygen"


def sshd_available() -> str | None:
    """None when a test sshd can run here, else why not."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is not installed (Debian: openssh-server)"
    if subprocess.run(["which", SSH_KEYGEN], capture_output=True).returncode != 0:
        return "ssh-keygen is not installed (Debian: openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, comment: str = "jobtunnel-test") -> Path:
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                kids.extend(int(p) for p in text.split())
    return kids


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = _children(pid)
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


class SshServer:
    """One sshd. ``start()`` waits until it listens; ``stop()`` ends it and its sessions."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        sftp: bool = True,
        listen: str = "127.0.0.1",
        wrapper: Sequence[str] = (),
    ) -> None:
        self.dir = workdir
        self.listen = listen
        # A command line that ends by exec-ing the words it is given (a namespace of its own).
        self.wrapper = tuple(wrapper)
        self.sftp = sftp  # Rescale's clusters serve SFTP; False: a server that refuses it
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        # Every port it listens on (a benchmark adds more lines to the config).
        self.ports: list[int] = [self.port]
        self.user = getpass.getuser()
        self.host_key = keygen(self.dir / "ssh_host_ed25519_key", "test-host")
        self.client_key = keygen(self.dir / "id_client", "test-client")
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        self.log_path = self.dir / "sshd.log"
        self.config = self.dir / "sshd_config"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.listen}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    "UsePAM no",
                    "StrictModes no",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "AllowTcpForwarding yes",
                    "MaxStartups 100:30:200",
                    "LogLevel VERBOSE",
                    *(["Subsystem sftp internal-sftp"] if self.sftp else []),
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        # The privilege separation directory; /run is often a fresh tmpfs.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        assert self.proc is None, "already running"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [*self.wrapper, SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                if b"Server listening" in f.read():
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        text = self.log_path.read_text(errors="replace")[offset:]
        self.stop()
        raise RuntimeError(f"sshd did not start on port {self.port}:\n{text}")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

    def session_pids(self) -> list[int]:
        """Processes sshd forked for client connections (monitor and session children)."""
        return descendants(self.pid) if self.proc is not None else []

    def _signal_sessions(self, sig: int) -> list[int]:
        pids = self.session_pids()
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        return pids

    def kill_sessions(self) -> list[int]:
        return self._signal_sessions(signal.SIGKILL)

    def freeze_sessions(self) -> list[int]:
        return self._signal_sessions(signal.SIGSTOP)

    def thaw_sessions(self) -> list[int]:
        return self._signal_sessions(signal.SIGCONT)

    def freeze_all(self) -> list[int]:
        """SIGSTOP the listening daemon too: the whole host hangs (TCP still accepts)."""
        pids = [self.pid, *self.session_pids()]
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)
        return pids

    def thaw_all(self) -> None:
        if self.proc is None:
            return
        for p in [self.pid, *self.session_pids()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)

    def stop(self) -> None:
        """End the daemon and every session it forked (a real server going away)."""
        if self.proc is None:
            return
        pids = self.session_pids()
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
                os.kill(p, signal.SIGKILL)
        self.proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.wait(timeout=10)
        self.proc = None
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()

    def new_host_key(self) -> None:
        """Give the server a new host key (takes effect at the next start)."""
        keygen(self.host_key, "test-host-2")

    def authorize(self, key: Path) -> None:
        """Also accept the client key ``key`` (a bastion that takes the cluster's key)."""
        with open(self.authorized_keys, "a") as f:
            f.write(Path(f"{key}.pub").read_text())

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def ssh_alias(config: Path, alias: str, *command: str) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client on ``alias`` of the ssh_config ``config`` (no prompts)."""
    if shutil.which("ssh") is None:
        from .deps import dependency_missing

        dependency_missing("ssh is not installed (Debian: openssh-client)")
    return subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", alias, *command],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
