"""Desktop notifications: which ones a change of status deserves (pure), and sending them.

:class:`NoticePolicy` compares successive snapshots (and the passing of time) and says
what to tell the user: a new cluster (naming the file it came from), a tunnel down for
longer than a threshold, a tunnel restored after such a notice, and always a refused host
key and a job's new address. It rate-limits per endpoint and kind and overall; host-key
and new-address notices are never dropped.

:class:`Notifier` sends them through the tray icon, and skips them (with one log line)
where the desktop has no notification service, so the tray never fails for it.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from jobtunnel.daemon.api.schema import (
    Decision,
    EndpointView,
    ErrorKind,
    ServiceState,
    SourceKind,
    StatusSnapshot,
    TunnelState,
)

__all__ = ["Notice", "NoticePolicy", "Notifier", "notification_service"]

log = logging.getLogger(__name__)

DOWN = frozenset({TunnelState.CONNECTING, TunnelState.RECONNECTING, TunnelState.FAILED})


@dataclass(frozen=True)
class Notice:
    kind: str  # "new", "down", "restored", "host_key", "move", "info"
    title: str
    message: str
    endpoint: str = ""


def _origin(ep: EndpointView) -> str:
    """The file (or other source) an endpoint came from, for a notice."""
    src = ep.source_info
    if src is None:
        return ep.source
    if src.kind is SourceKind.FILE and src.path:
        return src.path
    return "the Rescale API" if src.kind is SourceKind.RESCALE_API else "added by you"


class NoticePolicy:
    """Snapshots in, notices out. Deterministic: time is an argument."""

    def __init__(
        self, *, down_after: float = 60.0, per_endpoint: float = 60.0, per_minute: int = 5
    ) -> None:
        self.down_after = down_after
        self.per_endpoint = per_endpoint
        self.per_minute = per_minute
        self._known: set[str] | None = None  # None until the first snapshot
        self._down_since: dict[str, float] = {}
        self._told_down: set[str] = set()
        self._host_key_errors: dict[str, str] = {}
        self._moves: dict[str, tuple[str, int]] = {}
        self._services: dict[str, set[int]] = {}  # endpoint -> cluster ports seen serving
        self._ended: set[str] = set()
        self._last: dict[tuple[str, str], float] = {}
        self._sent: deque[float] = deque()

    def update(self, snapshot: StatusSnapshot | None, now: float) -> list[Notice]:
        """The notices for ``snapshot`` at time ``now`` (call again as time passes)."""
        if snapshot is None:
            return []  # the icon already says that the daemon is gone
        notices: list[Notice] = []
        names = {e.name for e in snapshot.endpoints}
        first = self._known is None
        known = self._known or set()
        for ep in snapshot.endpoints:
            name = ep.name
            label = ep.job_id or name
            if not first and name not in known:
                if ep.action is Decision.PENDING:
                    why = f" ({ep.waiting_reason})" if ep.waiting_reason else ""
                    text = f"{label}: {name} from {_origin(ep)} waits{why}; Connect in the menu"
                else:
                    text = f"{label}: {name} from {_origin(ep)}"
                notices.append(Notice("new", "New cluster", text, name))
            notices += self._host_key(ep, label)
            notices += self._move(ep, label)
            notices += self._new_services(ep, label)
            notices += self._finished(ep, first)
            error = ep.last_error
            if ep.state in DOWN and ep.action is Decision.ACTIVE:
                since = self._down_since.setdefault(name, now)
                if name not in self._told_down and now - since >= self.down_after:
                    self._told_down.add(name)
                    minutes = max(1, round((now - since) / 60))
                    why = f": {error}" if error else ""
                    notices.append(
                        Notice(
                            "down", f"{label}: tunnel down", f"down for {minutes} min{why}", name
                        )
                    )
            else:
                self._down_since.pop(name, None)
                if name in self._told_down:
                    self._told_down.discard(name)
                    if ep.state is TunnelState.UP:
                        notices.append(Notice("restored", f"{label}: tunnel restored", name, name))
        self._known = known | names
        return [n for n in notices if self._allow(n, now)]

    def _host_key(self, ep: EndpointView, label: str) -> list[Notice]:
        """A refused host key, once per distinct error (never rate-limited)."""
        if ep.last_error_kind is not ErrorKind.HOST_KEY_CHANGED and ep.refused_key is None:
            self._host_key_errors.pop(ep.name, None)
            return []
        words = ep.last_error or f"refused host key {ep.refused_key}"
        if ep.refused_key and ep.refused_key not in words:
            words += f" (offered {ep.refused_key})"
        if self._host_key_errors.get(ep.name) == words:
            return []
        self._host_key_errors[ep.name] = words
        return [Notice("host_key", f"{label}: host key changed", words, ep.name)]

    def _new_services(self, ep: EndpointView, label: str) -> list[Notice]:
        """A service that starts on a cluster after its first look (not those found
        then: a cluster full of them at start is one menu, not a burst of notices)."""
        now_serving = {s.port for s in ep.services if s.state is not ServiceState.GONE}
        before = self._services.get(ep.name)
        if now_serving or before is not None:  # empty until the first look (sshd is found)
            self._services[ep.name] = now_serving
        if before is None:
            return []
        notices = []
        for s in ep.services:
            if s.port in now_serving - before:
                what = s.title or s.kind
                how = (
                    f"forwarded on localhost:{s.local_port}"
                    if s.state is ServiceState.FORWARDED
                    else "Forward it from the menu"
                )
                notices.append(
                    Notice("service", f"{label}: new service", f"{what} on port {s.port}; {how}",
                           ep.name)
                )  # fmt: skip
        return notices

    def _finished(self, ep: EndpointView, first: bool) -> list[Notice]:
        """ "Job NAME finished": once, when a job the Rescale API named has ended."""
        if ep.state is not TunnelState.ENDED:
            self._ended.discard(ep.name)
            return []
        if ep.name in self._ended:
            return []
        self._ended.add(ep.name)
        if first or not ep.job_name:
            return []
        return [Notice("finished", f"Job {ep.job_name} finished", ep.job_label or "", ep.name)]

    def _move(self, ep: EndpointView, label: str) -> list[Notice]:
        """A newer address reported for a job, once per address."""
        move = ep.pending_move
        if move is None:
            self._moves.pop(ep.name, None)
            return []
        if self._moves.get(ep.name) == (move.host, move.port):
            return []
        self._moves[ep.name] = (move.host, move.port)
        where = move.source.path if move.source.path else move.source.kind.value
        text = f"reports {move.host}:{move.port} (from {where}); Switch in the menu to move"
        return [Notice("move", f"{label}: new address", text, ep.name)]

    def _allow(self, notice: Notice, now: float) -> bool:
        if notice.kind in ("host_key", "move"):
            return True  # each is said once per key or address: never dropped
        while self._sent and now - self._sent[0] >= 60:
            self._sent.popleft()
        key = (notice.kind, notice.endpoint)
        last = self._last.get(key)
        if last is not None and now - last < self.per_endpoint:
            return False
        if len(self._sent) >= self.per_minute:
            return False
        self._last[key] = now
        self._sent.append(now)
        return True


def notification_service(platform: str = sys.platform) -> str | None:
    """None when notifications can be shown; else why not (checked once, on Linux via D-Bus).

    Windows and macOS always can: pystray's win32 backend shows a balloon from the
    notification-area icon, its darwin backend runs ``osascript -e 'display notification'``.
    """
    if platform in ("win32", "darwin"):
        return None
    return _freedesktop_service()


def _freedesktop_service() -> str | None:
    try:
        import gi

        gi.require_version("Gio", "2.0")
        from gi.repository import Gio, GLib

        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
        for method in ("NameHasOwner", "ListActivatableNames"):
            args = GLib.Variant("(s)", ("org.freedesktop.Notifications",))
            reply = bus.call_sync(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                method,
                args if method == "NameHasOwner" else None,
                None,
                Gio.DBusCallFlags.NONE,
                2000,
                None,
            ).unpack()[0]
            if reply is True or (
                isinstance(reply, list) and "org.freedesktop.Notifications" in reply
            ):
                return None
        return "no notification service (org.freedesktop.Notifications) on the session bus"
    except Exception as exc:  # gi missing, no session bus, ...: all mean "cannot notify"
        return f"cannot reach the session bus: {exc}"


class Notifier:
    """Shows notices with ``send(message, title)`` (pystray's ``Icon.notify``) or logs them."""

    def __init__(
        self,
        send: Callable[[str, str], None],
        check: Callable[[], str | None] = notification_service,
    ) -> None:
        self._send = send
        self._check = check
        self._why_not: str | None = None
        self._checked = False

    def disable(self, why: str) -> None:
        """Notifications cannot work here (``why``): say so once; notices are then logged."""
        if not self._why_not:
            log.warning("notifications are skipped: %s", why)
        self._checked = True
        self._why_not = why

    def show(self, notice: Notice) -> bool:
        if not self._checked:
            self._checked = True
            self._why_not = self._check()
            if self._why_not:
                log.warning("notifications are skipped: %s", self._why_not)
        if self._why_not:
            log.info("notice (not shown): %s: %s", notice.title, notice.message)
            return False
        try:
            self._send(notice.message, notice.title)
        except Exception as exc:
            log.warning("notification failed, skipped: %s", exc)
            return False
        log.info("notified: %s: %s", notice.title, notice.message)
        return True
