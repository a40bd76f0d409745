"""``jobtunnel scan FILE...``: what the daemon would connect to, without a daemon."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..core.detect import Endpoint
from ..process.scan import scan_file
from .config import load
from .output import err, interactive, out, table

__all__ = ["scan"]

# Files at least this large get a progress line on an interactive terminal.
PROGRESS_FROM = 64 << 20


def scan(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Read job log files (Rescale Logs panel exports, saved pages, ssh -v output...) "
        "and show the cluster endpoints the daemon would connect to: the newest one per "
        "job. Rejected candidates (private addresses, bad ports...) are listed on stderr "
        "with the reason. Exit status 2 if a file could not be read."
    )
    parser.epilog = (
        "examples:\n"
        "  jobtunnel scan ~/Downloads/job_qpWia_logs.tsv\n"
        "  jobtunnel scan --json ~/JobLogs/*.log | jq .host"
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="job log files to read")
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per endpoint and line: file, line, user, host, "
        "port, job_id, notebook_url (when named)",
    )
    parser.set_defaults(func=run_scan)


def _progress_line(path: Path) -> Callable[[int], None]:
    """A throttled "scanning FILE: 40% (400 of 1000 MiB)" line on stderr, when it helps."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size < PROGRESS_FROM or not interactive(sys.stderr):
        return lambda done: None
    last = [0.0]

    def show(done: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and done < size:
            return
        last[0] = now
        end = "\n" if done >= size else ""
        err(
            f"\rscanning {path}: {100 * done // size}% ({done >> 20} of {size >> 20} MiB)",
            end=end,
            flush=True,
        )

    return show


def run_scan(args: argparse.Namespace) -> int:
    config, _ = load(args)
    status = 0
    found: list[Endpoint] = []
    for name in args.files:
        path = Path(name)
        if path.is_dir():
            err(f"jobtunnel: {path}: is a folder; name the files in it (e.g. {path}/*.log)")
            status = 2
            continue
        try:
            endpoints = scan_file(path, config.detect, lambda r: err(str(r)), _progress_line(path))
        except OSError as exc:
            err(f"jobtunnel: {path}: cannot read: {exc.strerror or exc}")
            status = 2
            continue
        if args.json:
            for endpoint in endpoints:
                out(json.dumps(endpoint.to_dict()), flush=True)
        found += endpoints
    if not args.json:
        if found:
            rows = [
                [
                    e.job_id or "-",
                    f"{e.user}@{e.host}:{e.port}",
                    f"{e.source}:{e.line}",
                    e.notebook_url or "",
                ]
                for e in found
            ]
            out(table(rows, ["JOB", "ENDPOINT", "FOUND AT", "NOTEBOOK"]))
        else:
            err("no cluster endpoint found")
    return status
