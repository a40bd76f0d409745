"""Host literals: every numeric spelling the resolver accepts is checked, never let through."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jobtunnel.daemon.core.address import check_host, hostport, inet_aton


@pytest.mark.parametrize(
    "host",
    [
        "0x7f.0x1",
        "0X7F.1",
        "0177.0.0.1",
        "0xa9.0xfe.0xa9.0xfe",
        "0x0.0x0",
        "2130706433",
        "127.1",
        "10.1",
        "0x34.0x1.0x2.0x3",  # 52.1.2.3: public, but not how any log prints it
        "064.1.2.3",
        "0x7f.0x1.",
        "[0x7f.0x1]",
        "00000000000000000127.1",
    ],
)
def test_numeric_forms_other_than_the_dotted_quad_are_refused(host: str) -> None:
    for allow_private in (False, True):
        _, reason = check_host(host, allow_private)
        assert reason is not None, host


@pytest.mark.parametrize(
    ("host", "canonical", "reason"),
    [
        ("52.1.2.3", "52.1.2.3", None),
        ("127.0.0.1", "127.0.0.1", "loopback"),
        ("169.254.169.254", "169.254.169.254", "link-local"),
        ("0.0.0.0", "0.0.0.0", "unspecified"),
        ("[2600:1f18::5]", "2600:1f18::5", None),
        ("::ffff:127.0.0.1", "::ffff:7f00:1", "address"),
        ("EC2-3-68-190-68.compute.amazonaws.com.", "ec2-3-68-190-68.compute.amazonaws.com", None),
        ("0x7f.example.com", "0x7f.example.com", None),  # a DNS name, checked when resolved
        ("localhost", "localhost", "DNS"),
    ],
)
def test_table_of_hosts(host: str, canonical: str, reason: str | None) -> None:
    got, why = check_host(host, False)
    assert got == canonical
    if reason is None:
        assert why is None
    else:
        assert why is not None and reason in why


def part() -> st.SearchStrategy[str]:
    value = st.integers(0, 1 << 33)
    return st.one_of(
        value.map(str),
        value.map(lambda v: "0" + format(v, "o")),
        st.tuples(st.sampled_from(["0x", "0X"]), value, st.booleans()).map(
            lambda t: t[0] + (format(t[1], "X") if t[2] else format(t[1], "x"))
        ),
        st.sampled_from(["", "0x", "08", "0x_1", "1_0", "٣"]),
    )


numeric_hosts = st.lists(part(), min_size=1, max_size=5).map(".".join)


@settings(max_examples=500, deadline=None)
@given(numeric_hosts, st.booleans())
def test_whatever_inet_aton_reads_is_refused_or_exactly_its_canonical_address(
    host: str, allow_private: bool
) -> None:
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return
    resolved = ipaddress.IPv4Address(packed)
    assert inet_aton(host) == int(resolved)
    got, reason = check_host(host, allow_private)
    if reason is None:
        assert got == str(resolved)
        assert allow_private or resolved.is_global


@settings(max_examples=300, deadline=None)
@given(numeric_hosts)
def test_inet_aton_agrees_with_the_system_one(host: str) -> None:
    try:
        expected: int | None = int(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:
        expected = None
    assert inet_aton(host) == expected


def test_hostport() -> None:
    assert hostport("52.1.2.3", 22) == "52.1.2.3:22"
    assert hostport("::1", 22) == "[::1]:22"
