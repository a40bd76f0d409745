"""The tunnel engine against a real sshd when things are wrong: keys, host keys, ports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon.engine.hostkeys import HostKeyStore

from tests.helpers.asyncrun import run
from tests.helpers.services import echo_server, roundtrip
from tests.helpers.sshd import SshServer, keygen
from tests.helpers.tunnels import fast_options, is_up, local_port, make_tunnel, running

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(90)]


def host_fp(sshd: SshServer) -> str:
    return asyncssh.read_public_key(f"{sshd.host_key}.pub").get_fingerprint("sha256")


@contextlib.contextmanager
def occupied_port() -> Iterator[int]:
    """A loopback port held by a listener that is not ours."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_wrong_key_fails_with_auth_hint_and_backs_off(sshd: SshServer, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "not_authorized")

    async def main() -> None:
        opts = fast_options(sshd, identity_files=(str(stranger),), initial_delay=0.2, max_delay=1.0)
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)
        await t.start()
        try:
            st = await t.wait_for(lambda st: st.state == "failed", 15)
            assert st.last_error_kind == "auth"
            assert "Authentication failed" in (st.last_error or "")
            assert "SSH public key" in (st.last_error or "")
            first = t.connect_attempts
            await asyncio.sleep(4)
            made = t.connect_attempts - first
            # Retried, but with backoff: a tight loop would make hundreds in 4 s.
            assert 1 <= made <= 20, made
            assert t.status().state == "failed"
            print(f"{made} auth attempts in 4 s")
        finally:
            await t.end()

    run(main(), 60)


def test_host_key_change_refused_and_new_job_gets_its_own_pin(
    sshd: SshServer, tmp_path: Path
) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    old_fp = host_fp(sshd)

    async def main() -> None:
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path)
        await t.start()
        await t.wait_for(is_up, 15)
        await t.end()
        pinned = store.lookup(sshd.user, "127.0.0.1", sshd.port)
        assert pinned is not None and pinned.get_fingerprint("sha256") == old_fp

        sshd.stop()
        sshd.new_host_key()
        sshd.start()
        new_fp = host_fp(sshd)
        assert new_fp != old_fp

        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path)
        await t.start()
        try:
            st = await t.wait_for(lambda st: st.state == "failed", 15)
            assert st.last_error_kind == "host_key_changed"
            assert old_fp in (st.last_error or "") and new_fp in (st.last_error or "")
            attempts = t.connect_attempts
            await asyncio.sleep(2)
            assert t.connect_attempts == attempts, "changed host key was retried silently"
            assert t.status().next_attempt_in is None
        finally:
            await t.end()
        # The pin is untouched.
        pinned = store.lookup(sshd.user, "127.0.0.1", sshd.port)
        assert pinned is not None and pinned.get_fingerprint("sha256") == old_fp

        # A new job (another user) at the same address: its own pin, trust on first use.
        other = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, user="uprod_424242")
        await other.start()
        try:
            st = await other.wait_for(lambda st: st.state == "failed", 15)
            assert st.last_error_kind == "auth"  # no such user on the test sshd
        finally:
            await other.end()
        job_pin = store.lookup("uprod_424242", "127.0.0.1", sshd.port)
        assert job_pin is not None and job_pin.get_fingerprint("sha256") == new_fp
        text = (tmp_path / "known_hosts").read_text()
        assert f"[127.0.0.1]:{sshd.port}" in text and "jobtunnel-user=uprod_424242" in text
        assert (tmp_path / "known_hosts").stat().st_mode & 0o777 == 0o600

    run(main(), 80)


def test_taken_port_moves_to_next_free_and_is_reported(sshd: SshServer, tmp_path: Path) -> None:
    with echo_server() as echo, occupied_port() as taken:

        async def main() -> None:
            t = make_tunnel(sshd, [f"{taken}:127.0.0.1:{echo}"], tmp_path)
            reports: list[int | None] = []
            t.subscribe(lambda st: reports.append(st.forwards[0].local_port))
            async with running(t):
                got = local_port(t)
                assert got != taken and got > taken
                assert t.assigned_ports() == {f"{taken}:127.0.0.1:{echo}": got}
                assert got in reports
                assert t.status().forwards[0].wanted_port == taken
                assert await roundtrip(got, b"moved") == b"moved"

        run(main(), 40)


def test_sticky_assignment_is_honoured(sshd: SshServer, tmp_path: Path) -> None:
    with echo_server() as echo:
        spec = f"0:127.0.0.1:{echo}"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            sticky = int(s.getsockname()[1])

        async def main() -> None:
            t = make_tunnel(sshd, [spec], tmp_path, assigned_ports={spec: sticky})
            await t.start()
            try:
                assert local_port(t) == sticky
                await t.wait_for(is_up, 15)
                assert await roundtrip(sticky, b"sticky") == b"sticky"
                assert t.assigned_ports() == {spec: sticky}
            finally:
                await t.end()

        run(main(), 40)


def test_bind_address_default_is_loopback(sshd: SshServer, tmp_path: Path) -> None:
    async def main() -> None:
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path)
        await t.start()
        try:
            fwd = t.status().forwards[0]
            assert fwd.bind_address == "127.0.0.1"
        finally:
            await t.end()

    run(main(), 20)


def test_refused_while_sshd_down_then_up(sshd: SshServer, tmp_path: Path) -> None:
    sshd.stop()

    async def main() -> None:
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path)
        await t.start()
        try:
            st = await t.wait_for(lambda st: st.last_error_kind == "refused", 15)
            assert st.state in ("connecting", "reconnecting")
            assert "refused" in (st.last_error or "")
            t0 = time.monotonic()
            sshd.start()
            t.reconnect_now()
            await t.wait_for(is_up, 10)
            print(f"up {time.monotonic() - t0:.2f} s after sshd start with reconnect_now")
        finally:
            await t.end()

    run(main(), 40)


def test_missing_sshd_fails_under_ci_and_skips_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import deps
    from tests.helpers import sshd as sshd_server

    monkeypatch.setattr(sshd_server, "SSHD", "/nonexistent/sshd")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        deps.require_sshd()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        deps.require_sshd()


def test_a_failing_retry_is_logged_once_until_the_error_changes(
    sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hours of retries to a gone cluster must not write one warning per attempt."""
    stranger = keygen(tmp_path / "not_authorized")

    async def main() -> None:
        opts = fast_options(
            sshd, identity_files=(str(stranger),), initial_delay=0.05, max_delay=0.1
        )
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)
        await t.start()
        try:
            deadline = time.monotonic() + 30
            while t.connect_attempts < 6 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert t.connect_attempts >= 6
            # The right key now: it comes up, and the quiet ends with the failure.
            t._keys = type(t._keys)((str(sshd.client_key),))
            await t.wait_for(is_up, 15)
        finally:
            await t.end()

    with caplog.at_level("DEBUG", logger="jobtunnel"):
        run(main(), 60)
    warned = [r for r in caplog.records if "connect failed:" in r.getMessage()]
    quiet = [r for r in caplog.records if "connect failed again" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert len(quiet) >= 4 and all(r.levelname == "DEBUG" for r in quiet)
