"""The status snapshot the daemon sends: the book's records and the tunnels' reports,
as the typed views of :mod:`jobtunnel.daemon.api.schema`. Pure: the service hands in
what it holds and sends ``snapshot(...).to_wire()``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from ..api.schema import (
    CheckView,
    DaemonInfo,
    Decision,
    EndpointView,
    ErrorKind,
    ForwardState,
    ForwardView,
    MoveView,
    ServiceState,
    ServiceView,
    SourceKind,
    SourceView,
    StatusSnapshot,
    TunnelState,
)
from ..core.book import Key, Move, Record, Source
from ..core.forward import ForwardSpec, parse_forward
from ..core.netcheck import LinkCheck
from ..core.portnames import port_name
from ..core.sshconfig import Cluster, aliases
from ..engine.options import ForwardStatus, ServiceStatus, TunnelStatus

__all__ = ["JobNames", "endpoint_view", "snapshot", "source_view"]


class JobNames(Protocol):
    """What a source of job names (the Rescale API poller) tells about a job id."""

    def job_name(self, job_id: str | None) -> str | None: ...

    def job_url(self, job_id: str | None) -> str | None: ...


def snapshot(
    daemon: DaemonInfo,
    records: Iterable[Record],
    statuses: Mapping[Key, TunnelStatus],
    forwards: Sequence[ForwardSpec],
    bind_address: str,
    names: Mapping[str, str] | None = None,
    jobs: JobNames | None = None,
) -> StatusSnapshot:
    """The ``status`` reply: the daemon, then every endpoint not forgotten; ``names``:
    the config's names of forwards (by spec)."""
    shown = [rec for rec in records if rec.action != "forgotten"]
    alias = aliases(Cluster(r.user, r.host, r.port, r.job_id) for r in shown)
    return StatusSnapshot(
        daemon=daemon,
        endpoints=tuple(
            _named(
                endpoint_view(rec, statuses.get(rec.key), forwards, bind_address, jobs),
                alias.get(rec.key),
                names or {},
            )
            for rec in shown
        ),
    )


def endpoint_view(
    rec: Record,
    status: TunnelStatus | None,
    forwards: Sequence[ForwardSpec],
    bind_address: str,
    jobs: JobNames | None = None,
) -> EndpointView:
    """One endpoint: its record, and its tunnel's report when it has a tunnel."""
    source = rec.source
    if rec.action == "paused":
        # A paused endpoint's tunnel is merely stopped; "paused" says why.
        state = TunnelState.PAUSED
    elif status is not None:
        state = TunnelState(status.state)
    else:
        state = TunnelState.ENDED if rec.finished else TunnelState.STOPPED
    kind = status.last_error_kind if status else None
    return EndpointView(
        name=rec.name,
        user=rec.user,
        host=rec.host,
        port=rec.port,
        job_id=rec.job_id,
        action=Decision(rec.action),
        state=state,
        since=status.since if status else rec.last_seen,
        last_error=status.last_error if status else None,
        last_error_kind=ErrorKind(kind) if kind else None,
        reconnects=status.reconnects if status else 0,
        bytes_sent=status.bytes_sent if status else 0,
        bytes_received=status.bytes_received if status else 0,
        host_key=status.host_key if status else None,
        source=source.label,
        line=source.line,
        notebook_url=rec.notebook_url,
        forwards=tuple(_forward_view(spec, rec, status, bind_address) for spec in forwards)
        + _discovered_forwards(status),
        source_info=source_view(source),
        pending_move=_move_view(rec.move) if rec.move is not None else None,
        waiting_reason=rec.waiting_reason,
        refused_key=status.refused_key if status else None,
        services=tuple(_service_view(s) for s in status.services) if status else (),
        checked=_check_view(status.checked) if status and status.checked else None,
        job_name=jobs.job_name(rec.job_id) if jobs else None,
        job_url=jobs.job_url(rec.job_id) if jobs else None,
    )


def _named(ep: EndpointView, alias: str | None, names: Mapping[str, str]) -> EndpointView:
    """``ep`` with its ssh_config alias and what each forward serves."""
    forwards = tuple(
        dataclasses.replace(f, name=port_name(f.remote_port, names.get(f.spec)))
        for f in ep.forwards
    )
    return dataclasses.replace(ep, ssh_alias=alias, forwards=forwards)


def source_view(src: Source) -> SourceView:
    return SourceView(
        kind=SourceKind(src.kind),
        path=src.path,
        line=src.line,
        mtime=src.mtime,
        verified=src.verified,
    )


def _move_view(move: Move) -> MoveView:
    return MoveView(
        user=move.user,
        host=move.host,
        port=move.port,
        source=source_view(move.source),
        notebook_url=move.notebook_url,
        seen=move.seen,
    )


def _forward_view(
    spec: ForwardSpec, rec: Record, status: TunnelStatus | None, bind_address: str
) -> ForwardView:
    fs = next((f for f in status.forwards if f.spec == spec.spec), None) if status else None
    return ForwardView(
        spec=spec.spec,
        dynamic=spec.dynamic,
        bind_address=fs.bind_address if fs else (spec.bind_address or bind_address),
        # Sticky: the port the book keeps for it, while the tunnel is not listening.
        local_port=fs.local_port if fs else rec.ports.get(spec.spec),
        remote_host=spec.remote_host or None,
        remote_port=spec.remote_port or None,
        state=_forward_state(status, fs),
        clients=fs.clients if fs else 0,
        error=fs.error if fs else None,
        no_service=fs.no_service if fs else False,
        tls=fs.tls if fs else None,
    )


def _discovered_forwards(status: TunnelStatus | None) -> tuple[ForwardView, ...]:
    """The forwards the tunnel added for discovered services or on request."""
    if status is None:
        return ()
    views = []
    for fs in status.forwards:
        if not fs.discovered:
            continue
        spec = parse_forward(fs.spec)
        views.append(
            ForwardView(
                spec=fs.spec,
                dynamic=False,
                bind_address=fs.bind_address,
                local_port=fs.local_port,
                remote_host=spec.remote_host,
                remote_port=spec.remote_port,
                state=_forward_state(status, fs),
                clients=fs.clients,
                error=fs.error,
                discovered=True,
                tls=fs.tls,
            )
        )
    return tuple(views)


def _check_view(c: LinkCheck) -> CheckView:
    return CheckView(reason=c.reason, at=c.at, outcome=c.outcome)


def _service_view(s: ServiceStatus) -> ServiceView:
    return ServiceView(
        port=s.port,
        kind=s.kind,
        title=s.title,
        state=ServiceState(s.state),
        local_port=s.local_port,
        url=s.url,
    )


def _forward_state(status: TunnelStatus | None, fs: ForwardStatus | None) -> ForwardState:
    if status is None or fs is None:
        return ForwardState.CLOSED
    if fs.local_port is None:
        return ForwardState.ERROR if fs.error else ForwardState.CLOSED
    return ForwardState.UP if status.state == TunnelState.UP else ForwardState.HELD
