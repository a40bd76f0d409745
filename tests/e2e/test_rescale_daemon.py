"""The real daemon with the Rescale API as its source: a fake API on loopback whose job's
master node is the suite's real sshd (so the API's ``username`` is the local user)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.daemonproc import Daemon, Env, endpoint_up, get, refused, wait_for
from tests.helpers.rescale_api import KEY, FakeRescale, node, use_api

pytestmark = pytest.mark.sshd

JOB = "OsKBd"


@pytest.fixture
def api() -> Iterator[FakeRescale]:
    with FakeRescale() as fake:
        yield fake


def _job_endpoint(env: Env) -> dict[str, Any] | None:
    for ep in env.status()["endpoints"]:
        if ep["job_id"] == JOB:
            return ep  # type: ignore[no-any-return]
    return None


def test_a_job_started_in_the_api_gets_its_tunnel_then_ends_with_the_job(
    env: Env, api: FakeRescale
) -> None:
    use_api(env, api)
    api.job(JOB, "Queued", "Not Started", name="the FOAM 2")
    daemon = Daemon(env, verbose=True)
    try:
        daemon.wait_ready()
        wait_for(
            lambda: (env.status()["daemon"].get("rescale") or {}).get("state") == "ok", "API ok"
        )
        assert list(env.logs.glob("*")) == []  # no log file at all
        api.job(JOB, "Executing", "Started")
        api.instances(JOB, [node("127.0.0.1", env.sshd.user, env.sshd.port)])
        # No refresh: the fast interval (5 s) finds it.
        ep = wait_for(lambda: endpoint_up(env), "the tunnel from the API", timeout=30)
        assert ep["job_id"] == JOB and ep["job_name"] == "the FOAM 2"
        assert ep["job_url"] == f"{api.url}/jobs/{JOB}/"
        assert ep["source_info"]["kind"] == "rescale-api" and ep["source_info"]["verified"]
        port = ep["forwards"][0]["local_port"]
        assert get(port).startswith(b"hello from the cluster")
        rescale = env.status()["daemon"]["rescale"]
        assert rescale["running"] == 1 and rescale["base"] == api.url
        assert "RESCALE_API_KEY" in rescale["key_from"]

        # A log naming another address for the same job is refused, with the reason.
        env.logs.mkdir(exist_ok=True)
        (env.logs / f"job_{JOB}.log").write_text(f"ssh -p 2 uprod_{JOB}@127.0.0.1\n")
        wait_for(lambda: "contradicts" in daemon.text(), "the refusal in the log")
        line = next(ln for ln in daemon.text().splitlines() if "contradicts" in ln)
        assert f"uprod_{JOB}@127.0.0.1:2" in line and "rescale-api" in line
        ep = _job_endpoint(env)
        assert ep is not None and ep["port"] == env.sshd.port and ep["pending_move"] is None

        # `rescale refresh` polls at once.
        api.job(JOB, "Completed", "Stopped")
        result = env.cli("rescale", "refresh")
        assert result.returncode == 0, result.stderr
        wait_for(lambda: (_job_endpoint(env) or {}).get("state") == "ended", "ended", timeout=15)
        assert refused(port)
        time.sleep(2)  # no retry follows
        assert (_job_endpoint(env) or {}).get("state") == "ended" and refused(port)
    finally:
        daemon.kill()
    assert "DEBUG" in daemon.text()
    searched = 0
    for path in sorted(env.home.rglob("*")):
        if path.is_file() and not path.is_symlink():
            searched += 1
            assert KEY.encode() not in path.read_bytes(), f"the API key is in {path}"
    assert searched >= 4
    # The key went to the API, and only there.
    assert {r.authorization for r in api.requests} == {f"Token {KEY}"}


def test_an_ended_job_is_not_reopened_at_restart_and_a_refused_key_stops_polling(
    env: Env, api: FakeRescale
) -> None:
    use_api(env, api)
    api.job(JOB, "Executing", "Started")
    api.instances(JOB, [node("127.0.0.1", env.sshd.user, env.sshd.port)])
    daemon = Daemon(env)
    try:
        daemon.wait_ready()
        wait_for(lambda: endpoint_up(env), "the tunnel from the API", timeout=30)
        api.job(JOB, "Executing", "Stopped")  # the cluster stopped
        env.cli("rescale", "refresh")
        wait_for(lambda: (_job_endpoint(env) or {}).get("state") == "ended", "ended")
    finally:
        assert daemon.kill(signal.SIGTERM) == 0
    api.key = "another-key"  # the old one is refused from now on
    daemon = Daemon(env)
    try:
        daemon.wait_ready()
        wait_for(lambda: env.status()["daemon"]["rescale"]["state"] == "stopped", "polling stopped")
        status = env.status()
        assert "401" in status["daemon"]["rescale"]["error"]
        assert (_job_endpoint(env) or {}).get("state") == "ended"
        count = api.count()
        time.sleep(1.5)
        assert api.count() == count  # no more requests with a refused key
    finally:
        daemon.kill()
