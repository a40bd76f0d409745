"""The tray icon: the overall state of a status snapshot, its tooltip, and its picture.

Pure: :func:`overall` and :func:`tooltip` read a snapshot (the daemon's ``status`` reply,
or None when no daemon answers) and :func:`draw` paints a state with Pillow. Every state
has its own shape AND colour, so neither colour vision nor a monochrome panel loses it:

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
from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageDraw

__all__ = ["COLOURS", "Overall", "counts", "draw", "overall", "tooltip"]

# Endpoint states that mean "trying to get a link up".
WAITING = frozenset({"pending", "connecting", "reconnecting"})


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


def _endpoints(snapshot: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    eps = snapshot.get("endpoints")
    return [ep for ep in eps if isinstance(ep, Mapping)] if isinstance(eps, list) else []


def _failed(ep: Mapping[str, Any]) -> bool:
    if ep.get("state") == "failed":
        return True
    if ep.get("state") != "up":
        return False
    forwards = ep.get("forwards") or []
    return any(isinstance(f, Mapping) and f.get("state") == "error" for f in forwards)


def counts(snapshot: Mapping[str, Any]) -> dict[str, int]:
    """How many endpoints are up, waiting (connecting/reconnecting), failed, paused, other."""
    result = {"up": 0, "reconnecting": 0, "connecting": 0, "failed": 0, "paused": 0, "other": 0}
    for ep in _endpoints(snapshot):
        state = ep.get("state")
        if ep.get("action") == "paused" or state == "paused":
            result["paused"] += 1
        elif _failed(ep):
            result["failed"] += 1
        elif state == "up":
            result["up"] += 1
        elif state == "reconnecting":
            result["reconnecting"] += 1
        elif state in WAITING:
            result["connecting"] += 1
        else:
            result["other"] += 1
    return result


def overall(snapshot: Mapping[str, Any] | None) -> Overall:
    """The one state the icon shows; failures win, then links being (re)made."""
    if snapshot is None:
        return Overall.NO_DAEMON
    n = counts(snapshot)
    if n["failed"]:
        return Overall.FAILED
    if n["reconnecting"] or n["connecting"]:
        return Overall.CONNECTING
    if n["up"]:
        return Overall.UP
    if n["paused"]:
        return Overall.PAUSED
    return Overall.IDLE


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def tooltip(snapshot: Mapping[str, Any] | None, detail: str | None = None) -> str:
    """One line: "jobtunnel: 3 tunnels up, 1 reconnecting"; ``detail`` says why no daemon."""
    if snapshot is None:
        return "jobtunnel: daemon not running" + (f" ({detail})" if detail else "")
    n = counts(snapshot)
    parts = []
    if n["up"]:
        parts.append(_plural(n["up"], "tunnel") + " up")
    for key in ("reconnecting", "connecting", "failed", "paused"):
        if n[key]:
            parts.append(f"{n[key]} {key}")
    if not parts:
        parts.append("no active tunnels" if n["other"] else "no clusters yet")
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
