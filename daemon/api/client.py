"""The control API's client: async (:class:`ControlClient`, the tray's) and one-shot
sync (:func:`call_sync`, the CLI's and doctor's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import unixsock
from .wire import (
    CLIENT_LIMIT,
    CONNECT_TIMEOUT,
    PROTOCOL_VERSION,
    ControlError,
    default_path,
    encode,
    transport_kind,
)

__all__ = ["NOT_RUNNING", "ControlClient", "ControlError", "DaemonNotRunning", "Event", "call_sync"]

log = logging.getLogger(__name__)

NOT_RUNNING = "jobtunnel daemon is not running; start it with `jobtunnel run`"


class DaemonNotRunning(ControlError):
    """Nothing listens where the daemon would."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(NOT_RUNNING + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class Event:
    """A pushed event."""

    name: str
    data: Any


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
                opening = unixsock.open_connection(str(self.path), CLIENT_LIMIT)
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
            self._writer.write(encode({"v": PROTOCOL_VERSION, "id": rid, "cmd": cmd, "args": args}))
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
