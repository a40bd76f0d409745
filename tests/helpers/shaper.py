"""A user-space link between a client and a TCP server: a round-trip delay and a rate.

``tc netem`` needs the sch_netem module, which the test machines lack, so the link is a
relay on loopback instead. Each direction of each connection is a delay line (a chunk is
stamped when it arrives and released at arrival + rtt/2, so the delay adds latency without
cutting throughput) followed by a token bucket (the rate, with a small burst). A direction
holds at most ``buffer`` bytes: past that the relay stops reading from its sender, so TCP
backpressure reaches the sender and memory stays bounded.

The TCP handshake itself is not delayed (connects are loopback); everything sent after it is.
The rate is per connection and direction, not shared between connections: enough for peers
that each keep one SSH connection.

:class:`DelayLine` and :class:`TokenBucket` are the arithmetic, with the clock passed in;
:class:`Shaper` runs the relay on an event loop in a thread of its own, for synchronous
callers::

    with Shaper("127.0.0.1", sshd.port, rtt=0.040, rate_bps=200e6) as link:
        connect_to(link.port)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# The largest write handed to the kernel at once: the rate limiter's step.
PIECE = 64 * 1024


class DelayLine:
    """Chunks in arrival order, each released ``delay`` seconds after it arrived. An empty
    chunk is the sender's end of file, released like data (after what came before it)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._items: deque[tuple[float, bytes]] = deque()
        self.bytes = 0  # data held (released or not) and not yet taken

    def push(self, chunk: bytes, now: float) -> None:
        self._items.append((now + self.delay, chunk))
        self.bytes += len(chunk)

    def push_eof(self, now: float) -> None:
        self._items.append((now + self.delay, b""))

    def __len__(self) -> int:
        return len(self._items)

    def wait(self, now: float) -> float | None:
        """Seconds until the head is released (0: now); None when the line is empty."""
        if not self._items:
            return None
        return max(0.0, self._items[0][0] - now)

    def at_eof(self, now: float) -> bool:
        """Whether the released head is the end of file."""
        return bool(self._items) and self._items[0][1] == b"" and self._items[0][0] <= now

    def take(self, limit: int, now: float) -> bytes:
        """Up to ``limit`` bytes of the head chunk if it is released; b"" otherwise (and at
        the end of file, which stays in the line)."""
        if not self._items:
            return b""
        release, chunk = self._items[0]
        if release > now or not chunk:
            return b""
        if len(chunk) <= limit:
            self._items.popleft()
            piece = chunk
        else:
            piece = chunk[:limit]
            self._items[0] = (release, chunk[limit:])
        self.bytes -= len(piece)
        return piece


class TokenBucket:
    """``rate`` bytes a second, at most ``burst`` saved up. A send may run the bucket into
    debt (a whole piece goes at once); the next waits until the debt is paid, so the long-run
    rate is exact however late the timer wakes us, as long as it is late by less than
    ``burst / rate``."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a send may start (0: now)."""
        self._refill(now)
        return 0.0 if self.tokens > 0 else -self.tokens / self.rate

    def spend(self, n: int, now: float) -> None:
        self._refill(now)
        self.tokens -= n


@dataclass(frozen=True)
class LinkShape:
    """One direction's parameters, derived from the link's."""

    delay: float  # one way, seconds
    rate: float  # bytes per second
    burst: float  # bytes
    bound: int  # bytes held at most before reading pauses

    @classmethod
    def of(
        cls, rtt: float, rate_bps: float, buffer: int | None = None, burst: int | None = None
    ) -> LinkShape:
        if rtt < 0 or rate_bps <= 0:
            raise ValueError("rtt must be >= 0 and rate_bps > 0")
        rate = rate_bps / 8
        # The bytes on the wire one way (rate x delay) plus as much again of queue,
        # like a router buffer of one bandwidth-delay product.
        bound = buffer if buffer is not None else max(256 * 1024, int(rate * rtt))
        # A few milliseconds of data: covers a late timer wake-up without losing rate.
        return cls(rtt / 2, rate, float(burst or max(16 * 1024, rate * 0.004)), bound)


@dataclass
class Stats:
    """Counters the relay keeps (written by its loop thread only)."""

    connections: int = 0
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client
    peak_queued: int = 0  # the most any one direction held at once
    errors: list[str] = field(default_factory=list)


class _Side(asyncio.Protocol):
    """One socket of a relayed connection: what it receives goes into ``outgoing``."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.outgoing: _Pipe | None = None  # set by the connection
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = asyncio.Event()
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        assert self.outgoing is not None
        self.outgoing.feed(data)

    def eof_received(self) -> bool:
        assert self.outgoing is not None
        self.outgoing.feed_eof()
        return True  # keep the other direction open: a half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.writable.set()
        if self.outgoing is not None:
            self.outgoing.feed_eof()
        if exc is not None:
            self.conn.abort()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def pause_reading(self) -> None:
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()


class _Pipe:
    """One direction: the source's data through a delay line and a token bucket into
    ``dest``, pausing the source while more than ``shape.bound`` bytes are held."""

    def __init__(
        self, shape: LinkShape, source: _Side, dest: _Side, stats: Stats, up: bool
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.shape = shape
        self.source = source
        self.dest = dest
        self.stats = stats
        self.up = up
        self.line = DelayLine(shape.delay)
        self.bucket = TokenBucket(shape.rate, shape.burst, self.loop.time())
        self.more = asyncio.Event()
        self.eof = False

    def feed(self, data: bytes) -> None:
        if self.eof:
            return
        self.line.push(data, self.loop.time())
        self.stats.peak_queued = max(self.stats.peak_queued, self.line.bytes)
        if self.line.bytes > self.shape.bound:
            self.source.pause_reading()
        self.more.set()

    def feed_eof(self) -> None:
        if not self.eof:
            self.eof = True
            self.line.push_eof(self.loop.time())
            self.more.set()

    async def run(self, connected: asyncio.Event) -> None:
        await connected.wait()
        while True:
            now = self.loop.time()
            wait = self.line.wait(now)
            if wait is None:
                self.more.clear()
                await self.more.wait()
                continue
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if self.line.at_eof(now):
                break
            if self.dest.closed.is_set():
                # Nobody to deliver to: drop what is held, keep reading (and dropping).
                self.line.take(1 << 62, now)
                self.source.resume_reading()
                continue
            await self.dest.writable.wait()
            now = self.loop.time()
            pace = self.bucket.wait(now)
            if pace > 0:
                await asyncio.sleep(pace)
                continue
            piece = self.line.take(PIECE, now)
            self.bucket.spend(len(piece), now)
            assert self.dest.transport is not None
            self.dest.transport.write(piece)
            if self.up:
                self.stats.bytes_up += len(piece)
            else:
                self.stats.bytes_down += len(piece)
            if self.line.bytes <= self.shape.bound:
                self.source.resume_reading()
        transport = self.dest.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            with contextlib.suppress(OSError):  # the far end is gone already
                transport.write_eof()


class _Connection:
    """A client accepted by the relay and its connection to the target."""

    def __init__(self, shaper: _Relay) -> None:
        self.relay = shaper
        self.client = _Side(self)
        self.target = _Side(self)
        self.connected = asyncio.Event()
        stats = shaper.stats
        self.client.outgoing = _Pipe(shaper.shape, self.client, self.target, stats, up=True)
        self.target.outgoing = _Pipe(shaper.shape, self.target, self.client, stats, up=False)
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(
                lambda: self.target, self.relay.target_host, self.relay.target_port
            )
        except OSError as e:
            self.relay.stats.errors.append(f"connect to target: {e}")
            self.abort()
            return
        self.connected.set()
        up, down = self.client.outgoing, self.target.outgoing
        assert up is not None and down is not None
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(up.run(self.connected))
                group.create_task(down.run(self.connected))
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception as e:  # one direction failed: the connection goes, the relay stays
            self.relay.stats.errors.append(f"relay: {e!r}")
            self.abort()
            return
        # Both ends said EOF and all was handed over: close, after the kernel took the rest.
        for side in (self.client, self.target):
            if side.transport is not None:
                side.transport.close()

    def abort(self) -> None:
        for side in (self.client, self.target):
            if side.transport is not None:
                side.transport.abort()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class _Relay:
    def __init__(self, target_host: str, target_port: int, shape: LinkShape) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.shape = shape
        self.stats = Stats()
        self.connections: set[_Connection] = set()
        self.server: asyncio.Server | None = None

    def _accept(self) -> _Side:
        conn = _Connection(self)
        self.stats.connections += 1
        self.connections.add(conn)
        conn.task = asyncio.get_running_loop().create_task(conn.run())
        conn.task.add_done_callback(lambda _t: self.connections.discard(conn))
        return conn.client

    async def start(self, host: str) -> int:
        self.server = await asyncio.get_running_loop().create_server(
            self._accept, host, 0, backlog=256
        )
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        tasks = [c.task for c in list(self.connections) if c.task is not None]
        for conn in list(self.connections):
            conn.abort()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for _ in range(3):  # the transports' connection_lost callbacks
            await asyncio.sleep(0)
        if self.server is not None:
            await self.server.wait_closed()


class Shaper:
    """The relay on 127.0.0.1:``port`` to ``target_host:target_port``, with ``rtt``
    seconds of round trip and ``rate_bps`` bits a second each way; ``buffer`` bytes held
    per direction at most (default: one bandwidth-delay product, at least 256 KiB).
    A context manager: the loop thread starts on enter; on exit every connection closes."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        rtt: float = 0.040,
        rate_bps: float = 200e6,
        buffer: int | None = None,
        *,
        burst: int | None = None,
        listen: str = "127.0.0.1",
    ) -> None:
        self.shape = LinkShape.of(rtt, rate_bps, buffer, burst)
        self.rtt = rtt
        self.rate_bps = rate_bps
        self.listen = listen
        self._relay = _Relay(target_host, target_port, self.shape)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def stats(self) -> Stats:
        return self._relay.stats

    def start(self) -> None:
        assert self._thread is None, "already started"
        loop = asyncio.new_event_loop()
        self._loop = loop
        started: asyncio.Future[int] = loop.create_future()

        def serve() -> None:
            asyncio.set_event_loop(loop)

            async def begin() -> None:
                try:
                    started.set_result(await self._relay.start(self.listen))
                except Exception as e:  # handed to the caller's thread
                    started.set_exception(e)

            loop.run_until_complete(begin())
            loop.run_forever()
            loop.close()

        ready = threading.Event()
        started.add_done_callback(lambda _f: ready.set())
        self._thread = threading.Thread(target=serve, name="shaper", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the shaper did not start")
        self.port = started.result()

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._relay.close(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = None

    def describe(self) -> dict[str, Any]:
        return {
            "rtt_ms": round(self.rtt * 1000, 3),
            "rate_mbit_s": round(self.rate_bps / 1e6, 3),
            "buffer_bytes": self.shape.bound,
            "burst_bytes": int(self.shape.burst),
        }

    def __enter__(self) -> Shaper:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
