"""SIGTERM ends the real daemon in any state: here while a burst of tunnels is being
opened to a host that accepts TCP and never says a word (the SSH handshake hangs until
``connect_timeout``). Before the fix the daemon logged "stopped", let go of its lock and
kept running with its listeners; only SIGKILL ended it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.daemonproc import Daemon, Env, wait_for
from tests.helpers.deps import dependency_missing

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(180)]

BURST = 40
# The daemon's own bound is 5 s; the test allows more, so that a slow machine does not fail
# it, and prints what it measured.
EXIT_WITHIN = 15.0


class Tarpit:
    """Accepts every connection and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.accepted.append(self.sock.accept()[0])

    def open_peers(self) -> int:
        """Accepted connections the other side has not closed (what it sent, its SSH
        banner, is read and dropped)."""
        alive = 0
        for conn in self.accepted:
            conn.setblocking(False)
            try:
                while conn.recv(4096):
                    pass
            except BlockingIOError:
                alive += 1
            except OSError:
                pass  # reset: closed too
        return alive

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    pit = Tarpit()
    yield pit
    pit.close()


def burst_config(env: Env) -> None:
    text = env.config.read_text()
    text = text.replace(
        f"username_pattern = '{env.sshd.user}'", "username_pattern = 'uprod_[a-z0-9]+'"
    )
    text = text.replace("connect_timeout = 5", "connect_timeout = 60")
    text = text.replace(
        "[tunnels]\n", "[tunnels]\nmax_automatic = 100\nmax_per_file = 100\nnew_per_minute = 1000\n"
    )
    env.config.write_text(text)


def sigterm(daemon: Daemon) -> float:
    """Seconds from SIGTERM until the process is gone."""
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        daemon.proc.wait(EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        raise AssertionError(
            f"still running {EXIT_WITHIN} s after SIGTERM:\n{daemon.text()}"
        ) from None
    return time.monotonic() - started


@pytest.mark.parametrize("when", ["mid-burst", "as-the-file-lands"])
def test_sigterm_during_a_burst_ends_the_daemon(
    env: Env, daemons: Callable[[], Daemon], tarpit: Tarpit, when: str
) -> None:
    burst_config(env)
    daemon = daemons()
    env.logs.mkdir(exist_ok=True)
    lines = "".join(f"ssh -p {tarpit.port} uprod_s{i}@127.0.0.1\n" for i in range(BURST))
    (env.logs / "burst.log").write_text(lines)
    if when == "mid-burst":
        wait_for(lambda: len(tarpit.accepted) >= BURST // 4, "handshakes hanging at the tarpit")
    took = sigterm(daemon)
    print(f"{when}: {len(tarpit.accepted)} handshakes hanging; exited {took:.2f} s after SIGTERM")

    assert daemon.proc.returncode == 0, daemon.text()
    text = daemon.text()
    assert text.rstrip().splitlines()[-1].endswith("stopped"), text[-2000:]
    assert "Traceback" not in text
    # Every connection the daemon had opened is closed (it had no children to leave).
    wait_for(lambda: tarpit.open_peers() == 0, "the tarpit's peers to close", timeout=5)
    # The lock is free: another daemon starts and answers.
    again = daemons()
    assert again.proc.pid != daemon.proc.pid
    assert sigterm(again) < EXIT_WITHIN


# A DNS server that reads queries and never answers, on the loopback of a network
# namespace of the daemon's own; it ends with its parent (the daemon).
SILENT_DNS = """
import os, socket
parent = os.getppid()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 53))
udp.settimeout(0.5)
while os.getppid() == parent:
    try:
        udp.recvfrom(4096)
    except TimeoutError:
        pass
"""


def silent_dns_wrapper(tmp: Path) -> list[str]:
    """unshare: a network namespace with only loopback, a mount namespace whose
    /etc/resolv.conf names the silent server; then exec what follows."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        dependency_missing("namespaces need root, unshare (util-linux) and ip (iproute2)")
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        dependency_missing(f"cannot make namespaces here: {probe.stderr.decode().strip()}")
    resolv = tmp / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
    dns = tmp / "silent_dns.py"
    dns.write_text(SILENT_DNS)
    script = (
        'ip link set lo up && mount --bind "$1" /etc/resolv.conf && '
        '{ "$2" "$3" & } && sleep 0.3 && shift 3 && exec "$@"'
    )
    return [
        "unshare",
        "--net",
        "--mount",
        "sh",
        "-c",
        script,
        "sh",
        str(resolv),
        sys.executable,
        str(dns),
    ]


NAMES = 12


def test_sigterm_while_name_lookups_hang_ends_the_daemon_by_the_deadline(
    env: Env, tmp_path: Path
) -> None:
    """Names whose lookup never returns: asyncio cannot cancel a lookup in its executor,
    and ``asyncio.run`` waits for it on the way out; the stop deadline ends the process."""
    burst_config(env)
    daemon = Daemon(env, silent_dns_wrapper(tmp_path))
    try:
        daemon.wait_ready()
        env.logs.mkdir(exist_ok=True)
        lines = "".join(f"ssh uprod_n{i}@node{i}.cluster.example.com\n" for i in range(NAMES))
        (env.logs / "names.log").write_text(lines)

        # Lookups that hang hold up nothing else: every endpoint gets its listener (the
        # binds once waited behind the lookups in the event loop's shared thread pool).
        def all_listening() -> bool:
            eps = env.status()["endpoints"]
            return len(eps) == NAMES and all(
                e["state"] == "connecting" and e["forwards"][0]["local_port"] for e in eps
            )

        wait_for(all_listening, "every endpoint listening while its lookup hangs")
        time.sleep(0.5)  # the lookups are in flight
        took = sigterm(daemon)
    finally:
        if not daemon.dead():
            daemon.proc.kill()
    print(f"name lookups hanging: exited {took:.2f} s after SIGTERM")
    text = daemon.text()
    assert "still stopping after 4.5 s; exiting now" in text, text[-3000:]
    assert daemon.proc.returncode == 0
