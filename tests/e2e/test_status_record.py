"""The real daemon's ``status --json`` has the structure of the recorded payloads in
``tests/data/status/*.json`` (the tray's and the CLI's unit tests read those), so a key
renamed or retyped in the daemon breaks this test, and the recordings then break the
clients' tests until they follow.

Structure means the keys and the JSON type of the value at each path (list items merged),
not the values: pids, ports, times and paths differ on every run. Every live payload must
also fit :mod:`jobtunnel.daemon.api.schema`.

``JOBTUNNEL_RECORD_STATUS=1`` rewrites the files from the live daemon instead (volatile
values scrubbed: the home folder becomes ``/home/u``, the pid 4242).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.api.schema import from_wire
from jobtunnel.daemon.core.jsontype import json_kind

from tests.helpers.daemonproc import Daemon, Env, endpoint_up, wait_for
from tests.helpers.rescale_api import FakeRescale, node, use_api

RECORDED = Path(__file__).resolve().parents[1] / "data" / "status"
RECORDING = os.environ.get("JOBTUNNEL_RECORD_STATUS") == "1"
FAKE_HOME = "/home/u"
FAKE_PID = 4242


def structure(
    value: object, path: str = "", into: dict[str, set[str]] | None = None
) -> dict[str, set[str]]:
    """Path -> the JSON types seen there; list items share the path ``name[]``."""
    out: dict[str, set[str]] = {} if into is None else into
    out.setdefault(path or "(top)", set()).add(json_kind(value))
    if isinstance(value, dict):
        for key, inner in value.items():
            structure(inner, f"{path}.{key}" if path else key, out)
    elif isinstance(value, list):
        for inner in value:
            structure(inner, f"{path}[]", out)
    return out


def differences(recorded: object, live: object) -> list[str]:
    want, got = structure(recorded), structure(live)
    out = [f"{p}: recorded, not in the live payload" for p in sorted(want.keys() - got.keys())]
    out += [f"{p}: in the live payload, not recorded" for p in sorted(got.keys() - want.keys())]
    out += [
        f"{p}: recorded {sorted(want[p])}, live {sorted(got[p])}"
        for p in sorted(want.keys() & got.keys())
        if want[p] != got[p]
    ]
    return out


def scrub(value: Any, env: Env) -> Any:
    """Volatile values replaced, so that a recording reads the same on every machine."""
    if isinstance(value, dict):
        return {
            k: FAKE_PID if k == "pid" and isinstance(v, int) else scrub(v, env)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, env) for v in value]
    if isinstance(value, str):
        return value.replace(str(env.home), FAKE_HOME)
    return value


def asked(status: dict[str, Any]) -> bool:
    """Every endpoint is up and each forward's TLS probe has answered (``tls`` is null
    until then: a payload taken earlier would record another type)."""
    eps = status["endpoints"]
    return bool(eps) and all(
        ep["state"] == "up"
        and all(f["tls"] is not None for f in ep["forwards"] if not f["dynamic"])
        for ep in eps
    )


def settled(env: Env) -> dict[str, Any] | None:
    """The status once :func:`asked` holds for it."""
    status = env.status()
    return status if asked(status) else None


def check(name: str, live: dict[str, Any], env: Env, problems: list[str]) -> None:
    from_wire(live)  # whatever is recorded must fit the schema
    path = RECORDED / f"{name}.json"
    if RECORDING:
        RECORDED.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scrub(live, env), indent=2) + "\n")
        return
    if not path.exists():
        problems.append(f"{path.name}: not recorded; run with JOBTUNNEL_RECORD_STATUS=1")
        return
    recorded = json.loads(path.read_text())
    problems += [f"{path.name}: {d}" for d in differences(recorded, live)]


def test_the_structure_compare_sees_renames_and_retypes() -> None:
    base = {"endpoints": [{"port": 22, "forwards": [{"local_port": None}]}]}
    assert differences(base, json.loads(json.dumps(base))) == []
    renamed = {"endpoints": [{"ssh_port": 22, "forwards": [{"local_port": None}]}]}
    assert differences(base, renamed) == [
        "endpoints[].port: recorded, not in the live payload",
        "endpoints[].ssh_port: in the live payload, not recorded",
    ]
    retyped = {"endpoints": [{"port": "22", "forwards": [{"local_port": 5}]}]}
    assert differences(base, retyped) == [
        "endpoints[].forwards[].local_port: recorded ['null'], live ['int']",
        "endpoints[].port: recorded ['int'], live ['string']",
    ]


@pytest.mark.sshd
@pytest.mark.timeout(120)
def test_live_status_has_the_recorded_structure(env: Env, daemons: Callable[[], Daemon]) -> None:
    # Discovery on (the helpers turn it off): the payloads carry services.
    env.config.write_text(
        env.config.read_text().replace("discover_interval = 0", "discover_interval = 5")
    )
    daemons()
    problems: list[str] = []
    check("empty", env.status(), env, problems)

    env.logs.mkdir(parents=True, exist_ok=True)
    (env.logs / "job.log").write_text("Starting cluster\n" + env.log_line())
    wait_for(lambda: endpoint_up(env), "the tunnel to come up")
    # Discovery's looks (the test sshd itself listens on loopback): services filled, and
    # the configured forward's HTTP service probed, so it has a URL (the others have none).
    up = wait_for(
        lambda: (
            (st := settled(env)) and any(s["url"] for s in st["endpoints"][0]["services"]) and st
        ),
        "the forwarded HTTP service found and probed",
    )
    check("up", up, env, problems)

    name = f"{env.sshd.user}@127.0.0.1:{env.sshd.port}"
    assert env.cli("pause", name).returncode == 0
    wait_for(lambda: env.status()["endpoints"][0]["state"] == "paused", "the pause")
    check("paused", env.status(), env, problems)

    # A changed host key: refused, and not retried by itself.
    assert env.cli("resume", name).returncode == 0
    wait_for(lambda: settled(env), "the tunnel after resume")
    env.sshd.new_host_key()
    env.sshd.restart()
    refused = wait_for(
        lambda: [
            s for s in [env.status()] if s["endpoints"][0]["last_error_kind"] == "host_key_changed"
        ],
        "the daemon to refuse the changed host key",
    )[0]
    check("refused-key", refused, env, problems)
    assert not problems, "\n".join(problems)


@pytest.mark.sshd
@pytest.mark.timeout(120)
def test_live_status_with_a_pending_move(env: Env, daemons: Callable[[], Daemon]) -> None:
    """A job that a second file reports at another address: the move waits for the user."""
    text = env.config.read_text()
    env.config.write_text(
        text.replace(
            f"username_pattern = '{env.sshd.user}'", "username_pattern = 'uprod_[a-z0-9]+'"
        )
    )
    daemons()
    env.logs.mkdir(parents=True, exist_ok=True)
    older = env.logs / "job.log"
    older.write_text(f"ssh -p {env.sshd.port} uprod_rec1@127.0.0.1\n")
    os.utime(older, (1_700_000_000, 1_700_000_000))
    wait_for(lambda: env.status()["endpoints"], "the job's endpoint")
    (env.logs / "newer.log").write_text("Notebook: ssh -p 32100 uprod_rec1@127.0.0.2\n")
    live = wait_for(
        lambda: [s for s in [env.status()] if s["endpoints"][0]["pending_move"]],
        "the pending move",
    )[0]
    problems: list[str] = []
    check("pending-move", live, env, problems)
    assert not problems, "\n".join(problems)


@pytest.mark.sshd
@pytest.mark.timeout(120)
def test_live_status_with_the_rescale_api(env: Env, daemons: Callable[[], Daemon]) -> None:
    """A job the Rescale API lists, its tunnel up: job names, links and the API's health."""
    with FakeRescale() as api:
        api.job("OsKBd", "Executing", "Started", name="the FOAM 2")
        api.job("XZFQV", "Queued", "Not Started", name="the FOAM 3")
        api.instances("OsKBd", [node("127.0.0.1", env.sshd.user, env.sshd.port)])
        use_api(env, api)
        daemons()
        live = wait_for(lambda: settled(env), "the tunnel from the API")
        live = json.loads(json.dumps(live).replace(api.url, "https://platform.rescale.com"))
        problems: list[str] = []
        check("rescale", live, env, problems)
        assert not problems, "\n".join(problems)
