"""The Rescale API as a source of endpoints, without the I/O: the shapes of its answers,
when to ask it next, and what its answers mean for the tunnels.

Pure: the HTTP shell (:mod:`jobtunnel.daemon.engine.rescale_api`) does the requests and
passes the decoded JSON and the time in. The rules:

- ``GET /api/v2/jobs/`` lists the jobs (paginated ``{count, next, previous, results}``);
  each job's ``jobStatus.content`` and ``clusterStatusDisplay.content`` say where it is.
- ``GET /api/v2/jobs/{id}/instances/`` lists its nodes; the master is the only node or
  the one whose ``role`` is ``MPI_MASTER``. Its ``username`` is taken as given, never
  guessed from the job id (platforms differ in prefixes).
- A shape that does not fit raises :class:`ShapeError` naming the field
  (``results[2].jobStatus.content: expected a string, got null``).
- Polls: slow (60 s) while nothing starts, fast (10 s) while a job waits for its first
  instance, at once on refresh or wake; ``429`` waits ``Retry-After``, ``5xx`` and
  timeouts back off, ``401``/``403`` stop until the user logs in again; and never more
  than :data:`MAX_PER_MINUTE` requests in any minute.
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from .detect import Endpoint
from .jsontype import json_kind

__all__ = [
    "ENDED_CLUSTER",
    "ENDED_JOB",
    "MAX_PER_MINUTE",
    "PLATFORMS",
    "SOURCE",
    "ApiError",
    "ErrorKind",
    "Instance",
    "Job",
    "JobPage",
    "PollPolicy",
    "PollState",
    "ShapeError",
    "auth_header",
    "base_url",
    "base_url_problem",
    "endpoint_of",
    "job_url",
    "master_of",
    "parse_instances",
    "parse_jobs",
    "retry_after",
    "worth_next_page",
]

SOURCE = "rescale-api"
"""What an API endpoint's ``source`` says (the book's Source kind too)."""

ENDED_JOB = frozenset({"Completed", "Stopped", "Failed", "Terminated"})
ENDED_CLUSTER = frozenset({"Stopped"})
# A cluster in these states may have (or soon have) a master node to ask about.
CLUSTER_UP = frozenset({"Starting", "Started"})
# Submitted and not ended: the job will get a cluster, so polls go fast until it has.
IN_FLIGHT = frozenset({"Pending", "Queued", "Started", "Validated", "Executing"})
MASTER_ROLE = "MPI_MASTER"

MAX_PER_MINUTE = 12
"""Requests (job lists and instance queries together) in any 60 s."""

PLATFORMS: dict[str, str] = {
    "us": "https://platform.rescale.com",
    "eu": "https://eu.rescale.com",
    "jp": "https://platform.rescale.jp",
    "kr": "https://kr.rescale.com",
    "itar": "https://itar.rescale.com",
    "itar-gov": "https://itar.rescale-gov.com",
}
"""Rescale's platforms by short name; ``us`` (North America) is the default."""


def base_url_problem(url: str) -> str | None:
    """Why ``url`` may not be an API base (None when it may): https, or http to a
    loopback address (the tests' fake API); no path beyond ``/``, no credentials."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if not parts.hostname:
        return "must be a URL such as https://platform.rescale.com"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "must not carry credentials, a query or a fragment"
    if parts.path not in ("", "/"):
        return "must be the platform's address only, without a path (no /api/v2)"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        return None if loopback else "must use https (http only to a loopback address)"
    return "must use https"


def base_url(platform: str = "", url: str = "") -> str:
    """The API base for a platform's short name or host, or an explicit URL; ValueError
    saying what is allowed otherwise."""
    if url:
        why = base_url_problem(url)
        if why is not None:
            raise ValueError(f"{url!r}: {why}")
        return url.rstrip("/")
    name = platform or "us"
    if name in PLATFORMS:
        return PLATFORMS[name]
    hosts = {urlsplit(u).hostname: u for u in PLATFORMS.values()}
    if name in hosts:
        return hosts[name]
    allowed = ", ".join(f"{k} ({urlsplit(v).hostname})" for k, v in PLATFORMS.items())
    raise ValueError(f"unknown platform {name!r}; allowed: {allowed}")


def job_url(base: str, job_id: str) -> str:
    """The job's page in Rescale's web app."""
    return f"{base.rstrip('/')}/jobs/{job_id}/"


class ShapeError(ValueError):
    """An API answer that does not have the documented shape; the message names the field."""


def _field(obj: Mapping[str, object], name: str, path: str) -> object:
    if name not in obj:
        raise ShapeError(f"{path}{name}: missing")
    return obj[name]


def _obj(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ShapeError(f"{path or '(top level)'}: expected an object, got {json_kind(value)}")
    return value


def _str(obj: Mapping[str, object], name: str, path: str, *, empty: bool = True) -> str:
    value = _field(obj, name, path)
    if not isinstance(value, str):
        raise ShapeError(f"{path}{name}: expected a string, got {json_kind(value)}")
    if not empty and not value.strip():
        raise ShapeError(f"{path}{name}: expected a non-empty string")
    return value


def _opt_str(obj: Mapping[str, object], name: str, path: str) -> str | None:
    """A string or null (or absent); an empty string counts as null."""
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise ShapeError(f"{path}{name}: expected a string or null, got {json_kind(value)}")
    return value or None


def _content(obj: Mapping[str, object], name: str, path: str) -> str:
    """``{"content": "..."}``, the API's display objects; null means unknown ("")."""
    value = _field(obj, name, path)
    if value is None:
        return ""
    return _str(_obj(value, f"{path}{name}"), "content", f"{path}{name}.")


@dataclass(frozen=True)
class Job:
    """One job of the job list."""

    id: str
    name: str
    status: str  # jobStatus.content: Pending, Queued, Started, Executing, Completed...
    cluster: str  # clusterStatusDisplay.content: Not Started, Starting, Started, Stopped...
    inserted: str = ""

    @property
    def ended(self) -> bool:
        """Finished, stopped or failed, or its cluster has stopped."""
        return self.status in ENDED_JOB or self.cluster in ENDED_CLUSTER

    @property
    def cluster_up(self) -> bool:
        """Its cluster is starting or started: the master may be there to ask about."""
        return not self.ended and self.cluster in CLUSTER_UP

    @property
    def label(self) -> str:
        """``the FOAM 2 (OsKBd)``."""
        return f"{self.name} ({self.id})" if self.name else self.id


@dataclass(frozen=True)
class JobPage:
    """One page of the job list."""

    jobs: tuple[Job, ...]
    count: int
    next: str | None


def _page(obj: object) -> tuple[list[object], int, str | None]:
    top = _obj(obj, "")
    results = _field(top, "results", "")
    if not isinstance(results, list):
        raise ShapeError(f"results: expected a list, got {json_kind(results)}")
    count = top.get("count", len(results))
    if isinstance(count, bool) or not isinstance(count, int):
        raise ShapeError(f"count: expected a whole number, got {json_kind(count)}")
    nxt = top.get("next")
    if nxt is not None and not isinstance(nxt, str):
        raise ShapeError(f"next: expected a URL or null, got {json_kind(nxt)}")
    return results, count, nxt or None


def worth_next_page(page: JobPage) -> bool:
    """Whether the job list's next page may hold jobs that run. Rescale lists the newest
    first, so a page whose oldest job has ended ends the search: one request per poll
    for most users, however long their history."""
    return page.next is not None and bool(page.jobs) and not page.jobs[-1].ended


def parse_jobs(obj: object) -> JobPage:
    """A page of ``GET /api/v2/jobs/``."""
    results, count, nxt = _page(obj)
    jobs = []
    for i, item in enumerate(results):
        path = f"results[{i}]."
        job = _obj(item, path[:-1])
        jobs.append(
            Job(
                id=_str(job, "id", path, empty=False),
                name=_opt_str(job, "name", path) or "",
                status=_content(job, "jobStatus", path),
                cluster=_content(job, "clusterStatusDisplay", path)
                if "clusterStatusDisplay" in job
                else "",
                inserted=_opt_str(job, "dateInserted", path) or "",
            )
        )
    return JobPage(tuple(jobs), count, nxt)


@dataclass(frozen=True)
class Instance:
    """One node of a job's cluster."""

    public_ip: str | None  # null while the node boots
    username: str | None
    ssh_port: int
    role: str

    @property
    def ready(self) -> bool:
        return bool(self.public_ip) and bool(self.username)


def parse_instances(obj: object) -> tuple[list[Instance], str | None]:
    """A page of ``GET /api/v2/jobs/{id}/instances/`` (a bare list is accepted too), and
    the next page's URL."""
    if isinstance(obj, list):
        results: list[object] = obj
        nxt: str | None = None
    else:
        results, _, nxt = _page(obj)
    nodes = []
    for i, item in enumerate(results):
        path = f"results[{i}]."
        node = _obj(item, path[:-1])
        ip, user = _opt_str(node, "publicIp", path), _opt_str(node, "username", path)
        port = node.get("sshPort", 22)
        if port is None:
            port = 22
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ShapeError(f"{path}sshPort: expected a port number, got {port!r}")
        role = _opt_str(node, "role", path) or ""
        nodes.append(Instance(ip, user, port, role))
    return nodes, nxt


def master_of(nodes: Sequence[Instance]) -> Instance | None:
    """The master node once it is ready: the only node, or the ``MPI_MASTER`` one.

    None while it boots (no address or username yet) or when no node is marked master
    among several (raised as :class:`ShapeError`: asking again will not help)."""
    if not nodes:
        return None
    if len(nodes) == 1:
        master = nodes[0]
    else:
        masters = [n for n in nodes if n.role == MASTER_ROLE]
        if not masters:
            raise ShapeError(
                f"role: none of the {len(nodes)} nodes is {MASTER_ROLE}; "
                "cannot tell which one is the master"
            )
        master = masters[0]
    return master if master.ready else None


def endpoint_of(job: Job, master: Instance) -> Endpoint:
    """The endpoint of ``job``'s master node, as the book takes it."""
    assert master.public_ip is not None and master.username is not None
    return Endpoint(
        user=master.username,
        host=master.public_ip,
        port=master.ssh_port,
        job_id=job.id,
        source=SOURCE,
        line=0,
    )


def auth_header(key: str) -> str:
    """``Bearer`` for a JWT (three dot-separated parts starting ``ey``), else ``Token``."""
    parts = key.split(".")
    if len(parts) == 3 and key.startswith("ey") and all(parts):
        return f"Bearer {key}"
    return f"Token {key}"


def retry_after(value: str | None, default: float) -> float:
    """Seconds from a ``Retry-After`` header (seconds only; a date or junk: ``default``)."""
    if value is None:
        return default
    try:
        seconds = float(value.strip())
    except ValueError:
        return default
    if seconds != seconds or seconds < 0:  # NaN, negative
        return default
    return min(seconds, 3600.0)


# -- when to ask ------------------------------------------------------------------------

ErrorKind = Literal["auth", "rate", "server", "timeout", "network", "shape", "client"]


@dataclass(frozen=True)
class ApiError:
    """Why a request failed, as the policy needs it."""

    kind: ErrorKind
    message: str
    retry_after: float | None = None  # 429's Retry-After, seconds

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class PollPolicy:
    slow: float = 60.0
    """Seconds between polls while nothing is starting."""
    fast: float = 10.0
    """Seconds between polls while a job waits for its first instance."""
    max_backoff: float = 600.0
    """Longest wait after repeated server errors or timeouts."""
    max_per_minute: int = MAX_PER_MINUTE


@dataclass(frozen=True)
class Plan:
    """What one job list means: the instance queries to make, the jobs that ended."""

    instances: list[Job] = field(default_factory=list)
    ended: list[Job] = field(default_factory=list)


class PollState:
    """When to poll next, and what the answers mean. The caller passes the time in.

    It remembers, for this run of the daemon, which jobs already gave their master's
    endpoint (``resolved``), which have no instances endpoint (``no_instances``: the
    caller falls back to logs) and which ended (each reported once).
    """

    def __init__(self, policy: PollPolicy | None = None, now: float = 0.0) -> None:
        self.policy = policy or PollPolicy()
        self.next_at = now  # the first poll at once
        self.stopped: str | None = None
        """Why polling stopped (401/403): only a new key (or refresh) starts it again."""
        self.error: ApiError | None = None
        self.checked_at: float | None = None
        self.jobs: dict[str, Job] = {}
        self.resolved: set[str] = set()
        self.no_instances: set[str] = set()
        self.ended: set[str] = set()
        self._has_endpoint: set[str] = set()
        self._failures = 0
        self._not_before = now
        self._sent: collections.deque[float] = collections.deque()

    # -- requests ------------------------------------------------------------------

    def may_send(self, now: float) -> bool:
        """Within the per-minute budget and past any Retry-After."""
        if self.stopped is not None or now < self._not_before:
            return False
        while self._sent and self._sent[0] <= now - 60.0:
            self._sent.popleft()
        return len(self._sent) < self.policy.max_per_minute

    def wait(self, now: float) -> float:
        """Seconds until the next poll may go (0: now); ``inf`` when stopped."""
        if self.stopped is not None:
            return float("inf")
        at = max(self.next_at, self._not_before)
        while self._sent and self._sent[0] <= now - 60.0:
            self._sent.popleft()
        if len(self._sent) >= self.policy.max_per_minute:
            at = max(at, self._sent[0] + 60.0)
        return max(0.0, at - now)

    def sent(self, now: float) -> None:
        """One request went out."""
        self._sent.append(now)

    def refresh(self, now: float, *, automatic: bool = False) -> None:
        """``rescale refresh``: poll at once (still within the budget and any
        Retry-After), and try again after a 401/403. ``automatic`` (a wake from sleep, a
        network change): at once too, but never sooner than one fast interval after the
        last answer, so that a flapping network or a clock that keeps jumping does not
        turn into a poll a second; a stop after a 401/403 stays until the user acts."""
        if not automatic:
            self.stopped = None
            self.next_at = now
            return
        soonest = now if self.checked_at is None else self.checked_at + self.policy.fast
        self.next_at = min(self.next_at, max(now, soonest))

    # -- answers -------------------------------------------------------------------

    def listed(self, now: float, jobs: Iterable[Job], has_endpoint: set[str]) -> Plan:
        """A job list arrived. ``has_endpoint``: the jobs whose endpoint the API already
        gave (kept by the caller across restarts, in the book)."""
        self.error, self._failures, self.checked_at = None, 0, now
        self.jobs = {job.id: job for job in jobs}
        self._has_endpoint = set(has_endpoint)
        plan = Plan()
        for job in self.jobs.values():
            if job.ended:
                if job.id not in self.ended:
                    self.ended.add(job.id)
                    plan.ended.append(job)
            elif not job.cluster_up:
                # A restarted cluster gets asked about again once it is up.
                self.resolved.discard(job.id)
            elif self._needs_instances(job):
                plan.instances.append(job)
        self.settle(now)
        return plan

    def _needs_instances(self, job: Job) -> bool:
        return job.cluster_up and not (
            job.id in self.resolved or job.id in self._has_endpoint or job.id in self.no_instances
        )

    def settle(self, now: float) -> None:
        """The next poll after the last list and what its instance queries found: fast
        while a job waits for its master (submitted, or up with no endpoint yet)."""
        waiting = any(
            self._needs_instances(job) or (not job.cluster_up and job.status in IN_FLIGHT)
            for job in self.jobs.values()
            if not job.ended
        )
        self.next_at = now + (self.policy.fast if waiting else self.policy.slow)

    def found(self, job: Job) -> None:
        """``job``'s master endpoint came back."""
        self.resolved.add(job.id)

    def instances_missing(self, job: Job) -> None:
        """No instances endpoint for ``job`` (404) or an unusable shape: logs only."""
        self.no_instances.add(job.id)

    def failed(self, now: float, error: ApiError) -> None:
        """A request failed: wait as ``error`` says."""
        self.error = error
        policy = self.policy
        if error.kind == "auth":
            self.stopped = error.message
            return
        if error.kind == "rate":
            self._not_before = now + (error.retry_after if error.retry_after is not None else 60)
            self.next_at = max(self.next_at, self._not_before)
            return
        self._failures += 1
        # Exponential from the slow interval's sixth (10 s), capped.
        delay = min(policy.max_backoff, policy.fast * 2 ** (self._failures - 1))
        self.next_at = now + max(delay, policy.fast)

    @property
    def running(self) -> list[Job]:
        """Jobs the last list showed with a cluster up."""
        return [j for j in self.jobs.values() if j.cluster_up]
