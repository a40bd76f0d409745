"""The tray icon: the overall state of a status snapshot, its tooltip, and its picture.

Pure: :func:`overall` and :func:`tooltip` read a
:class:`~jobtunnel.daemon.api.schema.StatusSnapshot` (None when no daemon answers) and
:func:`draw` paints a state with Pillow. Every state has its own shape AND colour, so
neither colour vision nor a monochrome panel loses it:

============  ==========================================  ======
state         shape                                       colour
============  ==========================================  ======
UP            filled disc with a check mark               green
CONNECTING    open ring with an arrow head (a "refresh")  amber
FAILED        filled triangle with an exclamation mark    red
PAUSED        filled disc with two vertical bars          blue
IDLE          hollow ring (nothing to do)                 grey
NO_DAEMON     square frame with a diagonal slash          dark grey
============  ==========================================  ======

Shapes are drawn at the requested size (no downscaling), with stroke widths that grow
with it, so the 16 px icon stays sharp and the 256 px one is not spindly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from jobtunnel.daemon.api.schema import (
    Decision,
    EndpointView,
    ForwardState,
    StatusSnapshot,
    TunnelState,
)
from PIL import Image, ImageDraw

__all__ = ["COLOURS", "Counts", "Overall", "counts", "draw", "overall", "tooltip"]


class Overall(enum.Enum):
    UP = "up"
    CONNECTING = "connecting"
    FAILED = "failed"
    PAUSED = "paused"
    IDLE = "idle"
    NO_DAEMON = "no daemon"


COLOURS: dict[Overall, tuple[int, int, int]] = {
    Overall.UP: (46, 160, 67),
    Overall.CONNECTING: (230, 150, 0),
    Overall.FAILED: (210, 40, 40),
    Overall.PAUSED: (50, 110, 200),
    Overall.IDLE: (140, 140, 140),
    Overall.NO_DAEMON: (80, 80, 80),
}
WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class Counts:
    """Endpoints per category the icon and tooltip distinguish."""

    up: int = 0
    reconnecting: int = 0
    connecting: int = 0
    failed: int = 0
    paused: int = 0
    waiting: int = 0  # Decision.PENDING: waits for the user's Connect
    other: int = 0


def _failed(ep: EndpointView) -> bool:
    if ep.state is TunnelState.FAILED:
        return True
    if ep.state is not TunnelState.UP:
        return False
    return any(f.state is ForwardState.ERROR for f in ep.forwards)


def _category(ep: EndpointView) -> str:
    if ep.action is Decision.PAUSED or ep.state is TunnelState.PAUSED:
        return "paused"
    if ep.action is Decision.PENDING:
        return "waiting"
    if _failed(ep):
        return "failed"
    if ep.state is TunnelState.UP:
        return "up"
    if ep.state is TunnelState.RECONNECTING:
        return "reconnecting"
    if ep.state in (TunnelState.PENDING, TunnelState.CONNECTING):
        return "connecting"
    return "other"


def counts(snapshot: StatusSnapshot) -> Counts:
    """How many endpoints are up, (re)connecting, failed, paused, waiting for the user."""
    tally = dict.fromkeys(Counts.__dataclass_fields__, 0)
    for ep in snapshot.endpoints:
        tally[_category(ep)] += 1
    return Counts(**tally)


def overall(snapshot: StatusSnapshot | None) -> Overall:
    """The one state the icon shows; failures win, then links being (re)made."""
    if snapshot is None:
        return Overall.NO_DAEMON
    n = counts(snapshot)
    if n.failed:
        return Overall.FAILED
    if n.reconnecting or n.connecting:
        return Overall.CONNECTING
    if n.up:
        return Overall.UP
    if n.paused:
        return Overall.PAUSED
    return Overall.IDLE


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def tooltip(snapshot: StatusSnapshot | None, detail: str | None = None) -> str:
    """One line: "jobtunnel: 3 tunnels up, 1 reconnecting"; ``detail`` says why no daemon."""
    if snapshot is None:
        return "jobtunnel: daemon not running" + (f" ({detail})" if detail else "")
    n = counts(snapshot)
    parts = []
    if n.up:
        parts.append(_plural(n.up, "tunnel") + " up")
    for word, count in (
        ("reconnecting", n.reconnecting),
        ("connecting", n.connecting),
        ("failed", n.failed),
        ("paused", n.paused),
        ("waiting for you", n.waiting),
    ):
        if count:
            parts.append(f"{count} {word}")
    if not parts:
        parts.append("no active tunnels" if n.other else "no clusters yet")
    return "jobtunnel: " + ", ".join(parts)


def draw(state: Overall, size: int = 64) -> Image.Image:
    """The icon for ``state``: an RGBA square of ``size`` pixels (16 to 256 and beyond)."""
    if size < 8:
        raise ValueError("icon size must be at least 8 pixels")
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    colour = (*COLOURS[state], 255)
    s = size
    pad = max(1, round(s / 16))
    stroke = max(2, round(s / 8))
    box = (pad, pad, s - 1 - pad, s - 1 - pad)
    if state is Overall.UP:
        d.ellipse(box, fill=colour)
        points = [(0.27 * s, 0.52 * s), (0.44 * s, 0.69 * s), (0.74 * s, 0.33 * s)]
        d.line(points, fill=WHITE, width=stroke, joint="curve")
    elif state is Overall.CONNECTING:
        # An open ring from 60° to 360° (clockwise from 3 o'clock), arrow head at the gap.
        d.arc(box, start=60, end=360, fill=colour, width=stroke + 1)
        cx = cy = (s - 1) / 2
        r = (s - 1) / 2 - pad - (stroke + 1) / 2
        ex, ey = cx + r, cy  # the arc's end at 0°
        head = max(3.0, s * 0.17)
        d.polygon(
            [(ex - head * 0.7, ey), (ex + head * 0.7, ey), (ex, ey + head)],
            fill=colour,
        )
    elif state is Overall.FAILED:
        top = (s / 2, pad)
        d.polygon([top, (s - 1 - pad, s - 1 - pad), (pad, s - 1 - pad)], fill=colour)
        bar = max(1, round(s / 9))
        x0 = round(s / 2 - bar / 2)
        d.rectangle((x0, round(0.36 * s), x0 + bar - 1, round(0.66 * s)), fill=WHITE)
        d.rectangle((x0, round(0.74 * s), x0 + bar - 1, round(0.74 * s) + bar - 1), fill=WHITE)
    elif state is Overall.PAUSED:
        d.ellipse(box, fill=colour)
        bar = max(2, round(s / 7))
        for x in (0.32 * s, 0.68 * s - bar):
            d.rectangle((round(x), round(0.3 * s), round(x) + bar - 1, round(0.7 * s)), fill=WHITE)
    elif state is Overall.IDLE:
        d.ellipse(box, outline=colour, width=stroke)
    else:  # NO_DAEMON
        d.rectangle(box, outline=colour, width=stroke)
        inset = pad + stroke / 2
        d.line([(inset, s - 1 - inset), (s - 1 - inset, inset)], fill=colour, width=stroke)
    return img
