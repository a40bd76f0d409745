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
    """Remembers what was already logged, at most ``limit`` entries (the oldest
    forgotten first). How many a file may yield is detection's own cap."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._keys: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first(self, group: str, key: str) -> bool:
        """True the first time ``key`` is seen in ``group`` (a file)."""
        entry = (group, key)
        if entry in self._keys:
            self._keys.move_to_end(entry)
            return False
        self._keys[entry] = None
        if len(self._keys) > self.limit:
            self._keys.popitem(last=False)
        return True
