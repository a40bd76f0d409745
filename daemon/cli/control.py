"""Talking to the running daemon: one request over the control API."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, load_config
from .output import Fail, err

if TYPE_CHECKING:
    from ..api.schema import StatusSnapshot

__all__ = ["call", "status"]


def call(args: argparse.Namespace, cmd: str, **params: Any) -> Any:
    """Send ``cmd`` with ``params`` to the daemon and return its result; a refusal or a
    daemon that is not running ends the command (exit status 1)."""
    from ..api.client import ControlError, DaemonNotRunning, call_sync
    from ..api.wire import default_transport

    try:
        transports = [load_config(args.config)[0].daemon.control]
    except ConfigError:
        # The running daemon keeps the config it loaded; a broken file must not cut the
        # user off from it, whichever transport that config chose.
        err("jobtunnel: warning: the config file has errors (`jobtunnel config check`)")
        first = default_transport()
        transports = [first, "tcp" if first == "unix" else "unix"]
    for transport in transports:
        try:
            return call_sync(cmd, params, transport=transport)
        except DaemonNotRunning as exc:
            not_running = exc
        except ControlError as exc:
            raise Fail(str(exc), 1) from None
    raise Fail(str(not_running), 1) from None


def status(args: argparse.Namespace) -> tuple[StatusSnapshot, Any]:
    """The daemon's status, typed, and as it was sent (for ``--json``); a reply that
    does not fit the schema ends the command with the key path that is wrong."""
    from ..api.schema import SchemaError, from_wire

    raw = call(args, "status")
    try:
        return from_wire(raw), raw
    except SchemaError as exc:
        raise Fail(f"the daemon's status reply does not fit this jobtunnel: {exc}", 1) from None
