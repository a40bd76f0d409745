"""Soak under faults: the real daemon, 20 endpoints, checksummed streams, injected faults.

Two test sshds listen on 127.0.0.1 .. 127.0.0.10 and 127.0.0.11 .. 127.0.0.20 (all
loopback on Linux; one sshd takes at most 16 listen sockets), so a job log naming
``ssh -p PORT USER@127.0.0.N`` for N = 1..20 gives 20 distinct endpoints, each with a
forward to a counting echo server. A client per endpoint streams pseudo-random
bytes through its forward and checks every echoed byte against what it sent. Every
10-30 s one fault is injected, in a shuffled cycle of:

- ``kill_sessions``: SIGKILL every sshd session process (the links drop);
- ``restart_sshd``: stop both sshds and their sessions, start them again;
- ``freeze_thaw``: SIGSTOP the sessions for a while (a hung peer), then SIGCONT;
- ``kill_daemon``: SIGKILL the daemon and start it again (as a service manager would).

After each fault, every forward is probed until all 20 serve again; that time is
recorded. At the end: corrupted bytes, unhandled exceptions in the daemon's logs, the
daemon's open fds, SSH connections, open channels and RSS at start vs end (both measured
idle, with all 20 tunnels up), and the sshd-side open channels.

``tests/e2e/test_soak.py`` runs 60 s in CI; for longer::

    .venv/bin/python -m tests.helpers.soak --minutes 30 [--seed N] [--json report.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobtunnel.daemon.api.client import ControlClient

from .daemonproc import Daemon, Env, make_env
from .sshd import SshServer, free_port

ENDPOINTS = 20
FAULTS = ("kill_sessions", "restart_sshd", "freeze_thaw", "kill_daemon")
FREEZE_SECONDS = 4.0  # longer than keepalive detection (interval 1 s x count 2)
RECOVERY_TIMEOUT = 60.0
CHUNK = 8192
# What counts as an unhandled exception in a daemon log.
UNHANDLED = re.compile(
    r"Traceback|ERROR.*Exception|Exception in callback|exception was never retrieved"
)


class MultiAddressSshServer(SshServer):
    """The test sshd, listening on several loopback addresses (sshd allows 16 sockets)."""

    def __init__(self, workdir: Path, addresses: list[str]) -> None:
        self.addresses = addresses
        super().__init__(workdir)

    def authorize(self, public_key_file: Path) -> None:
        self.authorized_keys.write_text(public_key_file.read_text())

    def _write_config(self) -> None:
        super()._write_config()
        lines = "".join(f"ListenAddress {a}\n" for a in self.addresses)
        text = self.config.read_text()
        assert "ListenAddress 127.0.0.1\n" in text
        self.config.write_text(text.replace("ListenAddress 127.0.0.1\n", lines))


# -- a counting echo server (the cluster-side service) ------------------------------


class _CountingEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _EchoServer = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        sock.settimeout(120)
        with server.lock:
            server.open += 1
            server.total += 1
        try:
            while data := sock.recv(1 << 16):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            with server.lock:
                server.open -= 1


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CountingEcho)
        self.lock = threading.Lock()
        self.open = 0  # connections sshd opened for direct-tcpip channels, still open
        self.total = 0


@contextlib.contextmanager
def echo_server() -> Iterator[_EchoServer]:
    server = _EchoServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- looking at the daemon process from outside -------------------------------------


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _addr(text: str) -> tuple[str, int]:
    host, port = text.split(":")
    if len(host) == 8:
        ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(host)[::-1])
    else:
        raw = bytes.fromhex(host)
        ip = socket.inet_ntop(
            socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        )
    return ip, int(port, 16)


def proc_tcp(pid: int) -> list[tuple[str, tuple[str, int], tuple[str, int]]]:
    """The TCP sockets of ``pid``: (state, local, remote); state "LISTEN" or "ESTABLISHED"
    (others are given as their /proc hex code)."""
    inodes = _socket_inodes(pid)
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[9] in inodes:
                    state = {"0A": "LISTEN", "01": "ESTABLISHED"}.get(parts[3], parts[3])
                    out.append((state, _addr(parts[1]), _addr(parts[2])))
    return out


@dataclass
class Sample:
    """The daemon, idle with every tunnel up."""

    pid: int
    fds: int
    rss_kb: int
    threads: int
    ssh_connections: int  # ESTABLISHED TCP from the daemon to the sshd port
    open_channels: int  # local clients the daemon serves (one direct-tcpip channel each)
    server_channels: int  # connections sshd holds open to the service for channels
    sshd_processes: int


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return -1


# -- the soak -------------------------------------------------------------------------


@dataclass
class Fault:
    at: float  # seconds since streaming began
    kind: str
    recovery_s: float | None = None  # from injection until every forward served again
    rss_kb: int = 0  # the daemon's RSS once recovered (under load: a trend, not a baseline)
    fds: int = 0


@dataclass
class Report:
    seconds: float
    endpoints: int
    faults: list[Fault] = field(default_factory=list)
    bytes_verified: int = 0
    corrupted_bytes: int = 0
    streams_completed: int = 0
    streams_cut: int = 0  # reset or ended early by a fault (expected), never corrupted
    connects_refused: int = 0  # while the daemon was down
    ports_moved: int = 0  # forwards that came back on another local port (must be 0)
    unhandled: list[str] = field(default_factory=list)
    error_lines: int = 0  # log lines at ERROR level (reported; each needs a reason)
    daemon_logs: int = 0
    start: Sample | None = None
    end: Sample | None = None

    @property
    def last_recovery_s(self) -> float | None:
        return self.faults[-1].recovery_s if self.faults else None

    def text(self) -> str:
        assert self.start is not None and self.end is not None
        kinds: dict[str, list[float]] = {}
        for f in self.faults:
            if f.recovery_s is not None:
                kinds.setdefault(f.kind, []).append(f.recovery_s)
        lines = [
            f"soak: {self.seconds:.0f} s, {self.endpoints} endpoints, {len(self.faults)} faults",
            f"  verified bytes      {self.bytes_verified:,} "
            f"({self.streams_completed} streams completed, {self.streams_cut} cut by faults, "
            f"{self.connects_refused} connects refused)",
            f"  corrupted bytes     {self.corrupted_bytes}",
            f"  ports moved         {self.ports_moved}",
            f"  unhandled errors    {len(self.unhandled)} (in {self.daemon_logs} daemon logs; "
            f"{self.error_lines} ERROR lines in all)",
            "  recovery (s)        "
            + ", ".join(f"{k} max {max(v):.1f} (n={len(v)})" for k, v in sorted(kinds.items())),
            f"  last fault          {self.faults[-1].kind if self.faults else '-'}: every tunnel"
            f" serving again after {self.last_recovery_s or 0:.1f} s",
            "                      start -> end",
        ]
        for name in (
            "fds",
            "rss_kb",
            "threads",
            "ssh_connections",
            "open_channels",
            "server_channels",
            "sshd_processes",
        ):
            a, b = getattr(self.start, name), getattr(self.end, name)
            lines.append(f"  {name:<20}{a} -> {b}")
        lines.append(f"  daemon pid          {self.start.pid} -> {self.end.pid}")
        lines.append(
            "  RSS MB after faults "
            + " ".join(f"{f.rss_kb / 1024:.0f}" for f in self.faults if f.rss_kb)
        )
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "last_recovery_s": self.last_recovery_s}, indent=1)


class Soak:
    def __init__(
        self,
        root: Path,
        seconds: float,
        *,
        fault_every: tuple[float, float] = (10.0, 30.0),
        rate: int = 256 << 10,
        seed: int = 1,
        kinds: tuple[str, ...] = FAULTS,
        min_faults: int = 0,
        say: Callable[[str], None] = lambda s: None,
    ) -> None:
        self.root = root
        self.seconds = seconds
        self.fault_every = fault_every
        self.rate = rate  # bytes per second per client
        self.kinds = kinds
        self.min_faults = min_faults  # injected even if the run must grow for them
        self.rng = random.Random(seed)
        self.seed = seed
        self.say = say
        self.report = Report(seconds, ENDPOINTS)
        half = ENDPOINTS // 2
        self.servers = [
            MultiAddressSshServer(root / f"sshd{i}", [f"127.0.0.{n}" for n in range(a, b)])
            for i, (a, b) in enumerate([(1, half + 1), (half + 1, ENDPOINTS + 1)])
        ]
        self.sshd = self.servers[0]  # its client key is the one the daemon offers
        for server in self.servers[1:]:
            server.authorize(Path(f"{self.sshd.client_key}.pub"))
        self.addresses = [a for s in self.servers for a in s.addresses]
        self.daemons: list[Daemon] = []
        self.ports: list[int] = []
        self.stop = asyncio.Event()
        self.echo: _EchoServer | None = None
        self.env: Env | None = None

    # -- setup -------------------------------------------------------------------------

    def _config(self, env: Env, echo_port: int) -> str:
        text = env.config_text([f"{_below_ephemeral_ports()}:127.0.0.1:{echo_port}"])
        # All 20 endpoints of the one job log connect: the soak measures faults, not bounds.
        bounds = f"max_automatic = {ENDPOINTS}\nmax_per_file = {ENDPOINTS}\nnew_per_minute = 1000\n"
        return text.replace("[tunnels]\n", "[tunnels]\n" + bounds, 1)

    @property
    def daemon(self) -> Daemon:
        return self.daemons[-1]

    def _start_daemon(self) -> None:
        assert self.env is not None
        daemon = Daemon(self.env)
        self.daemons.append(daemon)
        daemon.wait_ready()

    async def _status(self) -> dict[str, Any]:
        assert self.env is not None
        path = self.env.home / "run" / "jobtunnel" / "control.sock"
        async with asyncio.timeout(10), ControlClient(path, "unix") as client:
            return await client.request("status")  # type: ignore[no-any-return]

    async def _all_up(self) -> list[dict[str, Any]] | None:
        with contextlib.suppress(Exception):
            eps = (await self._status())["endpoints"]
            if len(eps) == ENDPOINTS and all(e["state"] == "up" for e in eps):
                return eps  # type: ignore[no-any-return]
        return None

    async def _sample(self) -> Sample:
        """Wait until the daemon is idle (no clients, no channels), then measure it."""
        assert self.echo is not None
        pid = self.daemon.proc.pid
        deadline = time.monotonic() + 30
        channels = -1
        while time.monotonic() < deadline:
            eps = await self._all_up()
            if eps is not None:
                channels = sum(f["clients"] for e in eps for f in e["forwards"])
                if channels == 0 and self.echo.open == 0:
                    break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # let closed sockets and channels settle
        tcp = proc_tcp(pid)
        return Sample(
            pid=pid,
            fds=len(os.listdir(f"/proc/{pid}/fd")),
            rss_kb=_status_field(pid, "VmRSS"),
            threads=_status_field(pid, "Threads"),
            ssh_connections=sum(
                1
                for st, _, remote in tcp
                if st == "ESTABLISHED" and remote[1] in {s.port for s in self.servers}
            ),
            open_channels=channels,
            server_channels=self.echo.open,
            sshd_processes=sum(len(s.session_pids()) for s in self.servers),
        )

    # -- traffic -----------------------------------------------------------------------

    async def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        while not self.stop.is_set():
            port = self.ports[index]
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 10
                )
            except (OSError, TimeoutError):
                self.report.connects_refused += 1
                await asyncio.sleep(0.2)
                continue
            try:
                await self._stream(reader, writer, rng, rng.randrange(64 << 10, 2 << 20))
            finally:
                writer.transport.abort()

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rng: random.Random,
        size: int,
    ) -> None:
        pending = bytearray()
        done_sending = False

        async def send() -> None:
            nonlocal done_sending
            sent = 0
            while sent < size and not self.stop.is_set():
                chunk = rng.randbytes(min(CHUNK, size - sent))
                pending.extend(chunk)
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                await asyncio.sleep(len(chunk) / self.rate)
            writer.write_eof()
            done_sending = True

        sender = asyncio.create_task(send())
        report = self.report
        try:
            while True:
                data = await asyncio.wait_for(reader.read(1 << 16), 60)
                if not data:
                    break
                expected = bytes(pending[: len(data)])
                if data != expected:
                    bad = sum(a != b for a, b in zip(data, expected, strict=False))
                    report.corrupted_bytes += bad + max(0, len(data) - len(expected))
                    self.say(f"CORRUPTION: {bad} bytes differ in a {len(data)} byte read")
                else:
                    report.bytes_verified += len(data)
                del pending[: len(data)]
            await asyncio.wait_for(sender, 10)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            report.streams_cut += 1
            return
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
        if done_sending and not pending:
            report.streams_completed += 1
        else:
            report.streams_cut += 1  # a clean EOF before everything came back

    async def _probe(self, port: int, deadline: float) -> bool:
        payload = os.urandom(4096)
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(3):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    try:
                        writer.write(payload)
                        writer.write_eof()
                        got = await reader.read(-1)
                    finally:
                        writer.transport.abort()
                if got == payload:
                    return True
                if got and not payload.startswith(got):
                    self.report.corrupted_bytes += len(got)
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
        return False

    async def _recovered(self, since: float) -> float | None:
        """Seconds from ``since`` until every forward answers a checked round trip."""
        deadline = since + RECOVERY_TIMEOUT
        results = await asyncio.gather(*(self._probe(p, deadline) for p in self.ports))
        took = time.monotonic() - since if all(results) else None
        # Ports must stay put (across daemon restarts too); follow any that moved.
        eps = await _until(self._all_up, "every tunnel up", max(1.0, deadline - time.monotonic()))
        ports = self._ports_of(eps)
        moved = sum(a != b for a, b in zip(ports, self.ports, strict=True))
        if moved:
            self.say(f"         {moved} forwards moved to other local ports")
            self.report.ports_moved += moved
            self.ports = ports
        return took

    def _ports_of(self, endpoints: list[dict[str, Any]]) -> list[int]:
        by_host = {e["host"]: e["forwards"][0]["local_port"] for e in endpoints}
        return [by_host[a] for a in self.addresses]

    # -- faults ------------------------------------------------------------------------

    async def _inject(self, kind: str) -> asyncio.Task[None] | None:
        """Inject one fault; a fault that lasts (a freeze) returns the task that ends it."""
        if kind == "kill_sessions":
            for server in self.servers:
                server.kill_sessions()
        elif kind == "restart_sshd":
            for server in self.servers:
                await asyncio.to_thread(server.restart)
        elif kind == "freeze_thaw":
            frozen = [p for server in self.servers for p in server.freeze_sessions()]

            async def thaw() -> None:
                try:
                    await asyncio.sleep(FREEZE_SECONDS)
                finally:
                    for pid in frozen:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGCONT)

            return asyncio.create_task(thaw())
        elif kind == "kill_daemon":
            self.daemon.kill(signal.SIGKILL)
            await asyncio.to_thread(self._start_daemon)
        else:
            raise ValueError(kind)
        return None

    def _schedule(self) -> Iterator[str]:
        # The daemon is killed first, so the process measured at the end lives through
        # every other kind of fault; later cycles are shuffled.
        order = ["kill_daemon", "kill_sessions", "freeze_thaw", "restart_sshd"]
        cycle = [k for k in order if k in self.kinds]
        while True:
            yield from cycle
            cycle = list(self.kinds)
            self.rng.shuffle(cycle)

    async def _faults(self, began: float) -> None:
        kinds = self._schedule()
        low, high = self.fault_every
        while True:
            wait = self.rng.uniform(low, high)
            # Leave time after the last fault to recover within the run.
            late = time.monotonic() - began + wait > self.seconds - low / 2
            if late and len(self.report.faults) >= self.min_faults:
                return
            await asyncio.sleep(wait)
            kind = next(kinds)
            fault = Fault(round(time.monotonic() - began, 1), kind)
            self.report.faults.append(fault)
            self.say(f"{fault.at:6.1f} s  fault: {kind}")
            injected = time.monotonic()
            lasting = await self._inject(kind)
            try:
                # The daemon must recover while the frozen sessions are still frozen.
                fault.recovery_s = await self._recovered(injected)
            finally:
                if lasting is not None:
                    await lasting
            pid = self.daemon.proc.pid
            with contextlib.suppress(OSError):
                fault.rss_kb = _status_field(pid, "VmRSS")
                fault.fds = len(os.listdir(f"/proc/{pid}/fd"))
            took = f"{fault.recovery_s:.1f} s" if fault.recovery_s is not None else "NEVER"
            self.say(f"         all {ENDPOINTS} forwards serving again after {took}")

    # -- the run -----------------------------------------------------------------------

    async def _main(self) -> Report:
        env = self.env
        assert env is not None
        lines = [
            f"You can ssh to the cluster: ssh -p {s.port} {s.user}@{a}"
            for s in self.servers
            for a in s.addresses
        ]
        env.logs.mkdir(parents=True, exist_ok=True)
        (env.logs / "soak.log").write_text("\n".join(lines) + "\n")
        eps = await _until(self._all_up, "all 20 tunnels up", 60)
        self.ports = self._ports_of(eps)
        assert len(set(self.ports)) == ENDPOINTS, self.ports
        if await self._recovered(time.monotonic()) is None:  # warm every path once
            raise RuntimeError("the forwards do not serve before any fault")
        self.report.start = await self._sample()
        self.say(f"start: {self.report.start}")

        began = time.monotonic()
        clients = [asyncio.create_task(self._client(i)) for i in range(ENDPOINTS)]
        try:
            await self._faults(began)
            await asyncio.sleep(max(0.0, self.seconds - (time.monotonic() - began)))
        finally:
            self.stop.set()
            _, stuck = await asyncio.wait(clients, timeout=30)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
        self.report.seconds = round(time.monotonic() - began, 1)
        self.report.end = await self._sample()
        self.say(f"end: {self.report.end}")
        return self.report

    def _scan_logs(self) -> None:
        assert self.env is not None
        # Each daemon's stdout and stderr: every log line and anything printed outside
        # logging (the rotating log file holds the same lines again).
        files = [d.log for d in self.daemons]
        self.report.daemon_logs = len(files)
        for path in files:
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    if UNHANDLED.search(line):
                        self.report.unhandled.append(f"{path.name}: {line[:300]}")
                    if " ERROR " in line:
                        self.report.error_lines += 1

    def run(self) -> Report:
        for server in self.servers:
            server.start()
        try:
            with echo_server() as echo:
                self.echo = echo
                self.env = make_env(self.root / "user", self.sshd, int(echo.server_address[1]))
                self.env.config.write_text(self._config(self.env, int(echo.server_address[1])))
                self._start_daemon()
                try:
                    return asyncio.run(self._main())
                finally:
                    for daemon in self.daemons:
                        if not daemon.dead():
                            daemon.kill(signal.SIGTERM)
                    self._scan_logs()
        finally:
            for server in self.servers:
                server.stop()


def _below_ephemeral_ports() -> int:
    """A free port under the kernel's ephemeral range, with 100 free-ish ports above it:
    ports in that range may be taken by any passing outgoing connection (a user's 8888
    is safe; free_port() is not), which would move a forward at a restart."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(10000, max(10001, low - 100))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


async def _until(probe: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await probe():
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def soak(root: Path, seconds: float, **kw: Any) -> Report:
    return Soak(root, seconds, **kw).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-min", type=float, default=10.0)
    parser.add_argument("--fault-max", type=float, default=30.0)
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help="comma-separated fault kinds to inject (leave out kill_daemon to watch one "
        "daemon process for leaks over the whole run)",
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="jobtunnel-soak-"))
    started = time.monotonic()
    try:
        report = soak(
            root,
            args.minutes * 60,
            fault_every=(args.fault_min, args.fault_max),
            seed=args.seed,
            kinds=tuple(k for k in args.faults.split(",") if k),
            say=lambda s: print(f"[{time.monotonic() - started:7.1f}] {s}", flush=True),
        )
    finally:
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(report.text())
    for line in report.unhandled[:20]:
        print("  !", line)
    if args.json:
        args.json.write_text(report.to_json())
    ok = report.corrupted_bytes == 0 and not report.unhandled
    ok = ok and all(f.recovery_s is not None for f in report.faults)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
