"""The Rescale API poller: one task beside the scheduler that asks the API when
:class:`~jobtunnel.daemon.core.rescale.PollState` says so, and hands the service each
master node's endpoint (a verified source) and each job that ended.

The service passes callbacks in, so this module knows nothing of tunnels or the book.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ..api.schema import RescaleJobView, RescaleView
from ..config import RescaleConfig
from ..core.address import check_host
from ..core.detect import Endpoint
from ..core.rescale import (
    ApiError,
    Job,
    PollPolicy,
    PollState,
    ShapeError,
    endpoint_of,
    job_url,
    master_of,
)
from ..core.throttle import Seen
from ..engine import rescale_credentials
from ..engine.rescale_api import RescaleClient, RescaleError
from ..engine.rescale_credentials import Credentials, CredentialsError

__all__ = ["RescalePoller"]

log = logging.getLogger(__name__)

OnEndpoint = Callable[[Endpoint, Job], Awaitable[None]]
OnEnded = Callable[[Job, str], Awaitable[None]]


class RescalePoller:
    """Polls one platform with one key; ``refresh()`` polls at once."""

    def __init__(
        self,
        config: RescaleConfig,
        *,
        allow_private: bool,
        on_endpoint: OnEndpoint,
        on_ended: OnEnded,
        has_endpoint: Callable[[], set[str]],
        client_factory: Callable[[Credentials], RescaleClient] = RescaleClient,
    ) -> None:
        self.config = config
        self.allow_private = allow_private
        self._on_endpoint = on_endpoint
        self._on_ended = on_ended
        self._has_endpoint = has_endpoint
        self._client_factory = client_factory
        self.state = PollState(self._policy(), _now())
        self.credentials: Credentials | None = None
        self.problem: str | None = None
        """Why the API is not used (no key, an unreadable apiconfig...)."""
        self._client: RescaleClient | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._said = Seen()
        self.on_change: Callable[[], None] = lambda: None

    def _policy(self) -> PollPolicy:
        return PollPolicy(slow=self.config.slow_interval, fast=self.config.fast_interval)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rescale-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def refresh(self, *, automatic: bool = False) -> None:
        """Poll now (``rescale refresh``); a new key is read first. ``automatic`` (a
        wake from sleep, a network change): see :meth:`PollState.refresh`."""
        self.state.refresh(_now(), automatic=automatic)
        self._wake.set()

    async def reconfigure(self, config: RescaleConfig, allow_private: bool) -> None:
        self.config, self.allow_private = config, allow_private
        self.state.policy = self._policy()
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.refresh()

    async def _load_credentials(self) -> None:
        """Find the key (off the loop: an OS keyring may block, or ask to be unlocked)."""
        problem: str | None
        try:
            creds = await asyncio.to_thread(rescale_credentials.find, self.config)
        except CredentialsError as exc:
            creds, problem = None, f"Rescale API off: {exc}"
        else:
            problem = None
            if creds is None:
                problem = (
                    "Rescale API off: turned off in the config ([rescale] enabled = false)"
                    if not self.config.enabled
                    else "Rescale API off: no key (jobtunnel rescale login)"
                )
        changed = (creds and (creds.key, creds.base)) != (
            self.credentials and (self.credentials.key, self.credentials.base)
        )
        if problem != self.problem and problem is not None:
            log.info("%s", problem)
        self.credentials, self.problem = creds, problem
        if changed:
            if creds is not None:
                log.info("Rescale API: polling %s", creds)
            if self._client is not None:
                client, self._client = self._client, None
                await client.close()

    # -- the loop --------------------------------------------------------------------

    async def _run(self) -> None:
        await self._load_credentials()
        self.on_change()
        while True:
            if self.credentials is None:
                await self._sleep(None)
                await self._load_credentials()
                continue
            wait = self.state.wait(_now())
            if wait > 0:
                await self._sleep(None if wait == float("inf") else wait)
                if self._wake.is_set():
                    await self._load_credentials()
                continue
            try:
                await self.poll()
            except Exception:
                log.exception("Rescale API poll failed")
                self.state.failed(_now(), ApiError("client", "internal error"))
            self.on_change()

    async def _sleep(self, seconds: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _client_for(self, creds: Credentials) -> RescaleClient:
        if self._client is None:
            self._client = self._client_factory(creds)
        return self._client

    async def poll(self) -> None:
        """One poll: the job list, then instances of the jobs that need it."""
        creds = self.credentials
        if creds is None:
            return
        client = self._client_for(creds)
        state = self.state
        try:
            before = client.requests
            try:
                jobs = await client.jobs()
            finally:
                for _ in range(client.requests - before):
                    state.sent(_now())
        except (RescaleError, ShapeError) as exc:
            self._failed(_api_error(exc))
            return
        if state.error is not None:
            log.info("Rescale API answers again")
        plan = state.listed(_now(), jobs, self._has_endpoint())
        for job in plan.ended:
            await self._on_ended(job, f"job {job.status or 'ended'} on Rescale")
        for job in plan.instances:
            if not state.may_send(_now()):
                break  # the budget: the next poll asks
            state.sent(_now())
            await self._ask_instances(client, job)
            if state.error is not None:
                return  # the failure set the next poll
        state.settle(_now())

    async def _ask_instances(self, client: RescaleClient, job: Job) -> None:
        try:
            master = master_of(await client.instances(job.id))
        except RescaleError as exc:
            if exc.status in (403, 404):
                # Not documented as supported (404), or not for this job (403, a shared
                # one): that job's logs, not a stop of every poll.
                self.state.instances_missing(job)
                self._say(
                    job.id,
                    f"Rescale API: no instances of job {job.label} ({exc.status}; it is not "
                    "an officially supported endpoint); its endpoint comes from its logs only",
                )
                return
            self._failed(exc.error)
            return
        except ShapeError as exc:
            self.state.instances_missing(job)
            self._say(
                job.id,
                f"Rescale API: instances of job {job.label}: {exc}; "
                "its endpoint comes from its logs only",
            )
            return
        if master is None:
            return  # still booting: the next fast poll asks again
        ep = endpoint_of(job, master)
        host, reason = check_host(ep.host, self.allow_private)
        if reason is not None:
            self.state.instances_missing(job)
            self._say(job.id, f"Rescale API: job {job.label}: refused {ep.host}: {reason}")
            return
        self.state.found(job)
        log.info("Rescale API: job %s runs on %s@%s:%d", job.label, ep.user, host, ep.port)
        await self._on_endpoint(
            Endpoint(ep.user, host, ep.port, ep.job_id, ep.source, ep.line), job
        )

    def _failed(self, error: ApiError) -> None:
        first = self.state.error is None or self.state.error.kind != error.kind
        self.state.failed(_now(), error)
        if error.kind == "auth":
            log.error("Rescale API: %s; polling stopped until `jobtunnel rescale refresh`", error)
        elif first:
            log.warning("Rescale API: %s", error)
        else:
            log.debug("Rescale API: %s", error)

    def _say(self, key: str, text: str) -> None:
        if self._said.first(key, text):
            log.warning("%s", text)

    # -- status ----------------------------------------------------------------------

    def job_name(self, job_id: str | None) -> str | None:
        job = self.state.jobs.get(job_id) if job_id else None
        return job.name if job is not None and job.name else None

    def job_url(self, job_id: str | None) -> str | None:
        if job_id is None or self.credentials is None or job_id not in self.state.jobs:
            return None
        return job_url(self.credentials.base, job_id)

    def view(self) -> RescaleView:
        state, creds = self.state, self.credentials
        if creds is None:
            health = "off"
        elif state.stopped is not None:
            health = "stopped"
        elif state.error is not None:
            health = "error"
        elif state.checked_at is None:
            health = "starting"
        else:
            health = "ok"
        return RescaleView(
            state=health,
            base=creds.base if creds else None,
            key_from=creds.origin if creds else None,
            # The state runs on the monotonic clock; the view carries wall time.
            checked_at=None
            if state.checked_at is None
            else time.time() - (_now() - state.checked_at),
            error=str(state.error) if state.error else self.problem,
            running=len(state.running),
            jobs=tuple(
                RescaleJobView(id=j.id, name=j.name, status=j.status, cluster=j.cluster)
                for j in state.jobs.values()
                if not j.ended
            ),
        )


def _now() -> float:
    # Monotonic: a wall clock that jumps (NTP, a wake) must not move the next poll.
    return time.monotonic()


def _api_error(exc: Exception) -> ApiError:
    if isinstance(exc, RescaleError):
        return exc.error
    return ApiError("shape", f"job list: {exc}")
