"""One daemon per user: an exclusive lock on a pid file in the runtime dir.

POSIX: ``fcntl.flock``; Windows: ``msvcrt.locking`` on the file's first byte. Both are
released by the OS when the process dies, even after ``kill -9``. The standard library
covers both, so no ``filelock`` dependency: the lock primitive is injected for tests.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["AlreadyRunning", "InstanceLock", "lock_posix", "lock_windows", "try_lock"]

Locker = Callable[[IO[str]], bool]


class AlreadyRunning(Exception):
    """Another daemon holds the lock; ``pid`` is its process id when known."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"jobtunnel is already running ({who}, lock {path})")
        self.pid = pid


def lock_posix(handle: IO[str], fcntl: Any) -> bool:
    """``flock`` without waiting; ``fcntl`` is the module (injected by tests)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock_windows(handle: IO[str], msvcrt: Any) -> bool:
    """``msvcrt.locking`` of byte 0 without waiting; ``msvcrt`` injected by tests."""
    handle.seek(0)
    try:
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def try_lock(handle: IO[str]) -> bool:
    """Take the exclusive lock on ``handle`` without waiting; False if another holds it."""
    # By name: each platform's module is absent on the other (and in its type stubs).
    windows = sys.platform == "win32"
    module = importlib.import_module("msvcrt" if windows else "fcntl")
    return (lock_windows if windows else lock_posix)(handle, module)


class InstanceLock:
    """Held for the daemon's lifetime; the OS releases it even after ``kill -9``."""

    def __init__(self, path: Path, locker: Locker = try_lock) -> None:
        self.path = path
        self._locker = locker
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="ascii")
        if not self._locker(handle):
            handle.seek(0)
            text = handle.read().strip()
            handle.close()
            raise AlreadyRunning(self.path, int(text) if text.isdigit() else None)
        # After byte 0 on Windows, where the locked byte cannot be written by others.
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
