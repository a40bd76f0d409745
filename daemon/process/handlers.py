"""The control API's command handlers: each takes the request's ``args`` and acts
through the :class:`~jobtunnel.daemon.process.service.Service` (its book and tunnels)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..api.schema import Command
from ..api.wire import ControlError
from ..core.address import check_host
from ..core.book import NoMove, Record
from ..core.detect import Endpoint, Rejection, job_id_of
from ..engine.tunnel import Tunnel
from .scan import scan_file
from .store import record_to_dict

if TYPE_CHECKING:
    from .service import Service

__all__ = ["CommandError", "Handler", "Handlers"]

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class CommandError(ControlError):
    """A control command that cannot be done; the message goes back to the user."""


class Handlers:
    """The commands of the control API, acting on one service."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def table(self) -> dict[str, Handler]:
        """Command name -> its coroutine, for the control server."""
        return {
            Command.STATUS: self._cmd_status,
            # The reply to a subscription is the snapshot the events then update.
            Command.SUBSCRIBE: self._cmd_status,
            Command.LIST: self._cmd_list,
            Command.ADD: self._cmd_add,
            Command.CONNECT: self._cmd_connect,
            Command.DISCONNECT: self._cmd_disconnect,
            Command.RECONNECT: self._cmd_reconnect,
            Command.FORGET: self._cmd_forget,
            Command.TRUST: self._cmd_trust,
            Command.PAUSE: self._cmd_pause,
            Command.RESUME: self._cmd_resume,
            Command.STOP: self._cmd_stop,
            Command.SWITCH: self._cmd_switch,
            Command.FORWARD: self._cmd_forward,
            Command.SERVICES: self._cmd_services,
            Command.RELOAD: self._cmd_reload,
            Command.RESCALE_REFRESH: self._cmd_rescale_refresh,
        }

    def _resolve(self, args: dict[str, Any]) -> Record:
        name = args.get("name")
        if not isinstance(name, str):
            raise CommandError("name an endpoint: a job id or user@host:port")
        try:
            return self.service.book.resolve(name)
        except LookupError as exc:
            raise CommandError(str(exc)) from None

    async def _cmd_status(self, args: dict[str, Any]) -> Any:
        return self.service.status().to_wire()

    async def _cmd_list(self, args: dict[str, Any]) -> Any:
        return [record_to_dict(rec) for rec in self.service.book]

    async def _cmd_add(self, args: dict[str, Any]) -> Any:
        target = args.get("target")
        if not isinstance(target, str) or not target.strip():
            raise CommandError("add what? a job log file or USER@HOST[:PORT]")
        endpoints = await self._endpoints_from(target.strip())
        added = [await self.service._on_endpoint(ep, explicit=True) for ep in endpoints]
        return [rec.name for rec in added if rec is not None]

    async def _endpoints_from(self, target: str) -> list[Endpoint]:
        path = Path(target).expanduser()
        if "@" in target and not path.exists():
            return [self._parse_user_host(target)]
        if not path.is_file():
            raise CommandError(f"{target}: no such file (and not USER@HOST[:PORT])")

        rejected: list[Rejection] = []
        try:
            endpoints = await asyncio.to_thread(
                scan_file, path.resolve(), self.service.config.detect, rejected.append
            )
        except OSError as exc:
            raise CommandError(f"{target}: cannot read: {exc.strerror or exc}") from None
        if not endpoints:
            reasons = "; ".join(str(r) for r in rejected[:3])
            raise CommandError(
                f"{target}: no cluster endpoint found" + (f" ({reasons})" if reasons else "")
            )
        return endpoints

    def _parse_user_host(self, target: str) -> Endpoint:
        user, _, rest = target.partition("@")
        if not user or not rest:
            raise CommandError(f"{target!r}: expected USER@HOST[:PORT]")
        port = 22
        host = rest
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            if tail.startswith(":"):
                port = _port_arg(tail[1:], target)
        elif rest.count(":") == 1:
            host, _, port_text = rest.partition(":")
            port = _port_arg(port_text, target)
        host, reason = check_host(host, self.service.config.detect.allow_private_addresses)
        if reason is not None:
            raise CommandError(f"{target}: {reason}")
        return Endpoint(user, host, port, job_id_of(user), "added by the user", 0)

    async def _cmd_rescale_refresh(self, args: dict[str, Any]) -> Any:
        """Poll the Rescale API now (a new key is read first)."""
        self.service.rescale.refresh()
        return self.service.rescale.view().to_wire()

    async def _cmd_connect(self, args: dict[str, Any]) -> Any:
        rec = self._resolve(args)
        await self.service._apply(self.service.book.connect(rec))
        return rec.name

    async def _cmd_disconnect(self, args: dict[str, Any]) -> Any:
        rec = self._resolve(args)
        await self.service._apply(self.service.book.disconnect(rec))
        self.service._publish()
        return rec.name

    async def _cmd_reconnect(self, args: dict[str, Any]) -> Any:
        if args.get("name") is None:
            for each in self.service.tunnels.values():
                each.reconnect_now()
            return [t.name for t in self.service.tunnels.values()]
        tunnel = self._open_tunnel_of(args)
        tunnel.reconnect_now()
        return tunnel.name

    async def _cmd_trust(self, args: dict[str, Any]) -> Any:
        tunnel = self._open_tunnel_of(args)
        fingerprint = args.get("fingerprint")
        if fingerprint is not None and not (
            isinstance(fingerprint, str) and fingerprint.startswith("SHA256:")
        ):
            raise CommandError("a fingerprint looks like SHA256:... (as `status` shows it)")
        try:
            tunnel.accept_new_host_key(fingerprint)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        return tunnel.name

    async def _cmd_switch(self, args: dict[str, Any]) -> Any:
        rec = self._resolve(args)
        try:
            plan = self.service.book.switch(rec)
        except NoMove as exc:
            raise CommandError(str(exc)) from None
        await self.service._apply(plan)
        self.service._publish()
        return rec.name

    async def _cmd_forward(self, args: dict[str, Any]) -> Any:
        """Forward a port of the cluster (one discovery offered, or any), now and at
        every start; the local port it got."""
        tunnel = self._open_tunnel_of(args)
        port = args.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise CommandError("forward which port? a cluster port number (1-65535)")
        rec = self._resolve(args)
        if self.service.book.choose_port(rec.key, port):
            self.service._saved_if_changed()
        await tunnel.forward_port(port)
        local = next((s.local_port for s in tunnel.status().services if s.port == port), None)
        if local is None:
            local = next(
                (f.local_port for f in tunnel.status().forwards if f.spec == str(port)), None
            )
        return {"name": rec.name, "port": port, "local_port": local}

    async def _cmd_services(self, args: dict[str, Any]) -> Any:
        """Look at the cluster's services now (``refresh``); the snapshot then shows them."""
        tunnel = self._open_tunnel_of(args)
        if args.get("refresh") and not await tunnel.look():
            raise CommandError(f"{tunnel.name}: could not look now (is its link up?)")
        self.service._publish()
        return [s.port for s in tunnel.status().services]

    def _open_tunnel_of(self, args: dict[str, Any]) -> Tunnel:
        """The running tunnel of the endpoint named in ``args``."""
        rec = self._resolve(args)
        tunnel = self.service.tunnels.get(rec.key)
        if tunnel is None:
            raise CommandError(f"{rec.name} is {rec.action}; `jobtunnel connect` it first")
        return tunnel

    async def _cmd_forget(self, args: dict[str, Any]) -> Any:
        rec = self._resolve(args)
        await self.service._apply(self.service.book.forget(rec))
        self.service._publish()
        return rec.name

    def _named_or_all(self, args: dict[str, Any]) -> list[Record]:
        if args.get("name") is not None:
            return [self._resolve(args)]
        return [r for r in self.service.book if r.action != "forgotten"]

    async def _cmd_pause(self, args: dict[str, Any]) -> Any:
        records = self._named_or_all(args)
        await self.service._apply(self.service.book.pause(records))
        self.service._publish()
        return [rec.name for rec in records]

    async def _cmd_resume(self, args: dict[str, Any]) -> Any:
        if args.get("name") is not None:
            return [await self._cmd_connect(args)]
        records = self._named_or_all(args)
        await self.service._apply(self.service.book.resume(records))
        self.service._publish()
        return [rec.name for rec in records]

    async def _cmd_reload(self, args: dict[str, Any]) -> Any:
        errors = await self.service.reload()
        if errors is not None:
            raise CommandError(f"config not reloaded, the old one stays in force:\n{errors}")
        return {"reloaded": str(self.service.config_path or "the default config")}

    async def _cmd_stop(self, args: dict[str, Any]) -> Any:
        # Reply first; the shutdown follows on the next loop turn.
        asyncio.get_running_loop().call_soon(self.service.request_stop)
        return "stopping"


def _port_arg(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise CommandError(f"{whole!r}: {text!r} is not a port number (1-65535)")
    return int(text)
