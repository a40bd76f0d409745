"""A network namespace of the test's own, joined to this one by a veth pair: a host
whose listening sockets are its own (a cluster, for discovery), reached at ``ns_ip``.
Torn down with every process in it, also when the test fails."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from .deps import dependency_missing

__all__ = ["FAULTS", "Netns", "Pair", "inside", "namespace", "pair"]

CLONE_NEWNET = 0x40000000
# The faults a laptop's network goes through: its link, its address, its route.
FAULTS = ("link down, then up", "address changed", "route removed and restored")

_count = itertools.count(1)


@dataclass(frozen=True)
class Netns:
    name: str
    host_ip: str  # this side of the veth pair
    ns_ip: str  # the namespace's side

    def wrap(self, argv: Sequence[str] = ()) -> list[str]:
        """``argv`` run inside the namespace (its own network; a mount namespace of its
        own per call, as ``ip netns exec`` makes one)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.wrap(argv), capture_output=True, text=True, timeout=30)

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=10
        ).stdout
        return [int(p) for p in out.split()]


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _new_tag() -> tuple[str, int]:
    """A tag for this process's next namespaces and interfaces, and an octet of its own."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        dependency_missing("network namespaces need root and ip (iproute2)")
    n = next(_count)
    return f"{os.getpid() % 100000}{n}", (os.getpid() * 7 + n) % 250 + 1


@contextmanager
def namespace() -> Iterator[Netns]:
    tag, octet = _new_tag()
    name = f"jt{tag}"
    host_if, ns_if = f"jh{tag}"[:15], f"jn{tag}"[:15]
    host_ip, ns_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
    try:
        _ip("netns", "add", name)
    except RuntimeError as exc:
        dependency_missing(f"cannot make a network namespace here: {exc}")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _ip("-n", name, "link", "set", ns_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield Netns(name, host_ip, ns_ip)
    finally:
        ns = Netns(name, host_ip, ns_ip)
        for pid in ns.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@dataclass(frozen=True)
class Pair:
    """Two namespaces joined by a veth pair: a laptop (``client``) and a cluster
    (``server``) on one /24, with the laptop's side of the link to break."""

    client: Netns  # ns_ip: the laptop's address; host_ip unused (no host link)
    server: Netns  # ns_ip: the cluster's address
    client_if: str
    prefix: str  # "10.232.N"

    def ip(self, *args: str) -> None:
        """``ip`` in the laptop's namespace."""
        _ip("-n", self.client.name, *args)

    def link(self, up: bool) -> None:
        self.ip("link", "set", self.client_if, "up" if up else "down")

    def move_address(self, new_host: int) -> str:
        """The laptop's address goes, another comes (as when Wi-Fi changes)."""
        new = f"{self.prefix}.{new_host}"
        self.ip("addr", "flush", "dev", self.client_if)
        self.ip("addr", "add", f"{new}/24", "dev", self.client_if)
        return new

    def route(self, present: bool) -> None:
        verb = "add" if present else "del"
        self.ip("route", verb, f"{self.prefix}.0/24", "dev", self.client_if)

    def fault(self, kind: str, outage: float, new_host: int) -> float:
        """Break the laptop's network as :data:`FAULTS` ``kind`` says, for ``outage``
        seconds (an address change has none: the new one comes with the old one's
        going, at ``new_host``); the :func:`time.monotonic` when it was back."""
        if kind == FAULTS[0]:
            self.link(False)
            time.sleep(outage)
            self.link(True)
        elif kind == FAULTS[1]:
            self.move_address(new_host)
        elif kind == FAULTS[2]:
            self.route(False)
            time.sleep(outage)
            self.route(True)
        else:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULTS)}")
        return time.monotonic()


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@contextmanager
def inside(ns: Netns) -> Iterator[None]:
    """The calling thread in ``ns``'s network (Python 3.11 has no os.setns): the sockets
    it opens, and the threads and processes it starts meanwhile, are the namespace's."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(f"/run/netns/{ns.name}")
        try:
            yield
        finally:
            _setns(f"/proc/self/fd/{home}")
    finally:
        os.close(home)


@contextmanager
def pair() -> Iterator[Pair]:
    tag, octet = _new_tag()
    names = (f"jc{tag}", f"js{tag}")
    cif, sif = f"jc{tag}"[:15], f"js{tag}"[:15]
    prefix = f"10.232.{octet}"
    made: list[str] = []
    try:
        for name in names:
            try:
                _ip("netns", "add", name)
            except RuntimeError as exc:
                dependency_missing(f"cannot make a network namespace here: {exc}")
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", names[0], "link", "add", cif, "type", "veth", "peer", "name", sif)
        _ip("-n", names[0], "link", "set", sif, "netns", names[1])
        _ip("-n", names[0], "addr", "add", f"{prefix}.1/24", "dev", cif)
        _ip("-n", names[1], "addr", "add", f"{prefix}.2/24", "dev", sif)
        _ip("-n", names[0], "link", "set", cif, "up")
        _ip("-n", names[1], "link", "set", sif, "up")
        client = Netns(names[0], "", f"{prefix}.1")
        server = Netns(names[1], "", f"{prefix}.2")
        yield Pair(client, server, cif, prefix)
    finally:
        for name in made:
            for pid in Netns(name, "", "").pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
