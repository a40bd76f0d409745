"""What a cluster serves: ``services`` lists what discovery found over the tunnel,
``forward`` forwards one of its ports."""

from __future__ import annotations

import argparse

from ..api.schema import ServiceState
from . import control
from .endpoints import NAME_HELP, endpoint_named
from .output import Fail, out, print_json, table

__all__ = ["forward", "services"]


def services(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The services a cluster serves to its own loopback, found over the tunnel's SSH "
        "connection (its listening ports; Jupyter's runtime files give its token and "
        "path): forwarded on a local port, offered (`jobtunnel forward NAME PORT`), or "
        "gone. Kinds in tunnels.auto_forward (Jupyter by default) are forwarded by "
        "themselves; discovery runs when the link comes up and every "
        "tunnels.discover_interval seconds."
    )
    parser.epilog = "examples:\n  jobtunnel services qpWia\n  jobtunnel services qpWia --refresh"
    parser.add_argument("name", metavar="NAME", help=NAME_HELP)
    parser.add_argument("--refresh", action="store_true", help="look again now, then list")
    parser.add_argument("--json", action="store_true", help="the services as JSON")
    parser.set_defaults(func=run_services)


def run_services(args: argparse.Namespace) -> int:
    snapshot, _ = control.status(args)
    ep = endpoint_named(snapshot.endpoints, args.name)
    if args.refresh:
        control.call(args, "services", name=ep.name, refresh=True)  # returns once looked
        snapshot, _ = control.status(args)
        ep = endpoint_named(snapshot.endpoints, ep.name)
    if args.json:
        print_json([s.to_wire() for s in ep.services])
        return 0
    if not ep.services:
        out(f"{ep.name}: no service found yet (state {ep.state})")
        return 0
    rows = [
        [
            str(s.port),
            s.title or s.kind,
            s.state,
            f"localhost:{s.local_port}" if s.local_port else "-",
            s.url or (f"jobtunnel forward {ep.job_id or ep.name} {s.port}"
                      if s.state == ServiceState.OFFERED else ""),
        ]
        for s in ep.services
    ]  # fmt: skip
    out(table(rows, ["PORT", "SERVICE", "STATE", "LOCAL", "OPEN / FORWARD WITH"]))
    return 0


def forward(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Forward a port of a cluster's loopback (one `jobtunnel services NAME` offers, or "
        "any) on a local port, now and at every start of its tunnel."
    )
    parser.epilog = "example:\n  jobtunnel forward qpWia 47827"
    parser.add_argument("name", metavar="NAME", help=NAME_HELP)
    parser.add_argument("port", metavar="PORT", type=int, help="the port on the cluster")
    parser.set_defaults(func=run_forward)


def run_forward(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise Fail(f"{args.port} is not a port number (1-65535)")
    result = control.call(args, "forward", name=args.name, port=args.port)
    local = result.get("local_port") if isinstance(result, dict) else None
    where = f"localhost:{local}" if local else "a local port (it could not be bound yet)"
    out(f"{result.get('name', args.name)}: cluster port {args.port} forwarded on {where}")
    return 0
