"""Desktop notifications: which ones a change of status deserves (pure), and sending them.

:class:`NoticePolicy` compares successive snapshots (and the passing of time) and says
what to tell the user: a new cluster, a tunnel down for longer than a threshold, a tunnel
restored after such a notice, and always a changed host key. It rate-limits per
endpoint and kind and overall; host-key notices are never dropped.

:class:`Notifier` sends them through the tray icon, and skips them (with one log line)
where the desktop has no notification service, so the tray never fails for it.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Notice", "NoticePolicy", "Notifier", "notification_service"]

log = logging.getLogger(__name__)

DOWN = frozenset({"connecting", "reconnecting", "failed"})


@dataclass(frozen=True)
class Notice:
    kind: str  # "new", "down", "restored", "host_key", "info"
    title: str
    message: str
    endpoint: str = ""


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
        self._last: dict[tuple[str, str], float] = {}
        self._sent: deque[float] = deque()

    def update(self, snapshot: Mapping[str, Any] | None, now: float) -> list[Notice]:
        """The notices for ``snapshot`` at time ``now`` (call again as time passes)."""
        if snapshot is None:
            return []  # the icon already says that the daemon is gone
        notices: list[Notice] = []
        endpoints = [e for e in snapshot.get("endpoints") or [] if isinstance(e, Mapping)]
        names = {str(e.get("name")) for e in endpoints}
        first = self._known is None
        known = self._known or set()
        for ep in endpoints:
            name = str(ep.get("name"))
            label = str(ep.get("job_id") or name)
            state = ep.get("state")
            if not first and name not in known:
                notices.append(Notice("new", "New cluster", f"{label}: {name}", name))
            error = ep.get("last_error")
            if isinstance(error, str) and "host key" in error.lower():
                if self._host_key_errors.get(name) != error:
                    self._host_key_errors[name] = error
                    notices.append(Notice("host_key", f"{label}: host key changed", error, name))
            else:
                self._host_key_errors.pop(name, None)
            if state in DOWN and ep.get("action") == "active":
                since = self._down_since.setdefault(name, now)
                if name not in self._told_down and now - since >= self.down_after:
                    self._told_down.add(name)
                    minutes = max(1, round((now - since) / 60))
                    why = f": {error}" if isinstance(error, str) and error else ""
                    notices.append(
                        Notice(
                            "down", f"{label}: tunnel down", f"down for {minutes} min{why}", name
                        )
                    )
            else:
                self._down_since.pop(name, None)
                if name in self._told_down:
                    self._told_down.discard(name)
                    if state == "up":
                        notices.append(Notice("restored", f"{label}: tunnel restored", name, name))
        self._known = known | names
        return [n for n in notices if self._allow(n, now)]

    def _allow(self, notice: Notice, now: float) -> bool:
        if notice.kind == "host_key":
            return True
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


def notification_service() -> str | None:
    """None when notifications can be shown; else why not (checked once, on Linux via D-Bus)."""
    if sys.platform in ("win32", "darwin"):
        return None
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
