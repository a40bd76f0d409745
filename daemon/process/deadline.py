"""A bound on stopping: the daemon is gone within :data:`STOP_SECONDS` of the first stop
request, or at once on the second (a user pressing Ctrl-C twice, systemd's stop).

A clean stop closes tunnels and saves state in well under a second. What can outlast it
cannot be cancelled from asyncio: a name lookup in the default executor waiting on a
silent DNS server, which ``asyncio.run`` waits for on its way out. The OS releases the
listeners and the instance lock of a process that exits, so exiting is safe; the state
file is saved before the deadline in every normal stop, and is replaced atomically, so a
forced exit never leaves it half written."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["STOP_SECONDS", "StopDeadline"]

log = logging.getLogger(__name__)

STOP_SECONDS = 4.5


class _Timer(Protocol):
    daemon: bool

    def start(self) -> None: ...


class StopDeadline:
    """``arm()`` at each stop request. Never disarmed: it covers the interpreter's own
    exit too (joining threads); a daemon timer does not keep a finished process alive.
    The exit and the timer are parameters so that tests can watch them."""

    def __init__(
        self,
        seconds: float = STOP_SECONDS,
        *,
        exit: Callable[[int], object] = os._exit,
        timer: Callable[[float, Callable[[], None]], _Timer] = threading.Timer,
    ) -> None:
        self.seconds = seconds
        self._exit = exit
        self._timer_factory = timer
        self._timer: _Timer | None = None
        self._lock = threading.Lock()

    def arm(self) -> None:
        with self._lock:
            if self._timer is None:
                self._timer = self._timer_factory(self.seconds, self._expired)
                self._timer.daemon = True  # never what keeps the process alive
                self._timer.start()
                return
        self._force("asked to stop again")

    def _expired(self) -> None:
        self._force(f"still stopping after {self.seconds:g} s")

    def _force(self, why: str) -> None:
        log.error("%s; exiting now", why)
        for logger in (logging.getLogger(), logging.getLogger("jobtunnel")):
            for handler in logger.handlers:
                handler.flush()  # the log file has the line before the process goes
        # 0: a stop was asked for, and a login service must not restart the daemon.
        self._exit(0)
