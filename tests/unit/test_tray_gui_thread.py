"""The tray touches its icon only on the GUI thread (pystray issue #60; AppKit's rule).

A fake pystray backend records the thread of every icon, title, menu and visibility
change, notification and stop, and runs a GUI loop on the test's main thread that drains
the posted calls, the way pystray's win32 loop does with the tray's queue. The real tray
under Xvfb is in tests/e2e/test_tray_real.py.
"""

from __future__ import annotations

import threading
import types
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.api.schema import from_wire
from jobtunnel.tray import app as tray_app
from jobtunnel.tray import gui_thread
from jobtunnel.tray.notify import Notice, Notifier

from tests.helpers.recorded import recorded

RECORDED_ATTRS = ("icon", "title", "menu", "visible")


class FakeIcon:
    """pystray.Icon's surface; every change is recorded with the thread that made it."""

    touches: list[tuple[str, int]]

    def __init__(self, name: str, icon: Any, title: str, menu: Any = None) -> None:
        object.__setattr__(self, "touches", [])
        object.__setattr__(self, "calls", gui_thread.QueuePost())
        object.__setattr__(self, "woken", threading.Event())
        object.__setattr__(self, "stopped", threading.Event())
        self.calls.wake = self.woken.set
        for attr, value in zip(RECORDED_ATTRS, (icon, title, menu, False), strict=True):
            object.__setattr__(self, attr, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in RECORDED_ATTRS:
            self.touches.append((name, threading.get_ident()))
        object.__setattr__(self, name, value)

    def notify(self, message: str, title: str | None = None) -> None:
        self.touches.append(("notify", threading.get_ident()))

    def stop(self) -> None:
        self.touches.append(("stop", threading.get_ident()))
        self.stopped.set()

    def run(self, setup: Any = None) -> None:
        # As pystray does: setup on a thread of its own, the loop on the calling thread.
        threading.Thread(target=setup, args=(self,), daemon=True).start()
        for _ in range(3000):  # bounded: about 30 s at most
            if self.stopped.is_set():
                return
            self.woken.wait(0.01)
            self.woken.clear()
            self.calls.drain()
        raise AssertionError("the tray never stopped its icon")


def fake_pystray() -> types.SimpleNamespace:
    return types.SimpleNamespace(Icon=FakeIcon, Menu=_Menu, MenuItem=_MenuItem)


class _Menu:
    SEPARATOR = object()

    def __init__(self, *items: Any) -> None:
        self.items = items


class _MenuItem:
    def __init__(self, text: Any, action: Any = None, **kwargs: Any) -> None:
        self.text, self.action, self.kwargs = text, action, kwargs


@pytest.fixture
def fake_menu(monkeypatch: pytest.MonkeyPatch) -> None:
    """to_pystray builds pystray.Menu objects: give it the fake ones."""
    import sys

    monkeypatch.setitem(sys.modules, "pystray", fake_pystray())


def drive_from_worker(app: tray_app.TrayApp, done: threading.Event) -> None:
    """What the daemon connection does, from a thread that is not the GUI thread."""
    while app.icon is None or app.gui is None:
        done.wait(0.01)
    for name in ("up", "paused", "refused-key", "empty", "up"):
        app.show(from_wire(recorded(name)))
        # The tray coalesces redraws (only the latest wanted state is drawn): let the GUI
        # loop draw each one, or a fast worker leaves nothing but the last to draw.
        for _ in range(500):
            if app._wanted is None:
                break
            done.wait(0.01)
    app.show(None, "daemon gone")
    app.tick()
    app.tell("jobtunnel", "a notice from the worker")
    app.quit()
    done.set()


def test_every_icon_update_is_made_on_the_gui_thread(isolated_home: Path, fake_menu: None) -> None:
    app = tray_app.TrayApp()
    app.notifier = Notifier(app._send_notification, check=lambda: None)
    done = threading.Event()
    worker = threading.Thread(target=drive_from_worker, args=(app, done), daemon=True)
    worker.start()
    fake = fake_pystray()
    # The fake loop drains the posted calls, as the win32 backend's queue is drained.
    code = app.run(pystray=fake, post=lambda fn: app.icon.calls(fn))
    worker.join(10)
    assert code == 0 and done.is_set()
    gui = threading.get_ident()
    touches = app.icon.touches
    kinds = {kind for kind, _ in touches}
    # Each kind of update happened (so the check below is not vacuous) ...
    assert {"icon", "title", "menu", "visible", "notify", "stop"} <= kinds, touches
    # ... and none from another thread.
    elsewhere = [(kind, ident) for kind, ident in touches if ident != gui]
    assert not elsewhere, f"updates made off the GUI thread {gui}: {elsewhere}"


def test_the_fake_backend_catches_an_update_from_another_thread() -> None:
    """The recorder is able to fail: a title set from a worker is seen as such."""
    icon = FakeIcon("t", None, "before")
    threading.Thread(target=lambda: setattr(icon, "title", "after")).start()
    for _ in range(500):
        if icon.touches:
            break
        threading.Event().wait(0.01)
    assert icon.touches and icon.touches[0][1] != threading.get_ident()


def test_gui_thread_runs_here_at_once_and_posts_from_elsewhere() -> None:
    posted: list[Any] = []
    gui = gui_thread.GuiThread(posted.append)
    ran: list[int] = []
    gui.call(lambda: ran.append(threading.get_ident()))
    assert ran == [threading.get_ident()] and not posted
    other = threading.Thread(target=gui.call, args=(lambda: ran.append(-1),))
    other.start()
    other.join()
    assert len(posted) == 1 and ran == [threading.get_ident()]
    posted[0]()
    assert ran[-1] == -1


def test_win32_queue_is_drained_on_pystray_s_window_message() -> None:
    """The Windows path: a private window message makes pystray's loop drain the queue."""
    sent: list[tuple[Any, int, int, int]] = []
    icon = types.SimpleNamespace(_hwnd=None, _message_handlers={})
    post = gui_thread.win32_post(icon, lambda *args: sent.append(args))
    ran: list[str] = []
    post(lambda: ran.append("early"))  # before pystray made its window: waits
    assert not sent and not ran
    icon._hwnd = 0x1234
    post(lambda: ran.append("late"))
    assert sent == [(0x1234, gui_thread.WM_JOBTUNNEL_CALL, 0, 0)] and not ran
    # pystray's window procedure calls the handler on its loop's thread:
    icon._message_handlers[gui_thread.WM_JOBTUNNEL_CALL](0, 0)
    assert ran == ["early", "late"]


def test_backends_with_their_own_call_later() -> None:
    """GTK's idle_add gets a callable that runs once (returns False); xorg and dummy run
    the call directly (pystray's xorg backend forwards updates to its own thread)."""
    ran: list[str] = []
    direct = gui_thread.post_for("xorg", object())
    direct(lambda: ran.append("xorg"))
    assert ran == ["xorg"]
    queued: list[Any] = []
    idle = gui_thread._idle_once(queued.append)
    idle(lambda: ran.append("gtk"))
    assert queued[0]() is False and ran[-1] == "gtk"


def test_a_failing_update_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    calls = gui_thread.QueuePost()
    calls(lambda: 1 / 0)  # type: ignore[func-returns-value, arg-type]
    calls(lambda: None)
    assert calls.drain() == 2
    assert "tray update failed" in caplog.text


def test_notice_from_worker_goes_through_the_gui_thread(isolated_home: Path) -> None:
    app = tray_app.TrayApp()
    posted: list[Any] = []
    app.gui = gui_thread.GuiThread(posted.append, ident=-1)  # never this thread
    icon = FakeIcon("t", None, "x")
    app.icon = icon
    app.notifier = Notifier(app._send_notification, check=lambda: None)
    app.notifier.show(Notice("info", "T", "M"))
    assert not icon.touches and len(posted) == 1
    posted[0]()
    assert [kind for kind, _ in icon.touches] == ["notify"]
