"""Service logic that needs no network: the clock-jump probe and config -> engine mapping."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.api.schema import SCHEMA_VERSION, from_wire
from jobtunnel.daemon.config import Config, load_config
from jobtunnel.daemon.core.detect import Rejection
from jobtunnel.daemon.core.policy import State
from jobtunnel.daemon.engine.options import forwards_of, tunnel_options
from jobtunnel.daemon.process import signals
from jobtunnel.daemon.process.instance import (
    AlreadyRunning,
    InstanceLock,
    lock_posix,
    lock_windows,
)
from jobtunnel.daemon.process.service import Service, _Clock


class FakeTunnel:
    def __init__(self, state: State) -> None:
        self.state = state
        self.checked: list[str] = []

    async def check(self, reason: str) -> str:
        self.checked.append(reason)
        return "answered"


def test_config_maps_onto_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[ssh]\nkeepalive_interval = 2\nciphers = ['aes256-ctr']\n"
        "[tunnels]\nforwards = ['8888', '127.0.0.2:6006:node:6006']\n"
        "dynamic_forwards = ['1080']\nport_range = [20000, 20100]\n"
        "[reconnect]\nmax_delay = 7\n"
    )
    config, _ = load_config(path)
    options = tunnel_options(config)
    assert options.keepalive_interval == 2
    assert options.ciphers == ("aes256-ctr",)
    assert options.port_range == (20000, 20100)
    assert options.max_delay == 7
    assert options.bind_address == "127.0.0.1"
    assert [(f.spec, f.dynamic) for f in forwards_of(config)] == [
        ("8888", False),
        ("127.0.0.2:6006:node:6006", False),
        ("1080", True),
    ]
    # Every default is a valid engine setting.
    tunnel_options(Config())


@pytest.mark.parametrize(("jump", "expected"), [(0.0, 0), (120.0, 1)])
def test_a_clock_jump_checks_every_tunnel_at_once(
    isolated_home: Path, jump: float, expected: int
) -> None:
    async def body() -> list[list[str]]:
        service = Service(Config())
        tunnels = {
            ("u", "h", 22): FakeTunnel(State.UP),
            ("v", "h", 22): FakeTunnel(State.RECONNECTING),
        }
        service.tunnels = tunnels  # type: ignore[assignment]
        # As if the laptop slept: the wall clock moved on, the monotonic one did not.
        service._clock = _Clock(service._clock.wall - jump, service._clock.mono)
        await service._probe()
        return [t.checked for t in tunnels.values()]

    assert asyncio.run(body()) == [["woke from sleep"] * expected] * 2


def test_a_network_change_checks_every_link_and_asks_the_rescale_api_again(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> tuple[list[list[str]], list[dict[str, Any]]]:
        service = Service(Config())
        tunnels = {("u", "h", 22): FakeTunnel(State.UP), ("v", "h", 22): FakeTunnel(State.UP)}
        service.tunnels = tunnels  # type: ignore[assignment]
        refreshes: list[dict[str, Any]] = []
        monkeypatch.setattr(service.rescale, "refresh", lambda **kw: refreshes.append(kw))
        await service._network_changed("network changed")
        return [t.checked for t in tunnels.values()], refreshes

    checked, refreshes = asyncio.run(body())
    assert checked == [["network changed"]] * 2
    # Automatic: no sooner than a fast interval after the API's last answer.
    assert refreshes == [{"automatic": True}]


def test_status_shape_without_tunnels(isolated_home: Path) -> None:
    async def body() -> dict[str, Any]:
        return Service(Config()).status().to_wire()

    status = asyncio.run(body())
    assert set(status) == {"version", "daemon", "endpoints"}
    assert status["version"] == SCHEMA_VERSION
    assert status["endpoints"] == []
    assert {"pid", "version", "watch", "summary"} <= set(status["daemon"])
    assert from_wire(status).daemon.pid == os.getpid()


class FakeLockModule:
    """fcntl or msvcrt with a lock that is already held (or not)."""

    LOCK_EX, LOCK_NB, LK_NBLCK = 2, 4, 2

    def __init__(self, held: bool) -> None:
        self.held = held
        self.calls: list[tuple[Any, ...]] = []

    def _take(self, *args: Any) -> None:
        self.calls.append(args)
        if self.held:
            raise BlockingIOError if len(args) == 2 else PermissionError

    def flock(self, *args: Any) -> None:
        self._take(*args)

    def locking(self, *args: Any) -> None:
        self._take(*args)


@pytest.mark.parametrize("lock", [lock_posix, lock_windows])
def test_the_instance_lock_of_each_platform(tmp_path: Path, lock: Any) -> None:
    free, held = FakeLockModule(False), FakeLockModule(True)
    first = InstanceLock(tmp_path / "run" / "daemon.pid", lambda h: lock(h, free))
    first.acquire()
    assert (tmp_path / "run" / "daemon.pid").read_text().strip().isdigit()
    second = InstanceLock(tmp_path / "run" / "daemon.pid", lambda h: lock(h, held))
    with pytest.raises(AlreadyRunning, match=r"already running \(pid \d+"):
        second.acquire()
    first.release()
    assert free.calls and held.calls
    if lock is lock_windows:
        assert free.calls[0][1:] == (FakeLockModule.LK_NBLCK, 1)  # byte 0, no wait


def test_the_real_lock_refuses_a_second_daemon(tmp_path: Path) -> None:
    first = InstanceLock(tmp_path / "daemon.pid")
    first.acquire()
    try:
        with pytest.raises(AlreadyRunning):
            InstanceLock(tmp_path / "daemon.pid").acquire()
    finally:
        first.release()
    InstanceLock(tmp_path / "daemon.pid").acquire()  # free again


def test_signals_on_posix_and_windows() -> None:
    async def body() -> tuple[list[str], list[str], list[int]]:
        loop = asyncio.get_running_loop()
        calls: list[str] = []
        posix = signals.install(loop, lambda: calls.append("stop"), lambda: None)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.05)
        for name in posix:
            loop.remove_signal_handler(getattr(signal, name))
        handlers: dict[int, Any] = {}
        windows = signals.install(
            loop,
            lambda: calls.append("win-stop"),
            lambda: None,
            platform="win32",
            set_handler=lambda sig, fn: handlers.__setitem__(sig, fn),
        )
        handlers[signal.SIGINT](signal.SIGINT, None)  # as Ctrl+C would, from the OS
        await asyncio.sleep(0.05)
        return posix, windows, [len(calls), calls.count("win-stop")]

    posix, windows, counts = asyncio.run(body())
    assert posix == ["SIGTERM", "SIGINT", "SIGHUP"]
    assert "SIGINT" in windows and "SIGHUP" not in windows
    assert counts == [2, 1]


def test_an_ignored_candidate_is_logged_once_however_often_its_file_is_read(
    isolated_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service(Config())
    same = Rejection("/d/evil.log", 3, "uprod_x@10.0.0.1", "a private address")
    many = [Rejection("/d/many.log", i, f"uprod_x@10.0.{i}.1", "private") for i in range(50)]
    with caplog.at_level("WARNING", logger="jobtunnel"):
        for _ in range(5):  # read again on every change, and at each start
            service._on_findings([same, *many])
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count(str(same)) == 1
    assert len([line for line in lines if "many.log" in line]) == 50
