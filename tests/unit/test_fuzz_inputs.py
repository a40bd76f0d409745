"""Property tests (hypothesis) of the two other doors hostile input comes through:

- the config parser: generated TOML documents and arbitrary bytes give a Config or a
  ConfigError, never another exception; and an accepted config can always be turned into
  what the daemon builds from it (engine options, scheduler intervals, paths);
- the control API with the daemon's real command handlers: any JSON value as the args of
  every command gives a reply (ok, or an error in words), never a crash or a logged
  traceback, and the connection and other clients keep working.

Detection has its own: tests/test_detect_properties.py, tests/test_detect_hostile.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import math
import os
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobtunnel.daemon.api.client import ControlClient
from jobtunnel.daemon.config import Config, ConfigError, load_config
from jobtunnel.daemon.engine.options import forwards_of, tunnel_options
from jobtunnel.daemon.process import service as service_module
from jobtunnel.daemon.process.service import Service

from tests.helpers.asyncrun import run

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- config -----------------------------------------------------------------------------

# Every section and key the config schema has (a key added later is fuzzed too).
SECTIONS = {
    section.name: [f.name for f in dataclasses.fields(getattr(Config(), section.name))]
    for section in dataclasses.fields(Config)
}

tricky_text = st.text(max_size=40) | st.sampled_from(
    [
        "",
        "\x00",
        "a{4294967296}",
        "(?:" * 500 + "a" + ")" * 500,
        "(a)",
        "[",
        "8888",
        "0",
        "65536",
        "127.0.0.1:8888:localhost:8888",
        "*:1:h:1",
        "[::1]:8888:h:8888",
        "::1%lo",
        "localhost",
        "auto",
        "~/x",
        "../../etc/passwd",
    ]
)
scalars = (
    st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | tricky_text
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
keys = st.sampled_from(sorted({k for ks in SECTIONS.values() for k in ks})) | st.text(
    alphabet=string.ascii_letters + "_-", min_size=1, max_size=10
)
documents = st.dictionaries(
    st.sampled_from(sorted(SECTIONS)) | st.text(string.ascii_lowercase, min_size=1, max_size=8),
    st.dictionaries(keys, values, max_size=6) | values,
    max_size=6,
)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is JSON's, for these characters
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    out = []
    for name, body in doc.items():
        if isinstance(body, dict):
            out.append(f"[{json.dumps(name)}]")
            out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items()]
        else:
            out.insert(0, f"{json.dumps(name)} = {toml_value(body)}")
    return "\n".join(out) + "\n"


def usable(config: Config) -> None:
    """What the daemon builds from an accepted config must build."""
    tunnel_options(config)
    forwards_of(config)
    for seconds in (
        config.daemon.probe_interval,
        config.daemon.rescan_interval,
        config.daemon.snapshot_interval,
    ):
        datetime.timedelta(seconds=seconds)  # APScheduler's interval trigger
    for name in (*config.watch.folders, *config.ssh.identity_files):
        os.path.exists(Path(name).expanduser())


def load_text(tmp: Path, data: bytes) -> None:
    path = tmp / "config.toml"
    path.write_bytes(data)
    try:
        config, _ = load_config(path)
    except ConfigError as exc:
        assert exc.problems and str(path) in str(exc)
        return
    usable(config)


_TMP = Path(tempfile.mkdtemp(prefix="jobtunnel-fuzz-"))


@FUZZ
@given(doc=documents)
def test_generated_toml_gives_a_config_or_a_config_error(doc: dict[str, Any]) -> None:
    load_text(_TMP, toml_document(doc).encode())


@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_give_a_config_or_a_config_error(data: bytes) -> None:
    load_text(_TMP, data)


@pytest.mark.parametrize(
    "text",
    [
        "[detect]\nusername_pattern = 'a{4294967296}'\n",  # OverflowError in re
        "[detect]\nusername_pattern = '" + "(?:" * 2000 + "a" + ")" * 2000 + "'\n",
        "[daemon]\nprobe_interval = inf\n",  # the scheduler cannot hold it
        "[daemon]\nrescan_interval = 1e308\n",
        "[ssh]\nkeepalive_interval = inf\n",
        '[watch]\nfolders = ["a\\u0000b"]\n',  # no path can hold a NUL
        '[ssh]\nidentity_files = ["\\u0000"]\n',
    ],
)
def test_values_that_passed_the_check_but_broke_the_daemon(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].line == 2


# -- control API, through the daemon's real handlers ----------------------------------


class InertTunnel:
    """Stands in for Tunnel so that a fuzzed ``add`` can never reach the network."""

    def __init__(self, user: str, host: str, port: int, *args: Any, **kwargs: Any) -> None:
        self.name = f"{user}@{host}:{port}"
        self.state = type("S", (), {"value": "stopped"})()

    def subscribe(self, callback: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def end(self, reason: str = "") -> None:
        pass

    def reconnect_now(self) -> None:
        pass

    def accept_new_host_key(self, fingerprint: str | None = None) -> None:
        pass

    def assigned_ports(self) -> dict[str, int]:
        return {}

    def status(self) -> Any:
        return None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False)
    | tricky_text
    | st.sampled_from(["root@127.0.0.1:22", "a@b", "a@[::1]:x", "/", "/dev/zero", "~", "@"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
arg_objects = st.dictionaries(
    st.sampled_from(["name", "target", "all"]) | st.text(max_size=6), json_values, max_size=4
)


def test_fuzzed_args_to_every_daemon_command_get_replies(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(service_module, "Tunnel", InertTunnel)

    async def body() -> int:
        service = Service(Config())
        # `stop` would end the service under test; its handler only schedules that.
        service.request_stop = lambda: None  # type: ignore[method-assign]
        commands = sorted(service.handlers.table())
        await service.control.start()
        path = service.control.path
        replies = 0
        try:
            async with ControlClient(path, "unix") as bystander:
                reader, writer = await asyncio.open_unix_connection(str(path))

                @settings(
                    max_examples=150,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow],
                )
                @given(cmd=st.sampled_from(commands), args=arg_objects | json_values)
                def one(cmd: str, args: Any) -> None:
                    nonlocal replies
                    line = json.dumps({"v": 1, "id": 7, "cmd": cmd, "args": args}).encode()
                    reply = asyncio.run_coroutine_threadsafe(
                        _ask(reader, writer, line), loop
                    ).result(30)
                    assert reply["id"] in (7, None) and reply["v"] == 1
                    assert reply["ok"] is True or isinstance(reply["error"], str)
                    replies += 1

                loop = asyncio.get_running_loop()
                await asyncio.to_thread(one)
                # The fuzzed connection and a bystander both still work.
                hello = await _ask(reader, writer, b'{"v": 1, "id": 1, "cmd": "hello"}')
                assert hello["ok"] is True
                assert "daemon" in await bystander.request("status")
                writer.close()
        finally:
            await service.control.close()
        return replies

    with caplog.at_level(logging.WARNING):
        replies = run(body(), timeout=120)
    assert replies >= 150
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks][:5]


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> Any:
    writer.write(line + b"\n")
    for _ in range(1000):  # a fuzzed `subscribe` makes status events arrive in between
        reply = json.loads(await asyncio.wait_for(reader.readline(), 20))
        if "event" not in reply:
            return reply
    raise AssertionError("no reply among 1000 events")
