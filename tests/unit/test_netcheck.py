"""Network change notices, sans-I/O: kernel messages, debouncing, what a check decides,
and the state machine's retry-now."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from jobtunnel.daemon.core.netcheck import (
    IFF_LOWER_UP,
    IFF_RUNNING,
    IFF_UP,
    NETWORK_CHANGED,
    WOKE,
    Debounce,
    LinkFlags,
    Path,
    Verdict,
    link_verdict,
    netlink_changes,
    poll_changed,
    route_socket_changes,
)
from jobtunnel.daemon.core.policy import ErrorKind, ReconnectPolicy, State, TunnelMachine

UP = IFF_UP | IFF_RUNNING | IFF_LOWER_UP


def nlmsg(kind: int, body: bytes) -> bytes:
    length = 16 + len(body)
    msg = struct.pack("=IHHII", length, kind, 0, 0, 0) + body
    return msg + b"\0" * (-len(msg) % 4)


def newlink(index: int, flags: int, kind: int = 16) -> bytes:
    return nlmsg(kind, struct.pack("=BxHiII", 0, 1, index, flags, 0))


def route(flags: int = 0, kind: int = 24) -> bytes:
    return nlmsg(kind, struct.pack("=BBBBBBBBI", 2, 24, 0, 0, 254, 3, 0, 1, flags))


def test_link_news_counts_only_when_the_carrier_changes() -> None:
    links = LinkFlags()
    assert netlink_changes(newlink(2, UP), links) == ["link"]  # first sight
    # A wireless driver's repeated news (signal, statistics): same flags, no change.
    assert netlink_changes(newlink(2, UP | 0x1000) * 3, links) == []
    assert netlink_changes(newlink(2, IFF_UP), links) == ["link"]  # carrier lost
    assert netlink_changes(newlink(2, IFF_UP, kind=17), links) == ["link"]  # removed
    assert netlink_changes(newlink(2, IFF_UP, kind=17), links) == []


def test_addresses_and_routes_are_changes_but_cloned_routes_are_not() -> None:
    data = nlmsg(20, b"\0" * 8) + route() + route(flags=0x200) + nlmsg(25, b"\0" * 12)
    assert netlink_changes(data, LinkFlags()) == ["address", "route", "route"]


def test_a_garbled_datagram_is_read_up_to_where_it_breaks() -> None:
    good = nlmsg(21, b"\0" * 8)
    assert netlink_changes(good + struct.pack("=IHHII", 9999, 20, 0, 0, 0), LinkFlags()) == [
        "address"
    ]
    assert netlink_changes(struct.pack("=IHHII", 3, 20, 0, 0, 0) + good, LinkFlags()) == []
    assert netlink_changes(nlmsg(16, b"\0\0"), LinkFlags()) == []  # short ifinfomsg


@given(st.binary(max_size=512))
def test_any_bytes_parse_without_raising(data: bytes) -> None:
    netlink_changes(data, LinkFlags())
    route_socket_changes(data)


def test_the_bsd_routing_socket_messages() -> None:
    def rt(kind: int, size: int = 92) -> bytes:
        return struct.pack("=HBB", size, 5, kind) + b"\0" * (size - 4)

    assert route_socket_changes(rt(1) + rt(0xC, 20) + rt(0xE, 112) + rt(0x7)) == [
        "route",
        "address",
        "link",
    ]
    assert route_socket_changes(struct.pack("=HBB", 0, 5, 1) + rt(1)) == []


def test_a_burst_is_one_check_after_it_goes_quiet() -> None:
    d = Debounce(quiet=0.25, longest=1.0)  # binary fractions: exact sums
    for t in (10.0, 10.125, 10.25):
        d.event(t)
    assert d.fire(10.375) is None
    assert d.due_at == 10.5
    assert d.fire(10.5) == NETWORK_CHANGED
    assert d.fire(10.625) is None and d.due_at is None


def test_a_timer_a_clock_tick_early_still_fires() -> None:
    d = Debounce()  # the loop's times, in milliseconds: sums are not exact
    d.event(1520.383)
    d.event(1520.39)
    assert d.fire(1520.589) == NETWORK_CHANGED
    d.event(1600.0)
    assert d.fire(1600.1) is None  # but not one that is really early


def test_a_flapping_link_is_checked_at_least_once_a_longest_interval() -> None:
    d = Debounce(quiet=0.25, longest=1.0)
    fired = []
    for tick in range(24):  # a message every 0.125 s for 3 s
        t = tick / 8
        d.event(t)
        if d.fire(t) is not None:
            fired.append(t)
    assert fired == [1.0, 2.125]


def test_a_wake_is_due_at_once_and_outranks_a_network_change() -> None:
    d = Debounce()
    d.event(5.0, NETWORK_CHANGED)
    d.event(5.01, WOKE)
    d.event(5.02, NETWORK_CHANGED)
    assert d.due_at == 5.0
    assert d.fire(5.02) == WOKE


def test_what_a_check_does_with_an_up_link() -> None:
    ok = Path("10.0.0.5", True, True, "10.0.0.5")
    assert link_verdict(ok) == (Verdict.ASK, "")
    assert link_verdict(Path(None, None, None))[0] is Verdict.ASK  # cannot tell: ask
    gone = link_verdict(Path("10.0.0.5", False, True))
    assert gone == (Verdict.DROP, "this machine no longer has the address 10.0.0.5")
    # No route, idle or not: kept, as TCP outlives a short outage.
    assert link_verdict(Path("10.0.0.5", True, False))[0] is Verdict.KEEP
    # The route back leaves from another address (a VPN, another interface): replaced.
    moved = link_verdict(Path("10.0.0.5", True, True, "10.8.0.2"))
    assert moved == (Verdict.DROP, "the route to the cluster now leaves from 10.8.0.2")
    assert link_verdict(Path("fe80::1%eth0", True, True, "fe80::1"))[0] is Verdict.ASK
    assert link_verdict(Path("::ffff:10.0.0.5", True, True, "::ffff:10.0.0.5"))[0] is Verdict.ASK


def test_the_poller_sees_a_change_only_after_its_first_look() -> None:
    assert not poll_changed(None, ("a",))
    assert not poll_changed(("a",), ("a",))
    assert poll_changed(("a",), ("b",))


def machine() -> TunnelMachine:
    m = TunnelMachine(ReconnectPolicy(initial_delay=20, max_delay=60), rand=lambda: 1.0)
    m.start(0.0)
    m.attempt_started(0.0)
    return m


def test_a_network_change_skips_the_backoff_of_a_retrying_endpoint() -> None:
    m = machine()
    m.attempt_failed(0.0, ErrorKind.UNREACHABLE)
    assert m.next_attempt_at == 20.0
    assert m.network_changed(1.0)
    assert m.next_attempt_at == 1.0 and m.due(1.0)
    assert not m.network_changed(1.0)  # already due


def test_a_network_change_leaves_failures_that_need_the_user() -> None:
    m = machine()
    m.attempt_failed(0.0, ErrorKind.AUTH)
    assert m.state is State.FAILED
    assert not m.network_changed(1.0)
    m2 = machine()
    m2.connected(0.0)
    assert not m2.network_changed(1.0)  # up: the tunnel asks the server instead


def test_an_abandoned_attempt_is_no_failure_and_is_retried_at_once() -> None:
    m = machine()
    m.attempt_abandoned(3.0)
    assert m.last_error is None and m.attempts == 0
    assert m.next_attempt_at == 3.0
