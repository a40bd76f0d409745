"""The control API's server: serves the daemon's command handlers to local clients.

Who may connect: on a Unix socket, peers with the daemon's uid (``SO_PEERCRED``); over
TCP, a client whose first message is ``auth`` with the token from the user-only file.
Each connection's replies and events leave through one bounded queue, so a client that
does not read stalls only itself and is dropped when too far behind. The framing is in
:mod:`.wire`.
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
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from ..files import private_dir, replace_atomically
from . import unixsock
from .wire import (
    AUTH_TIMEOUT,
    CONNECT_TIMEOUT,
    FLUSH_TIMEOUT,
    MAX_MESSAGE,
    PROTOCOL_VERSION,
    ControlError,
    default_path,
    encode,
    error_line,
    transport_kind,
)

__all__ = ["ControlServer", "Handler"]

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


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
        self._server = await unixsock.start_server(self._on_client, str(self.path), MAX_MESSAGE)
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
            line = encode({"v": PROTOCOL_VERSION, "event": event, "data": data})
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
            conn.writer.write(error_line(None, words))
            await asyncio.wait_for(conn.writer.drain(), FLUSH_TIMEOUT)
        conn.writer.transport.abort()
        conn.dropped = True
        return False

    async def _admit(self, conn: _Conn) -> bool:
        if self.transport == "unix":
            pid, uid = _peer_creds(conn.writer.get_extra_info("socket"))
            conn.peer = f"pid {pid}" if pid is not None else conn.peer
            own = unixsock.current_uid()
            if uid is None or uid != own:
                log.warning(
                    "refused control connection from pid %s uid %s (the daemon runs as uid %s)",
                    pid,
                    uid,
                    own,
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
                await conn.send(
                    error_line(None, f"message longer than {MAX_MESSAGE} bytes; closing")
                )
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
        return encode({"v": PROTOCOL_VERSION, "id": rid, "ok": True, "result": result})

    def _hello(self) -> dict[str, Any]:
        return {"server": "jobtunnel", "v": PROTOCOL_VERSION}

    async def _dispatch(self, conn: _Conn, line: bytes) -> bytes | None:
        """The reply to one request line (None when it was already queued)."""
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError) as exc:
            return error_line(None, f"malformed JSON: {exc}")
        if not isinstance(msg, dict):
            return error_line(None, "a request must be a JSON object")
        rid = msg.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            return error_line(None, "'id' must be an integer")
        v = msg.get("v")
        if v != PROTOCOL_VERSION or isinstance(v, bool):
            return error_line(rid, f"unsupported protocol version {v!r}; this daemon speaks 1")
        cmd = msg.get("cmd")
        if not isinstance(cmd, str):
            return error_line(rid, "'cmd' must be a string")
        args = msg.get("args")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return error_line(rid, "'args' must be an object")
        handler = self._handlers.get(cmd)
        if handler is None:
            if cmd in ("auth", "hello"):
                return self._ok(rid, self._hello())
            if cmd == "unsubscribe":
                self._subscribers.discard(conn)
                return self._ok(rid, None)
            if cmd != "subscribe":
                return error_line(rid, f"unknown command {cmd!r}")
        try:
            result = None if handler is None else await handler(args)
            reply = self._ok(rid, result)
        except ControlError as exc:
            return error_line(rid, str(exc))
        except Exception as exc:
            log.exception("control command %r failed", cmd)
            return error_line(rid, f"{cmd} failed: {exc or type(exc).__name__}")
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
            unixsock.open_connection(str(path)), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError):
        return False
    writer.transport.abort()
    return True
