"""The Rescale API client and poller against a fake API on loopback (real HTTP and TLS)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from jobtunnel.daemon.config import RescaleConfig
from jobtunnel.daemon.core.detect import Endpoint
from jobtunnel.daemon.core.rescale import Job, ShapeError
from jobtunnel.daemon.engine.rescale_api import RescaleClient, RescaleError
from jobtunnel.daemon.engine.rescale_credentials import Credentials
from jobtunnel.daemon.process.rescale import RescalePoller

from tests.helpers.certs import self_signed
from tests.helpers.rescale_api import KEY, FakeRescale, Fault, node


@pytest.fixture
def fake() -> Iterator[FakeRescale]:
    with FakeRescale() as api:
        yield api


def client(fake: FakeRescale, key: str = KEY, **kw: object) -> RescaleClient:
    return RescaleClient(Credentials(key, fake.url, "test"), **kw)  # type: ignore[arg-type]


async def _jobs(c: RescaleClient) -> list[Job]:
    async with c:
        return await c.jobs()


def test_job_list_follows_pages_with_the_token_header(fake: FakeRescale) -> None:
    for i in range(5):
        fake.job(f"J{i}", "Executing", "Started", name=f"run {i}")
    jobs = asyncio.run(_jobs(client(fake, page_size=2)))
    assert sorted(j.id for j in jobs) == [f"J{i}" for i in range(5)]
    assert fake.count("/api/v2/jobs/") == 3
    assert {r.authorization for r in fake.requests} == {f"Token {KEY}"}
    assert fake.requests[0].query["page_size"] == ["2"]


def test_a_long_history_of_ended_jobs_costs_one_request(fake: FakeRescale) -> None:
    for i in range(5):
        fake.job(f"old{i}", "Completed", "Stopped")
    fake.job("new", "Executing", "Started")  # newest first, as Rescale lists them
    jobs = asyncio.run(_jobs(client(fake, page_size=2)))
    assert [j.id for j in jobs] == ["new", "old4"] and fake.count() == 1


def test_jwt_key_is_sent_as_bearer() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    with FakeRescale(key=jwt) as api:
        fake_jobs = asyncio.run(_jobs(client(api, key=jwt)))
        assert fake_jobs == [] and api.requests[0].authorization == f"Bearer {jwt}"


def _error(fake: FakeRescale, fault: Fault, **kw: object) -> RescaleError:
    fake.fail(fault)
    with pytest.raises(RescaleError) as err:
        asyncio.run(_jobs(client(fake, **kw)))
    return err.value


def test_http_failures_become_policy_errors(fake: FakeRescale) -> None:
    e = _error(fake, Fault("/api/v2/jobs/", 401, body=b'{"detail": "Invalid token."}'))
    assert e.error.kind == "auth" and "401" in str(e) and "rescale login" in str(e)
    assert KEY not in str(e)
    e = _error(fake, Fault("/api/v2/jobs/", 429, {"Retry-After": "7"}))
    assert e.error.kind == "rate" and e.error.retry_after == 7
    assert _error(fake, Fault("/api/v2/jobs/", 503)).error.kind == "server"
    e = _error(fake, Fault("/api/v2/jobs/", 200, delay=2.0), timeout=0.5)
    assert e.error.kind == "timeout"
    e = _error(fake, Fault("/api/v2/jobs/", 200, body=b"<html>proxy error</html>"))
    assert e.error.kind == "shape" and "not JSON" in str(e)


def test_malformed_answers_name_the_field(fake: FakeRescale) -> None:
    fake.fail(Fault("/api/v2/jobs/", 200, body=b'{"results": [{"id": "a", "jobStatus": 3}]}'))
    with pytest.raises(ShapeError, match=r"results\[0\].jobStatus: expected an object"):
        asyncio.run(_jobs(client(fake)))


def test_next_link_to_another_host_is_not_followed(fake: FakeRescale) -> None:
    job = {"id": "a", "name": "", "jobStatus": {"content": "Executing"}}
    body = {"count": 9, "next": "https://evil.example/api/v2/jobs/?page=2", "results": [job]}
    fake.fail(Fault("/api/v2/jobs/", 200, body=json.dumps(body).encode()))
    with pytest.raises(ShapeError, match="points away from"):
        asyncio.run(_jobs(client(fake)))
    assert fake.count() == 1


def test_instances_404_and_shapes(fake: FakeRescale) -> None:
    fake.job("A", "Executing", "Started")
    fake.instances("A", None)

    async def go() -> RescaleError:
        async with client(fake) as c:
            with pytest.raises(RescaleError) as err:
                await c.instances("A")
            return err.value

    assert asyncio.run(go()).status == 404


def test_plain_http_is_refused_except_to_loopback() -> None:
    with pytest.raises(ValueError, match="must use https"):
        RescaleClient(Credentials(KEY, "http://platform.rescale.com", "test"))


def test_tls_is_verified_against_the_system_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = self_signed(tmp_path)
    with FakeRescale(cert=cert) as api:
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "empty.pem"))
        (tmp_path / "empty.pem").write_text("")
        with pytest.raises(RescaleError, match="TLS certificate not trusted"):
            asyncio.run(_jobs(client(api)))
        # What a company CA installed into the system store looks like to OpenSSL.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
        assert asyncio.run(_jobs(client(api))) == []


def test_proxy_from_the_environment_is_used_and_no_proxy_honoured(
    fake: FakeRescale, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeRescale() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        asyncio.run(_jobs(client(fake)))
        assert proxy.count("/api/v2/jobs/") == 1 and fake.count() == 0
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        asyncio.run(_jobs(client(fake)))
        assert fake.count() == 1 and proxy.count() == 1


# -- the poller --------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.endpoints: list[tuple[Endpoint, Job]] = []
        self.ended: list[tuple[Job, str]] = []

    async def on_endpoint(self, ep: Endpoint, job: Job) -> None:
        self.endpoints.append((ep, job))

    async def on_ended(self, job: Job, reason: str) -> None:
        self.ended.append((job, reason))


def poller(fake: FakeRescale, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> RescalePoller:
    monkeypatch.setenv("RESCALE_API_KEY", KEY)
    monkeypatch.setattr("jobtunnel.daemon.engine.rescale_credentials._from_keyring", lambda: None)
    return RescalePoller(
        RescaleConfig(url=fake.url, fast_interval=5),
        allow_private=True,
        on_endpoint=sink.on_endpoint,
        on_ended=sink.on_ended,
        has_endpoint=lambda: {ep.job_id for ep, _ in sink.endpoints if ep.job_id},
    )


def test_poller_finds_the_master_then_sees_the_job_end(
    fake: FakeRescale, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = Sink()
    fake.job("OsKBd", "Queued", "Not Started", name="the FOAM 2")

    async def go() -> None:
        p = poller(fake, sink, monkeypatch)
        p.start()
        try:
            await _until(lambda: p.state.checked_at is not None)
            assert p.view().state == "ok" and p.state.wait(time.monotonic()) > 4  # fast: 5 s
            fake.job("OsKBd", "Executing", "Started")
            fake.instances(
                "OsKBd",
                [node("10.1.1.2", "uprod_OsKBd", 22, "MPI_SLAVE"), node("127.0.0.1", "u_x", 2222)],
            )
            p.refresh()
            await _until(lambda: sink.endpoints)
            ep, job = sink.endpoints[0]
            assert (ep.user, ep.host, ep.port, ep.job_id) == ("u_x", "127.0.0.1", 2222, "OsKBd")
            assert job.name == "the FOAM 2" and p.job_name("OsKBd") == "the FOAM 2"
            assert p.job_url("OsKBd") == f"{fake.url}/jobs/OsKBd/"
            fake.job("OsKBd", "Completed", "Stopped")
            p.refresh()
            await _until(lambda: sink.ended)
            assert sink.ended[0][1] == "job Completed on Rescale"
        finally:
            await p.stop()

    asyncio.run(go())
    assert fake.count("/api/v2/jobs/OsKBd/instances/") == 1


def test_poller_stops_on_401_and_falls_back_on_404(
    fake: FakeRescale, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = Sink()
    fake.job("A", "Executing", "Started")
    fake.instances("A", None)
    fake.job("B", "Executing", "Started")
    fake.fail(Fault("/api/v2/jobs/B/instances/", 403))

    async def go() -> None:
        p = poller(fake, sink, monkeypatch)
        p.start()
        try:
            await _until(lambda: {"A", "B"} <= p.state.no_instances)
            assert p.state.stopped is None  # a 403 for one job's instances stops nothing
            assert p.state.wait(time.monotonic()) > 50  # nothing left to ask fast about
            fake.fail(Fault("/api/v2/jobs/", 401, times=99))
            p.refresh()
            await _until(lambda: p.state.stopped is not None)
            view = p.view()
            assert view.state == "stopped" and "401" in (view.error or "")
            before = fake.count()
            await asyncio.sleep(0.5)
            assert fake.count() == before
        finally:
            await p.stop()

    asyncio.run(go())
    assert sink.endpoints == []


async def _until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def test_httpx_is_the_client() -> None:
    assert httpx.__version__
