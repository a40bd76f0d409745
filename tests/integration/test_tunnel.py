"""The tunnel engine against a real OpenSSH sshd on loopback: data, ports, auth, keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
import time
from pathlib import Path

import pytest
from jobtunnel.daemon.engine.options import TunnelStatus
from jobtunnel.daemon.engine.tunnel import CLIENTS_NOTIFY_DELAY, OPEN_STALL_SECONDS

from tests.helpers.asyncrun import run
from tests.helpers.services import (
    echo_server,
    http_get,
    http_server,
    pattern,
    roundtrip,
    sha256,
    slow_sink_server,
    source_server,
)
from tests.helpers.sshd import SshServer
from tests.helpers.tunnels import fast_options, is_up, local_port, make_tunnel, running

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_forward_carries_data_both_ways_and_large_transfers(
    sshd: SshServer, tmp_path: Path, loop: str
) -> None:
    with echo_server() as echo, http_server() as web:

        async def main() -> None:
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}", f"0:127.0.0.1:{web}"], tmp_path)
            await t.start()
            try:
                await t.wait_for(is_up, 15)
                assert await roundtrip(local_port(t), b"ping") == b"ping"
                body = await http_get(local_port(t, 1))
                assert body.startswith(b"hello from the cluster")
                big = os.urandom(32 * 1024 * 1024)
                t0 = time.monotonic()
                echoed = await roundtrip(local_port(t), big, timeout=90)
                took = time.monotonic() - t0
                print(f"[{loop}] 32 MiB echoed (64 MiB through the tunnel) in {took:.2f} s")
                assert sha256(echoed) == sha256(big)
                st = t.status()
                assert st.bytes_sent >= len(big) and st.bytes_received >= len(big)
                as_json = json.loads(json.dumps(st.to_dict()))
                assert as_json["state"] == "up" and as_json["forwards"][0]["local_port"]
                assert as_json["held_clients"] == 0 and as_json["host_key"].startswith("SHA256:")
            finally:
                await t.end("test over")
            assert t.status().state == "ended"

        run(main(), 110, loop)


def test_session_killed_reconnects_on_same_port(sshd: SshServer, tmp_path: Path) -> None:
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path)
            states: list[str] = []
            t.subscribe(lambda st: states.append(st.state))
            async with running(t):
                port = local_port(t)
                assert await roundtrip(port, b"before") == b"before"
                assert sshd.kill_sessions(), "no session process to kill"
                t0 = time.monotonic()
                await t.wait_for(lambda st: st.reconnects == 1 and st.state == "up", 15)
                print(f"recovered {time.monotonic() - t0:.2f} s after the session was killed")
                assert local_port(t) == port
                assert await roundtrip(port, b"after") == b"after"
                assert t.status().reconnects == 1
                assert "reconnecting" in states

        run(main(), 60)


def test_outage_clients_are_held_then_served(sshd: SshServer, tmp_path: Path) -> None:
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path)
            async with running(t):
                port = local_port(t)
                sshd.stop()
                await t.wait_for(lambda st: st.state != "up", 15)
                # Clients arriving during the outage: none may be refused.
                held = [
                    asyncio.ensure_future(roundtrip(port, f"held {i}".encode(), timeout=40))
                    for i in range(5)
                ]
                await asyncio.sleep(5)
                assert not any(h.done() for h in held), "a held client was closed early"
                assert t.status().active_clients == 5
                assert t.status().held_clients == 5
                t0 = time.monotonic()
                sshd.start()
                results = await asyncio.gather(*held)
                print(f"held clients served {time.monotonic() - t0:.2f} s after sshd restart")
                assert results == [f"held {i}".encode() for i in range(5)]
                assert local_port(t) == port

        run(main(), 90)


def test_hold_time_expires_then_client_closed(sshd: SshServer, tmp_path: Path) -> None:
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(
                sshd,
                [f"0:127.0.0.1:{echo}"],
                tmp_path,
                options=fast_options(sshd, hold_seconds=1.0),
            )
            async with running(t):
                port = local_port(t)
                sshd.stop()
                await t.wait_for(lambda st: st.state != "up", 15)
                t0 = time.monotonic()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                data = await asyncio.wait_for(reader.read(), 10)
                waited = time.monotonic() - t0
                assert data == b""
                assert 0.8 <= waited < 10
                writer.close()

        run(main(), 60)


def test_frozen_server_detected_by_keepalive_and_recovered(sshd: SshServer, tmp_path: Path) -> None:
    """The whole server SIGSTOPped: the dead link is noticed within the keepalive bound
    (interval 1 s x 2), new attempts time out with the CIDR hint, SIGCONT recovers."""
    with echo_server() as echo:

        async def main() -> None:
            opts = fast_options(sshd, connect_timeout=2.0)
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path, options=opts)
            events: list[tuple[float, str, str | None]] = []
            t.subscribe(lambda st: events.append((time.monotonic(), st.state, st.last_error)))
            await t.start()
            try:
                await t.wait_for(is_up, 15)
                port = local_port(t)
                assert sshd.freeze_all()
                t0 = time.monotonic()
                st = await t.wait_for(lambda st: st.last_error_kind == "timeout", 20)
                down = next(e for e in events if e[0] >= t0 and e[1] != "up")
                print(f"frozen server noticed after {down[0] - t0:.2f} s: {down[2]}")
                assert down[0] - t0 < 8
                assert "keepalive" in (down[2] or "").lower()
                assert "Access Restriction (CIDR)" in (st.last_error or "")
                t1 = time.monotonic()
                sshd.thaw_all()
                await t.wait_for(is_up, 15)
                print(f"up {time.monotonic() - t1:.2f} s after SIGCONT")
                assert await roundtrip(port, b"thawed") == b"thawed"
                assert local_port(t) == port
            finally:
                sshd.thaw_all()
                await t.end()

        run(main(), 60)


def test_frozen_session_detected_and_replaced(sshd: SshServer, tmp_path: Path) -> None:
    """Only the session's processes SIGSTOPped: noticed by keepalive, a new session
    serves the same port while the old one is still frozen."""
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path)
            events: list[tuple[float, str]] = []
            t.subscribe(lambda st: events.append((time.monotonic(), st.state)))
            await t.start()
            try:
                await t.wait_for(is_up, 15)
                port = local_port(t)
                assert sshd.freeze_sessions()
                t0 = time.monotonic()
                await t.wait_for(lambda st: st.reconnects == 1 and st.state == "up", 20)
                down = next(e for e in events if e[0] >= t0 and e[1] != "up")
                print(f"frozen session noticed after {down[0] - t0:.2f} s")
                assert down[0] - t0 < 8
                assert await roundtrip(port, b"new session") == b"new session"
            finally:
                sshd.thaw_sessions()
                await t.end()

        run(main(), 60)


def test_a_client_waiting_on_a_frozen_server_starts_a_liveness_check(
    sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Keepalive 5 s x 2 counts from the last packet received (15 s to notice). A
    client whose channel does not open within OPEN_STALL_SECONDS asks the server at
    once, with the same patience, so the frozen link goes about an interval sooner;
    the client is then served on the new connection."""
    caplog.set_level(logging.INFO, logger="jobtunnel")
    with echo_server() as echo:

        async def main() -> None:
            opts = fast_options(sshd, keepalive_interval=5.0, keepalive_count_max=2)
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path, options=opts)
            await t.start()
            try:
                await t.wait_for(is_up, 15)
                port = local_port(t)
                assert await roundtrip(port, b"before") == b"before"
                assert sshd.freeze_sessions()
                t0 = time.monotonic()
                waiting = asyncio.ensure_future(roundtrip(port, b"waiting", timeout=40))
                await t.wait_for(lambda st: st.state != "up", 30)
                print(f"frozen session dropped {time.monotonic() - t0:.2f} s after the freeze")
                assert "no answer to a liveness check" in caplog.text
                assert "not responding to keepalive" not in caplog.text
                assert await waiting == b"waiting"
                assert t.status().reconnects == 1
            finally:
                sshd.thaw_sessions()
                await t.end()

        run(main(), 60)


def test_a_slow_channel_on_a_live_server_keeps_the_link(
    sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The liveness check a stalled channel starts is answered by a live server: the
    link stays, and the channel opens when the far side finally accepts."""
    caplog.set_level(logging.DEBUG, logger="jobtunnel")
    # A listener whose accept queue is full: the kernel drops sshd's SYN, and the
    # connect only completes at a retransmission after the queue is drained.
    full = socket.create_server(("127.0.0.1", 0), backlog=0)
    target = full.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", target))
        fillers.append(filler)

    accepted: list[socket.socket] = []

    async def main() -> None:
        t = make_tunnel(sshd, [f"0:127.0.0.1:{target}"], tmp_path)
        async with running(t):
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port(t))
            await asyncio.sleep(OPEN_STALL_SECONDS * 2.5)
            assert "a channel is slow to open; checking the link" in caplog.text
            assert "no answer to a liveness check" not in caplog.text
            st = t.status()
            assert st.state == "up" and st.reconnects == 0 and st.active_clients == 1
            # Stop the fillers' own SYN retransmissions, which could take the freed slot
            # just before sshd's; then drain the queue, greeting every connection: sshd's
            # gets through at its next retransmission (1, 3, 7, 15, 31 s after its connect).
            for filler in fillers:
                filler.close()
            full.setblocking(False)
            greeting = asyncio.ensure_future(reader.readexactly(2))
            deadline = time.monotonic() + 40
            while not greeting.done():
                with contextlib.suppress(BlockingIOError):
                    conn = full.accept()[0]
                    conn.sendall(b"hi")
                    accepted.append(conn)
                    continue
                assert time.monotonic() < deadline, "the channel never opened"
                await asyncio.sleep(0.05)
            assert greeting.result() == b"hi"
            assert t.status().reconnects == 0
            writer.close()

    try:
        run(main(), 90)
    finally:
        for sock in [full, *fillers, *accepted]:
            sock.close()


BIG = 64 * 1024 * 1024
# Kernel socket buffers on both sides plus the SSH window: a few MB, far below BIG.
BUFFER_BOUND = 32 * 1024 * 1024


def test_backpressure_both_ways(sshd: SshServer, tmp_path: Path) -> None:
    with source_server(BIG) as source, slow_sink_server(2.0) as sink:

        async def main() -> None:
            t = make_tunnel(sshd, [f"0:127.0.0.1:{source}", f"0:127.0.0.1:{sink}"], tmp_path)
            async with running(t):
                # Down: the local client reads nothing for a while.
                reader, writer = await asyncio.open_connection("127.0.0.1", local_port(t))
                await asyncio.sleep(2)
                buffered = t.status().bytes_received
                print(f"not reading: {buffered / 2**20:.1f} MiB went ahead")
                assert buffered < BUFFER_BOUND
                got = await asyncio.wait_for(reader.read(-1), 60)
                assert sha256(got) == sha256(pattern(BIG))
                writer.close()

                # Up: the far service reads nothing for 2 s.
                before = t.status().bytes_sent
                reader, writer = await asyncio.open_connection("127.0.0.1", local_port(t, 1))
                data = pattern(BIG)

                async def send() -> None:
                    for i in range(0, BIG, 1 << 16):
                        writer.write(data[i : i + (1 << 16)])
                        await writer.drain()
                    writer.write_eof()

                sender = asyncio.ensure_future(send())
                await asyncio.sleep(1.5)
                ahead = t.status().bytes_sent - before
                print(f"far side not reading: {ahead / 2**20:.1f} MiB went ahead")
                assert ahead < BUFFER_BOUND
                answer = await asyncio.wait_for(reader.read(-1), 60)
                await sender
                assert answer.decode() == sha256(data)
                writer.close()

        run(main(), 110)


def test_stop_releases_ports_and_start_resumes_on_them(sshd: SshServer, tmp_path: Path) -> None:
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path)
            async with running(t):
                port = local_port(t)
                await t.stop()
                st = t.status()
                assert st.state == "stopped" and st.forwards[0].local_port is None
                assert t.connection is None
                with pytest.raises(OSError):
                    await asyncio.open_connection("127.0.0.1", port)
                await t.start()
                await t.wait_for(is_up, 15)
                assert local_port(t) == port
                assert await roundtrip(port, b"resumed") == b"resumed"

        run(main(), 40)


def test_gives_up_after_unreachable_too_long(sshd: SshServer, tmp_path: Path) -> None:
    sshd.stop()

    async def main() -> None:
        opts = fast_options(sshd, give_up_after=2.0, hold_seconds=30.0)
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)
        await t.start()
        port = local_port(t)
        held = asyncio.ensure_future(roundtrip(port, b"never", timeout=20))
        st = await t.wait_for(lambda st: st.state == "ended", 10)
        assert "too long" in (st.last_error or "")
        assert st.forwards[0].local_port is None
        # The held client is let go when the tunnel ends, not after the full hold time.
        assert await asyncio.wait_for(held, 5) == b""
        attempts = t.connect_attempts
        await asyncio.sleep(1)
        assert t.connect_attempts == attempts

    run(main(), 40)


def test_held_client_shortens_a_long_backoff(sshd: SshServer, tmp_path: Path) -> None:
    """Backoff 10 s (no jitter), hold 9 s: without pulling the retry forward the held
    client would be closed before the next attempt."""
    with echo_server() as echo:

        async def main() -> None:
            opts = fast_options(sshd, initial_delay=10.0, max_delay=10.0, hold_seconds=9.0)
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path, options=opts, rand=lambda: 1.0)
            async with running(t):
                port = local_port(t)
                sshd.stop()
                st = await t.wait_for(lambda st: st.state == "reconnecting", 15)
                assert st.next_attempt_in is not None and st.next_attempt_in > 8
                t0 = time.monotonic()
                held = asyncio.ensure_future(roundtrip(port, b"soon", timeout=20))
                # Still down: the pulled-forward attempt fails and backs off 10 s again;
                # the held client must pull that one forward too.
                await t.wait_for(lambda st: t.connect_attempts >= 2, 8)
                sshd.start()
                assert await held == b"soon"
                print(f"held client served after {time.monotonic() - t0:.2f} s (backoff 10 s)")

        run(main(), 40)


def test_a_burst_of_clients_is_a_few_status_events_not_two_per_client(
    sshd: SshServer, tmp_path: Path
) -> None:
    clients = 40
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path)
            events: list[TunnelStatus] = []
            t.subscribe(events.append)
            await t.start()
            try:
                await t.wait_for(is_up, 15)
                before = len(events)
                port = local_port(t)
                replies = await asyncio.gather(*(roundtrip(port, b"x") for _ in range(clients)))
                assert replies == [b"x"] * clients
                await asyncio.sleep(CLIENTS_NOTIFY_DELAY * 5)
                burst = events[before:]
                print(f"{clients} clients -> {len(burst)} status events")
                # One snapshot per arrival and per departure would be 2 * clients.
                assert 1 <= len(burst) <= clients // 4
                last = burst[-1]
                assert last.active_clients == 0 and last.forwards[0].clients == 0
            finally:
                await t.end("test over")

        run(main(), 60)


@pytest.mark.timeout(60)
def test_a_client_that_half_closes_then_goes_away_ends_its_channel(
    sshd: SshServer, tmp_path: Path
) -> None:
    """An HTTP/1.0-style client sends its request, shuts its sending side, reads a little
    and closes: the cluster's answer must stop being pulled across the link for nobody."""
    ended = threading.Event()

    class Endless(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            chunk = b"x" * 65536
            deadline = time.monotonic() + 40  # bounded, also when the test fails
            try:
                while time.monotonic() < deadline:
                    self.request.sendall(chunk)
            except OSError:
                ended.set()  # the channel was closed: the server's socket sees it

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = int(server.server_address[1])

    async def main() -> None:
        t = make_tunnel(sshd, [f"0:127.0.0.1:{port}"], tmp_path, options=fast_options(sshd))
        async with running(t):
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port(t))
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            writer.write_eof()
            await reader.readexactly(65536)
            writer.close()
            await t.wait_for(lambda st: st.active_clients == 0, 15)
            assert await asyncio.to_thread(ended.wait, 15)
            received = t.status().bytes_received
            await asyncio.sleep(0.5)
            assert t.status().bytes_received == received  # nothing more crosses

    try:
        run(main())
    finally:
        server.shutdown()
        server.server_close()
