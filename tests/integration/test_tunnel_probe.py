"""Checking a link on demand (after a wake) and per-forward client counts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.helpers.asyncrun import run
from tests.helpers.services import echo_server, roundtrip
from tests.helpers.sshd import SshServer
from tests.helpers.tunnels import fast_options, is_up, local_port, make_tunnel, running


@pytest.mark.timeout(90)
def test_a_check_answers_on_a_live_link_and_drops_a_frozen_one(
    sshd: SshServer, tmp_path: Path
) -> None:
    with echo_server() as echo:

        async def main() -> None:
            # Keepalives far apart: only the check can notice the freeze quickly.
            opts = fast_options(sshd, keepalive_interval=60.0, connect_timeout=2.0)
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path, options=opts)
            await t.start()
            try:
                await t.wait_for(is_up, 15)
                assert (await t.check("woke from sleep", timeout=15.0)).startswith("answered")
                before = t.status().reconnects
                assert sshd.freeze_sessions()
                outcome = await t.check("woke from sleep", timeout=1.0)
                assert outcome.startswith("no answer"), outcome
                checked = t.status().checked
                assert checked is not None and checked.reason == "woke from sleep"
                # Only the old session is frozen: a new one comes up at once.
                await t.wait_for(lambda st: st.reconnects > before and is_up(st), 15)
                assert (await t.check("woke from sleep", timeout=15.0)).startswith("answered")
            finally:
                sshd.thaw_sessions()
                await t.end()

        run(main())


@pytest.mark.timeout(60)
def test_reconnect_now_replaces_an_up_link_on_the_same_port(
    sshd: SshServer, tmp_path: Path
) -> None:
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(sshd, [f"0:127.0.0.1:{echo}"], tmp_path, options=fast_options(sshd))
            async with running(t):
                port = local_port(t)
                first = t.connection
                t.reconnect_now()
                st = await t.wait_for(lambda st: st.reconnects == 1 and is_up(st), 15)
                assert t.connection is not first
                assert st.last_error is None
                assert local_port(t) == port
                assert await roundtrip(port, b"fresh") == b"fresh"

        run(main())


@pytest.mark.timeout(60)
def test_forward_status_counts_its_clients(sshd: SshServer, tmp_path: Path) -> None:
    with echo_server() as echo:

        async def main() -> None:
            t = make_tunnel(
                sshd,
                [f"0:127.0.0.1:{echo}", f"0:127.0.0.1:{echo}"],
                tmp_path,
                options=fast_options(sshd),
            )
            async with running(t):
                writers = []
                for _ in range(2):
                    reader, writer = await asyncio.open_connection("127.0.0.1", local_port(t, 1))
                    writer.write(b"x")
                    assert await reader.readexactly(1) == b"x"
                    writers.append(writer)
                st = t.status()
                assert [f.clients for f in st.forwards] == [0, 2]
                for writer in writers:
                    writer.close()
                await t.wait_for(lambda st: st.forwards[1].clients == 0, 10)

        run(main())
