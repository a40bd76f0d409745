"""The daemon's notice of network changes and wakes: the platform's change source
(:mod:`.routesock` on Linux and macOS, :mod:`.ipchange_win` on Windows), the system
bus for sleep and NetworkManager (:mod:`.dbuswatch`), and a poller where no change
source works. Bursts become one check (:class:`~..core.netcheck.Debounce`); checks
never overlap, and one that arrives during a check runs right after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from ..core.netcheck import NETWORK_CHANGED, WOKE, Debounce, poll_changed
from .dbuswatch import SystemBusSignals
from .ipchange_win import IpInterfaceChanges
from .routesock import RouteSocket

__all__ = ["POLL_SECONDS", "NetWatch", "change_source", "fingerprint"]

log = logging.getLogger(__name__)

# The fallback poller's period: a change is noticed within this, not at once.
POLL_SECONDS = 2.0


class ChangeSource(Protocol):
    name: str

    def start(self, notice: Callable[[list[str]], None]) -> None: ...

    def stop(self) -> None: ...


def change_source(platform: str = sys.platform) -> ChangeSource | None:
    """The platform's change notice, or None where polling is all there is."""
    if platform == "win32":
        return IpInterfaceChanges()
    if platform.startswith("linux") or platform == "darwin":
        return RouteSocket(platform)
    return None


def fingerprint(peers: Iterable[tuple[str, int]]) -> tuple[object, ...]:
    """What the poller compares: the interfaces, and the source address the kernel
    would use for each peer now (a UDP connect sends nothing)."""
    try:
        interfaces: object = tuple(sorted(socket.if_nameindex()))
    except OSError:
        interfaces = None
    routes: list[object] = []
    for host, port in sorted(set(peers)):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((host, port))
                routes.append((host, probe.getsockname()[0]))
            except OSError as exc:
                routes.append((host, exc.errno))
    return (interfaces, tuple(routes))


class NetWatch:
    """Calls ``on_change(reason)`` once per burst of network changes or per wake.
    ``peers`` lists the addresses links are connected to (for the poller)."""

    def __init__(
        self,
        on_change: Callable[[str], Awaitable[None]],
        peers: Callable[[], Iterable[tuple[str, int]]] = tuple,
        *,
        source: ChangeSource | None = None,
        bus: SystemBusSignals | None = None,
        debounce: Debounce | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._on_change = on_change
        self._peers = peers
        self._source = source if source is not None else change_source()
        self._bus = bus if bus is not None else SystemBusSignals()
        self._debounce = debounce or Debounce()
        self._poll_seconds = poll_seconds
        self._timer: asyncio.TimerHandle | None = None
        self._checking: asyncio.Task[None] | None = None
        self._again: str | None = None
        self._poller: asyncio.Task[None] | None = None
        self._bus_started = False
        self.sources: list[str] = []  # what is listened to, for doctor and the log
        self.checks = 0

    async def start(self) -> None:
        source = self._source
        if source is not None:
            try:
                source.start(lambda kinds: self.notice(NETWORK_CHANGED))
                self.sources.append(source.name)
            except OSError as exc:
                log.warning("network watch: %s unavailable (%s); polling instead", source.name, exc)
                self._source = None
        if self._source is None:
            self._poller = asyncio.create_task(self._poll(), name="network poll")
            self.sources.append(f"polling every {self._poll_seconds:g} s")
        if sys.platform.startswith("linux"):
            try:
                await self._bus.start(self.notice)
                self._bus_started = True
                self.sources.append(self._bus.name)
            except Exception as exc:
                # No system bus (a container, a minimal install): the clock jump at the
                # next health probe still notices a wake.
                log.info("network watch: no system bus signals (%s)", exc or type(exc).__name__)
        log.info("network watch: %s", ", ".join(self.sources))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._source is not None:
            self._source.stop()
        if self._bus_started:
            await self._bus.stop()
        for task in (self._poller, self._checking):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def notice(self, reason: str = NETWORK_CHANGED) -> None:
        """A change or a wake was seen (also called for the clock-jump fallback)."""
        loop = asyncio.get_running_loop()
        self._debounce.event(loop.time(), reason)
        due = self._debounce.due_at
        if self._timer is not None:
            self._timer.cancel()
        assert due is not None
        self._timer = loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        reason = self._debounce.fire(loop.time())
        if reason is None:
            due = self._debounce.due_at
            if due is not None:  # woken early: a burst must never be left unchecked
                self._timer = loop.call_at(due, self._fire)
            return
        if self._checking is not None and not self._checking.done():
            self._again = WOKE if WOKE in (reason, self._again) else reason
            return
        self._checking = asyncio.create_task(self._check(reason), name="network check")

    async def _check(self, reason: str) -> None:
        while True:
            self.checks += 1
            try:
                await self._on_change(reason)
            except Exception:
                log.exception("network watch: checking the links failed")
            if self._again is None:
                return
            reason, self._again = self._again, None

    async def _poll(self) -> None:
        before: object = None
        while True:
            now = fingerprint(self._peers())
            if poll_changed(before, now):
                self.notice(NETWORK_CHANGED)
            before = now
            await asyncio.sleep(self._poll_seconds)
