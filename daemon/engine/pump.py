"""The byte path of one local client: its protocol, its channel session, the pump
between them, and the SOCKS5 handshake of a dynamic forward.

Once a channel is open, both directions run in protocol callbacks: client data goes to
the channel from :class:`ClientProtocol`'s ``data_received``, cluster data to the
client from :class:`ChannelSession`'s, with flow control both ways. No reader task and
no stream buffer sit between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import asyncssh

from ..core.socks import Socks5Handshake, SocksError

__all__ = [
    "STREAM_LIMIT",
    "ChannelSession",
    "ClientProtocol",
    "Traffic",
    "client_protocol",
    "open_guarded",
    "pump",
    "socks_handshake",
]

log = logging.getLogger(__name__)

STREAM_LIMIT = 1 << 18
# The receive window of each channel. asyncssh's default (2 MiB, adjusted at half) keeps
# about 1 MiB in flight: a 40 ms link then carries 22 MB/s where OpenSSH's ssh -L,
# whose window is also 2 MiB but adjusted sooner, carries 24.5. A paused client holds
# at most this much of its channel's data here.
CHANNEL_WINDOW = 4 << 20
# A SOCKS client that has not finished its handshake by then is not going to.
SOCKS_HANDSHAKE_TIMEOUT = 30.0

Channel = asyncssh.SSHTCPChannel[bytes]


@dataclass(slots=True)
class Traffic:
    """Bytes carried by one tunnel's clients, counted in the protocol callbacks."""

    sent: int = 0  # local clients -> cluster
    received: int = 0  # cluster -> local clients


def client_protocol(
    connected: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> ClientProtocol:
    """What ``asyncio.start_server`` builds per client, with our protocol class."""
    loop = asyncio.get_running_loop()
    return ClientProtocol(asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop), connected, loop)


class ClientProtocol(asyncio.StreamReaderProtocol):
    """A local client: a stream (for the SOCKS handshake, and while it is held) until
    :meth:`direct`; from then on its data is written to the channel from
    ``data_received`` itself (no reader task, no stream buffer)."""

    _chan: Channel | None = None
    _traffic: Traffic | None = None
    _done: asyncio.Future[Exception | None] | None = None
    # Set when the client's connection is gone (after direct()): a half-closed client
    # that then closes leaves nobody to read the answer.
    gone: asyncio.Future[Exception | None] | None = None

    def direct(
        self,
        traffic: Traffic,
        reader: asyncio.StreamReader,
        chan: Channel,
        session: ChannelSession,
    ) -> asyncio.Future[Exception | None]:
        """Switch to direct forwarding. The future resolves to None once the client's
        EOF is passed on, or to the error that ended its connection."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Exception | None] = loop.create_future()
        self._done, self._traffic, self._chan = done, traffic, chan
        self.gone = loop.create_future()
        if session.transport.is_closing():
            self.gone.set_result(ConnectionResetError("the client went away"))
        # What the stream holds that nobody read (sent while the client was held).
        # StreamReader has no public way to take its buffer without awaiting.
        buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
        if buffer:
            pending = bytes(buffer)
            buffer.clear()
            self.data_received(pending)
        if reader.at_eof():
            self.eof_received()
        elif session.writable.is_set():
            # The stream may have paused reading while it held data.
            with contextlib.suppress(RuntimeError, OSError):
                session.transport.resume_reading()
        return done

    def data_received(self, data: bytes) -> None:
        chan = self._chan
        if chan is None:
            super().data_received(data)
            return
        try:
            chan.write(data)
        except OSError:  # BrokenPipeError: the channel is closing; the pump ends it
            return
        assert self._traffic is not None
        self._traffic.sent += len(data)

    def eof_received(self) -> bool:
        chan = self._chan
        if chan is None:
            return bool(super().eof_received())
        with contextlib.suppress(OSError):
            chan.write_eof()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        return True  # keep the transport open: the answer may still be coming

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        lost = exc or ConnectionResetError("the client went away")
        for future in (self._done, self.gone):
            if future is not None and not future.done():
                future.set_result(lost)


class ChannelSession(asyncssh.SSHTCPSession[bytes]):
    """The cluster side of one client: channel data is written to the client's transport
    from ``data_received`` itself (no reader task, no extra buffer), with flow control
    both ways: a full client pauses the channel, a full channel pauses the upstream.
    Data is held back until :meth:`start` (after a SOCKS reply, say)."""

    def __init__(self, traffic: Traffic, writer: asyncio.StreamWriter) -> None:
        self._traffic = traffic
        self._writer = writer
        # A TCP transport: it reads too (typed as the write half on StreamWriter).
        self.transport = cast(asyncio.Transport, writer.transport)
        self._chan: Channel | None = None
        self._early: list[bytes] | None = []  # before start()
        self._early_eof = False
        self._paused = False
        self._drainer: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, chan: Channel) -> None:
        self._chan = chan

    def start(self) -> None:
        early, self._early = self._early, None
        for data in early or ():
            self.data_received(data, None)
        if self._early_eof:
            self.eof_received()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._early is not None:
            self._early.append(data)
            return
        # Nothing may escape a session callback: asyncssh would drop the whole link.
        try:
            self.transport.write(data)
        except (ConnectionError, OSError, RuntimeError):
            self.transport.abort()
            return
        self._traffic.received += len(data)
        if (
            not self._paused
            and self._chan is not None
            and self.transport.get_write_buffer_size() > STREAM_LIMIT
        ):
            self._paused = True
            self._chan.pause_reading()
            self._drainer = asyncio.ensure_future(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError):
            return  # the client is gone; the pump closes the channel
        self._paused = False
        if self._chan is not None:
            self._chan.resume_reading()

    def eof_received(self) -> bool:
        if self._early is not None:
            self._early_eof = True
        elif self._writer.can_write_eof() and not self._writer.is_closing():
            try:
                self._writer.write_eof()
            except (ConnectionError, OSError, RuntimeError):
                self.transport.abort()  # the client is gone (ENOTCONN on shutdown)
        return True  # half-close: the client may still be sending

    def pause_writing(self) -> None:
        # The channel's send buffer is full: stop reading from the client.
        self.writable.clear()
        with contextlib.suppress(RuntimeError, OSError):
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable.set()
        with contextlib.suppress(RuntimeError, OSError):
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        if self._drainer is not None:
            self._drainer.cancel()
        if not self.closed.done():
            self.closed.set_result(exc)


async def open_guarded(
    conn: asyncssh.SSHClientConnection,
    target: tuple[str, int],
    orig: tuple[str, int],
    session_factory: Callable[[], asyncssh.SSHTCPSession[bytes]] = asyncssh.SSHTCPSession,
) -> tuple[Channel, asyncssh.SSHTCPSession[bytes]]:
    """A direct-tcpip channel to ``target``. Shielded: if the caller is cancelled
    mid-open, the open still completes and the channel is closed instead of leaked
    (asyncssh #823)."""
    opening: asyncio.Task[tuple[Channel, asyncssh.SSHTCPSession[bytes]]]
    opening = asyncio.ensure_future(
        conn.create_connection(
            session_factory,
            target[0],
            target[1],
            orig[0],
            orig[1],
            encoding=None,
            window=CHANNEL_WINDOW,
        )
    )
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_if_opened)
        raise


def _close_if_opened(
    task: asyncio.Future[tuple[Channel, asyncssh.SSHTCPSession[bytes]]],
) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    task.result()[0].close()


async def pump(
    traffic: Traffic,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    chan: Channel,
    session: ChannelSession,
) -> Exception | None:
    """Carry one client's bytes until the channel is closed, or until the client side
    failed (its connection is then reset). Returns the error that ended it, if any."""
    proto = writer.transport.get_protocol()
    assert isinstance(proto, ClientProtocol)
    client_done = proto.direct(traffic, reader, chan, session)
    either: list[asyncio.Future[Any]] = [client_done, session.closed]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if client_done.done() and client_done.result() is None:
        # Half-closed: the cluster side finishes, unless the client goes away first
        # (then the caller closes the channel; its answer would be pulled for nobody).
        assert proto.gone is not None
        await asyncio.wait([session.closed, proto.gone], return_when=asyncio.FIRST_COMPLETED)
        if not session.closed.done():
            return proto.gone.result()
    exc = client_done.result() if client_done.done() else None
    if exc is None and session.closed.done():
        exc = session.closed.result()
    if exc is not None:
        writer.transport.abort()
    return exc


async def socks_handshake(
    name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Socks5Handshake | None:
    """Read a SOCKS5 greeting and request; None if the client left, stalled past
    :data:`SOCKS_HANDSHAKE_TIMEOUT` or asked for something refused (it is told why)."""
    hs = Socks5Handshake()
    try:
        async with asyncio.timeout(SOCKS_HANDSHAKE_TIMEOUT):
            while hs.request is None:
                data = await reader.read(512)
                if not data:
                    return None
                out = hs.feed(data)
                if out:
                    writer.write(out)
    except SocksError as exc:
        log.info("%s: SOCKS client refused: %s", name, exc)
        if exc.response:
            writer.write(exc.response)
        return None
    except TimeoutError:
        return None
    return hs
