"""The address rule for resolved names, proxy_jump parsing, and how refusals are told."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon.config import load_config
from jobtunnel.daemon.core.address import address_problem, check_host, parse_user_hostport
from jobtunnel.daemon.core.policy import ErrorKind, describe_error
from jobtunnel.daemon.engine.errors import AddressRefused, BastionFailed, classify
from jobtunnel.daemon.engine.options import TunnelOptions, tunnel_options


@pytest.mark.parametrize(
    ("ip", "words"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1%2", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", ""),  # reserved (Python counts it private too)
        ("fd00::7", "private"),
        ("::ffff:127.0.0.1", ""),  # IPv4-mapped loopback: not public either way
        ("100.64.0.1", ""),  # carrier-grade NAT space
    ],
)
def test_non_public_addresses_are_refused_unless_allowed(ip: str, words: str) -> None:
    problem = address_problem(ip, allow_private=False)
    assert problem is not None and words in problem
    assert "detect.allow_private_addresses" in problem
    assert address_problem(ip, allow_private=True) is None


@pytest.mark.parametrize("ip", ["8.8.8.8", "52.1.2.3", "2606:4700::1"])
def test_public_addresses_pass(ip: str) -> None:
    assert address_problem(ip, allow_private=False) is None


def test_not_an_address_is_refused_even_when_private_is_allowed() -> None:
    for allow in (False, True):
        assert address_problem("cluster.example.com", allow) == "not an IP address"


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.1.2.3", "8.8.8.8", "::1", "fe80::1", "240.1.1.1"])
def test_check_host_on_a_literal_is_the_same_rule(ip: str) -> None:
    for allow in (False, True):
        assert check_host(ip, allow)[1] == address_problem(ip, allow)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("me@bastion.example.com", ("me", "bastion.example.com", 22)),
        ("me@Bastion.Example.com:2222", ("me", "bastion.example.com", 2222)),
        ("me@10.0.0.1:22", ("me", "10.0.0.1", 22)),
        ("me@[::1]:2200", ("me", "::1", 2200)),
        ("me@[::1]", ("me", "::1", 22)),
        ("first.last@host", ("first.last", "host", 22)),
    ],
)
def test_proxy_jump_parses(text: str, parsed: tuple[str, str, int]) -> None:
    assert parse_user_hostport(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "bastion",
        "@bastion",
        "me@",
        "me@bastion:",
        "me@bastion:0",
        "me@bastion:65536",
        "me@bastion:x",
        "me@bastion:²",
        "me@::1",
        "me@[::1",
        "me@[::1]x",
        "m e@bastion",
        "me@bas tion",
        "me@bastion/22",
    ],
)
def test_proxy_jump_refuses_bad_forms(text: str) -> None:
    with pytest.raises(ValueError):
        parse_user_hostport(text)
    with pytest.raises(ValueError, match="proxy_jump"):
        TunnelOptions(proxy_jump=text)


def test_options_from_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[ssh]\nproxy_jump = 'me@jump.example.com:2022'\n[detect]\nallow_private_addresses = true\n"
    )
    options = tunnel_options(load_config(path)[0])
    assert options.proxy_jump == "me@jump.example.com:2022"
    assert options.bastion() == ("me", "jump.example.com", 2022)
    assert options.allow_private_addresses is True
    default = TunnelOptions()
    assert default.allow_private_addresses is False and default.bastion() is None


def test_refusals_are_told_clearly() -> None:
    exc = AddressRefused(
        "cluster.example.com", "10.0.0.5", address_problem("10.0.0.5", False) or ""
    )
    kind, detail = classify(exc)
    assert kind is ErrorKind.UNREACHABLE  # retried: each try resolves and checks again
    assert detail == (
        "cluster.example.com resolves to 10.0.0.5, a private address "
        "(set detect.allow_private_addresses to accept it)"
    )
    assert detail in describe_error(kind, detail)

    kind, detail = classify(BastionFailed("me@jump:22", ConnectionRefusedError()))
    assert (kind, detail) == (ErrorKind.UNREACHABLE, "bastion me@jump:22: connection refused")
    kind, detail = classify(BastionFailed("me@jump:22", socket.gaierror(-2, "Name unknown")))
    assert kind is ErrorKind.UNREACHABLE and detail.startswith("bastion me@jump:22: name lookup")
    denied = asyncssh.PermissionDenied("no key")
    assert classify(BastionFailed("me@jump:22", denied)) == (
        ErrorKind.AUTH,
        "bastion me@jump:22: no key",
    )
