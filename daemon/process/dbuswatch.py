"""Signals on the system bus (Linux): logind's ``PrepareForSleep`` (false: the machine
woke) and NetworkManager's ``StateChanged``, through jeepney (pure Python, asyncio).

A machine without a system bus, logind or NetworkManager simply sends nothing: the
clock-jump check and the routing socket cover for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..core.netcheck import NETWORK_CHANGED, WOKE

__all__ = ["SystemBusSignals"]

log = logging.getLogger(__name__)

# (sender, path, interface, member). The sender is the service's own name: another
# process on the bus cannot pass for it.
_RULES = (
    (
        "org.freedesktop.login1",
        "/org/freedesktop/login1",
        "org.freedesktop.login1.Manager",
        "PrepareForSleep",
    ),
    (
        "org.freedesktop.NetworkManager",
        "/org/freedesktop/NetworkManager",
        "org.freedesktop.NetworkManager",
        "StateChanged",
    ),
)


def reason_of(member: str, body: tuple[Any, ...]) -> str | None:
    """The check a signal asks for: none when the machine is about to sleep."""
    if member == "PrepareForSleep":
        return WOKE if body and body[0] is False else None
    if member == "StateChanged":
        return NETWORK_CHANGED
    return None


class SystemBusSignals:
    """Calls ``notice(reason)`` for each signal that asks for a check. ``bus`` is
    jeepney's bus name or a D-Bus address (tests give their own bus)."""

    name = "system bus"

    def __init__(self, bus: str = "SYSTEM") -> None:
        self._bus = bus
        self._task: asyncio.Task[None] | None = None

    async def start(self, notice: Callable[[str], None]) -> None:
        """Connect and subscribe; raises if there is no bus (or no jeepney)."""
        subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._listen(notice, subscribed), name="system bus")
        try:
            await asyncio.wait_for(asyncio.shield(subscribed), 5)
        except BaseException:
            await self.stop()
            raise

    async def _listen(
        self, notice: Callable[[str], None], subscribed: asyncio.Future[None]
    ) -> None:
        try:
            from jeepney import MatchRule
            from jeepney.bus_messages import message_bus
            from jeepney.io.asyncio import Proxy, open_dbus_router
            from jeepney.low_level import HeaderFields

            async with open_dbus_router(self._bus) as router:
                queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
                with contextlib.ExitStack() as filters:
                    for sender, path, iface, member in _RULES:
                        fields = {"path": path, "interface": iface, "member": member}
                        # The bus resolves the sender's name; the router compares the
                        # header literally, where the sender is the unique name (:1.42).
                        rule = MatchRule(type="signal", sender=sender, **fields)
                        await Proxy(message_bus, router).AddMatch(rule)
                        local = MatchRule(type="signal", **fields)
                        filters.enter_context(router.filter(local, queue=queue))
                    subscribed.set_result(None)
                    while True:
                        msg = await queue.get()
                        member = str(msg.header.fields.get(HeaderFields.member, ""))
                        reason = reason_of(member, tuple(msg.body))
                        if reason is not None:
                            notice(reason)
        except Exception as exc:
            if not subscribed.done():
                subscribed.set_exception(exc)
            else:
                log.warning("network watch: the system bus connection ended: %s", exc)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
