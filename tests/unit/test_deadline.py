"""The bound on stopping (process/deadline.py): the process exits within the deadline of
the first stop request whatever hangs, and at once on a second request."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from jobtunnel.daemon.config import Config
from jobtunnel.daemon.process.deadline import STOP_SECONDS, StopDeadline
from jobtunnel.daemon.process.service import Service

pytestmark = pytest.mark.timeout(60)


class FakeTimer:
    made: ClassVar[list[FakeTimer]] = []

    def __init__(self, seconds: float, fire: Callable[[], None]) -> None:
        self.seconds, self.fire = seconds, fire
        self.daemon = False
        self.started = False
        FakeTimer.made.append(self)

    def start(self) -> None:
        self.started = True


def test_the_first_stop_arms_a_daemon_timer_that_exits_when_it_fires(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exits: list[int] = []
    FakeTimer.made.clear()
    deadline = StopDeadline(exit=exits.append, timer=FakeTimer)
    deadline.arm()
    [timer] = FakeTimer.made
    assert timer.started and timer.daemon and timer.seconds == STOP_SECONDS < 5
    assert exits == []
    with caplog.at_level(logging.ERROR):
        timer.fire()
    assert exits == [0]  # 0: a login service must not restart a daemon asked to stop
    assert f"still stopping after {STOP_SECONDS:g} s; exiting now" in caplog.text


def test_a_second_stop_exits_at_once(caplog: pytest.LogCaptureFixture) -> None:
    exits: list[int] = []
    FakeTimer.made.clear()
    deadline = StopDeadline(exit=exits.append, timer=FakeTimer)
    deadline.arm()
    with caplog.at_level(logging.ERROR):
        deadline.arm()
    assert exits == [0] and len(FakeTimer.made) == 1
    assert "asked to stop again; exiting now" in caplog.text


class HangingTunnel:
    """A tunnel whose stop never returns (what a stuck lookup would do to a shutdown)."""

    async def stop(self) -> None:
        await asyncio.Event().wait()


def test_a_shutdown_that_hangs_is_cut_short_by_the_deadline(isolated_home: Path) -> None:
    fired = threading.Event()

    async def body() -> None:
        main = asyncio.current_task()
        assert main is not None
        loop = asyncio.get_running_loop()

        def exit_(code: int) -> None:
            fired.set()
            loop.call_soon_threadsafe(main.cancel)  # stands in for the process ending

        service = Service(Config(), deadline=StopDeadline(0.3, exit=exit_))
        runner = asyncio.create_task(service.run())
        for _ in range(200):
            if service.scheduler is not None:  # _start has run its course
                break
            await asyncio.sleep(0.02)
        service.tunnels[("u", "h", 22)] = HangingTunnel()  # type: ignore[assignment]
        service.request_stop()
        await runner

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(body())
    assert fired.is_set()
