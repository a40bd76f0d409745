"""Which repeated events deserve a log line. A tunnel that retries for hours, or a file
read again and again, must not fill the log with the same line (and a hostile file must
not be able to write the log for us). Pure: callers pass the time."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Repeats", "Seen"]


@dataclass
class Repeats:
    """One line per distinct message, then the same message at most once per
    ``interval`` seconds, saying how many were held back."""

    interval: float = 600.0
    _last: str | None = None
    _logged_at: float = 0.0
    _held: int = 0

    def check(self, now: float, message: str) -> int | None:
        """None: hold this one back. Otherwise log it; the number is how many like it
        were held back since the last line."""
        if message != self._last or now - self._logged_at >= self.interval:
            held, self._held = (self._held if message == self._last else 0), 0
            self._last, self._logged_at = message, now
            return held
        self._held += 1
        return None

    def reset(self) -> None:
        """The condition ended (the tunnel came up): the next failure is news again."""
        self._last, self._held = None, 0


class Seen:
    """Remembers what was already logged: at most ``limit`` entries and groups (the
    oldest forgotten first), and at most ``per_group`` entries per group (a file); past
    that, the group gets one line saying the rest is not logged."""

    def __init__(self, limit: int = 4096, per_group: int = 20) -> None:
        self.limit = limit
        self.per_group = per_group
        self._keys: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._groups: OrderedDict[str, int] = OrderedDict()

    def first(self, group: str, key: str) -> bool | None:
        """True: new, log it. False: seen already, or past the group's share: stay
        quiet. None: new, and the group's share is used up: log that instead."""
        entry = (group, key)
        if entry in self._keys:
            self._keys.move_to_end(entry)
            return False
        count = self._groups.get(group, 0)
        self._groups[group] = min(count + 1, self.per_group + 1)
        self._groups.move_to_end(group)
        if len(self._groups) > self.limit:
            self._groups.popitem(last=False)
        if count > self.per_group:
            return False
        if count == self.per_group:
            return None
        self._keys[entry] = None
        if len(self._keys) > self.limit:
            self._keys.popitem(last=False)
        return True
