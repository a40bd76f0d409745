"""The change sources for real where they exist here (rtnetlink, a D-Bus bus of the test's
own with a stand-in for logind, which cannot run here), with the OS calls injected where
they cannot (macOS's routing socket, Windows' NotifyIpInterfaceChange), and the watch that
debounces them."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.core.netcheck import NETWORK_CHANGED, WOKE, Debounce
from jobtunnel.daemon.process.dbuswatch import SystemBusSignals
from jobtunnel.daemon.process.ipchange_win import IpInterfaceChanges
from jobtunnel.daemon.process.netwatch import NetWatch, fingerprint
from jobtunnel.daemon.process.routesock import RouteSocket

from tests.helpers.deps import dependency_missing
from tests.helpers.netns import inside, namespace, pair

pytestmark = pytest.mark.timeout(60)


async def until(predicate: Callable[[], object], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_rtnetlink_reports_a_new_link_and_its_address() -> None:
    async def body() -> list[str]:
        seen: list[str] = []
        source = RouteSocket()
        source.start(seen.extend)
        try:
            with namespace():  # a veth pair here, with an address, brought up
                await until(lambda: {"link", "address"} <= set(seen), "link and address news")
        finally:
            source.stop()
        return seen

    assert {"link", "address"} <= set(asyncio.run(body()))


def test_the_macos_routing_socket_is_read_the_same_way() -> None:
    async def body() -> list[str]:
        ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        seen: list[str] = []
        source = RouteSocket("darwin", opener=lambda: ours)
        source.start(seen.extend)
        try:
            # RTM_NEWADDR then RTM_ADD, as one read each.
            kernel.send(struct.pack("=HBB", 20, 5, 0xC) + b"\0" * 16)
            kernel.send(struct.pack("=HBB", 92, 5, 0x1) + b"\0" * 88)
            await until(lambda: len(seen) == 2, "two changes")
        finally:
            source.stop()
            kernel.close()
        return seen

    assert asyncio.run(body()) == ["address", "route"]


class FakeIphlpapi:
    """iphlpapi's two calls; the callback is called from another thread, as Windows does."""

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.callback: Any = None
        self.cancelled: list[Any] = []

    def NotifyIpInterfaceChange(
        self, family: int, callback: Any, context: Any, initial: bool, handle: Any
    ) -> int:
        assert family == 0 and initial is False
        self.callback = callback
        return self.status

    def CancelMibChangeNotify2(self, handle: Any) -> int:
        self.cancelled.append(handle)
        return 0


def test_windows_interface_changes_reach_the_loop_from_the_systems_thread() -> None:
    async def body() -> tuple[list[list[str]], FakeIphlpapi]:
        dll = FakeIphlpapi()
        seen: list[list[str]] = []
        source = IpInterfaceChanges(dll)
        source.start(seen.append)
        worker = threading.Thread(target=lambda: dll.callback(None, None, 1))
        worker.start()
        worker.join(5)
        await until(lambda: seen, "the notice")
        source.stop()
        return seen, dll

    seen, dll = asyncio.run(body())
    assert seen == [["address"]]
    assert len(dll.cancelled) == 1


def test_a_refused_windows_registration_is_an_os_error() -> None:
    async def body() -> None:
        IpInterfaceChanges(FakeIphlpapi(status=87)).start(print)

    with pytest.raises(OSError, match="status 87"):
        asyncio.run(body())


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    """A dbus-daemon of the test's own, with the system bus's rules on names relaxed so a
    stand-in can own logind's and NetworkManager's names."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        dependency_missing("dbus-daemon is not installed (Debian package dbus)")
    config = tmp_path / "bus.conf"
    sock = tmp_path / "bus"
    config.write_text(
        "<!DOCTYPE busconfig PUBLIC '-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN'"
        " 'http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd'>\n"
        f"<busconfig><type>system</type><listen>unix:path={sock}</listen>"
        "<auth>EXTERNAL</auth><policy context='default'><allow send_destination='*' "
        "eavesdrop='true'/><allow eavesdrop='true'/><allow own='*'/><allow user='*'/>"
        "</policy></busconfig>\n"
    )
    proc = subprocess.Popen([daemon, f"--config-file={config}", "--nofork"])
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "dbus-daemon"
            time.sleep(0.02)
        yield f"unix:path={sock}"
    finally:
        proc.kill()
        proc.wait(10)


def emit(
    address: str, owner: str, path: str, iface: str, member: str, sig: str, *args: Any
) -> None:
    from jeepney import DBusAddress, new_signal
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    with open_dbus_connection(address) as conn:
        if owner:
            conn.send_and_get_reply(message_bus.RequestName(owner), timeout=5)
        conn.send(new_signal(DBusAddress(path, interface=iface), member, sig, args))
        conn.send_and_get_reply(message_bus.GetId(), timeout=5)  # flushed and handled


LOGIND = ("/org/freedesktop/login1", "org.freedesktop.login1.Manager", "PrepareForSleep")
NM = ("/org/freedesktop/NetworkManager", "org.freedesktop.NetworkManager", "StateChanged")


def test_logind_and_networkmanager_signals_ask_for_a_check(bus: str) -> None:
    async def body() -> list[str]:
        seen: list[str] = []
        signals = SystemBusSignals(bus)
        await signals.start(seen.append)
        try:
            run = asyncio.to_thread
            await run(emit, bus, "org.freedesktop.login1", *LOGIND, "b", True)  # going down
            await run(emit, bus, "org.freedesktop.login1", *LOGIND, "b", False)  # woke
            await run(emit, bus, "org.freedesktop.NetworkManager", *NM, "u", 70)
            # The same signal from a process that is not logind is not believed.
            await run(emit, bus, "", *LOGIND, "b", False)
            await run(emit, bus, "org.freedesktop.login1", *LOGIND, "b", False)
            await until(lambda: len(seen) >= 3, "three notices")
            await asyncio.sleep(0.2)
        finally:
            await signals.stop()
        return seen

    assert asyncio.run(body()) == [WOKE, NETWORK_CHANGED, WOKE]


def test_no_bus_is_an_error_at_start(tmp_path: Path) -> None:
    async def body() -> None:
        await SystemBusSignals(f"unix:path={tmp_path / 'none'}").start(print)

    with pytest.raises(OSError):
        asyncio.run(body())


class Source:
    name = "fake source"

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.notice: Callable[[list[str]], None] | None = None

    def start(self, notice: Callable[[list[str]], None]) -> None:
        if self.fails:
            raise OSError("refused")
        self.notice = notice

    def stop(self) -> None:
        self.notice = None


class NoBus(SystemBusSignals):
    async def start(self, notice: Callable[[str], None]) -> None:
        raise FileNotFoundError("no system bus")


def test_a_burst_is_one_check_and_a_change_during_a_check_is_one_more() -> None:
    async def body() -> list[str]:
        checks: list[str] = []
        release = asyncio.Event()

        async def on_change(reason: str) -> None:
            checks.append(reason)
            await release.wait()

        source = Source()
        watch = NetWatch(on_change, source=source, bus=NoBus(), debounce=Debounce(0.05, 0.5))
        await watch.start()
        assert watch.sources == ["fake source"]
        assert source.notice is not None
        for _ in range(5):
            source.notice(["link"])
        await until(lambda: checks, "the first check")
        await asyncio.sleep(0.2)
        assert checks == [NETWORK_CHANGED]
        for _ in range(5):  # while the first check is still running
            source.notice(["route"])
        watch.notice(WOKE)
        await asyncio.sleep(0.2)
        release.set()
        await until(lambda: len(checks) == 2, "the second check")
        await asyncio.sleep(0.2)
        await watch.stop()
        assert source.notice is None
        return checks

    assert asyncio.run(body()) == [NETWORK_CHANGED, WOKE]


def test_every_burst_is_checked_on_the_daemons_own_loop() -> None:
    """uvloop's clock counts milliseconds, so its timers can wake a hair before the
    debounce's due time: each of a dozen address changes still gets its check."""
    import uvloop

    async def body(moves: Callable[[int], object]) -> list[int]:
        checks: list[float] = []

        async def on_change(reason: str) -> None:
            checks.append(time.monotonic())

        watch = NetWatch(on_change, source=RouteSocket(), bus=NoBus())
        await watch.start()
        missed = []
        try:
            for n in range(12):
                before = len(checks)
                await asyncio.to_thread(moves, 3 + n)
                try:
                    await until(lambda: len(checks) > before, "a check", 5)  # noqa: B023
                except AssertionError:
                    missed.append(n)
        finally:
            await watch.stop()
        return missed

    with pair() as net, inside(net.client):
        assert uvloop.run(body(net.move_address)) == []


def test_without_a_change_source_the_watch_polls() -> None:
    async def body() -> tuple[list[str], list[str]]:
        checks: list[str] = []
        peers = [("192.0.2.1", 22)]

        async def on_change(reason: str) -> None:
            checks.append(reason)

        watch = NetWatch(
            on_change,
            lambda: peers,
            source=Source(fails=True),
            bus=NoBus(),
            debounce=Debounce(0.01, 0.1),
            poll_seconds=0.05,
        )
        await watch.start()
        await asyncio.sleep(0.3)
        assert checks == []  # nothing changed yet
        with namespace():  # a new interface here (the veth pair's end)
            await until(lambda: checks, "a polled change")
        await watch.stop()
        return checks, watch.sources

    checks, sources = asyncio.run(body())
    assert checks[0] == NETWORK_CHANGED
    assert sources == ["polling every 0.05 s"]


def test_the_poll_fingerprint_moves_with_the_route_to_a_peer() -> None:
    if os.geteuid() != 0:
        dependency_missing("network namespaces need root")
    with namespace() as ns:
        inside = fingerprint([(ns.ns_ip, 22)])
        assert (ns.ns_ip, ns.host_ip) in inside[1]
    assert fingerprint([(ns.ns_ip, 22)]) != inside
