"""LogWatcher against real files and real watchdog events: downloads, saves, deletes, limits."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from jobtunnel.daemon.process import watch
from jobtunnel.daemon.process.watch import DEFAULT_PATTERNS, LogUpdate, LogWatcher
from watchdog.observers.inotify import InotifyObserver

T = TypeVar("T")
WAIT = 5.0

pytestmark = pytest.mark.timeout(60)


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run an async test body with a hard time bound; errors the loop only logs fail it."""
    errors: list[dict[str, Any]] = []

    async def bounded() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        async with asyncio.timeout(timeout):
            return await coro

    result = asyncio.run(bounded())
    assert not errors, [e.get("message") for e in errors]
    return result


class Updates:
    """Collects on_update calls and rebuilds each file's content the way a daemon would."""

    def __init__(self) -> None:
        self.all: list[LogUpdate] = []
        self.threads: set[int] = set()

    def __call__(self, update: LogUpdate) -> None:
        self.threads.add(threading.get_ident())
        self.all.append(update)

    def of(self, path: Path) -> list[LogUpdate]:
        return [u for u in self.all if u.path == path]

    def content(self, path: Path) -> bytes | None:
        """What a Detector fed these updates would have seen; None before any or if removed."""
        seen: bytes | None = None
        for u in self.of(path):
            if u.removed:
                seen = None
            elif u.restart or seen is None:
                assert u.restart, f"first update of {path} must be a restart"
                seen = u.data
            else:
                seen += u.data
        return seen

    async def until(self, what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.01) + 1):
            if check():
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}; updates: {self.all!r}")

    async def content_is(self, path: Path, data: bytes, timeout: float = WAIT) -> None:
        await self.until(
            f"{path.name} == {data[:40]!r}", lambda: self.content(path) == data, timeout
        )

    async def removed(self, path: Path) -> None:
        await self.until(f"{path.name} removed", lambda: any(u.removed for u in self.of(path)))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    # resolve(): the watcher reports paths under the resolved folder.
    return (tmp_path / "logs").resolve()


def watcher_for(folder: Path, updates: Updates, **kwargs: Any) -> LogWatcher:
    kwargs.setdefault("recursive", False)
    return LogWatcher([folder], list(DEFAULT_PATTERNS), on_update=updates, **kwargs)


def watching(
    folder: Path, body: Callable[[LogWatcher, Updates], Awaitable[None]], **kwargs: Any
) -> Updates:
    """Start a watcher on ``folder``, run ``body``, always stop it; returns the updates."""
    updates = Updates()

    async def main() -> None:
        watcher = watcher_for(folder, updates, **kwargs)
        await watcher.start()
        try:
            await body(watcher, updates)
        finally:
            await watcher.stop()
        loop_thread = threading.get_ident()
        assert updates.threads <= {loop_thread}, "on_update must run on the loop thread"

    run(main())
    return updates


async def settle(watcher: LogWatcher, seconds: float = 0.3) -> None:
    """Give pending events time to arrive, then make sure they were all handled."""
    await asyncio.sleep(seconds)
    await watcher.rescan()


def test_existing_files_read_at_start_then_only_appended_bytes(folder: Path) -> None:
    folder.mkdir()
    (folder / "job.log").write_bytes(b"first line\npartial")
    (folder / "Results.CSV").write_bytes(b"a,b\n")
    for name in (
        "data.bin",
        ".hidden.log",
        "job2.log.crdownload",
        "job3.log.part",
        "job4.log.partial",
        "job5.log.download",
        "job6.tmp",
        "job7.log~",
    ):
        (folder / name).write_bytes(b"never read\n")

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        assert watcher.mode == "inotify"
        # start() returns after the files already there were delivered.
        assert [(u.path.name, u.data, u.restart) for u in updates.all] == [
            ("Results.CSV", b"a,b\n", True),
            ("job.log", b"first line\npartial", True),
        ]
        with (folder / "job.log").open("ab") as f:
            f.write(b" line\nsecond\n")
        await updates.content_is(folder / "job.log", b"first line\npartial line\nsecond\n")
        last = updates.of(folder / "job.log")[-1]
        assert (last.data, last.restart) == (b" line\nsecond\n", False)
        count = len(updates.all)
        await watcher.rescan()
        assert len(updates.all) == count, "a rescan with nothing new delivers nothing"

    updates = watching(folder, body)
    assert {u.path.name for u in updates.all} == {"job.log", "Results.CSV"}


def test_a_rescan_reads_only_the_files_that_changed(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic safety rescan stats every known file in one thread hop and opens
    only those that grew: 50 quiet logs cost no reads."""
    folder.mkdir()
    for i in range(50):
        (folder / f"job{i}.log").write_bytes(f"job {i}\n".encode())
    reads: list[Path] = []
    real_read_step = watch._read_step

    def counting_read_step(path: Path, *args: Any) -> Any:
        reads.append(path)
        return real_read_step(path, *args)

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        assert len(updates.all) == 50
        monkeypatch.setattr(watch, "_read_step", counting_read_step)
        await watcher.rescan()
        assert reads == [], "unchanged files were opened"
        with (folder / "job7.log").open("ab") as f:
            f.write(b"more\n")
        await watcher.rescan()
        assert set(reads) == {folder / "job7.log"}
        await updates.content_is(folder / "job7.log", b"job 7\nmore\n")

    watching(folder, body)


def test_symlinked_folder_is_watched_at_its_target(tmp_path: Path) -> None:
    # watchdog does not follow a symlinked watch root by default: it would see no events.
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    updates = Updates()

    async def main() -> None:
        watcher = watcher_for(link, updates)
        await watcher.start()
        try:
            assert watcher.folders == (real.resolve(),)
            (link / "job.log").write_bytes(b"via link\n")
            await updates.content_is(real.resolve() / "job.log", b"via link\n")
        finally:
            await watcher.stop()

    run(main())


def test_missing_folder_is_created(folder: Path) -> None:
    async def body(watcher: LogWatcher, updates: Updates) -> None:
        assert folder.is_dir()
        (folder / "new.out").write_bytes(b"hello\n")
        await updates.content_is(folder / "new.out", b"hello\n")

    watching(folder, body)


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_chrome_download_arrives_as_a_move(folder: Path, polling: bool) -> None:
    folder.mkdir()
    content = b"".join(b"line %d of the job log\n" % i for i in range(2000))

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        assert watcher.mode == ("polling" if polling else "inotify")
        hidden = folder / ".com.google.Chrome.Xy12Ab"
        hidden.write_bytes(b"")
        partial = folder / "job.log.crdownload"
        hidden.rename(partial)
        with partial.open("ab") as f:
            for i in range(0, len(content), 8192):
                f.write(content[i : i + 8192])
                f.flush()
                await asyncio.sleep(0.001)
        partial.rename(folder / "job.log")
        await updates.content_is(folder / "job.log", content)
        assert updates.of(folder / "job.log")[0].restart
        assert {u.path.name for u in updates.all} == {"job.log"}

    watching(folder, body, polling=polling)


def test_firefox_download_replaces_its_placeholder(folder: Path) -> None:
    folder.mkdir()
    content = b"".join(b"Firefox line %d\n" % i for i in range(1000))

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        final = folder / "job.log"
        final.write_bytes(b"")
        await asyncio.sleep(0.2)  # the placeholder is seen on its own first
        partial = folder / "job.log.part"
        with partial.open("wb") as f:
            for i in range(0, len(content), 4096):
                f.write(content[i : i + 4096])
                f.flush()
        os.replace(partial, final)
        await updates.content_is(final, content)
        data_updates = [u for u in updates.of(final) if u.data]
        assert data_updates[0].restart and data_updates[0].data.startswith(b"Firefox line 0\n")
        assert not any(u.removed for u in updates.all)

    watching(folder, body)


def test_atomic_save_and_truncation_restart_from_zero(folder: Path) -> None:
    folder.mkdir()
    path = folder / "notes.txt"
    path.write_bytes(b"old content\n")

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        tmp = folder / "notes.txt.tmp"
        tmp.write_bytes(b"new content, saved atomically\n")
        os.replace(tmp, path)
        await updates.content_is(path, b"new content, saved atomically\n")
        assert updates.of(path)[-1].restart

        os.truncate(path, 4)
        await updates.content_is(path, b"new ")
        assert (updates.of(path)[-1].data, updates.of(path)[-1].restart) == (b"new ", True)

        with path.open("ab") as f:
            f.write(b"again\n")
        await updates.content_is(path, b"new again\n")
        assert not updates.of(path)[-1].restart

    watching(folder, body)


def test_bulk_copy_of_100_files_loses_none(folder: Path, tmp_path: Path) -> None:
    folder.mkdir()
    staging = tmp_path / "staging"
    staging.mkdir()
    expected = {}
    for i in range(100):
        name = f"job_{i:03d}.log"
        expected[name] = (b"log %d\n" % i) * (i + 1)
        (staging / name).write_bytes(expected[name])

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        for name in expected:
            shutil.copy(staging / name, folder / name)

        def all_there() -> bool:
            return all(updates.content(folder / n) == data for n, data in expected.items())

        await updates.until("all 100 files", all_there)
        # Coalesced: each small copy delivered whole, in one update.
        assert len(updates.all) == 100

    watching(folder, body)


def test_deleted_or_moved_away_files_are_reported_removed(folder: Path, tmp_path: Path) -> None:
    folder.mkdir()
    for name in ("a.log", "b.log", "c.log"):
        (folder / name).write_bytes(b"x\n")
    (folder / "empty.log").write_bytes(b"")

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        (folder / "a.log").unlink()
        (folder / "b.log").rename(tmp_path / "b.log")
        (folder / "c.log").rename(folder / "c.log~")
        (folder / "empty.log").unlink()
        for name in ("a.log", "b.log", "c.log"):
            await updates.removed(folder / name)
        await settle(watcher)
        removed = [u for u in updates.all if u.removed]
        assert sorted(u.path.name for u in removed) == ["a.log", "b.log", "c.log"]
        assert all(u.data == b"" for u in removed)

    watching(folder, body)


def test_watched_folder_deleted_and_recreated_is_watched_again(folder: Path) -> None:
    folder.mkdir()
    (folder / "before.log").write_bytes(b"before\n")

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        shutil.rmtree(folder)
        await updates.removed(folder / "before.log")
        await asyncio.sleep(0.2)
        folder.mkdir()
        (folder / "after.log").write_bytes(b"after\n")
        # Noticed through the parent's events, without a rescan or health check.
        await updates.content_is(folder / "after.log", b"after\n")
        with (folder / "after.log").open("ab") as f:
            f.write(b"more\n")
        await updates.content_is(folder / "after.log", b"after\nmore\n")

        # Moved away and replaced: invisible to inotify on the old folder, so rescan re-arms.
        folder.rename(folder.with_name("logs.old"))
        folder.mkdir()
        await watcher.rescan()
        await updates.removed(folder / "after.log")
        (folder / "third.log").write_bytes(b"third\n")
        await updates.content_is(folder / "third.log", b"third\n")

    watching(folder, body)


def test_symlinks_out_fifos_and_unreadable_files_are_skipped(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=watch.__name__)
    folder.mkdir()
    outside = tmp_path / "secret.log"
    outside.write_bytes(b"not yours\n")
    (folder / "out.log").symlink_to(outside)
    (folder / "real.log").write_bytes(b"inside\n")
    (folder / "in.log").symlink_to(folder / "real.log")
    os.mkfifo(folder / "pipe.log")

    # Root reads anything, so unreadability and a delete mid-read are injected at open().
    real_open = os.open
    denied = {str(folder / "locked.log")}
    vanishing = {str(folder / "vanishing.log")}

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        if os.fspath(path) in vanishing:
            os.unlink(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        assert updates.content(folder / "in.log") == b"inside\n"
        assert updates.content(folder / "out.log") is None
        assert updates.content(folder / "pipe.log") is None

        os.utime(folder / "out.log", follow_symlinks=False)
        with outside.open("ab") as f:
            f.write(b"more\n")
        os.mkfifo(folder / "pipe2.log")
        (folder / "locked.log").write_bytes(b"locked\n")
        (folder / "vanishing.log").write_bytes(b"gone soon\n")
        await settle(watcher)
        with (folder / "locked.log").open("ab") as f:
            f.write(b"still locked\n")
        await settle(watcher)
        assert updates.content(folder / "locked.log") is None

        denied.clear()  # permission granted: the next change is read
        with (folder / "locked.log").open("ab") as f:
            f.write(b"open\n")
        await updates.content_is(folder / "locked.log", b"locked\nstill locked\nopen\n")

        names = {u.path.name for u in updates.all}
        assert names == {"in.log", "real.log", "locked.log"}

    watching(folder, body)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("out.log" in w and "outside" in w for w in warnings) == 1, warnings
    assert sum("pipe.log" in w for w in warnings) == 1, warnings
    assert sum("pipe2.log" in w for w in warnings) == 1, warnings
    assert sum("locked.log" in w for w in warnings) == 1, warnings
    assert not any("vanishing" in w for w in warnings), warnings
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


def test_large_file_is_delivered_in_bounded_chunks(folder: Path) -> None:
    folder.mkdir()
    content = os.urandom(10 * 4096 + 123)
    (folder / "big.log").write_bytes(content)

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        chunks = updates.of(folder / "big.log")
        assert [len(u.data) for u in chunks] == [4096] * 10 + [123]
        assert [u.restart for u in chunks] == [True] + [False] * 10
        assert updates.content(folder / "big.log") == content

    watching(folder, body, max_chunk=4096)


# watchdog's own recursive registration races `mkdir -p` and warns about it; harmless.
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_recursive_reads_sub_folders_but_not_hidden_ones(folder: Path) -> None:
    folder.mkdir()
    (folder / "old").mkdir()
    (folder / "old" / "a.log").write_bytes(b"a\n")

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        assert updates.content(folder / "old" / "a.log") == b"a\n"
        (folder / "job1" / "deep").mkdir(parents=True)
        (folder / "job1" / "deep" / "b.log").write_bytes(b"b\n")
        (folder / ".cache").mkdir()
        (folder / ".cache" / "c.log").write_bytes(b"c\n")
        await updates.content_is(folder / "job1" / "deep" / "b.log", b"b\n")
        shutil.rmtree(folder / "old")
        await updates.removed(folder / "old" / "a.log")
        await settle(watcher)
        assert not any(".cache" in u.path.parts for u in updates.all)

    watching(folder, body, recursive=True)


def test_non_recursive_ignores_sub_folders(folder: Path) -> None:
    folder.mkdir()

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        (folder / "sub").mkdir()
        (folder / "sub" / "a.log").write_bytes(b"a\n")
        (folder / "top.log").write_bytes(b"top\n")
        await updates.content_is(folder / "top.log", b"top\n")
        await settle(watcher)
        assert [u.path.name for u in updates.all] == ["top.log"]

    watching(folder, body)


def test_inotify_limit_falls_back_to_polling(
    folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_watches(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(InotifyObserver, "schedule", no_watches)
    caplog.set_level(logging.INFO, logger=watch.__name__)

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        assert watcher.mode == "polling"
        (folder / "job.log").write_bytes(b"polled\n")
        await updates.content_is(folder / "job.log", b"polled\n")
        assert watcher.check_health() is None

    watching(folder, body)
    fallbacks = [r for r in caplog.records if "falling back to polling" in r.getMessage()]
    assert len(fallbacks) == 1


def test_check_health_restarts_a_dead_observer(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=watch.__name__)

    async def body(watcher: LogWatcher, updates: Updates) -> None:
        assert watcher.check_health() is None
        observer = watcher._observer
        assert observer is not None
        observer.stop()  # what an exception in a handler would do, behind the watcher's back
        await asyncio.to_thread(observer.join, 5)
        (folder / "missed.log").write_bytes(b"written while dead\n")
        await asyncio.sleep(0.2)
        assert updates.content(folder / "missed.log") is None

        what = watcher.check_health()
        assert what is not None and "restarted" in what
        assert watcher.mode == "inotify"
        await updates.content_is(folder / "missed.log", b"written while dead\n")
        (folder / "after.log").write_bytes(b"after\n")
        await updates.content_is(folder / "after.log", b"after\n")
        assert watcher.check_health() is None

    watching(folder, body)
    assert any("observer thread died" in r.getMessage() for r in caplog.records)


def test_a_failing_on_update_does_not_stop_watching(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder.mkdir()
    seen: list[str] = []

    def on_update(update: LogUpdate) -> None:
        seen.append(update.path.name)
        if update.path.name == "bad.log":
            raise RuntimeError("daemon bug")

    async def main() -> None:
        watcher = LogWatcher([folder], ["*.log"], recursive=False, on_update=on_update)
        await watcher.start()
        try:
            (folder / "bad.log").write_bytes(b"x\n")
            await asyncio.sleep(0.3)
            (folder / "good.log").write_bytes(b"y\n")
            for _ in range(500):
                if "good.log" in seen:
                    break
                await asyncio.sleep(0.01)
        finally:
            await watcher.stop()

    run(main())
    assert seen == ["bad.log", "good.log"]
    assert any("handler failed" in r.getMessage() for r in caplog.records)


def test_latency_from_rename_to_update(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder.mkdir()
    arrived: dict[str, float] = {}

    def on_update(update: LogUpdate) -> None:
        arrived.setdefault(update.path.name, time.perf_counter())

    async def main() -> list[float]:
        watcher = LogWatcher([folder], ["*.log"], recursive=False, on_update=on_update)
        await watcher.start()
        latencies = []
        try:
            for i in range(10):
                partial = folder / f"job{i}.log.crdownload"
                partial.write_bytes(b"uprod_abc host 1.2.3.4 port 22\n")
                await asyncio.sleep(0.1)
                renamed = time.perf_counter()
                partial.rename(folder / f"job{i}.log")
                for _ in range(500):
                    if f"job{i}.log" in arrived:
                        break
                    await asyncio.sleep(0.002)
                latencies.append(arrived[f"job{i}.log"] - renamed)
        finally:
            await watcher.stop()
        return latencies

    latencies = run(main())
    with capsys.disabled():
        print(
            f"\nrename -> on_update latency over {len(latencies)} files: "
            f"median {statistics.median(latencies) * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms"
        )


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    for _ in range(100):
        leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        leaked = [t for t in leaked if "asyncio" not in t.name]
        if not leaked:
            return
        time.sleep(0.05)
    raise AssertionError(f"threads left running: {leaked}")
