"""The control API: both transports, who may connect, hostile and slow clients, events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.api.client import (
    NOT_RUNNING,
    ControlClient,
    ControlError,
    DaemonNotRunning,
    call_sync,
)
from jobtunnel.daemon.api.server import ControlServer
from jobtunnel.daemon.api.wire import MAX_MESSAGE, TransportKind, default_path, transport_kind

from tests.helpers.asyncrun import run

pytestmark = pytest.mark.timeout(30)

BOTH: list[TransportKind] = ["unix", "tcp"]


async def echo(args: dict[str, Any]) -> Any:
    return args


async def nap(args: dict[str, Any]) -> Any:
    await asyncio.sleep(float(args["s"]))
    return "rested"


async def boom(args: dict[str, Any]) -> Any:
    raise RuntimeError("the flux capacitor broke")


async def refuse(args: dict[str, Any]) -> Any:
    raise ControlError("no endpoint named 'x'")


async def snapshot(args: dict[str, Any]) -> Any:
    return {"tunnels": ["a"]}


HANDLERS: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
    "echo": echo,
    "nap": nap,
    "boom": boom,
    "refuse": refuse,
    "subscribe": snapshot,
}


@asynccontextmanager
async def serving(path: Path, transport: TransportKind, **kw: Any) -> AsyncIterator[ControlServer]:
    server = ControlServer(HANDLERS, transport=transport, path=path, **kw)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def where(tmp_path: Path, transport: TransportKind) -> Path:
    return tmp_path / "run" / ("control.sock" if transport == "unix" else "control.json")


async def raw(
    server: ControlServer, auth: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare connection, authenticated over TCP unless told otherwise."""
    if server.transport == "unix":
        return await asyncio.open_unix_connection(str(server.path))
    info = json.loads(server.path.read_text())
    reader, writer = await asyncio.open_connection("127.0.0.1", info["port"])
    if auth:
        writer.write(json.dumps({"v": 1, "id": 0, "cmd": "auth", "args": info}).encode() + b"\n")
        assert json.loads(await reader.readline())["ok"] is True
    return reader, writer


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> Any:
    writer.write(line + b"\n")
    return json.loads(await reader.readline())


@pytest.mark.parametrize(
    ("transport", "loop"), [("unix", "asyncio"), ("tcp", "asyncio"), ("unix", "uvloop")]
)
def test_round_trip_files_and_cleanup(tmp_path: Path, transport: TransportKind, loop: str) -> None:
    path = where(tmp_path, transport)

    async def body() -> None:
        async with serving(path, transport) as server:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            if transport == "unix":
                assert stat.S_ISSOCK(path.stat().st_mode)
            else:
                info = json.loads(path.read_text())
                assert info["port"] == server.port and len(info["token"]) >= 40
            async with ControlClient(path, transport) as client:
                assert await client.request("echo", a=1, cmd="x") == {"a": 1, "cmd": "x"}
                assert (await client.request("hello"))["v"] == 1
                with pytest.raises(ControlError, match="no endpoint named 'x'"):
                    await client.request("refuse")
                assert await client.request("echo") == {}  # still usable
        assert not path.exists()

    run(body(), loop=loop)


def test_default_locations(isolated_home: Path) -> None:
    assert default_path("unix").name == "control.sock"
    assert default_path("tcp") == default_path("unix").with_name("control.json")
    assert str(default_path("unix")).startswith(str(isolated_home))
    assert transport_kind("auto") == transport_kind(None) == ("tcp" if os.name == "nt" else "unix")
    assert transport_kind("tcp") == "tcp"
    with pytest.raises(ValueError, match="auto"):
        ControlServer(HANDLERS, transport="pipe")


@pytest.mark.parametrize("transport", BOTH)
def test_bad_messages_get_error_replies(tmp_path: Path, transport: TransportKind) -> None:
    bad: list[tuple[bytes, Any, str]] = [
        (b"{nope", None, "malformed JSON"),
        (b"\xff\xfe", None, "malformed JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"v": 1, "id": "7", "cmd": "echo"}', None, "'id'"),
        (b'{"v": 1, "id": true, "cmd": "echo"}', None, "'id'"),
        (b'{"v": 2, "id": 3, "cmd": "echo"}', 3, "version 2"),
        (b'{"id": 3, "cmd": "echo"}', 3, "version None"),
        (b'{"v": 1, "id": 4, "cmd": 5}', 4, "'cmd'"),
        (b'{"v": 1, "id": 5, "cmd": "echo", "args": [1]}', 5, "'args'"),
        (b'{"v": 1, "id": 6, "cmd": "rm -rf"}', 6, "unknown command 'rm -rf'"),
        (b"[" * 100_000 + b"]" * 100_000, None, "malformed JSON"),
    ]

    async def body() -> None:
        async with serving(where(tmp_path, transport), transport) as server:
            reader, writer = await raw(server)
            for line, rid, words in bad:
                reply = await ask(reader, writer, line)
                assert reply["ok"] is False and reply["id"] == rid and reply["v"] == 1
                assert words in reply["error"], (line[:40], reply)
            writer.write(b"\n  \n")  # blank lines are skipped, not errors
            good = await ask(reader, writer, b'{"v": 1, "id": 9, "cmd": "echo", "args": {"x": 1}}')
            assert good == {"v": 1, "id": 9, "ok": True, "result": {"x": 1}}
            writer.close()

    run(body())


@pytest.mark.parametrize("transport", BOTH)
def test_oversized_message_closes_connection(tmp_path: Path, transport: TransportKind) -> None:
    async def body() -> None:
        async with serving(where(tmp_path, transport), transport) as server:
            reader, writer = await raw(server)
            # Read while writing: once the server closes, our writes fail and the stream
            # then only gives back what it had already received.
            answer = asyncio.create_task(reader.readline())
            chunk = b"x" * 65536
            with contextlib.suppress(ConnectionError):
                # 8 MiB with no newline: the server must give up after about 1 MiB.
                for _ in range(128):
                    writer.write(chunk)
                    await writer.drain()
            reply = json.loads(await answer)
            assert reply["ok"] is False and reply["id"] is None
            assert str(MAX_MESSAGE) in reply["error"]
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""  # closed by the server
            writer.transport.abort()
            # Others are unaffected.
            async with ControlClient(server.path, transport) as client:
                assert await client.request("echo", n=1) == {"n": 1}

    run(body())


@pytest.mark.parametrize("transport", BOTH)
def test_slow_client_and_fifty_at_once(tmp_path: Path, transport: TransportKind) -> None:
    async def body() -> None:
        async with serving(where(tmp_path, transport), transport) as server:
            reader, writer = await raw(server)
            request = b'{"v": 1, "id": 1, "cmd": "echo", "args": {"slow": true}}\n'

            others_done = asyncio.Event()

            async def dribble() -> Any:
                # A byte at a time until everyone else has been served, then the rest.
                sent = 0
                while not others_done.is_set() and sent < len(request) - 1:
                    writer.write(request[sent : sent + 1])
                    await writer.drain()
                    sent += 1
                    await asyncio.sleep(0.02)
                writer.write(request[sent:])
                return json.loads(await reader.readline())

            slow = asyncio.create_task(dribble())
            await asyncio.sleep(0.1)

            async def one(i: int) -> Any:
                async with ControlClient(server.path, transport) as client:
                    return await client.request("nap", s=0.3, i=i)

            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await asyncio.gather(*(one(i) for i in range(50)))
            assert results == ["rested"] * 50
            assert loop.time() - started < 5  # concurrent, not 50 x 0.3 s
            assert not slow.done()  # the dribbler is still dribbling
            others_done.set()
            assert (await slow)["result"] == {"slow": True}
            writer.close()

    run(body())


def test_handler_exception_is_reported_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with (
            serving(where(tmp_path, "unix"), "unix") as server,
            ControlClient(server.path, "unix") as client,
        ):
            with pytest.raises(ControlError, match="the flux capacitor broke"):
                await client.request("boom")
            with pytest.raises(ControlError, match="no endpoint"):
                await client.request("refuse")
            assert await client.request("echo", still="up") == {"still": "up"}

    with caplog.at_level(logging.DEBUG, "jobtunnel.daemon.api.server"):
        run(body())
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "boom" in tracebacks[0].getMessage()


@pytest.mark.parametrize("transport", BOTH)
def test_subscribe_and_events(tmp_path: Path, transport: TransportKind) -> None:
    async def body() -> None:
        async with (
            serving(where(tmp_path, transport), transport) as server,
            ControlClient(server.path, transport) as sub,
            ControlClient(server.path, transport) as other,
        ):
            assert await sub.subscribe() == {"tunnels": ["a"]}
            assert server.subscribers == 1
            for i in range(5):
                server.publish("status", {"n": i})
            # A request in between is answered while events keep flowing.
            assert await sub.request("echo", q=1) == {"q": 1}
            got = []
            async for event in sub.events():
                got.append((event.name, event.data["n"]))
                if len(got) == 5:
                    break
            assert got == [("status", i) for i in range(5)]
            server.publish("status", {"not": object()})  # unencodable: logged, not raised
            assert await other.request("echo") == {}
            assert other._events.empty()  # not subscribed: no events
            await sub.request("unsubscribe")
            assert server.subscribers == 0
        # Server gone: the iterator ends and requests say why.
        assert [e async for e in sub.events()] == []
        with pytest.raises(ControlError):
            await sub.request("echo")

    run(body())


def test_slow_subscriber_is_dropped_others_get_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with (
            serving(where(tmp_path, "unix"), "unix", queue_size=8) as server,
            ControlClient(server.path, "unix") as good,
        ):
            await good.subscribe()
            reader, writer = await raw(server)
            assert (await ask(reader, writer, b'{"v":1,"id":1,"cmd":"subscribe"}'))["ok"]
            assert server.subscribers == 2
            big = "y" * 65536
            got = 0

            async def consume() -> None:
                nonlocal got
                async for _ in good.events():
                    got += 1
                    if got == 60:
                        return

            consumer = asyncio.create_task(consume())
            for i in range(60):  # about 4 MB: far beyond the socket buffers
                while got < i - 4:  # the good subscriber keeps up, however loaded the box
                    await asyncio.sleep(0.001)
                server.publish("status", {"i": i, "pad": big})
            await asyncio.wait_for(consumer, 10)
            assert got == 60
            assert server.subscribers == 1
            writer.transport.abort()

    with caplog.at_level(logging.WARNING, "jobtunnel.daemon.api.server"):
        run(body())
    assert any("events unread" in r.getMessage() for r in caplog.records)


def test_tcp_needs_the_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = where(tmp_path, "tcp")

    async def attempt(server: ControlServer, first: bytes) -> Any:
        reader, writer = await raw(server, auth=False)
        writer.write(first + b"\n")
        reply = json.loads(await reader.readline())
        assert await reader.read() == b""  # and closed
        writer.close()
        return reply

    async def body() -> str:
        async with serving(path, "tcp") as server:
            token = json.loads(path.read_text())["token"]
            for first in (
                b'{"v": 1, "id": 1, "cmd": "echo", "args": {}}',
                b'{"v": 1, "id": 1, "cmd": "auth", "args": {"token": "guess"}}',
                b'{"v": 1, "id": 1, "cmd": "auth", "args": {"token": 5}}',
                b"not json",
            ):
                reply = await attempt(server, first)
                assert reply["ok"] is False and "token" in reply["error"]
            # A client that read a stale token file is refused with the daemon's words.
            path.write_text(json.dumps({"port": server.port, "token": "old"}))
            with pytest.raises(ControlError, match="auth with the token"):
                await ControlClient(path, "tcp").connect()
            path.write_text(json.dumps({"port": server.port, "token": token}))
            async with ControlClient(path, "tcp") as client:
                assert await client.request("echo", ok=1) == {"ok": 1}
            return str(token)

    with caplog.at_level(logging.DEBUG):
        token = run(body())
    assert token not in caplog.text
    assert "missing or wrong token" in caplog.text


def test_not_running(tmp_path: Path) -> None:
    sock_path = tmp_path / "run" / "control.sock"
    json_path = tmp_path / "run" / "control.json"

    async def body() -> None:
        with pytest.raises(DaemonNotRunning) as info:
            await ControlClient(sock_path, "unix").connect()
        assert str(info.value).startswith(NOT_RUNNING)
        assert "jobtunnel run" in str(info.value)
        with pytest.raises(DaemonNotRunning):
            await ControlClient(json_path, "tcp").connect()
        # Files left behind by a daemon that died: nothing listens behind them.
        sock_path.parent.mkdir()
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(sock_path))
        s.close()
        with pytest.raises(DaemonNotRunning, match="nothing listens"):
            await ControlClient(sock_path, "unix").connect()
        # Bound but not listening: refused, and no other process can take the port.
        with socket.socket() as dead:
            dead.bind(("127.0.0.1", 0))
            port = dead.getsockname()[1]
            json_path.write_text(json.dumps({"port": port, "token": "t"}))
            with pytest.raises(DaemonNotRunning):
                await ControlClient(json_path, "tcp").connect()
        # A new daemon takes over the stale socket; a second one is refused.
        async with serving(sock_path, "unix"):
            with pytest.raises(ControlError, match="another jobtunnel daemon"):
                await ControlServer(HANDLERS, transport="unix", path=sock_path).start()
            async with ControlClient(sock_path, "unix") as client:
                assert await client.request("echo") == {}

    run(body())
    with pytest.raises(DaemonNotRunning):
        call_sync("status", path=sock_path, transport="unix")


def test_sync_wrapper_against_a_daemon_thread(tmp_path: Path) -> None:
    path = where(tmp_path, "unix")
    ready = threading.Event()
    stop: list[Callable[[], None]] = []

    async def daemon() -> None:
        async with serving(path, "unix"):
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            stop.append(lambda: loop.call_soon_threadsafe(done.set))
            ready.set()
            await done.wait()

    thread = threading.Thread(target=lambda: run(daemon()))
    thread.start()
    try:
        assert ready.wait(10)
        assert call_sync("echo", {"x": [1, 2]}, path=path, transport="unix") == {"x": [1, 2]}
        with pytest.raises(ControlError, match="flux capacitor"):
            call_sync("boom", path=path, transport="unix")
    finally:
        if stop:
            stop[0]()
        thread.join(10)
    assert not thread.is_alive()


def test_other_uid_is_refused() -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to become another user")
    # Not under pytest's tmp dir: nobody must be able to reach the socket, so that
    # SO_PEERCRED, not file modes, is what refuses it.
    top = Path(tempfile.mkdtemp(prefix="jt-"))
    path = top / "run" / "control.sock"

    async def body() -> bytes:
        async with serving(path, "unix") as server:
            os.chmod(top, 0o711)
            os.chmod(path.parent, 0o711)
            os.chmod(path, 0o666)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: become nobody, connect, report what it read
                try:
                    os.close(r)
                    os.setgid(65534)
                    os.setuid(65534)
                    s = socket.socket(socket.AF_UNIX)
                    s.settimeout(5)
                    s.connect(str(path))
                    s.sendall(b'{"v": 1, "id": 1, "cmd": "echo", "args": {}}\n')
                    data = b""
                    while chunk := s.recv(4096):
                        data += chunk
                    os.write(w, data or b"EOF")
                except BaseException as exc:
                    os.write(w, f"child error: {exc!r}".encode())
                finally:
                    os._exit(0)
            os.close(w)
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(None, _read_all, r)
            await loop.run_in_executor(None, os.waitpid, pid, 0)
            # The daemon's own user still gets in.
            async with ControlClient(server.path, "unix") as client:
                assert await client.request("echo") == {}
            return data

    try:
        data = run(body())
    finally:
        for p in (path, path.parent, top):
            if p.is_dir():
                p.rmdir()
            elif p.exists():
                p.unlink()
    reply = json.loads(data)
    assert reply["ok"] is False and reply["id"] is None
    assert "not the daemon's user" in reply["error"]


def _read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 4096):
        out += chunk
    os.close(fd)
    return out


def test_shared_folder_is_refused_not_tightened(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)

    async def body() -> None:
        with pytest.raises(ControlError, match="shared with other users"):
            await ControlServer(HANDLERS, transport="unix", path=shared / "c.sock").start()

    run(body())
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert list(shared.iterdir()) == []
