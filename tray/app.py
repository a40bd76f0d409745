"""The tray app: a pystray icon on the main thread, the daemon connection in a worker.

The worker thread runs asyncio: it subscribes to the daemon's status events, reconnects
with a backoff of at most 2 s when the daemon is gone, and hands every snapshot to
:meth:`TrayApp.show`, which redraws the icon, tooltip and menu (pure functions of the
snapshot) and passes the change to the notification policy. Menu clicks arrive on the
GUI thread and are handed back to the worker (control requests) or done at once. The
icon itself (image, title, menu, visibility, notifications, stop) is touched only on the
GUI thread, through :mod:`.gui_thread`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from jobtunnel.daemon import paths
from jobtunnel.daemon.api.client import ControlClient, ControlError, DaemonNotRunning
from jobtunnel.daemon.api.schema import (
    Command,
    EventName,
    SchemaError,
    StatusSnapshot,
    TrayAction,
    from_wire,
)
from jobtunnel.daemon.config import ConfigError, default_config_text, load_config
from jobtunnel.daemon.logs import log_file, setup_logging

from . import backend, desktop, gui_thread, putty, terminal
from .icon import Overall, draw, overall, tooltip
from .menu import Action, Item, MenuContext, build_menu
from .notify import Notice, NoticePolicy, Notifier

__all__ = ["TrayApp", "main"]

log = logging.getLogger("jobtunnel.tray")

ICON_SIZE = 64
MIN_BACKOFF = 0.25
MAX_BACKOFF = 2.0
# Menu actions that send one command naming the endpoint.
NAMED = {
    TrayAction.RECONNECT: Command.RECONNECT,
    TrayAction.CONNECT: Command.CONNECT,
    TrayAction.DISCONNECT: Command.DISCONNECT,
    TrayAction.FORGET: Command.FORGET,
    TrayAction.SWITCH: Command.SWITCH,
}
TICK = 5.0  # how often time-based notices (a tunnel down too long) are re-checked
START_GRACE = 15.0  # "Starting daemon…" for at most this long


class TrayApp:
    def __init__(self, config: Path | None = None) -> None:
        self.config_path = config
        self.snapshot: StatusSnapshot | None = None
        self.detail: str | None = None
        self.policy = NoticePolicy()
        self.icon: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.stopping = threading.Event()
        self._starting_since: float | None = None
        self._shown_state: Overall | None = None
        self._shown_title: str | None = None
        self._shown_menu: tuple[Item, ...] | None = None
        # Reentrant: a redraw on the GUI thread applies at once, under the same lock.
        self._lock = threading.RLock()
        self.gui: gui_thread.GuiThread | None = None  # set by run()
        self._wanted: tuple[Any, Overall, str, tuple[Item, ...]] | None = None
        self._transport: str | None = None
        self._control_path: Path | None = None
        self._identity = str(paths.key_file())
        self._putty = putty.find_putty()
        self._hide_ended: float | None = None
        self._load_config()
        self.notifier = Notifier(self._send_notification)

    # -- configuration ----------------------------------------------------------------

    def _load_config(self) -> None:
        try:
            config, _path = load_config(self.config_path)
        except ConfigError as exc:
            log.warning("config has errors, using defaults for the tray: %s", exc)
            return
        self._transport = config.daemon.control
        self._hide_ended = config.rescale.hide_ended_after
        if config.ssh.identity_files:
            self._identity = str(Path(config.ssh.identity_files[0]).expanduser())

    def context(self) -> MenuContext:
        starting = self._starting_since is not None and (
            time.monotonic() - self._starting_since < START_GRACE
        )
        return MenuContext(
            now=time.time(),
            identity_file=self._identity,
            public_key=str(paths.key_file()) + ".pub",
            log_file=str(log_file()),
            config_file=str(self.config_path or paths.config_file()),
            ssh_config=str(paths.ssh_config_file()),
            starting_daemon=starting,
            detail=self.detail,
            putty=self._putty,
            **({} if self._hide_ended is None else {"hide_ended_after": self._hide_ended}),
        )

    # -- state -> icon -----------------------------------------------------------------

    def menu_model(self) -> tuple[Item, ...]:
        return build_menu(self.snapshot, self.context())

    def show(self, snapshot: StatusSnapshot | None, detail: str | None = None) -> None:
        """A new snapshot (None: no daemon): redraw, and notify what deserves it."""
        with self._lock:
            changed = (snapshot is None) != (self.snapshot is None)
            self.snapshot = snapshot
            self.detail = detail
            if snapshot is not None:
                self._starting_since = None
            if changed:
                log.info("daemon %s", "connected" if snapshot is not None else "not running")
            self._redraw()
            notices = self.policy.update(snapshot, time.time())
        for notice in notices:
            self.notifier.show(notice)

    def receive(self, data: object) -> None:
        """A status payload from the daemon: shown, or, when it does not fit the schema,
        "no daemon" with the reason (logged once per reason)."""
        try:
            snapshot = from_wire(data)
        except SchemaError as exc:
            detail = f"its status is unreadable ({exc})"
            if detail != self.detail:
                log.warning("the daemon's status does not fit the schema: %s", exc)
            self.show(None, detail)
            return
        self.show(snapshot)

    def tick(self) -> None:
        with self._lock:
            notices = self.policy.update(self.snapshot, time.time())
            self._redraw()  # "since" texts and the starting-daemon grace
        for notice in notices:
            self.notifier.show(notice)

    def _redraw(self) -> None:
        """Push what changed to the icon; an unchanged menu is left alone, since
        replacing it would close it under the user's pointer."""
        icon = self.icon
        if icon is None:
            return
        pending = self._wanted is not None
        title = tooltip(self.snapshot, self.detail)
        self._wanted = (icon, overall(self.snapshot), title, self.menu_model())
        if not pending:  # one call in flight carries the latest wanted state
            self.on_gui(self._apply_wanted)

    def on_gui(self, fn: Any) -> None:
        """``fn()`` on the GUI thread (at once before ``run()``: there is no other then)."""
        gui = self.gui
        if gui is None:
            fn()
        else:
            gui.call(fn)

    def _apply_wanted(self) -> None:
        """On the GUI thread: bring the icon to the latest wanted state."""
        from .pystray_menu import to_pystray

        with self._lock:
            wanted, self._wanted = self._wanted, None
        if wanted is None:
            return
        icon, state, title, model = wanted
        if state is not self._shown_state:
            icon.icon = draw(state, ICON_SIZE)
            self._shown_state = state
        if title != self._shown_title:
            icon.title = title
            self._shown_title = title
        if model != self._shown_menu:
            icon.menu = to_pystray(model, self.dispatch)
            self._shown_menu = model

    def _send_notification(self, message: str, title: str) -> None:
        icon = self.icon
        if icon is None:
            raise RuntimeError("no icon yet")
        self.on_gui(lambda: icon.notify(message, title))

    def tell(self, title: str, message: str) -> None:
        """Feedback to a click (not rate-limited, not a status notice)."""
        self.notifier.show(Notice("info", title, message))

    # -- clicks ------------------------------------------------------------------------

    def dispatch(self, action: Action) -> None:
        """Carry out a menu action; called on the GUI thread, never raises."""
        log.info("menu: %s %s", action.id, " ".join(action.args[:1]))
        try:
            self._dispatch(action)
        except Exception:
            log.exception("menu action %s failed", action.id)

    def _dispatch(self, action: Action) -> None:
        a = action.args
        kind = action.id
        if kind in NAMED:
            self.request(NAMED[kind], name=a[0])
        elif kind is TrayAction.TRUST:
            # With the fingerprint the user was shown, the daemon pins exactly that key.
            args = {"name": a[0]} | ({"fingerprint": a[1]} if len(a) > 1 else {})
            self.request(Command.TRUST, **args)
        elif kind is TrayAction.FORWARD:
            self.request(Command.FORWARD, name=a[0], port=int(a[1]))
        elif kind is TrayAction.PAUSE_ALL:
            self.request(Command.PAUSE)
        elif kind is TrayAction.RESUME_ALL:
            self.request(Command.RESUME)
        elif kind is TrayAction.STOP_DAEMON:
            self.request(Command.STOP)
        elif kind is TrayAction.OPEN_URL:
            threading.Thread(target=desktop.open_url, args=(a[0],), daemon=True).start()
        elif kind is TrayAction.COPY_TEXT:
            if not desktop.copy_text(a[0]):
                self.tell("Cannot copy", f"no clipboard here; the {a[1]} is: {a[0]}")
        elif kind is TrayAction.OPEN_PUTTY:
            threading.Thread(target=self._open_putty, args=(a[0], a[1], a[2:]), daemon=True).start()
        elif kind is TrayAction.OPEN_TERMINAL:
            if not terminal.open_terminal(a, shutil.which, os.environ):
                self.tell("Cannot open a terminal", terminal.NO_TERMINAL)
        elif kind is TrayAction.COPY_PUBLIC_KEY:
            key = Path(a[0])
            if not key.exists():
                self.tell("No public key yet", f"{key} does not exist")
            elif not desktop.copy_text(key.read_text().strip()):
                self.tell("Cannot copy", f"no clipboard here; the key is in {key}")
        elif kind in (TrayAction.OPEN_FOLDER, TrayAction.OPEN_LOG):
            desktop.open_path(Path(a[0]))
        elif kind is TrayAction.ADD_JOB_LOG:
            self._add_job_log(Path(a[0]) if a[0] else Path.home())
        elif kind is TrayAction.EDIT_SETTINGS:
            config = Path(a[0])
            if not config.exists():
                config.parent.mkdir(parents=True, exist_ok=True)
                config.write_text(default_config_text())
                log.info("wrote the default config to %s", config)
            desktop.open_path(config)
        elif kind is TrayAction.START_DAEMON:
            self._starting_since = time.monotonic()
            desktop.spawn_daemon(self.config_path)
            with self._lock:
                self._redraw()
        elif kind is TrayAction.QUIT:
            self.quit()

    def _open_putty(self, ppk: str, identity: str, argv: Sequence[str]) -> None:
        """PuTTY on the cluster; its .ppk is written from jobtunnel's key the first time."""
        if not Path(ppk).exists():
            why = desktop.export_ppk(identity, ppk)
            if why is not None:
                self.tell(
                    "Cannot open PuTTY",
                    f"{why}; run: jobtunnel keys export --ppk {ppk} --file {identity}",
                )
                return
            log.info("wrote %s for PuTTY", ppk)
        desktop.start_program(list(argv))

    def _add_job_log(self, folder: Path) -> None:
        def chosen(path: Path | None) -> None:
            if path is not None:
                self.request(Command.ADD, target=str(path))

        if not desktop.choose_file(folder, chosen):
            desktop.open_path(folder)

    def request(self, cmd: Command, **args: Any) -> Future[Any] | None:
        """Send a control command from any thread; failures become a notification."""
        if self.loop is None:
            return None
        return asyncio.run_coroutine_threadsafe(self._request(cmd, args), self.loop)

    async def _request(self, cmd: Command, args: dict[str, Any]) -> Any:
        try:
            async with ControlClient(self._control_path, self._transport, timeout=10) as c:
                result = await c.request(cmd, **args)
        except ControlError as exc:
            log.warning("%s failed: %s", cmd, exc)
            self.tell(f"jobtunnel: {cmd} failed", str(exc))
            return None
        log.info("%s: done (%s)", cmd, result)
        return result

    # -- the daemon connection (worker thread) -----------------------------------------

    async def follow(self) -> None:
        """Mirror the daemon's status until stopped; reconnect with backoff ≤ 2 s."""
        backoff = MIN_BACKOFF
        ticker = asyncio.create_task(self._ticker())
        try:
            while not self.stopping.is_set():
                client = ControlClient(self._control_path, self._transport, timeout=10)
                detail: str | None = None
                try:
                    await client.connect()
                    self.receive(await client.subscribe())
                    backoff = MIN_BACKOFF
                    async for event in client.events():
                        if event.name == EventName.STATUS:
                            self.receive(event.data)
                    detail = None
                except DaemonNotRunning:
                    detail = None
                except ControlError as exc:
                    detail = str(exc)
                    log.debug("control: %s", exc)
                finally:
                    await client.close()
                if self.snapshot is not None or detail != self.detail:
                    self.show(None, detail)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
        finally:
            ticker.cancel()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.tick()

    def _worker(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            self._task = task = loop.create_task(self.follow())
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        finally:
            loop.close()

    # -- life cycle ---------------------------------------------------------------------

    def quit(self) -> None:
        self.stopping.set()
        loop, task = self.loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        icon = self.icon
        if icon is not None:
            self.on_gui(icon.stop)

    def run(self, pystray: Any = None, post: gui_thread.Post | None = None) -> int:
        """Show the icon (blocks the calling thread, which must be the main thread).

        ``pystray`` and ``post`` (how to reach this thread) are for tests with a fake backend.
        """
        name, usable, why = backend.describe()
        if usable:
            log.info("tray backend: %s (%s)", name, why)
        else:
            log.warning("tray backend: %s without a usable menu: %s", name, why)
        try:
            pystray = pystray or backend.import_pystray()
        except ImportError as exc:
            log.error("no system tray here: %s", exc)
            return 1
        from .pystray_menu import to_pystray

        loaded = pystray.Icon.__module__.rsplit(".", 1)[-1].lstrip("_")
        if loaded == "xorg":
            log.warning("pystray fell back to xorg: icon only, no menu; %s", backend.INSTALL_HINT)
        else:
            log.info("pystray backend loaded: %s", loaded)
        if loaded in ("appindicator", "gtk"):
            backend.guard_notifier(self.notifier.disable)
        with self._lock:
            self._shown_state = overall(self.snapshot)
            self._shown_title = tooltip(self.snapshot, self.detail)
            self._shown_menu = self.menu_model()
            self.icon = pystray.Icon(
                "jobtunnel",
                draw(self._shown_state, ICON_SIZE),
                self._shown_title,
                menu=to_pystray(self._shown_menu, self.dispatch),
            )
            self.gui = gui_thread.GuiThread(post or gui_thread.post_for(loaded, self.icon))
        worker = threading.Thread(target=self._worker, name="jobtunnel-tray-daemon", daemon=True)

        def setup(icon: Any) -> None:
            # pystray calls this on a thread of its own.
            self.on_gui(lambda: setattr(icon, "visible", True))
            worker.start()

        try:
            self.icon.run(setup=setup)
        except Exception as exc:
            # pystray's GTK backends hide notifications on exit, which raises where the
            # desktop has no notification service: nothing to do about it but log it.
            if not self.stopping.is_set():
                raise
            log.info("tray shut down with: %s", exc)
        self.stopping.set()
        worker.join(5)
        log.info("tray stopped")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobtunnel tray", description=__doc__)
    parser.add_argument("--config", type=Path, help="the config file (default: the user's)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    return run_tray(args.config, verbose=args.verbose)


def run_tray(config: Path | None = None, *, verbose: bool = False) -> int:
    """The ``jobtunnel tray`` command: the tray logs to stderr (the daemon owns the file)."""
    setup_logging(verbose=verbose, to_file=False)
    return TrayApp(config).run()
