"""Churn (no leaked channels or descriptors) and SOCKS5 through the dynamic forward."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from pathlib import Path

import pytest
from jobtunnel.daemon.engine.pump import open_guarded
from jobtunnel.daemon.engine.tunnel import Tunnel

from tests.helpers.asyncrun import run
from tests.helpers.services import echo_server, roundtrip
from tests.helpers.sshd import SshServer
from tests.helpers.tunnels import local_port, make_tunnel, open_fds, running

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(150)]

CLIENTS = 1000
CONCURRENCY = 50


def server_fds(sshd: SshServer) -> int:
    total = 0
    for pid in sshd.session_pids():
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


def channel_count(t: Tunnel) -> int:
    conn = t.connection
    assert conn is not None
    # Private, but the only direct view of asyncssh's open channels.
    return len(conn._channels)  # type: ignore[attr-defined]


async def one_client(port: int, i: int) -> None:
    kind = i % 4
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kind == 0:
            # Gone before the channel can have opened.
            pass
        elif kind == 1:
            # Reset (RST) right away: the transport dies while the channel opens.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif kind == 2:
            msg = f"client {i}".encode()
            writer.write(msg)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 20) == msg
        else:
            # Sends, then leaves without waiting for the answer.
            writer.write(b"x" * 1000)
            await asyncio.sleep(0.001 * (i % 7))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def test_churn_leaves_no_channel_or_fd_behind(sshd: SshServer, tmp_path: Path) -> None:
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path)
            async with running(t):
                port = local_port(t)
                assert await roundtrip(port, b"warm") == b"warm"
                await t.wait_for(lambda st: st.active_clients == 0, 10)
                await asyncio.sleep(0.2)
                fds_before, server_before = open_fds(), server_fds(sshd)
                chans_before = channel_count(t)

                sem = asyncio.Semaphore(CONCURRENCY)

                async def bounded(i: int) -> None:
                    async with sem:
                        await one_client(port, i)

                t0 = time.monotonic()
                results = await asyncio.gather(
                    *(bounded(i) for i in range(CLIENTS)), return_exceptions=True
                )
                errors = [r for r in results if isinstance(r, BaseException)]
                assert not errors, errors[:3]
                print(f"{CLIENTS} clients in {time.monotonic() - t0:.2f} s")

                await t.wait_for(lambda st: st.active_clients == 0, 30)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and (
                    channel_count(t) != chans_before or open_fds() != fds_before
                ):
                    await asyncio.sleep(0.1)
                assert channel_count(t) == chans_before == 0
                assert open_fds() == fds_before
                while time.monotonic() < deadline and server_fds(sshd) > server_before:
                    await asyncio.sleep(0.1)
                assert server_fds(sshd) <= server_before
                assert t.status().state == "up" and t.status().reconnects == 0
                assert await roundtrip(port, b"still fine") == b"still fine"

        run(main(), 140)


async def socks_connect(
    port: int, atyp: int, addr: bytes, dport: int, cmd: int = 1
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    if atyp == 3:
        addr = bytes([len(addr)]) + addr
    writer.write(bytes([5, cmd, 0, atyp]) + addr + struct.pack("!H", dport))
    head = await asyncio.wait_for(reader.readexactly(10), 20)
    assert head[0] == 5
    return head[1], reader, writer


def test_socks5_dynamic_forward_reaches_echo(sshd: SshServer, tmp_path: Path) -> None:
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(sshd, ["D:0"], tmp_path)
            async with running(t):
                port = local_port(t)
                assert t.status().forwards[0].remote == "socks"
                for atyp, addr in ((1, socket.inet_aton("127.0.0.1")), (3, b"localhost")):
                    code, reader, writer = await socks_connect(port, atyp, addr, echo)
                    assert code == 0
                    writer.write(b"through socks")
                    writer.write_eof()
                    assert await asyncio.wait_for(reader.read(), 20) == b"through socks"
                    writer.close()
                # IPv6 target: parsed and sent; nothing listens on [::1]:echo, so refused.
                code, _, writer = await socks_connect(
                    port, 4, socket.inet_pton(socket.AF_INET6, "::1"), echo
                )
                assert code in (1, 3, 4, 5)
                writer.close()
                # BIND is not supported: the client is told so.
                code, _, writer = await socks_connect(port, 1, socket.inet_aton("127.0.0.1"), 1, 2)
                assert code == 7
                writer.close()

        run(main(), 60)


def test_open_cancelled_midway_closes_the_channel(sshd: SshServer, tmp_path: Path) -> None:
    """asyncssh #823: cancelling an open leaves the channel open once the server
    confirms it. The engine's guarded open closes it instead."""
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path)
            async with running(t):
                link = t._link
                assert link is not None
                conn = link.conn

                async def settle() -> int:
                    await asyncio.sleep(0.5)
                    return channel_count(t)

                # Control: the bare asyncssh call, cancelled mid-open (for the record).
                for _ in range(20):
                    bare = asyncio.ensure_future(conn.open_connection("127.0.0.1", echo))
                    await asyncio.sleep(0)
                    bare.cancel()
                leaked_bare = await settle()
                print(f"bare open_connection cancelled mid-open: {leaked_bare} channels left")
                for chan in list(conn._channels.values()):  # type: ignore[attr-defined]
                    chan.close()
                deadline = time.monotonic() + 10
                while channel_count(t) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert channel_count(t) == 0

                for _ in range(20):
                    guarded = asyncio.ensure_future(
                        open_guarded(link.conn, ("127.0.0.1", echo), ("127.0.0.1", 0))
                    )
                    await asyncio.sleep(0)
                    guarded.cancel()
                deadline = time.monotonic() + 10
                while channel_count(t) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert channel_count(t) == 0

        run(main(), 60)
