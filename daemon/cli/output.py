"""What the CLI prints: results on stdout, messages on stderr, JSON, tables.

``pythonw.exe`` (what the Windows logon task runs) sets ``sys.stdout`` and ``sys.stderr``
to None. Then every line goes to the log instead (``main`` logs to the file when a stream
is missing), and nothing raises.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

__all__ = [
    "Fail",
    "ago",
    "confirm",
    "err",
    "interactive",
    "out",
    "print_json",
    "streams_missing",
    "table",
]

log = logging.getLogger("jobtunnel.cli")


class Fail(Exception):
    """A one-line error for the user, with the exit status to leave with."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def streams_missing() -> bool:
    """True under pythonw.exe and the like: a standard stream is None."""
    return sys.stdout is None or sys.stderr is None


def out(text: str = "", *, end: str = "\n", flush: bool = False) -> None:
    """A result line on stdout (the log when there is no stdout)."""
    stream = sys.stdout
    if stream is None:
        log.info("%s", text.strip("\r\n"))
        return
    stream.write(text + end)
    if flush:
        stream.flush()


def err(text: str, *, end: str = "\n", flush: bool = False) -> None:
    """A message for the user on stderr (the log when there is no stderr)."""
    stream = sys.stderr
    if stream is None:
        log.warning("%s", text.strip("\r\n"))
        return
    stream.write(text + end)
    if flush:
        stream.flush()


def print_json(data: Any, *, indent: int | None = 2) -> None:
    out(json.dumps(data, indent=indent), flush=indent is None)


def interactive(stream: IO[str] | None) -> bool:
    """Whether ``stream`` is a terminal a person is at (False for None or closed ones)."""
    if stream is None:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def confirm(question: str) -> bool | None:
    """Ask ``question [y/N]`` on the terminal: True for yes, False for anything else,
    None when there is no terminal to ask on."""
    if not (interactive(sys.stdin) and interactive(sys.stdout)):
        return None
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def ago(epoch: float | None) -> str:
    """ "5m ago" for a past Unix time; "-" when there is none."""
    if not epoch:
        return "-"
    seconds = max(0, int(time.time() - epoch))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
