"""Local clients that arrive while the SSH link is down: held for the hold time, and
the next connection attempt pulled forward while any of them waits."""

from __future__ import annotations

import asyncio
import contextlib
import time

from ..core.policy import ErrorKind, TunnelMachine

__all__ = ["HELD_RETRY_FAST", "HELD_RETRY_FLOOR", "HeldClients"]

# Held clients never pull connection attempts closer together than this.
HELD_RETRY_FLOOR = 1.0
# ...except when the host answers at once that nothing listens (sshd restarting) or the
# link just dropped: such an attempt costs one round trip, and the server is likely
# back within seconds, so a held client is served at most this long after it returns.
HELD_RETRY_FAST = 0.5
_FAST_RETRY_KINDS = frozenset({ErrorKind.REFUSED, ErrorKind.LOST})


class HeldClients:
    """Clients of one tunnel waiting for its link. The supervisor sets :attr:`link_up`
    while a link is up and waits on ``wake`` for an attempt that was pulled forward."""

    def __init__(self, machine: TunnelMachine, hold_seconds: float, wake: asyncio.Event) -> None:
        self._machine = machine
        self._hold_seconds = hold_seconds
        self._wake = wake
        self.link_up = asyncio.Event()
        self.count = 0  # clients waiting right now

    def deadline(self) -> float:
        """When a client arriving now stops waiting (monotonic clock)."""
        return time.monotonic() + self._hold_seconds

    async def wait(self, deadline: float) -> bool:
        """Hold one client until the link is up or ``deadline``; False at once when the
        time is already up or the tunnel no longer tries to connect."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._machine.live:
            return False
        self.count += 1
        try:
            self.pull_retry_forward()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.link_up.wait(), remaining)
        finally:
            self.count -= 1
        return True

    def pull_retry_forward(self) -> None:
        """While clients are held, keep the next attempt within a sixth of the hold time
        (5 s by default: several tries before it expires, yet no hammering); the floor
        keeps a short hold from driving attempts in a tight loop. After a refused
        connection or a dropped link, within :data:`HELD_RETRY_FAST` instead."""
        if not self.count:
            return
        if self._machine.last_error_kind in _FAST_RETRY_KINDS:
            within = HELD_RETRY_FAST
        else:
            within = max(HELD_RETRY_FLOOR, self._hold_seconds / 6)
        if self._machine.client_waiting(time.monotonic(), within):
            self._wake.set()
