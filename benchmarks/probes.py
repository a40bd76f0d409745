"""Client-side measurements through a forward: plain blocking sockets in the harness
process, which never shares a process with a peer or a service."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HTTP_GET = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"


def _connect(port: int, timeout: float, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        more = sock.recv(n - len(buf))
        if not more:
            raise ConnectionError("closed early")
        buf += more
    return bytes(buf)


def echo_once(port: int, timeout: float = 5.0) -> bool:
    try:
        with _connect(port, timeout) as sock:
            sock.sendall(b"x")
            return _recv_exact(sock, 1) == b"x"
    except OSError:
        return False


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Poll ``check`` every 20 ms; seconds it took. Raises after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def throughput(port: int, size: int, timeout: float = 120.0, host: str = "127.0.0.1") -> float:
    """MB/s (10^6) of ``size`` bytes from the stream service through ``host:port``."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with _connect(port, timeout, host) as sock:
        start = time.perf_counter()
        sock.sendall(size.to_bytes(8, "big"))
        got = 0
        while got < size:
            n = sock.recv_into(view)
            if not n:
                raise ConnectionError(f"stream ended after {got} of {size} bytes")
            got += n
        elapsed = time.perf_counter() - start
    return size / elapsed / 1e6


def echo_rtt_us(port: int, trips: int, warmup: int = 50) -> float:
    """Median round trip of 64 bytes through ``port`` to the echo service, microseconds."""
    payload = os.urandom(64)
    samples: list[float] = []
    with _connect(port, 10.0) as sock:
        for i in range(warmup + trips):
            start = time.perf_counter_ns()
            sock.sendall(payload)
            if _recv_exact(sock, 64) != payload:
                raise ConnectionError("echo mismatch")
            if i >= warmup:
                samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def connections_per_s(port: int, count: int) -> float:
    """New connections per second through ``port``, one after another: connect, one
    byte echoed (so the far side was really reached), close."""
    start = time.perf_counter()
    for _ in range(count):
        with _connect(port, 10.0) as sock:
            sock.sendall(b"x")
            if _recv_exact(sock, 1) != b"x":
                raise ConnectionError("echo mismatch")
    return count / (time.perf_counter() - start)


def http_ok(port: int, timeout: float) -> str:
    """One GET through ``port``: "ok", "refused", "closed" (accepted, then no answer),
    "timeout" or "error"."""
    try:
        with _connect(port, timeout) as sock:
            sock.sendall(HTTP_GET)
            data = b""
            while len(data) < 4096 and (more := sock.recv(4096)):
                data += more
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError:
        return "closed"
    if data.startswith(b"HTTP/1.0 200"):
        return "ok"
    return "closed" if not data else "error"


def serves(port: int, kind: str = "http") -> Callable[[], bool]:
    """A check for :func:`wait_until`: a request through ``port`` succeeds."""
    if kind == "echo":
        return lambda: echo_once(port)
    return lambda: http_ok(port, 5) == "ok"


@dataclass
class Attempt:
    start: float
    end: float = 0.0
    outcome: str = "pending"


@dataclass
class Prober:
    """A client making a request through ``port`` every ``interval`` seconds, each in its
    own thread (a held request does not delay the next one). Bounded in count and time."""

    port: int
    interval: float = 0.1
    timeout: float = 40.0
    max_attempts: int = 1000
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ok: threading.Event = field(default_factory=threading.Event)
    ok_after: float = float("inf")

    def _one(self, attempt: Attempt) -> None:
        attempt.outcome = http_ok(self.port, self.timeout)
        attempt.end = time.monotonic()
        if attempt.outcome == "ok" and attempt.end >= self.ok_after:
            self._ok.set()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.attempts) < self.max_attempts:
            attempt = Attempt(time.monotonic())
            with self._lock:
                self.attempts.append(attempt)
            t = threading.Thread(target=self._one, args=(attempt,), daemon=True)
            t.start()
            self._threads.append(t)
            self._stop.wait(self.interval)

    def start(self) -> None:
        t = threading.Thread(target=self._run, daemon=True)
        t.start()
        self._threads.append(t)

    def wait_ok_after(self, when: float, timeout: float) -> float | None:
        """Seconds from ``when`` to the end of the first successful request that ended
        after it; None if there was none within ``timeout``."""
        self.ok_after = when
        with self._lock:
            if any(a.outcome == "ok" and a.end >= when for a in self.attempts):
                self._ok.set()
        self._ok.wait(timeout)
        ends = [a.end for a in list(self.attempts) if a.outcome == "ok" and a.end >= when]
        return min(ends) - when if ends else None

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + self.timeout + 5
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def failed_between(self, start: float, end: float) -> tuple[int, int]:
        """(failed, total) of the requests started in [start, end]."""
        during = [a for a in self.attempts if start <= a.start <= end]
        return sum(1 for a in during if a.outcome not in ("ok", "pending")), len(during)


def log_grew_with(path: Path, needle: str, offset: int) -> bool:
    with contextlib.suppress(OSError), path.open("rb") as f:
        f.seek(offset)
        return needle.encode() in f.read()
    return False


# -- /proc --------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float  # user + system, every thread
    switches: int  # voluntary + involuntary context switches, every thread
    rss_mb: float
    hwm_mb: float  # peak RSS


def proc_sample(pid: int) -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss = int(status["VmRSS"].split()[0]) / 1024
    hwm = int(status["VmHWM"].split()[0]) / 1024
    return ProcSample(cpu, switches, rss, hwm)


def thread_switches(pid: int) -> dict[str, int]:
    """Context switches per thread name (where the wake-ups come from)."""
    out: dict[str, int] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
            n = 0
            for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    n += int(line.split()[1])
            key = f"{name}/{task}"
            out[key] = n
    return out
