"""Detection off the event loop: one thread owns the per-file Detectors.

The watcher's :class:`~.watch.LogUpdate` s are queued per file; the thread feeds them to
their file's Detector one slice (SLICE bytes) at a time, taking the files in turn, and
releases the GIL between slices, so a hostile file can neither stall the loop (``status``
keeps answering) nor hold back the endpoints of another file. Findings are handed back to
the loop with ``call_soon_threadsafe``. The queue is bounded in bytes: the watcher awaits
:meth:`DetectionWorker.room` before reading more.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ..config import DetectConfig
from ..core.detect import Detector, Endpoint, Rejection
from .watch import LogUpdate

__all__ = ["MAX_BACKLOG", "SLICE", "DetectionWorker"]

log = logging.getLogger(__name__)

# Bytes fed to a Detector per turn: detection is linear, so a slice is a few milliseconds.
SLICE = 64 << 10
# Bytes queued before the watcher is asked to wait.
MAX_BACKLOG = 8 << 20

Findings = list[Endpoint | Rejection]


class _File:
    """Queued updates of one file and how far into the first one the thread has fed."""

    def __init__(self) -> None:
        self.updates: deque[LogUpdate] = deque()
        self.offset = 0


class DetectionWorker:
    """Runs detection for every watched file on one thread; ``on_findings`` runs on the loop."""

    def __init__(
        self,
        detect: DetectConfig,
        on_findings: Callable[[Findings], None],
        *,
        slice_bytes: int = SLICE,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self._detect = detect
        self._on_findings = on_findings
        self._slice = slice_bytes
        self._max_backlog = max_backlog
        self._detectors: dict[Path, Detector] = {}
        self._files: dict[Path, _File] = {}  # insertion order is the turn order
        self._backlog = 0
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room = asyncio.Event()
        self._room.set()

    # -- loop side -----------------------------------------------------------------------

    def submit(self, update: LogUpdate) -> None:
        """Queue an update (on the loop thread); the thread starts on the first one."""
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="jobtunnel-detect", daemon=True)
            self._thread.start()
        with self._lock:
            self._files.setdefault(update.path, _File()).updates.append(update)
            self._backlog += len(update.data)
            if self._backlog >= self._max_backlog:
                self._room.clear()
            self._lock.notify()

    async def room(self) -> None:
        """Return once the queue has room for more bytes."""
        await self._room.wait()

    def reset(self, detect: DetectConfig) -> None:
        """New detection settings: every file is read again from its start by a new watcher."""
        with self._lock:
            self._detect = detect
            self._files.clear()
            self._detectors.clear()
            self._backlog = 0
            self._room.set()

    async def stop(self) -> None:
        """Stop the thread; queued updates are dropped."""
        thread, self._thread = self._thread, None
        with self._lock:
            self._stopping = True
            self._files.clear()
            self._lock.notify()
        if thread is not None:
            await asyncio.to_thread(thread.join, 10)

    # -- thread side ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._files and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                path, file = next(iter(self._files.items()))
                # The next turn goes to the next file.
                self._files[path] = self._files.pop(path)
                update = file.updates[0]
                first = file.offset == 0
                piece = update.data[file.offset : file.offset + self._slice]
                file.offset += len(piece)
                last = file.offset >= len(update.data)
                if last:
                    file.updates.popleft()
                    file.offset = 0
                    if not file.updates:
                        del self._files[path]
                detector = self._detector_for(update, fresh=first)
            try:
                findings = self._feed(detector, update, piece, last)
            except Exception:  # a bug in detection must not end detection for every file
                log.exception("detection failed on %s; skipping that chunk", update.path)
                findings = []
            with self._lock:
                self._backlog -= len(piece)
                if self._backlog < self._max_backlog and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._room.set)
            if findings and self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_findings, findings)
            time.sleep(0)  # let the loop thread take the GIL between slices

    def _detector_for(self, update: LogUpdate, *, fresh: bool) -> Detector | None:
        """The Detector for ``update`` (a new one if it restarts the file; None if removed)."""
        if update.removed:
            self._detectors.pop(update.path, None)
            return None
        detector = self._detectors.get(update.path)
        if detector is None or (update.restart and fresh):
            detector = self._detectors[update.path] = Detector(
                str(update.path),
                username_pattern=self._detect.username_pattern,
                allow_private_addresses=self._detect.allow_private_addresses,
            )
        return detector

    @staticmethod
    def _feed(detector: Detector | None, update: LogUpdate, piece: bytes, last: bool) -> Findings:
        if detector is None:
            return []
        findings = detector.feed(piece) if piece else []
        if last:
            # A live file that went quiet: settle usernames whose address is known.
            findings += detector.flush()
        return findings
