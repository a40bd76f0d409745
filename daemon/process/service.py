"""The long-running service behind ``jobtunnel run``.

Data flows one way: watched files -> detectors -> the endpoint book -> one
:class:`~jobtunnel.daemon.engine.tunnel.Tunnel` each -> status events on the control API.
Commands come back only through the control API handlers below. The book decides
(which tunnels should exist, with which ports); the service applies its plans.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .. import __version__, paths
from ..api.schema import DaemonInfo, EventName, StatusSnapshot, WatchView
from ..api.server import ControlServer
from ..config import Config, ConfigError, load_config
from ..core.book import Book, Limits, Plan, Record, Source
from ..core.detect import Endpoint, Rejection
from ..core.netcheck import WOKE
from ..core.rescale import Job
from ..core.throttle import Seen
from ..engine.hostkeys import HostKeyStore
from ..engine.options import TunnelStatus, forwards_of, tunnel_options
from ..engine.passphrase import keyring_source
from ..engine.tunnel import Tunnel
from . import signals, view
from .deadline import StopDeadline
from .detection import DetectionWorker
from .handlers import Handlers
from .instance import InstanceLock
from .netwatch import NetWatch
from .rescale import RescalePoller
from .sshexport import SshExport
from .store import Store, StoreError
from .systemd import Notifier
from .watch import LogUpdate, LogWatcher

__all__ = ["Service"]

log = logging.getLogger(__name__)

Key = tuple[str, str, int]

# A wall clock that moved this much further than the monotonic clock means the machine
# slept (CLOCK_MONOTONIC stops during suspend on Linux) or the time was set.
CLOCK_JUMP = 5.0
SAVE_DELAY = 0.2
PUBLISH_DELAY = 0.1


@dataclass
class _Clock:
    wall: float
    mono: float


class Service:
    """Owns the watcher, the tunnels, the state file, the scheduler and the control API."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        *,
        deadline: StopDeadline | None = None,
    ) -> None:
        self.config = config
        # Armed at each stop request: the process is gone in seconds whatever hangs.
        self.deadline = deadline
        self.config_path = config_path
        self.store = Store()
        self.book = Book(limits=limits_of(config))
        self._saved_version = 0
        self.host_keys = HostKeyStore(paths.known_hosts_file())
        self.ssh_export = SshExport(self.host_keys)
        self.tunnels: dict[Key, Tunnel] = {}
        self.detection = DetectionWorker(config.detect, self._on_findings)
        self.lock = InstanceLock(paths.runtime_dir() / "daemon.pid")
        self.notifier = Notifier()
        self.started = time.time()
        self.save_error: str | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rejections = Seen()
        self._save_handle: asyncio.TimerHandle | None = None
        self._publish_handle: asyncio.TimerHandle | None = None
        self._watchdog_handle: asyncio.TimerHandle | None = None
        self._clock = _Clock(time.time(), time.monotonic())
        self.watcher = self._new_watcher()
        self.handlers = Handlers(self)
        self.control = ControlServer(self.handlers.table(), transport=config.daemon.control)
        self.scheduler: AsyncIOScheduler | None = None
        self.netwatch = (
            NetWatch(self._network_changed, self._peers) if config.daemon.watch_network else None
        )
        self.rescale = RescalePoller(
            config.rescale,
            allow_private=config.detect.allow_private_addresses,
            on_endpoint=self._on_api_endpoint,
            on_ended=self._on_job_ended,
            has_endpoint=self._api_jobs,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT or the ``stop`` command; then shut down cleanly."""
        self.lock.acquire()
        try:
            await self._start()
            await self._stopping.wait()
        finally:
            await self._shutdown()
            self.lock.release()

    def request_stop(self) -> None:
        if self.deadline is not None:
            self.deadline.arm()
        self._stopping.set()

    async def _start(self) -> None:
        try:
            self.book = Book(self.store.load(), limits_of(self.config))
        except StoreError as exc:
            # An unreadable file that could not be moved aside: run, but never save over it.
            log.error("%s; running without saving state", exc)
            self.store = _NullStore(str(exc))
        signals.install(
            asyncio.get_running_loop(), self.request_stop, lambda: self._spawn(self.reload())
        )
        await self.control.start()
        files = {f for rec in self.book for f in rec.files}
        present = await asyncio.to_thread(lambda: {f for f in files if os.path.exists(f)})
        await self._apply(self.book.restore(time.time(), present.__contains__))
        self._save_soon()
        await self.watcher.start()
        self._start_scheduler()
        self.rescale.on_change = self._publish_soon
        self.rescale.start()
        if self.netwatch is not None:
            await self.netwatch.start()
        self._arm_watchdog()
        summary = self._summary()
        log.info("jobtunnel %s running (pid %d): %s", __version__, os.getpid(), summary)
        self.notifier.ready(summary)

    async def _shutdown(self) -> None:
        log.info("stopping")
        self.notifier.stopping()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        await self.rescale.stop()
        if self.netwatch is not None:
            await self.netwatch.stop()
        if self._watchdog_handle is not None:
            self._watchdog_handle.cancel()
        self._stopping.set()  # no tunnel opens from here on
        await self.watcher.stop()
        await self.detection.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A tunnel opened while others stopped is stopped in the next round.
        for _ in range(10):
            if not self.tunnels:
                break
            stopping = list(self.tunnels.values())
            self.tunnels.clear()
            await asyncio.gather(*(t.stop() for t in stopping), return_exceptions=True)
        self._save_now()
        await self.control.close()
        self.notifier.close()
        log.info("stopped")

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("background task failed")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- detection -------------------------------------------------------------------

    def _new_watcher(self) -> LogWatcher:
        watch = self.config.watch
        return LogWatcher(
            [Path(f).expanduser() for f in watch.folders],
            watch.patterns,
            recursive=watch.recursive,
            on_update=self._on_update,
            pace=self.detection.room,
        )

    def _on_update(self, update: LogUpdate) -> None:
        """New bytes of a watched file: detected on the detection thread, never here."""
        self.detection.submit(update)

    def _on_findings(self, findings: list[Endpoint | Rejection]) -> None:
        """What the detection thread found (called on the loop)."""
        for finding in findings:
            if isinstance(finding, Rejection):
                # A file is read again on every change and at each start: logged once.
                if self._rejections.first(finding.source, f"{finding.candidate}: {finding.reason}"):
                    log.warning("%s", finding)
            else:
                self._spawn(self._on_endpoint(finding, explicit=False))

    async def _on_endpoint(
        self, endpoint: Endpoint, *, explicit: bool, source: Source | None = None
    ) -> Record | None:
        rec: Record | None
        if explicit:
            rec, plan = self.book.add(endpoint, self._user_source(endpoint), time.time())
        else:
            plan = self.book.found(endpoint, source or self._source_of(endpoint), time.time())
            rec = self.book.get(endpoint.key)
        await self._apply(plan)
        return rec

    def _source_of(self, endpoint: Endpoint) -> Source:
        try:
            mtime = os.stat(endpoint.source).st_mtime
        except OSError:
            mtime = time.time()  # gone already: as new as the bytes just read
        return Source.file(endpoint.source, endpoint.line, mtime)

    @staticmethod
    def _user_source(endpoint: Endpoint) -> Source:
        path = None if endpoint.source == "added by the user" else endpoint.source
        return Source.user(time.time(), path, endpoint.line)

    # -- the Rescale API: a verified source ---------------------------------------------

    async def _on_api_endpoint(self, endpoint: Endpoint, job: Job) -> None:
        await self._on_endpoint(endpoint, explicit=False, source=Source.api(time.time()))

    async def _on_job_ended(self, job: Job, reason: str) -> None:
        """The API says the job ended: its tunnel ends now, with no retries."""
        await self._apply(self.book.job_ended(job.id, reason, time.time()))

    def _api_jobs(self) -> set[str]:
        return {r.job_id for r in self.book if r.job_id and r.verified and r.finished is None}

    async def _apply(self, plan: Plan) -> None:
        """Do what the book decided: end, stop, then open; log its notes."""
        for note in plan.notes:
            log.info("%s", note)
        for key, reason in plan.end:
            tunnel = self.tunnels.pop(key, None)
            if tunnel is not None:
                await tunnel.end(reason)
        for key in plan.stop:
            tunnel = self.tunnels.get(key)
            if tunnel is not None:
                await tunnel.stop()
        for key in plan.open:
            rec = self.book.get(key)
            if rec is not None:
                await self._open_tunnel(rec)
        self._saved_if_changed()
        # Coalesced: a log naming 1000 endpoints must not publish 1000 full snapshots.
        self._publish_soon()

    # -- tunnels ---------------------------------------------------------------------

    async def _open_tunnel(self, rec: Record) -> Tunnel | None:
        if self._stopping.is_set():
            return None
        existing = self.tunnels.get(rec.key)
        if existing is not None and existing.state.value != "ended":
            await existing.start()
            return existing
        key = rec.key
        tunnel = Tunnel(
            rec.user,
            rec.host,
            rec.port,
            forwards_of(self.config),
            tunnel_options(self.config),
            ports=self.book.lease(key),  # the book owns the ports; the tunnel reports back
            host_keys=self.host_keys,
            passphrase=keyring_source,  # opted-in (`jobtunnel keys remember`); else skipped
            chosen_ports=rec.chosen_ports,
        )
        self.tunnels[key] = tunnel
        tunnel.subscribe(lambda status: self._on_status(key, tunnel, status))
        await tunnel.start()
        return tunnel

    def _on_status(self, key: tuple[str, str, int], tunnel: Tunnel, status: TunnelStatus) -> None:
        if self.tunnels.get(key) is tunnel and status is not None:
            if status.state == "ended":
                # Gave up by itself (the service pops the tunnels it ends).
                self.book.ended(key, status.last_error or "gave up")
            elif status.state == "up":
                self.book.seen(key, time.time())
        self._saved_if_changed()
        self._publish_soon()

    def _saved_if_changed(self) -> None:
        if self.book.version != self._saved_version:
            self._save_soon()

    def _publish_soon(self) -> None:
        """Coalesce bursts (many clients connecting at once) into one status event."""
        if self._publish_handle is None:
            loop = asyncio.get_running_loop()
            self._publish_handle = loop.call_later(PUBLISH_DELAY, self._publish)

    # -- state file ------------------------------------------------------------------

    def _save_soon(self) -> None:
        """Coalesce bursts (a bulk copy of logs) into one write."""
        if self._save_handle is None:
            loop = asyncio.get_running_loop()
            self._save_handle = loop.call_later(SAVE_DELAY, self._save_now)

    def _save_now(self) -> None:
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        try:
            self.store.save(self.book)
            self._saved_version = self.book.version
        except StoreError as exc:
            if self.save_error != str(exc):
                log.error("%s; the previous state file is kept", exc)
            self.save_error = str(exc)
        else:
            if self.save_error is not None:
                log.info("state saved again to %s", self.store.path)
            self.save_error = None

    # -- periodic work ---------------------------------------------------------------

    def _start_scheduler(self) -> None:
        # A laptop that sleeps misses runs: run once late rather than drop them.
        scheduler = AsyncIOScheduler(
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
        )
        daemon = self.config.daemon
        scheduler.add_job(self._probe, "interval", seconds=daemon.probe_interval, id="probe")
        scheduler.add_job(self._rescan, "interval", seconds=daemon.rescan_interval, id="rescan")
        scheduler.add_job(
            self._snapshot, "interval", seconds=daemon.snapshot_interval, id="snapshot"
        )
        scheduler.start()
        self.scheduler = scheduler

    async def _probe(self) -> None:
        """Health of every tunnel; after a clock jump (sleep), check every link now."""
        wall, mono = time.time(), time.monotonic()
        jumped = (wall - self._clock.wall) - (mono - self._clock.mono)
        self._clock = _Clock(wall, mono)
        if jumped > CLOCK_JUMP:
            # The fallback for a wake that no system bus signal announced.
            log.info("clock jumped %.0f s (resume from sleep?)", jumped)
            await self._network_changed(WOKE)
        ended = [k for k, t in self.tunnels.items() if t.state.value == "ended"]
        if ended:
            self._publish()
        self.notifier.status(self._summary())

    async def _network_changed(self, reason: str) -> None:
        """Check every link at once (dead ones reconnect now; healthy ones are left
        alone), and ask the Rescale API again: jobs may have started meanwhile."""
        tunnels = list(self.tunnels.values())
        log.info("%s: checking %d links", reason, len(tunnels))
        await asyncio.gather(*(t.check(reason) for t in tunnels))
        self.rescale.refresh(automatic=True)

    def _peers(self) -> list[tuple[str, int]]:
        return [p for p in (t.peer for t in self.tunnels.values()) if p is not None]

    async def _rescan(self) -> None:
        action = self.watcher.check_health()
        if action:
            log.warning("watcher: %s", action)
        await self.watcher.rescan()

    async def _snapshot(self) -> None:
        files = {f for rec in self.book for f in rec.files}
        present = await asyncio.to_thread(lambda: {f for f in files if os.path.exists(f)})
        for rec in self.book.prune(time.time(), present.__contains__, self.tunnels):
            log.info("%s: not seen for a long time; dropped", rec.name)
        self._save_now()

    def _arm_watchdog(self) -> None:
        # On the loop itself, not the scheduler: a hung loop must stop the pings.
        interval = self.notifier.watchdog_interval
        if interval is None:
            return

        def ping() -> None:
            self.notifier.watchdog()
            self._watchdog_handle = asyncio.get_running_loop().call_later(interval, ping)

        ping()

    # -- config reload ---------------------------------------------------------------

    async def reload(self) -> str | None:
        """SIGHUP or ``config reload``: re-read the config; apply what changed, keep
        unaffected tunnels. The config's errors when it was not reloaded, else None."""
        try:
            config, _ = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config not reloaded, the old one stays in force:\n%s", exc)
            return str(exc)
        old, self.config = self.config, config
        self.book.limits = limits_of(config)
        if (config.watch, config.detect) != (old.watch, old.detect):
            log.info("reload: watched folders or detection changed; restarting the watcher")
            await self.watcher.stop()
            self.detection.reset(config.detect)
            self.watcher = self._new_watcher()
            await self.watcher.start()
        tunnel_settings = (config.ssh, config.tunnels, config.reconnect)
        if tunnel_settings != (old.ssh, old.tunnels, old.reconnect):
            log.info("reload: tunnel settings changed; reopening %d tunnels", len(self.tunnels))
            keys = list(self.tunnels)
            for key in keys:
                await self.tunnels.pop(key).end("settings changed")
            for key in keys:
                rec = self.book.get(key)
                if rec is not None and rec.action == "active":
                    await self._open_tunnel(rec)
        if (config.rescale, config.detect) != (old.rescale, old.detect):
            await self.rescale.reconfigure(config.rescale, config.detect.allow_private_addresses)
        if config.daemon != old.daemon:
            log.info("reload: [daemon] changes apply at the next restart")
        self._save_soon()
        self._publish()
        log.info("config reloaded from %s", self.config_path or paths.config_file())
        return None

    # -- status ----------------------------------------------------------------------

    def _summary(self) -> str:
        states = [t.state.value for t in self.tunnels.values()]
        up = states.count("up")
        waiting = sum(s in ("connecting", "reconnecting", "pending") for s in states)
        return f"{up} tunnels up, {waiting} connecting, {len(self.book)} endpoints known"

    def _publish(self) -> None:
        if self._publish_handle is not None:
            self._publish_handle.cancel()
            self._publish_handle = None
        snapshot = self.status()
        self.control.publish(EventName.STATUS, snapshot.to_wire())
        self.ssh_export.update(snapshot, self.config)  # writes only when its text changed

    def status(self) -> StatusSnapshot:
        """The ``status`` reply: the daemon, then every endpoint not forgotten."""
        daemon = DaemonInfo(
            pid=os.getpid(),
            version=__version__,
            started=self.started,
            config=str(self.config_path or paths.config_file()),
            state_file=str(self.store.path),
            save_error=self.save_error,
            watch=WatchView(
                folders=tuple(str(Path(f).expanduser()) for f in self.config.watch.folders),
                mode=self.watcher.mode,
            ),
            summary=self._summary(),
            rescale=self.rescale.view(),
            network_watch=tuple(self.netwatch.sources) if self.netwatch is not None else None,
        )
        return view.snapshot(
            daemon,
            self.book,
            {key: tunnel.status() for key, tunnel in self.tunnels.items()},
            forwards_of(self.config),
            self.config.tunnels.bind_address,
            self.config.tunnels.forward_names,
            jobs=self.rescale,
        )


def limits_of(config: Config) -> Limits:
    """The book's bounds from the config file."""
    t = config.tunnels
    return Limits(
        max_automatic=t.max_automatic,
        max_per_file=t.max_per_file,
        new_per_minute=t.new_per_minute,
        forget_after=config.daemon.forget_after_days * 86400.0,
        port_range=(t.port_range[0], t.port_range[1]),
    )


class _NullStore(Store):
    """Stands in when the state file must not be overwritten."""

    def __init__(self, why: str) -> None:
        super().__init__()
        self.why = why

    def save(self, records: Iterable[Record]) -> None:
        raise StoreError(f"not saving: {self.why}")
