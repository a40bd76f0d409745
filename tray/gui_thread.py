"""Every touch of the pystray icon happens on the GUI thread (the one running ``icon.run``).

pystray's icon, title, menu and visibility setters are not thread-safe on macOS and
Windows (pystray issue #60; AppKit may be touched from the main thread only), and pystray
runs our ``setup`` callback on a thread of its own. So the tray never sets them from its
worker: it hands a callable to :class:`GuiThread`, which runs it at once when already on
the GUI thread and otherwise posts it by the backend's own means:

- ``appindicator`` and ``gtk``: ``GLib.idle_add`` (thread-safe, runs in GTK's loop);
- ``darwin``: ``PyObjCTools.AppHelper.callAfter`` (runs on the main run loop);
- ``win32``: pystray's message loop has no call-later, so a queue that the GUI thread
  drains when it gets a private window message (``PostMessage`` to pystray's window,
  handled through the icon's message-handler table);
- ``xorg``: pystray already forwards every update to its own loop thread: called directly;
- anything else (``dummy``): called directly.

The backend imports happen only when that backend is chosen.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["WM_JOBTUNNEL_CALL", "GuiThread", "Post", "QueuePost", "post_for", "win32_post"]

log = logging.getLogger(__name__)

Call = Callable[[], None]
Post = Callable[[Call], None]

# pystray uses WM_USER + 10 and + 11 for itself; this one is ours.
WM_JOBTUNNEL_CALL = 0x400 + 0x4A7


def _run_logged(fn: Call) -> None:
    try:
        fn()
    except Exception:
        log.exception("tray update failed on the GUI thread")


class GuiThread:
    """Runs callables on one thread (the GUI thread, by default the one creating it)."""

    def __init__(self, post: Post, ident: int | None = None) -> None:
        self._post = post
        self.ident = threading.get_ident() if ident is None else ident

    def here(self) -> bool:
        return threading.get_ident() == self.ident

    def call(self, fn: Call) -> None:
        """``fn()`` now when on the GUI thread, else as soon as the GUI thread can."""
        if self.here():
            _run_logged(fn)
        else:
            self._post(fn)


class QueuePost:
    """A queue of calls that the GUI thread drains; ``wake`` tells it there is work."""

    def __init__(self, wake: Callable[[], None] = lambda: None) -> None:
        self._calls: queue.SimpleQueue[Call] = queue.SimpleQueue()
        self.wake = wake

    def __call__(self, fn: Call) -> None:
        self._calls.put(fn)
        self.wake()

    def drain(self) -> int:
        """Run every queued call (on the GUI thread); how many ran."""
        ran = 0
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return ran
            _run_logged(fn)
            ran += 1


def _idle_once(idle_add: Callable[..., Any]) -> Post:
    def post(fn: Call) -> None:
        def once() -> bool:
            _run_logged(fn)
            return False  # not again

        idle_add(once)

    return post


def win32_post(icon: Any, post_message: Callable[[Any, int, int, int], Any]) -> QueuePost:
    """The Windows queue: drained by pystray's loop on ``WM_JOBTUNNEL_CALL``.

    Calls posted before pystray has made its window (``icon._hwnd``) wait in the queue
    and run at the first wake after it exists (the setup callback makes one).
    """
    calls = QueuePost()

    def handle(_wparam: int, _lparam: int) -> int:
        calls.drain()
        return 0

    def wake() -> None:
        hwnd = getattr(icon, "_hwnd", None)
        if hwnd:
            post_message(hwnd, WM_JOBTUNNEL_CALL, 0, 0)

    icon._message_handlers[WM_JOBTUNNEL_CALL] = handle
    calls.wake = wake
    return calls


def post_for(backend: str, icon: Any) -> Post:
    """How to reach the GUI thread of the pystray ``backend`` that drives ``icon``."""
    if backend in ("appindicator", "gtk"):
        from gi.repository import GLib

        return _idle_once(GLib.idle_add)
    if backend == "darwin":
        from PyObjCTools import AppHelper

        return lambda fn: AppHelper.callAfter(_run_logged, fn)
    if backend == "win32":
        from pystray._util import win32

        return win32_post(icon, win32.PostMessage)
    return _run_logged
