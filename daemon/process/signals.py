"""Stop and reload signals, per platform.

POSIX: SIGTERM and SIGINT stop, SIGHUP (where it exists) reloads, through
``loop.add_signal_handler`` (runs on the loop). Windows has no ``add_signal_handler``:
``signal.signal`` for SIGINT/SIGBREAK, whose handler hands over with
``call_soon_threadsafe``. The OS calls are parameters so that tests run both branches.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["install"]

SetHandler = Callable[[int, Callable[..., Any]], object]


def install(
    loop: asyncio.AbstractEventLoop,
    stop: Callable[[], None],
    reload: Callable[[], None],
    *,
    platform: str = sys.platform,
    set_handler: SetHandler = signal.signal,
) -> list[str]:
    """Route the stop and reload signals to ``stop`` and ``reload``; the names installed."""
    if platform == "win32":
        names = [n for n in ("SIGINT", "SIGBREAK", "SIGTERM") if hasattr(signal, n)]
        for name in names:
            set_handler(getattr(signal, name), lambda *_: loop.call_soon_threadsafe(stop))
        return names
    names = ["SIGTERM", "SIGINT"]
    for name in names:
        loop.add_signal_handler(getattr(signal, name), stop)
    if hasattr(signal, "SIGHUP"):
        loop.add_signal_handler(signal.SIGHUP, reload)
        names.append("SIGHUP")
    return names
