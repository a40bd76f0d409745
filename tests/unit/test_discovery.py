"""Parsing what a cluster says about its services (core/discovery.py): bounded, never
raising, and only what the cluster's sshd can reach on loopback."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from jobtunnel.daemon.core import discovery
from jobtunnel.daemon.core.discovery import Found, Jupyter, clean_title, plan

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
TCP = HEADER + (
    # 0.0.0.0:2024 listening; 127.0.0.1:8888 listening; 127.0.0.1:49278 established;
    # 192.0.2.2:9000 listening on an outside address only (not reachable as 127.0.0.1)
    "   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 594\n"
    "   1: 0100007F:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 595\n"
    "   2: 0100007F:C07E 0100007F:91A7 01 00000000:00000000 03:00000103 00000000 0 0 0\n"
    "   3: 020200C0:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 596\n"
)
TCP6 = HEADER + (
    # [::]:6006, [::1]:11111, [::ffff:127.0.0.1]:47827, [2001:db8::1]:7000 (outside)
    "   0: 00000000000000000000000000000000:1776 00000000000000000000000000000000:0000 0A\n"
    "   1: 00000000000000000000000001000000:2B67 00000000000000000000000000000000:0000 0A\n"
    "   2: 0000000000000000FFFF00000100007F:BAD3 00000000000000000000000000000000:0000 0A\n"
    "   3: B80D0120000000000000000001000000:1B58 00000000000000000000000000000000:0000 0A\n"
)


def test_listening_ports_reachable_from_loopback_only() -> None:
    sockets = discovery.parse_proc_net_tcp(TCP)
    discovery.parse_proc_net_tcp(TCP6, sockets)
    assert sockets.ports == {2024, 8888, 6006, 11111, 47827}
    assert sockets.odd_lines == 0 and not sockets.truncated


def test_odd_lines_are_counted_not_fatal() -> None:
    text = HEADER + "garbage\n   0: ZZZZ:07E8 00000000:0000 0A\n   1: 0100007F:0000 x 0A\n\n"
    sockets = discovery.parse_proc_net_tcp(text)
    assert sockets.ports == set() and sockets.odd_lines == 3


def test_thousands_of_sockets_are_bounded() -> None:
    lines = "".join(
        f"{i}: 0100007F:{port:04X} 00000000:0000 0A\n" for i, port in enumerate(range(1, 65536))
    )
    sockets = discovery.parse_proc_net_tcp(HEADER + lines)
    assert len(sockets.ports) == discovery.MAX_SOCKETS and sockets.truncated


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_any_text_parses_without_raising(text: str) -> None:
    sockets = discovery.parse_proc_net_tcp(text)
    assert all(1 <= p <= 65535 for p in sockets.ports)
    discovery.parse_jupyter_runtime(text)


def runtime(**kw: object) -> str:
    return json.dumps({"port": 8888, "token": "f00d", "base_url": "/user/x/", **kw})


def test_a_jupyter_runtime_file() -> None:
    server = discovery.parse_jupyter_runtime(runtime(url="https://localhost:8888/user/x/"))
    assert server == Jupyter(8888, "f00d", "/user/x/", secure=True)
    assert server.url(18888) == "https://localhost:18888/user/x/lab?token=f00d"
    plain = discovery.parse_jupyter_runtime(runtime(secure=False, base_url="/"))
    assert plain is not None and plain.url(1) == "http://localhost:1/lab?token=f00d"


def test_runtime_files_that_are_not_a_jupyters_are_ignored() -> None:
    for bad in [
        "[]",
        "{",
        runtime(port=0),
        runtime(port=70000),
        runtime(port=True),
        runtime(port="8888"),
        runtime(token="a&next=http://evil/"),  # room for a second URL part
        runtime(token="x" * 300),
        runtime(base_url="relative/"),
        runtime(base_url="/a?b"),
        " " * (discovery.MAX_RUNTIME_BYTES + 1),
    ]:
        assert discovery.parse_jupyter_runtime(bad) is None, bad


def test_page_titles() -> None:
    assert clean_title(b"HTTP/1.1 200 OK\r\n\r\n<title> Jupyter\tServer </title>") == (
        "Jupyter Server"
    )
    assert clean_title(b"HTTP/1.0 404 Not Found\r\n\r\nnope") == ""
    assert clean_title(b"\x16\x03\x01 TLS") is None  # not HTTP
    long = b"HTTP/1.1 200 OK\r\n\r\n<title>" + b"\x1b[31m" + b"A" * 500 + b"</title>"
    title = clean_title(long)
    assert title is not None and len(title) == 60 and "\x1b" not in title


def test_plan_forwards_automatic_kinds_offers_the_rest() -> None:
    found = {
        22: Found(22, "tcp"),
        111: Found(111, "tcp"),
        8888: Found(8888, "jupyter"),
        8890: Found(8890, "jupyter"),
        6006: Found(6006, "http", "TensorBoard"),
        47827: Found(47827, "tcp"),
    }
    p = plan(found, configured={8888, 5901}, chosen={47827}, auto_kinds={"jupyter"})
    assert p.forward == (8890,)  # 8888 is already configured
    assert p.offer == (6006,)  # the system's own ports (22, 111) are not offered
    assert p.no_service == (5901,)  # configured, and nothing listens there


def test_plan_is_bounded() -> None:
    found = {p: Found(p, "jupyter") for p in range(10000, 10100)}
    p = plan(found, configured=set(), chosen=set(), auto_kinds={"jupyter"}, max_auto=4)
    assert len(p.forward) == 4 and len(p.offer) <= discovery.MAX_OFFERED
