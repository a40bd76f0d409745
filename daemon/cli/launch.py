"""Handing the terminal to another program (``jobtunnel ssh``, ``scp``, ``sftp``).

On POSIX the program replaces this process (``os.execvp``): its exit status, signals
and terminal are the user's, as if they had typed the command. Windows has no exec that
keeps the console, so the program runs as a child and its status is returned. The one
platform seam: tests inject ``execvp``/``run``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

__all__ = ["hand_over"]

Exec = Callable[[str, list[str]], NoReturn]
Run = Callable[[Sequence[str]], int]


def _run(argv: Sequence[str]) -> int:
    return subprocess.run(list(argv), check=False).returncode


def hand_over(
    argv: Sequence[str],
    *,
    windows: bool = sys.platform == "win32",
    execvp: Exec = os.execvp,
    run: Run = _run,
) -> int:
    """Run ``argv`` in this terminal; returns its exit status (on POSIX, never returns)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    if windows:
        return run(argv)
    execvp(argv[0], list(argv))
