"""The user-space link shaper (tests/helpers/shaper.py) against real loopback servers:
delay, rate, data intact both ways, half-close, bounded memory, closing on exit."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time

import pytest

from tests.helpers.services import echo_server, pattern, sha256, slow_sink_server, source_server
from tests.helpers.shaper import PIECE, DelayLine, LinkShape, Shaper, TokenBucket

pytestmark = pytest.mark.timeout(60)

# What one read of the relay may add past its bound (asyncio reads at most 256 KiB).
READ_MAX = 256 * 1024


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_all(sock: socket.socket, limit: int = 1 << 30) -> bytes:
    out = bytearray()
    while len(out) < limit and (more := sock.recv(1 << 16)):
        out += more
    return bytes(out)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        more = sock.recv(n - len(out))
        assert more, f"closed after {len(out)} of {n} bytes"
        out += more
    return bytes(out)


# -- the arithmetic -----------------------------------------------------------------------


def test_delay_line_releases_each_chunk_after_its_own_delay_in_order() -> None:
    line = DelayLine(0.5)
    line.push(b"abc", now=10.0)
    line.push(b"defg", now=10.2)
    line.push_eof(now=10.3)
    assert line.wait(10.0) == 0.5
    assert line.take(100, 10.4) == b""  # not yet
    assert line.take(2, 10.5) == b"ab"  # a piece of the head
    assert line.bytes == 5
    assert line.take(100, 10.5) == b"c"
    assert line.wait(10.5) == pytest.approx(0.2)  # the second chunk's own stamp
    assert not line.at_eof(10.7)
    assert line.take(100, 10.7) == b"defg"
    assert not line.at_eof(10.75) and line.at_eof(10.8)
    assert line.take(100, 10.8) == b""  # the end of file stays
    assert line.bytes == 0


def test_token_bucket_long_run_rate_is_exact_with_late_wakeups() -> None:
    bucket = TokenBucket(rate=1000.0, burst=100.0, now=0.0)
    now, sent = 0.0, 0
    for _ in range(1000):
        wait = bucket.wait(now)
        now += wait + 0.01  # every timer fires 10 ms late (< burst / rate)
        bucket.spend(50, now)
        sent += 50
    # 50 000 bytes at 1000 B/s is 50 s; lateness within the burst costs no rate.
    assert 49.0 <= now <= 51.0
    assert bucket.wait(now) > 0


def test_token_bucket_saves_at_most_its_burst() -> None:
    bucket = TokenBucket(rate=1000.0, burst=100.0, now=0.0)
    assert bucket.wait(1000.0) == 0.0
    bucket.spend(600, 1000.0)  # one big piece runs it into debt of 500 bytes
    assert bucket.wait(1000.0) == pytest.approx(0.5)


def test_link_shape_defaults() -> None:
    shape = LinkShape.of(0.040, 200e6)
    assert shape.delay == pytest.approx(0.020)
    assert shape.rate == pytest.approx(25e6)
    assert shape.bound == 1_000_000  # one round trip of data at the rate
    assert 16 * 1024 <= shape.burst <= 200_000
    with pytest.raises(ValueError):
        LinkShape.of(0.04, 0)


# -- the relay -----------------------------------------------------------------------------


def test_round_trip_takes_at_least_the_rtt() -> None:
    with echo_server() as echo, Shaper("127.0.0.1", echo, rtt=0.1, rate_bps=1e9) as link:
        with _connect(link.port) as sock:
            trips = []
            for i in range(3):
                start = time.monotonic()
                sock.sendall(bytes([i]))
                assert _recv_exact(sock, 1) == bytes([i])
                trips.append(time.monotonic() - start)
        assert min(trips) >= 0.09, trips
        assert max(trips) < 10, trips


def test_rate_caps_throughput_and_data_arrives_intact() -> None:
    size = 2_000_000
    with (
        source_server(size) as src,
        Shaper("127.0.0.1", src, rtt=0.01, rate_bps=8e6) as link,
        _connect(link.port) as sock,
    ):
        start = time.monotonic()
        data = _recv_all(sock)  # ends at the source's EOF, forwarded by the relay
        elapsed = time.monotonic() - start
    assert sha256(data) == sha256(pattern(size)), len(data)
    # 2 MB at 1 MB/s is 2 s; a burst and a first piece may go early.
    assert elapsed >= 1.6, elapsed
    assert elapsed < 30, elapsed
    assert link.stats.bytes_down == size


def test_both_directions_in_order_with_half_close() -> None:
    size = 3_000_000
    payload = hashlib.sha256(b"up").digest() * (size // 32)
    with (
        echo_server() as echo,
        Shaper("127.0.0.1", echo, rtt=0.02, rate_bps=800e6) as link,
        _connect(link.port) as sock,
    ):

        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # half-close: the echo still answers

        sender = threading.Thread(target=send)
        sender.start()
        back = _recv_all(sock)
        sender.join(20)
    assert len(back) == len(payload)
    assert back == payload
    assert link.stats.bytes_up == link.stats.bytes_down == len(payload)


def test_client_eof_reaches_the_server_which_then_answers() -> None:
    size = 1_000_000
    with (
        slow_sink_server(0.0) as sink,
        Shaper("127.0.0.1", sink, rtt=0.02, rate_bps=800e6) as link,
        _connect(link.port) as sock,
    ):
        sock.sendall(pattern(size))
        sock.shutdown(socket.SHUT_WR)
        # The sink answers only after it read to the end of file.
        assert _recv_all(sock).decode() == sha256(pattern(size))


def test_a_stalled_receiver_holds_the_sender_back_not_the_relay_memory() -> None:
    # 32 MB into a server that reads nothing for 1.5 s: far more than the kernel's socket
    # buffers take, so without backpressure the relay would hold most of it.
    size = 32_000_000
    bound = 256 * 1024
    data = pattern(size)
    with (
        slow_sink_server(1.5) as sink,
        Shaper("127.0.0.1", sink, rtt=0.01, rate_bps=4e9, buffer=bound) as link,
        _connect(link.port) as sock,
    ):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        assert _recv_all(sock).decode() == sha256(data)
        peak = link.stats.peak_queued
    assert 0 < peak <= bound + READ_MAX + PIECE, peak


def test_a_client_that_stops_reading_does_not_grow_the_relay() -> None:
    size = 32_000_000
    bound = 256 * 1024
    with (
        source_server(size) as src,
        Shaper("127.0.0.1", src, rtt=0.01, rate_bps=4e9, buffer=bound) as link,
        _connect(link.port) as sock,
    ):
        time.sleep(1.5)  # the source sends as fast as it can meanwhile
        held = link.stats.peak_queued
        data = _recv_all(sock)
    assert sha256(data) == sha256(pattern(size))
    assert 0 < held <= bound + READ_MAX + PIECE, held
    assert link.stats.peak_queued <= bound + READ_MAX + PIECE


def test_connections_close_when_the_shaper_stops() -> None:
    with echo_server() as echo:
        link = Shaper("127.0.0.1", echo, rtt=0.01, rate_bps=1e9)
        with link, _connect(link.port) as sock:
            sock.sendall(b"x")
            assert _recv_exact(sock, 1) == b"x"
            link.stop()
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):  # aborted: as good as closed
                assert sock.recv(1) == b""
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", link.port), timeout=5).close()


def test_an_unreachable_target_closes_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, never listening: refused
        with (
            Shaper("127.0.0.1", dead, rtt=0.01) as link,
            _connect(link.port) as sock,
            contextlib.suppress(ConnectionResetError),
        ):
            assert sock.recv(1) == b""
        assert link.stats.errors and "connect to target" in link.stats.errors[0]
