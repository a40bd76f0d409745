"""The Rescale API's shapes, the poll policy and its decisions, without sockets."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jobtunnel.daemon.core.book import Book, Source
from jobtunnel.daemon.core.detect import Endpoint
from jobtunnel.daemon.core.rescale import (
    ApiError,
    Instance,
    Job,
    PollPolicy,
    PollState,
    ShapeError,
    auth_header,
    endpoint_of,
    master_of,
    parse_instances,
    parse_jobs,
    retry_after,
)


def job_json(
    jid: str, status: str = "Executing", cluster: str = "Started", name: str = "the FOAM 2"
) -> dict[str, Any]:
    return {
        "id": jid,
        "name": name,
        "dateInserted": "2015-03-13T23:43:21.223052Z",
        "jobStatus": {"content": status, "labelClass": "", "useLabel": False},
        "clusterStatusDisplay": {"content": cluster, "labelClass": "", "useLabel": False},
        "owner": "mark@rescale.com",
    }


# The documented sample: the job list of Rescale's API reference.
SAMPLE = {
    "count": 3,
    "next": None,
    "previous": None,
    "results": [
        job_json("OsKBd", "Completed", "Stopped"),
        job_json("XZFQV", "Completed", "Stopped", "the FOAM"),
        {**job_json("abcde", "Pending", ""), "clusterStatusDisplay": {"content": ""}},
    ],
}


def test_documented_job_list_parses() -> None:
    page = parse_jobs(SAMPLE)
    assert page.count == 3 and page.next is None
    assert [j.id for j in page.jobs] == ["OsKBd", "XZFQV", "abcde"]
    foam = page.jobs[0]
    assert foam.name == "the FOAM 2" and foam.label == "the FOAM 2 (OsKBd)"
    assert foam.ended and not foam.cluster_up
    assert not page.jobs[2].ended


def test_next_page_is_followed_by_url() -> None:
    page = parse_jobs({**SAMPLE, "next": "https://platform.rescale.com/api/v2/jobs/?page=2"})
    assert page.next == "https://platform.rescale.com/api/v2/jobs/?page=2"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "(top level): expected an object, got list"),
        ({"count": 1}, "results: missing"),
        ({"results": {}}, "results: expected a list, got object"),
        ({"results": [{"name": "x"}]}, "results[0].id: missing"),
        ({"results": [{"id": 7}]}, "results[0].id: expected a string, got int"),
        (
            {"results": [{**job_json("a"), "jobStatus": {"content": None}}]},
            "results[0].jobStatus.content: expected a string, got null",
        ),
        (
            {"results": [{**job_json("a"), "jobStatus": "Executing"}]},
            "results[0].jobStatus: expected an object, got string",
        ),
        ({"results": [], "next": 2}, "next: expected a URL or null, got int"),
    ],
)
def test_malformed_job_lists_name_the_field(payload: object, message: str) -> None:
    with pytest.raises(ShapeError) as err:
        parse_jobs(payload)
    assert str(err.value) == message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "name",
                    "results",
                    "next",
                    "count",
                    "jobStatus",
                    "content",
                    "clusterStatusDisplay",
                    "publicIp",
                    "username",
                    "sshPort",
                    "role",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_parses_or_raises_shape_error(obj: object) -> None:
    for parse in (parse_jobs, parse_instances):
        try:
            parse(obj)  # type: ignore[operator]
        except ShapeError as exc:
            assert str(exc)


def node(
    ip: str | None, role: str = "", user: str | None = "uprod_OsKBd", port: Any = 22
) -> dict[str, Any]:
    return {"publicIp": ip, "username": user, "sshPort": port, "role": role}


def test_master_is_the_only_node_or_mpi_master() -> None:
    nodes, _ = parse_instances({"count": 1, "next": None, "results": [node("3.80.3.168")]})
    assert master_of(nodes) == Instance("3.80.3.168", "uprod_OsKBd", 22, "")
    nodes, _ = parse_instances(
        [node("10.0.0.2", "MPI_SLAVE"), node("3.80.3.168", "MPI_MASTER", port="32100")]
    )
    master = master_of(nodes)
    assert master is not None and (master.public_ip, master.ssh_port) == ("3.80.3.168", 32100)


def test_booting_master_is_not_ready_and_unmarked_cluster_is_an_error() -> None:
    assert master_of([]) is None
    assert master_of(parse_instances([node(None)])[0]) is None
    assert master_of(parse_instances([node("3.1.1.1", user=None)])[0]) is None
    with pytest.raises(ShapeError, match="role: none of the 2 nodes is MPI_MASTER"):
        master_of(parse_instances([node("3.1.1.1"), node("3.1.1.2")])[0])
    with pytest.raises(ShapeError, match=r"results\[0\].sshPort"):
        parse_instances([node("3.1.1.1", port=70000)])


def test_username_comes_from_the_api_never_guessed() -> None:
    job = Job("OsKBd", "the FOAM 2", "Executing", "Started")
    ep = endpoint_of(job, Instance("3.80.3.168", "udeprod_OsKBd", 22, "MPI_MASTER"))
    assert (ep.user, ep.host, ep.port, ep.job_id) == ("udeprod_OsKBd", "3.80.3.168", 22, "OsKBd")


def test_auth_header_token_or_bearer_for_jwt() -> None:
    assert auth_header("abc123") == "Token abc123"
    assert auth_header("eyJhbGciOi.eyJzdWIi.c2ln") == "Bearer eyJhbGciOi.eyJzdWIi.c2ln"
    assert auth_header("ey.only") == "Token ey.only"


@given(st.one_of(st.none(), st.text(max_size=12)))
def test_retry_after_is_bounded(value: str | None) -> None:
    assert 0 <= retry_after(value, 30.0) <= 3600


# -- the poll policy ----------------------------------------------------------------


def test_slow_when_nothing_starts_fast_while_a_job_waits() -> None:
    state = PollState(now=0)
    assert state.wait(0) == 0
    plan = state.listed(0, parse_jobs(SAMPLE).jobs[:2], set())
    assert state.wait(0) == 60 and not plan.instances
    state.listed(60, [Job("a", "A", "Queued", "Not Started")], set())
    assert state.wait(60) == 10
    plan = state.listed(70, [Job("a", "A", "Executing", "Started")], set())
    assert [j.id for j in plan.instances] == ["a"] and state.wait(70) == 10
    state.found(plan.instances[0])
    plan = state.listed(80, [Job("a", "A", "Executing", "Started")], set())
    assert not plan.instances and state.wait(80) == 60


def test_jobs_with_an_endpoint_or_no_instances_are_not_asked_about() -> None:
    state = PollState(now=0)
    jobs = [Job("a", "A", "Executing", "Started"), Job("b", "B", "Executing", "Starting")]
    state.instances_missing(jobs[1])
    plan = state.listed(0, jobs, {"a"})
    assert plan.instances == [] and state.wait(0) == 60


def test_ended_jobs_are_reported_once() -> None:
    state = PollState(now=0)
    assert state.listed(0, [Job("a", "A", "Executing", "Started")], set()).ended == []
    ended = [Job("a", "A", "Executing", "Stopped")]
    assert [j.id for j in state.listed(10, ended, set()).ended] == ["a"]
    assert state.listed(20, ended, set()).ended == []
    for status in ("Completed", "Stopped", "Failed"):
        assert Job("x", "", status, "Started").ended


def test_refresh_polls_at_once_and_restarts_after_auth_failure() -> None:
    state = PollState(now=0)
    state.listed(0, [], set())
    state.refresh(5)
    assert state.wait(5) == 0
    state.failed(5, ApiError("auth", "401: the API key was refused"))
    assert state.wait(6) == float("inf") and state.stopped == "401: the API key was refused"
    assert not state.may_send(6)
    state.refresh(7)
    assert state.wait(7) == 0


def test_automatic_refreshes_keep_a_fast_interval_apart() -> None:
    """Wakes and network changes (a flapping Wi-Fi, a clock that keeps jumping) poll at
    once but not more often than the fast interval; the user's refresh always does."""
    policy = PollPolicy(slow=60, fast=10)
    state = PollState(policy, now=0)
    polls = []
    now = 0.0
    while now < 600:
        state.refresh(now, automatic=True)  # one every 2 s for 10 minutes
        if state.wait(now) == 0:
            state.sent(now)
            state.listed(now, [], set())
            state.settle(now)
            polls.append(now)
        now += 2
    assert len(polls) == 60 and all(b - a >= 10 for a, b in itertools.pairwise(polls))
    now = polls[-1] + 3
    state.refresh(now, automatic=True)
    assert state.wait(now) == 7
    state.refresh(now)
    assert state.wait(now) == 0
    # A refused key stays refused until the user acts.
    state.failed(now, ApiError("auth", "401"))
    state.refresh(now + 100, automatic=True)
    assert state.wait(now + 100) == float("inf")


def test_retry_after_and_backoff() -> None:
    state = PollState(now=0)
    state.failed(0, ApiError("rate", "429", retry_after=42))
    assert state.wait(0) == 42 and not state.may_send(41)
    state.refresh(1)  # refresh does not jump a Retry-After
    assert state.wait(1) == 41
    waits = []
    for _ in range(8):
        state.failed(100, ApiError("server", "500"))
        waits.append(state.wait(100))
    assert waits == sorted(waits) and waits[0] == 10 and waits[-1] == 600


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 30), st.sampled_from(["refresh", "poll", "fail"])), max_size=200
    )
)
def test_never_more_than_the_budget_per_minute(steps: list[tuple[float, str]]) -> None:
    """Whatever happens (refreshes, errors), requests sent only when allowed stay within
    the per-minute budget."""
    policy = PollPolicy()
    state = PollState(policy, now=0)
    now, sent = 0.0, []
    for dt, what in steps:
        now += dt
        if what == "refresh":
            state.refresh(now, automatic=len(sent) % 2 == 0)
        if state.wait(now) == 0 and state.may_send(now):
            state.sent(now)
            sent.append(now)
            if what == "fail":
                state.failed(now, ApiError("timeout", "timed out"))
            else:
                state.listed(now, [Job("a", "A", "Queued", "")], set())
    for t in sent:
        assert sum(1 for s in sent if t <= s < t + 60) <= policy.max_per_minute


def test_idle_poll_rate_is_at_most_sixty_an_hour() -> None:
    state = PollState(now=0)
    now, count = 0.0, 0
    while now < 3600:
        now += state.wait(now)
        if now >= 3600:
            break
        state.sent(now)
        count += 1
        state.listed(now, parse_jobs(SAMPLE).jobs[:2], set())
    assert count <= 60


# -- the book and a verified source -------------------------------------------------


def ep(host: str, user: str = "uprod_OsKBd", port: int = 22, source: str = "/l.log") -> Endpoint:
    return Endpoint(user, host, port, "OsKBd", source, 3)


def test_api_moves_a_job_and_refuses_a_contradicting_log() -> None:
    book = Book()
    book.found(ep("3.1.1.1"), Source.file("/l.log", 3, 100), 100)
    plan = book.found(ep("3.2.2.2", source="rescale-api"), Source.api(200), 200)
    rec = book.by_job("OsKBd")
    assert rec is not None and rec.host == "3.2.2.2" and rec.verified
    assert plan.open == [rec.key]
    plan = book.found(ep("3.3.3.3"), Source.file("/later.log", 9, 300), 300)
    assert not plan and rec.move is None and rec.host == "3.2.2.2"
    assert any("refused" in n and "contradicts" in n and "rescale-api" in n for n in plan.notes)


def test_api_confirms_a_log_endpoint() -> None:
    book = Book()
    book.found(ep("3.1.1.1"), Source.file("/l.log", 3, 100), 100)
    plan = book.found(ep("3.1.1.1", source="rescale-api"), Source.api(200), 200)
    rec = book.by_job("OsKBd")
    assert rec is not None and rec.verified and rec.source.kind == "rescale-api"
    assert any("confirmed" in n for n in plan.notes)
    # A log read again later (newer mtime) does not hide the verification.
    book.found(ep("3.1.1.1"), Source.file("/l.log", 3, 500), 500)
    assert rec.source.verified


def test_job_ended_ends_its_tunnel_once() -> None:
    book = Book()
    book.found(ep("3.1.1.1", source="rescale-api"), Source.api(1), 1)
    rec = book.by_job("OsKBd")
    assert rec is not None
    plan = book.job_ended("OsKBd", "job Completed on Rescale", 5)
    assert plan.end == [(rec.key, "job Completed on Rescale")] and rec.finished
    assert rec.last_seen == 5  # the status's "since" for an ended endpoint
    assert not book.job_ended("OsKBd", "again", 6) and not book.job_ended("nope", "x", 6)
    assert book.restore(10, lambda _: True).open == []


# -- platforms and URLs -------------------------------------------------------------


def test_platforms_and_urls() -> None:
    from jobtunnel.daemon.core.rescale import base_url, base_url_problem, job_url

    assert base_url() == "https://platform.rescale.com"
    assert base_url("eu") == "https://eu.rescale.com"
    assert base_url("platform.rescale.jp") == "https://platform.rescale.jp"
    assert base_url(url="https://itar.rescale-gov.com/") == "https://itar.rescale-gov.com"
    assert base_url(url="http://127.0.0.1:8123") == "http://127.0.0.1:8123"
    with pytest.raises(ValueError, match="unknown platform 'mars'; allowed: us"):
        base_url("mars")
    assert base_url_problem("http://platform.rescale.com") == (
        "must use https (http only to a loopback address)"
    )
    assert base_url_problem("https://platform.rescale.com/api/v2/") is not None
    assert base_url_problem("https://u:p@platform.rescale.com") is not None
    assert base_url_problem("ftp://x") == "must use https"
    assert job_url("https://eu.rescale.com", "OsKBd") == "https://eu.rescale.com/jobs/OsKBd/"


def test_config_rescale_table_errors_name_file_line_key(tmp_path: Any) -> None:
    from jobtunnel.daemon.config import ConfigError, load_config

    path = tmp_path / "config.toml"
    path.write_text('[rescale]\nplatform = "mars"\nurl = "http://platform.rescale.com"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}:2: rescale.platform: bad value 'mars': allowed: us" in text
    assert f"{path}:3: rescale.url: bad value" in text and "must use https" in text
    path.write_text('[rescale]\nplatform = "eu"\nprofile = "work"\nenabled = false\n')
    config, _ = load_config(path)
    assert (config.rescale.platform, config.rescale.profile, config.rescale.enabled) == (
        "eu",
        "work",
        False,
    )


def test_only_pages_that_may_hold_running_jobs_are_followed() -> None:
    from jobtunnel.daemon.core.rescale import JobPage, worth_next_page

    running, ended = Job("a", "", "Executing", "Started"), Job("b", "", "Completed", "Stopped")
    assert worth_next_page(JobPage((ended, running), 9, "https://x/?page=2"))
    assert not worth_next_page(JobPage((running, ended), 9, "https://x/?page=2"))
    assert not worth_next_page(JobPage((ended, running), 2, None))
    assert not worth_next_page(JobPage((), 9, "https://x/?page=2"))
