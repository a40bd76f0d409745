"""The daemon's local control API: the server, an async client and a sync wrapper.

Transports: on POSIX a Unix socket (0600, in a 0700 directory) whose peers must have the
daemon's uid; on Windows loopback TCP, where the first message must carry a random token
read from a user-only file. The ``tcp`` transport can be chosen on POSIX too (tests do).

Wire protocol, one JSON object per line (UTF-8, ``\\n``-terminated, at most 1 MiB)::

    -> {"v": 1, "id": 7, "cmd": "status", "args": {}}
    <- {"v": 1, "id": 7, "ok": true, "result": ...}
    <- {"v": 1, "id": 7, "ok": false, "error": "words for a person"}
    <- {"v": 1, "event": "status", "data": {...}}        (after "subscribe" only)

Built-in commands: ``auth`` (``{"token": ...}``; must come first over TCP), ``hello``
(server and version), ``subscribe`` (start receiving events; when the daemon has a
``subscribe`` handler, its result, e.g. a status snapshot, is the reply), ``unsubscribe``.
An error about the connection itself (refused peer, oversized message) has ``"id": null``
and is followed by the server closing the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import paths
from ..files import private_dir, replace_atomically

__all__ = [
    "MAX_MESSAGE",
    "PROTOCOL_VERSION",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "DaemonNotRunning",
    "Event",
    "Handler",
    "TransportKind",
    "call_sync",
    "default_path",
    "default_transport",
    "request_sync",
    "transport_kind",
]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_MESSAGE = 1 << 20
# Replies such as a full status snapshot may be larger than what a client may send.
CLIENT_LIMIT = 64 << 20
AUTH_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
# How long a closing connection gets to flush what is queued for it.
FLUSH_TIMEOUT = 2.0

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
TransportKind = Literal["unix", "tcp"]

NOT_RUNNING = "jobtunnel daemon is not running; start it with `jobtunnel run`"


class ControlError(Exception):
    """A request failed; the message is the daemon's words for a person.

    Handlers may raise it too: its message becomes the error reply, with no traceback
    logged, as it is an expected refusal rather than a bug.
    """


class DaemonNotRunning(ControlError):
    """Nothing listens where the daemon would."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(NOT_RUNNING + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class Event:
    """A pushed event."""

    name: str
    data: Any


def default_transport() -> TransportKind:
    return "tcp" if os.name == "nt" else "unix"


def transport_kind(name: str | None) -> TransportKind:
    """``"unix"`` or ``"tcp"``; None or ``"auto"`` pick the platform's (the config's words)."""
    if name is None or name == "auto":
        return default_transport()
    if name == "unix":
        return "unix"
    if name == "tcp":
        return "tcp"
    raise ValueError(f'control transport must be "auto", "unix" or "tcp", not {name!r}')


def default_path(transport: TransportKind) -> Path:
    """The socket (unix) or the port-and-token file (tcp) in the runtime dir."""
    return paths.runtime_dir() / ("control.sock" if transport == "unix" else "control.json")


def _encode(msg: Mapping[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def _error(rid: int | None, words: str) -> bytes:
    return _encode({"v": PROTOCOL_VERSION, "id": rid, "ok": False, "error": words})


def _private_dir(folder: Path) -> None:
    if not private_dir(folder):
        raise ControlError(f"{folder} is shared with other users; use a private folder")


def _peer_creds(sock: Any) -> tuple[int | None, int | None]:
    """(pid, uid) of a Unix socket peer, None where the system cannot say."""
    try:
        if hasattr(socket, "SO_PEERCRED"):
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, _gid = struct.unpack("3i", raw)
            return pid, uid
        if sys.platform == "darwin" or "bsd" in sys.platform:
            # LOCAL_PEERCRED (0x001) at level SOL_LOCAL (0) gives a struct xucred that
            # starts with (u_int version, uid_t uid). Untested: no such machine in CI.
            raw = sock.getsockopt(0, 0x001, 76)
            _version, uid = struct.unpack_from("=Ii", raw)
            return None, uid
    except (OSError, AttributeError, struct.error) as exc:
        log.debug("cannot read the control peer's credentials: %s", exc)
    return None, None


# -- server ----------------------------------------------------------------------------


class _Conn:
    """One client connection: replies and events leave through one bounded queue, written
    by one task, so that a client that does not read stalls only itself."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        queue_size: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue(queue_size)
        self.task = asyncio.current_task()
        self.sender: asyncio.Task[None] | None = None
        self.dropped = False

    def start(self) -> None:
        self.sender = asyncio.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        try:
            while (line := await self.out.get()) is not None:
                self.writer.write(line)
                await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("control client %s: write failed: %s", self.peer, exc)
            self.abort()

    async def send(self, line: bytes) -> None:
        """Queue a reply; waits (stops reading this client) while its queue is full."""
        await self.out.put(line)

    def push(self, line: bytes) -> bool:
        """Queue an event without waiting; False when the client is too far behind."""
        try:
            self.out.put_nowait(line)
        except asyncio.QueueFull:
            return False
        return True

    def abort(self) -> None:
        """Drop the connection now, unblocking its handler wherever it waits."""
        self.dropped = True
        self.writer.transport.abort()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    async def close(self) -> None:
        """Flush what is queued (briefly), then close."""
        if self.sender is not None:
            if not self.dropped and self.push_end():
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self.sender), FLUSH_TIMEOUT)
            self.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sender
        if not self.writer.transport.is_closing():
            self.writer.close()
        else:
            self.writer.transport.abort()

    def push_end(self) -> bool:
        try:
            self.out.put_nowait(None)
        except asyncio.QueueFull:
            return False
        return True


class ControlServer:
    """Serves ``handlers`` (command name -> ``async f(args) -> result``) to local clients."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        transport: str | None = None,
        path: Path | None = None,
        queue_size: int = 256,
    ) -> None:
        self.transport = transport_kind(transport)
        self.path = Path(path) if path is not None else default_path(self.transport)
        self._handlers = dict(handlers)
        self._queue_size = queue_size
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscribers: set[_Conn] = set()
        self._token = ""
        self._inode: int | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Listen; raises ControlError if another daemon already does, or on OSError."""
        try:
            _private_dir(self.path.parent)
            if self.transport == "unix":
                await self._start_unix()
            else:
                await self._start_tcp()
        except BaseException as exc:
            if self._server is not None:
                self._server.close()
                self._server = None
            if isinstance(exc, OSError):
                reason = exc.strerror or str(exc)
                raise ControlError(f"cannot listen on {self.path}: {reason}") from exc
            raise
        log.info("control API listening (%s) at %s", self.transport, self.path)

    async def _start_unix(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            if await _unix_alive(self.path):
                raise ControlError(f"another jobtunnel daemon is listening on {self.path}")
            self.path.unlink()
            log.info("removed stale control socket %s", self.path)
        self._server = await asyncio.start_unix_server(
            self._on_client, path=str(self.path), limit=MAX_MESSAGE
        )
        # The 0700 directory already keeps others out while the mode is the umask's.
        os.chmod(self.path, 0o600)
        self._inode = self.path.stat().st_ino

    async def _start_tcp(self) -> None:
        self._token = secrets.token_urlsafe(32)
        self._server = await asyncio.start_server(
            self._on_client, "127.0.0.1", 0, limit=MAX_MESSAGE
        )
        self.port = self._server.sockets[0].getsockname()[1]
        info = {"v": PROTOCOL_VERSION, "port": self.port, "token": self._token}
        replace_atomically(self.path, json.dumps(info))

    async def close(self) -> None:
        """Stop listening, drop every client, remove the socket or token file."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        self._remove_own_file()

    def _remove_own_file(self) -> None:
        # Only our own: a newer daemon may already have replaced it.
        try:
            if self.transport == "unix":
                if self._inode is not None and self.path.stat().st_ino == self._inode:
                    self.path.unlink()
            elif self._token:
                current = json.loads(self.path.read_text()).get("token", "")
                if hmac.compare_digest(str(current), self._token):
                    self.path.unlink()
        except (OSError, ValueError, AttributeError):
            pass

    def publish(self, event: str, data: Any) -> None:
        """Push an event to every subscriber; a subscriber too far behind is dropped."""
        try:
            line = _encode({"v": PROTOCOL_VERSION, "event": event, "data": data})
        except (TypeError, ValueError) as exc:
            log.error("event %r not published: cannot encode its data: %s", event, exc)
            return
        for conn in list(self._subscribers):
            if not conn.push(line):
                self._subscribers.discard(conn)
                log.warning(
                    "control client %s dropped: %d events unread", conn.peer, conn.out.qsize()
                )
                conn.abort()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Conn(reader, writer, _peer_name(writer), self._queue_size)
        try:
            if await self._admit(conn):
                conn.start()
                await self._serve(conn)
        except asyncio.CancelledError:
            # Not re-raised: on 3.11 start_server's done-callback logs a cancelled client
            # task as an error. Cancelled means close() or a dropped client.
            conn.dropped = True
        except Exception:
            log.exception("control client %s: unexpected error", conn.peer)
            conn.dropped = True
        finally:
            self._subscribers.discard(conn)
            self._tasks.discard(task)
            if conn.dropped:
                writer.transport.abort()
                if conn.sender is not None:
                    conn.sender.cancel()
            else:
                with contextlib.suppress(asyncio.CancelledError):
                    await conn.close()

    async def _refuse(self, conn: _Conn, words: str) -> bool:
        with contextlib.suppress(OSError, TimeoutError):
            conn.writer.write(_error(None, words))
            await asyncio.wait_for(conn.writer.drain(), FLUSH_TIMEOUT)
        conn.writer.transport.abort()
        conn.dropped = True
        return False

    async def _admit(self, conn: _Conn) -> bool:
        if self.transport == "unix":
            pid, uid = _peer_creds(conn.writer.get_extra_info("socket"))
            conn.peer = f"pid {pid}" if pid is not None else conn.peer
            if uid != os.getuid():
                log.warning(
                    "refused control connection from pid %s uid %s (the daemon runs as uid %d)",
                    pid,
                    uid,
                    os.getuid(),
                )
                return await self._refuse(conn, "refused: not the daemon's user")
            return True
        try:
            line = await asyncio.wait_for(conn.reader.readline(), AUTH_TIMEOUT)
        except (TimeoutError, ValueError, ConnectionError):
            line = b""
        rid, token = _auth_token(line)
        if token is None or not hmac.compare_digest(token.encode(), self._token.encode()):
            log.warning("refused control connection from %s: missing or wrong token", conn.peer)
            return await self._refuse(
                conn, f"refused: the first message must be auth with the token in {self.path}"
            )
        conn.writer.write(self._ok(rid, self._hello()))
        return True

    async def _serve(self, conn: _Conn) -> None:
        while True:
            try:
                line = await conn.reader.readline()
            except ValueError:
                log.warning("control client %s sent over %d bytes; closed", conn.peer, MAX_MESSAGE)
                await conn.send(_error(None, f"message longer than {MAX_MESSAGE} bytes; closing"))
                return
            except ConnectionError:
                return
            if not line:
                return
            if not line.strip():
                continue
            reply = await self._dispatch(conn, line)
            if reply is not None:
                await conn.send(reply)

    def _ok(self, rid: int, result: Any) -> bytes:
        return _encode({"v": PROTOCOL_VERSION, "id": rid, "ok": True, "result": result})

    def _hello(self) -> dict[str, Any]:
        return {"server": "jobtunnel", "v": PROTOCOL_VERSION}

    async def _dispatch(self, conn: _Conn, line: bytes) -> bytes | None:
        """The reply to one request line (None when it was already queued)."""
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError) as exc:
            return _error(None, f"malformed JSON: {exc}")
        if not isinstance(msg, dict):
            return _error(None, "a request must be a JSON object")
        rid = msg.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            return _error(None, "'id' must be an integer")
        v = msg.get("v")
        if v != PROTOCOL_VERSION or isinstance(v, bool):
            return _error(rid, f"unsupported protocol version {v!r}; this daemon speaks 1")
        cmd = msg.get("cmd")
        if not isinstance(cmd, str):
            return _error(rid, "'cmd' must be a string")
        args = msg.get("args")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return _error(rid, "'args' must be an object")
        handler = self._handlers.get(cmd)
        if handler is None:
            if cmd in ("auth", "hello"):
                return self._ok(rid, self._hello())
            if cmd == "unsubscribe":
                self._subscribers.discard(conn)
                return self._ok(rid, None)
            if cmd != "subscribe":
                return _error(rid, f"unknown command {cmd!r}")
        try:
            result = None if handler is None else await handler(args)
            reply = self._ok(rid, result)
        except ControlError as exc:
            return _error(rid, str(exc))
        except Exception as exc:
            log.exception("control command %r failed", cmd)
            return _error(rid, f"{cmd} failed: {exc or type(exc).__name__}")
        if cmd != "subscribe":
            return reply
        # No await between the handler's snapshot and joining: no event falls between.
        if not conn.push(reply):
            conn.abort()
            return None
        self._subscribers.add(conn)
        return None


def _auth_token(line: bytes) -> tuple[int, str | None]:
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        return 0, None
    if not isinstance(msg, dict) or msg.get("cmd") != "auth":
        return 0, None
    rid = msg.get("id")
    args = msg.get("args")
    token = args.get("token") if isinstance(args, dict) else None
    if not isinstance(rid, int) or not isinstance(token, str):
        return 0, None
    return rid, token


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return f"fd {writer.get_extra_info('socket').fileno()}"


async def _unix_alive(path: Path) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path)), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError):
        return False
    writer.transport.abort()
    return True


# -- client ----------------------------------------------------------------------------


class ControlClient:
    """Async client: ``async with ControlClient() as c: await c.request("status")``."""

    def __init__(
        self,
        path: Path | None = None,
        transport: str | None = None,
        *,
        timeout: float | None = 30.0,
        max_events: int = 1000,
    ) -> None:
        self.transport = transport_kind(transport)
        self.path = Path(path) if path is not None else default_path(self.transport)
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(max_events)
        self._next_id = 0
        self._closed_reason: str | None = None
        self._lagging = False

    async def __aenter__(self) -> ControlClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect (and authenticate over TCP); DaemonNotRunning when nothing listens."""
        token = None
        try:
            if self.transport == "unix":
                if not self.path.exists():
                    raise DaemonNotRunning()
                opening = asyncio.open_unix_connection(str(self.path), limit=CLIENT_LIMIT)
            else:
                port, token = self._read_token_file()
                opening = asyncio.open_connection("127.0.0.1", port, limit=CLIENT_LIMIT)
            self._reader, self._writer = await asyncio.wait_for(opening, CONNECT_TIMEOUT)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            # A socket or port file left by a daemon that died.
            raise DaemonNotRunning(f"nothing listens at {self.path}") from exc
        except TimeoutError as exc:
            raise ControlError(f"the daemon at {self.path} did not accept in time") from exc
        except OSError as exc:
            raise ControlError(f"cannot connect to {self.path}: {exc.strerror or exc}") from exc
        self._closed_reason = None
        self._reader_task = asyncio.create_task(self._read_loop())
        if token is not None:
            try:
                await self.request("auth", token=token)
            except ControlError:
                await self.close()
                raise

    def _read_token_file(self) -> tuple[int, str]:
        try:
            info = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise DaemonNotRunning() from None
        except (OSError, ValueError) as exc:
            raise ControlError(f"cannot read {self.path}: {exc}") from exc
        port = info.get("port") if isinstance(info, dict) else None
        token = info.get("token") if isinstance(info, dict) else None
        if not isinstance(port, int) or not isinstance(token, str):
            raise ControlError(f"{self.path} does not hold a port and a token")
        return port, token

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finish("the connection was closed")

    async def request(self, cmd: str, /, **args: Any) -> Any:
        """Send one command; its result, or ControlError with the daemon's words."""
        if self._writer is None or self._closed_reason is not None:
            raise ControlError(self._closed_reason or "not connected to the daemon")
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._writer.write(
                _encode({"v": PROTOCOL_VERSION, "id": rid, "cmd": cmd, "args": args})
            )
            await self._writer.drain()
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise ControlError(
                f"the daemon did not answer {cmd!r} within {self.timeout:g} s"
            ) from None
        except (ConnectionError, OSError) as exc:
            raise ControlError(f"lost the connection to the daemon: {exc}") from exc
        finally:
            self._pending.pop(rid, None)

    async def subscribe(self, **args: Any) -> Any:
        """Start receiving events; returns the daemon's reply (e.g. a status snapshot)."""
        return await self.request("subscribe", **args)

    async def events(self) -> AsyncIterator[Event]:
        """Pushed events, in order, until the connection closes."""
        while (event := await self._events.get()) is not None:
            yield event
        self._events.put_nowait(None)  # later iterations end at once too

    @property
    def closed_reason(self) -> str | None:
        """Why the connection ended (the daemon's words when it said why)."""
        return self._closed_reason

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "the daemon closed the connection"
        try:
            while line := await self._reader.readline():
                reason = self._take(line) or reason
        except (ConnectionError, OSError, ValueError) as exc:
            reason = f"lost the connection to the daemon: {exc}"
        self._finish(reason)

    def _take(self, line: bytes) -> str | None:
        """Route one message; returns the daemon's words when it ends the connection."""
        try:
            msg = json.loads(line)
        except ValueError:
            log.warning("ignored a malformed message from the daemon")
            return None
        if not isinstance(msg, dict):
            return None
        if "event" in msg:
            self._queue_event(Event(str(msg["event"]), msg.get("data")))
            return None
        rid = msg.get("id")
        fut = self._pending.get(rid) if isinstance(rid, int) else None
        if fut is None:
            if rid is None and msg.get("ok") is False:
                return str(msg.get("error"))
            return None
        if fut.done():
            return None
        if msg.get("ok") is True:
            fut.set_result(msg.get("result"))
        else:
            fut.set_exception(ControlError(str(msg.get("error") or "the daemon refused")))
        return None

    def _queue_event(self, event: Event) -> None:
        if self._events.full():
            # The reader of events fell behind: drop the oldest, they are superseded.
            self._events.get_nowait()
            if not self._lagging:
                log.warning("events are not being read; dropping the oldest")
            self._lagging = True
        else:
            self._lagging = False
        self._events.put_nowait(event)

    def _finish(self, reason: str) -> None:
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ControlError(reason))
        if self._events.full():
            self._events.get_nowait()
        self._events.put_nowait(None)


def call_sync(
    cmd: str,
    args: Mapping[str, Any] | None = None,
    *,
    path: Path | None = None,
    transport: str | None = None,
    timeout: float | None = 30.0,
) -> Any:
    """One request from synchronous code (the CLI); not for use inside a running loop."""

    async def go() -> Any:
        async with ControlClient(path, transport, timeout=timeout) as client:
            return await client.request(cmd, **dict(args or {}))

    return asyncio.run(go())


def request_sync(cmd: str, /, **args: Any) -> Any:
    """``call_sync`` with the default transport and location."""
    return call_sync(cmd, args)
