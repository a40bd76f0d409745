"""Turn watched folders of job logs into "this file has new bytes" updates in asyncio.

A :class:`LogWatcher` runs a watchdog observer whose handlers only pass paths to the event
loop. A worker task on the loop waits a short debounce, then reads the appended bytes of
every touched file in a thread, at most ``max_chunk`` bytes at a time, and hands each chunk
to ``on_update`` on the loop thread. Per path it remembers the inode and how far it has
read, so a file is never read twice and a replaced or truncated file starts over.

Partial downloads, temporary and hidden files are never read; symlinks out of a watched
folder, FIFOs, devices and sockets are skipped. A safety :meth:`LogWatcher.rescan` and
:meth:`LogWatcher.check_health` (run periodically by the daemon) recover from lost events,
a deleted watched folder and a dead observer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import logging
import os
import stat
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

__all__ = ["DEFAULT_PATTERNS", "PARTIAL_SUFFIXES", "LogUpdate", "LogWatcher", "is_partial_name"]

logger = logging.getLogger(__name__)

DEFAULT_PATTERNS = ("*.log", "*.txt", "*.tsv", "*.csv", "*.out", "*.html")
# Names browsers, editors and copy tools give files that are still being written.
PARTIAL_SUFFIXES = (".crdownload", ".part", ".partial", ".download", ".tmp")
POLL_INTERVAL = 1.0
# inotify watch and instance limits: polling still works when these are exhausted.
_LIMIT_ERRNOS = frozenset({errno.ENOSPC, errno.EMFILE})
# O_NONBLOCK: opening a FIFO that slipped past the stat check must not hang the reader.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)

Ident = tuple[int, int]

# Leaving out opens and read-only closes keeps our own reads (and, on a watched parent such
# as the home folder, everyone else's) from waking the observer at all.
_FOLDER_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
_PARENT_EVENTS: list[type[FileSystemEvent]] = [DirCreatedEvent, DirMovedEvent]


@dataclass(frozen=True)
class LogUpdate:
    """New bytes of one watched file, or news that it is gone."""

    path: Path
    """Absolute path under the (resolved) watched folder, with the file's final name."""
    data: bytes
    """Bytes appended since the last update; ``b""`` when removed or replaced by an empty file."""
    restart: bool
    """The file is new, replaced or truncated: ``data`` starts at offset 0, start a new Detector."""
    removed: bool = False
    """The file was deleted or moved away (or became unreadable as a regular file)."""


def is_partial_name(name: str) -> bool:
    """Whether a file name belongs to a download, save or copy still in progress (or is hidden)."""
    lower = name.lower()
    return lower.startswith(".") or lower.endswith("~") or lower.endswith(PARTIAL_SUFFIXES)


@dataclass(frozen=True, slots=True)
class _FileState:
    ident: Ident
    offset: int
    # Whether on_update has been told about this inode: an empty new file is tracked quietly
    # so that its first bytes still arrive with restart=True.
    announced: bool


@dataclass(frozen=True, slots=True)
class _Step:
    status: Literal["data", "same", "gone", "skip", "error"]
    ident: Ident = (0, 0)
    offset: int = 0
    data: bytes = b""
    restart: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Armed:
    watch: ObservedWatch
    ident: Ident


def _is_same(st: os.stat_result, known: _FileState | None) -> bool:
    """Whether ``st`` is the file ``known`` describes, read to its end."""
    if known is None:
        return False
    return known.ident == (st.st_dev, st.st_ino) and known.offset == st.st_size


def _unchanged(known: dict[Path, _FileState]) -> set[Path]:
    """The files of ``known`` that are still as read (runs in a thread: one ``stat`` each)."""
    same: set[Path] = set()
    for path, state in known.items():
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and _is_same(st, state):
            same.add(path)
    return same


def _read_step(path: Path, root: Path, known: _FileState | None, max_chunk: int) -> _Step:
    """Read the next chunk of ``path`` after what ``known`` says was read (runs in a thread)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _Step("gone")
    except OSError as exc:
        return _Step("error", reason=str(exc))
    if not stat.S_ISREG(st.st_mode):
        return _Step("skip", reason="not a regular file")
    if _is_same(st, known):
        return _Step("same")
    real_root = os.path.realpath(root)
    try:
        inside = os.path.commonpath([os.path.realpath(path), real_root]) == real_root
    except ValueError:
        inside = False
    if not inside:
        return _Step("skip", reason="symlink resolves outside the watched folder")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return _Step("gone")
    except OSError as exc:
        return _Step("error", reason=str(exc))
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):
            return _Step("skip", reason="not a regular file")
        ident = (fst.st_dev, fst.st_ino)
        restart = known is None or known.ident != ident or fst.st_size < known.offset
        offset = 0 if restart or known is None else known.offset
        os.lseek(fd, offset, os.SEEK_SET)
        data = os.read(fd, max_chunk)
    except OSError as exc:
        return _Step("error", reason=str(exc))
    finally:
        os.close(fd)
    return _Step("data", ident, offset, data, restart)


class _Forwarder(FileSystemEventHandler):
    """Passes event paths on; runs on the observer thread, where any exception would kill it."""

    def __init__(self, sink: Callable[[str, bool], None], *, dirs_only: bool = False) -> None:
        self._sink = sink
        self._dirs_only = dirs_only

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            kind = event.event_type
            if kind in ("opened", "closed_no_write"):
                return
            if event.is_directory:
                # A folder's "modified" only echoes the file events we already get.
                if kind == "modified":
                    return
            elif self._dirs_only:
                return
            self._sink(os.fsdecode(event.src_path), event.is_directory)
            if event.dest_path:
                self._sink(os.fsdecode(event.dest_path), event.is_directory)
        except Exception:  # the observer thread must survive anything
            pass


class LogWatcher:
    """Watches folders for job logs and reports their new bytes via ``on_update``.

    ``patterns`` are shell globs matched against the file name, case-insensitively.
    Folders are resolved (symlinks followed) at :meth:`start`; reported paths live under
    the resolved folders. ``on_update`` runs on the event loop thread, once per chunk of at
    most ``max_chunk`` bytes; an exception it raises is logged and does not stop watching.
    ``pace``, if given, is awaited after each chunk: it holds reading back while whoever
    consumes the chunks is behind.
    """

    def __init__(
        self,
        folders: Sequence[Path],
        patterns: Sequence[str],
        *,
        recursive: bool,
        on_update: Callable[[LogUpdate], None],
        debounce: float = 0.05,
        max_chunk: int = 1 << 20,
        polling: bool = False,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if max_chunk <= 0:
            raise ValueError("max_chunk must be positive")
        self._folders = [Path(os.path.expanduser(f)).absolute() for f in folders]
        self._patterns = tuple(p.lower() for p in patterns)
        self._recursive = recursive
        self._on_update = on_update
        self._debounce = debounce
        self._max_chunk = max_chunk
        self._polling = polling
        self._pace = pace

        self._roots: tuple[Path, ...] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: BaseObserver | None = None
        self._armed: dict[Path, _Armed] = {}
        self._parent_watches: dict[Path, ObservedWatch] = {}
        self._files: dict[Path, _FileState] = {}
        self._warned: set[Path] = set()

        # Filled by the observer thread, drained on the loop: one wake-up per burst.
        self._inbox: dict[tuple[str, bool], None] = {}
        self._inbox_lock = threading.Lock()
        self._dirty_files: set[Path] = set()
        self._dirty_dirs: set[Path] = set()
        self._wake = asyncio.Event()
        # Serialises reading so that offsets are only ever advanced by one reader.
        self._busy = asyncio.Lock()
        self._worker: asyncio.Task[None] | None = None

    @property
    def mode(self) -> str:
        """``"inotify"`` (Linux), ``"native"`` (other OS APIs), ``"polling"``, or ``"stopped"``."""
        if self._polling or isinstance(self._observer, PollingObserver):
            return "polling"
        if self._observer is not None and "Inotify" in type(self._observer).__name__:
            return "inotify"
        return "native" if self._observer is not None else "stopped"

    @property
    def folders(self) -> tuple[Path, ...]:
        """The resolved watched folders (empty before :meth:`start`)."""
        return self._roots

    async def start(self) -> None:
        """Create missing folders, start the observer, then read the files already there."""
        if self._loop is not None:
            raise RuntimeError("LogWatcher already started")
        self._loop = asyncio.get_running_loop()
        self._roots = tuple(dict.fromkeys(await asyncio.to_thread(self._prepare_folders)))
        # Nothing else runs yet, so the observer may be built off the loop.
        await asyncio.to_thread(self._restart_observer)
        logger.info(
            "watching %s for %s (%s)",
            ", ".join(map(str, self._roots)),
            " ".join(self._patterns),
            self.mode,
        )
        async with self._busy:
            await self._reconcile(set(self._roots), set())
        self._worker = asyncio.create_task(self._run(), name="jobtunnel-watch")

    async def stop(self) -> None:
        """Stop the worker and the observer; no update is delivered after this returns."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        observer, self._observer = self._observer, None
        if observer is not None:
            await asyncio.to_thread(_discard, observer)
        self._armed.clear()
        self._parent_watches.clear()
        with self._inbox_lock:
            self._inbox.clear()
        self._loop = None

    async def rescan(self) -> None:
        """Stat every watched folder and file, re-arm watches, and read whatever is new.

        Costs one directory listing per folder and one ``stat`` per known file when nothing
        changed.
        """
        if self._loop is None:
            return
        self.check_health()
        async with self._busy:
            await self._reconcile(set(self._roots), set(self._files))

    def check_health(self) -> str | None:
        """Restart a dead observer (falling back to polling if inotify limits are hit).

        Returns what was done, or None when all was well. Watches on folders that vanished
        or came back are re-armed by the worker soon after.
        """
        if self._loop is None:
            return None
        for root in self._roots:
            armed = self._armed.get(root)
            if armed is None or not self._emitter_alive(armed.watch):
                self._dirty_dirs.add(root)
                self._wake.set()
        observer = self._observer
        if observer is not None and observer.is_alive():
            return None
        logger.warning("watch observer thread died; restarting it")
        try:
            self._restart_observer()
        except OSError as exc:
            logger.error("could not restart the watch observer: %s", exc)
            return f"observer thread was dead; restart failed: {exc}"
        self._dirty_dirs.update(self._roots)
        self._dirty_files.update(self._files)
        self._wake.set()
        return f"observer thread was dead; restarted ({self.mode})"

    # -- observer (runs on the loop thread, except at start/stop) ------------------------

    def _prepare_folders(self) -> list[Path]:
        roots = []
        for folder in self._folders:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                logger.warning("cannot create watched folder %s: %s", folder, exc)
            roots.append(folder.resolve())
        return roots

    def _restart_observer(self) -> None:
        old, self._observer = self._observer, None
        if old is not None:
            _discard(old)
        while True:
            observer: BaseObserver | None = None
            self._armed.clear()
            self._parent_watches.clear()
            try:
                observer = PollingObserver(timeout=POLL_INTERVAL) if self._polling else Observer()
                self._observer = observer
                for root in self._roots:
                    self._arm(root, _dir_ident(root))
                observer.start()
                return
            except OSError as exc:
                self._observer = None
                if observer is not None:
                    _discard(observer)
                if self._polling or exc.errno not in _LIMIT_ERRNOS:
                    raise
                logger.warning("file watch limit reached (%s); falling back to polling", exc)
                self._polling = True

    def _arm(self, root: Path, ident: Ident | None) -> None:
        """Point the observer at ``root``, or at its parent while ``root`` is missing.

        Raises OSError only for inotify limits.
        """
        observer = self._observer
        assert observer is not None
        armed = self._armed.pop(root, None)
        if armed is not None:
            _unschedule(observer, armed.watch)
        if ident is not None:
            try:
                watch = observer.schedule(
                    _Forwarder(self._from_observer),
                    str(root),
                    recursive=self._recursive,
                    event_filter=_FOLDER_EVENTS,
                )
            except OSError as exc:
                if exc.errno in _LIMIT_ERRNOS:
                    raise
                logger.debug("cannot watch %s yet: %s", root, exc)
            else:
                self._armed[root] = _Armed(watch, ident)
                parent_watch = self._parent_watches.pop(root, None)
                if parent_watch is not None:
                    _unschedule(observer, parent_watch)
                return
        stale = self._parent_watches.get(root)
        if stale is not None and not self._emitter_alive(stale):
            _unschedule(observer, self._parent_watches.pop(root))
        if root not in self._parent_watches:
            # Watch the parent so that a re-created folder is noticed promptly.
            try:
                self._parent_watches[root] = observer.schedule(
                    _Forwarder(self._from_observer, dirs_only=True),
                    str(root.parent),
                    event_filter=_PARENT_EVENTS,
                )
            except OSError as exc:
                if exc.errno in _LIMIT_ERRNOS:
                    raise
                logger.debug("cannot watch %s either: %s", root.parent, exc)

    def _ensure_armed(self, root: Path, ident: Ident | None) -> None:
        armed = self._armed.get(root)
        if armed is not None and armed.ident == ident and self._emitter_alive(armed.watch):
            return
        parent_watch = self._parent_watches.get(root)
        if ident is None and armed is None and parent_watch and self._emitter_alive(parent_watch):
            return
        if armed is not None and ident is None:
            logger.warning("watched folder %s disappeared; waiting for it to come back", root)
        elif ident is not None and armed is None:
            logger.info("watched folder %s is back; watching it again", root)
        elif ident is not None and armed is not None:
            logger.info("watched folder %s was replaced or lost its watch; re-arming", root)
        try:
            self._arm(root, ident)
        except OSError as exc:
            if self._polling:
                raise
            logger.warning("file watch limit reached (%s); falling back to polling", exc)
            self._polling = True
            self._restart_observer()

    def _emitter_alive(self, watch: ObservedWatch) -> bool:
        observer = self._observer
        if observer is None:
            return False
        return any(e.watch == watch and e.is_alive() for e in list(observer.emitters))

    def _from_observer(self, path: str, is_dir: bool) -> None:
        # Observer thread: keep it to a dict insert and at most one wake-up per burst.
        with self._inbox_lock:
            first = not self._inbox
            self._inbox[(path, is_dir)] = None
        loop = self._loop
        if first and loop is not None:
            loop.call_soon_threadsafe(self._drain_inbox)

    # -- loop side -----------------------------------------------------------------------

    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            items = list(self._inbox)
            self._inbox.clear()
        if self._loop is None:
            return
        for raw, is_dir in items:
            path = Path(raw)
            if is_dir:
                if path in self._roots or (self._recursive and self._root_for(path, True)):
                    self._dirty_dirs.add(path)
                    self._wake.set()
            elif self._root_for(path) is not None:
                self._dirty_files.add(path)
                self._wake.set()

    def _root_for(self, path: Path, is_dir: bool = False) -> Path | None:
        """The watched folder ``path`` belongs to, if its name (and place) qualify."""
        for root in self._roots:
            try:
                rel = path.relative_to(root)
            except ValueError:
                continue
            parts = rel.parts
            if not parts or (not self._recursive and len(parts) != 1):
                continue
            if any(part.startswith(".") for part in parts):
                continue
            if is_dir or self._name_matches(parts[-1]):
                return root
        return None

    def _name_matches(self, name: str) -> bool:
        if is_partial_name(name):
            return False
        lower = name.lower()
        return any(fnmatch.fnmatchcase(lower, p) for p in self._patterns)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            # Let a burst (a bulk copy, a download's last writes and rename) settle into one batch.
            await asyncio.sleep(self._debounce)
            self._wake.clear()
            files, self._dirty_files = self._dirty_files, set()
            dirs, self._dirty_dirs = self._dirty_dirs, set()
            try:
                async with self._busy:
                    await self._reconcile(dirs, files)
            except Exception:
                logger.exception("error while reading watched files; continuing")

    async def _reconcile(self, dirs: set[Path], files: set[Path]) -> None:
        for directory in sorted(dirs):
            if directory in self._roots:
                # Arm before listing, so that a file created in between is seen by one or both.
                self._ensure_armed(directory, await asyncio.to_thread(_dir_ident, directory))
            files.update(await asyncio.to_thread(self._list_dir, directory))
            files.update(p for p in self._files if directory in p.parents)
        known = {p: state for p in files if (state := self._files.get(p)) is not None}
        if len(known) > 1:
            # One thread hop for the whole rescan, not one per file (most are unchanged).
            files -= await asyncio.to_thread(_unchanged, known)
        for path in sorted(files):
            await self._refresh(path)

    def _list_dir(self, directory: Path) -> list[Path]:
        """The candidate files in ``directory`` (runs in a thread)."""
        found: list[Path] = []
        try:
            if self._recursive:
                for dirpath, dirnames, filenames in os.walk(directory):
                    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                    found.extend(
                        Path(dirpath, name) for name in filenames if self._name_matches(name)
                    )
            else:
                with os.scandir(directory) as entries:
                    found.extend(
                        Path(entry.path) for entry in entries if self._name_matches(entry.name)
                    )
        except OSError as exc:
            logger.debug("cannot list %s: %s", directory, exc)
        return [p for p in found if self._root_for(p) is not None]

    async def _refresh(self, path: Path) -> None:
        """Deliver everything new in ``path``, chunk by chunk."""
        root = self._root_for(path)
        if root is None:
            return
        while True:
            known = self._files.get(path)
            step = await asyncio.to_thread(_read_step, path, root, known, self._max_chunk)
            if step.status == "same":
                return
            if step.status == "gone":
                self._warned.discard(path)
                self._forget(path, "removed")
                return
            if step.status in ("skip", "error"):
                if path not in self._warned:
                    self._warned.add(path)
                    what = "skipping" if step.status == "skip" else "cannot read (will retry)"
                    logger.warning("%s %s: %s", what, path, step.reason)
                if step.status == "skip":
                    self._forget(path, "no longer readable as a log")
                return
            self._warned.discard(path)
            more = self._deliver(path, known, step) and len(step.data) >= self._max_chunk
            if self._pace is not None:
                await self._pace()
            if not more:
                return

    def _deliver(self, path: Path, known: _FileState | None, step: _Step) -> bool:
        """Record a read chunk and hand it on; returns whether there may be more to read."""
        fresh = step.restart or known is None or not known.announced
        end = step.offset + len(step.data)
        if not fresh:
            self._files[path] = _FileState(step.ident, end, True)
            if step.data:
                logger.debug("%s: %d new bytes", path, len(step.data))
                self._emit(LogUpdate(path, step.data, restart=False))
            return bool(step.data)
        # A replaced or truncated file the daemon knew must be reset even if now empty.
        announce = bool(step.data) or (known is not None and known.announced)
        self._files[path] = _FileState(step.ident, end, announce)
        if announce:
            if known is None or not known.announced:
                why = "new file"
            elif known.ident != step.ident:
                why = "replaced"
            else:
                why = "truncated"
            logger.info("%s: %s, %d bytes", path, why, len(step.data))
            self._emit(LogUpdate(path, step.data, restart=True))
        return bool(step.data)

    def _forget(self, path: Path, why: str) -> None:
        state = self._files.pop(path, None)
        if state is not None and state.announced:
            logger.info("%s: %s", path, why)
            self._emit(LogUpdate(path, b"", restart=False, removed=True))

    def _emit(self, update: LogUpdate) -> None:
        try:
            self._on_update(update)
        except Exception:
            logger.exception("log update handler failed for %s", update.path)


def _dir_ident(path: Path) -> Ident | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _unschedule(observer: BaseObserver, watch: ObservedWatch) -> None:
    with contextlib.suppress(KeyError):
        observer.unschedule(watch)


def _discard(observer: BaseObserver) -> None:
    observer.stop()
    if observer.is_alive():
        observer.join(timeout=5)
