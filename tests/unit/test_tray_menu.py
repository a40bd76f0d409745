"""The tray without a display: icon state, tooltip, menu model, notices, backend choice,
and menu actions, all as pure functions of status snapshots (or with fakes for the
desktop)."""

from __future__ import annotations

import copy
import logging
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.api.schema import (
    Command,
    EndpointView,
    ForwardView,
    SchemaError,
    StatusSnapshot,
    TrayAction,
    from_wire,
)
from jobtunnel.daemon.config import default_config_text
from jobtunnel.tray import app as tray_app
from jobtunnel.tray import backend
from jobtunnel.tray.icon import Overall, draw, overall, tooltip
from jobtunnel.tray.menu import (
    Action,
    Item,
    MenuContext,
    build_menu,
    forward_text,
    forward_url,
    notebook_on_tunnel,
    since_text,
    ssh_command,
)
from jobtunnel.tray.notify import Notice, NoticePolicy, Notifier
from PIL import Image

from tests.helpers.recorded import recorded

pytestmark = pytest.mark.timeout(30)

NOW = 1_764_000_000.0
CTX = MenuContext(
    now=NOW,
    identity_file="/home/u/.local/share/jobtunnel/id_ed25519",
    public_key="/home/u/.local/share/jobtunnel/id_ed25519.pub",
    log_file="/home/u/.local/state/jobtunnel/log/jobtunnel.log",
    config_file="/home/u/.config/jobtunnel/config.toml",
    ssh_config="/home/u/.local/share/jobtunnel/ssh_config",
)


UP = recorded("up")


def based(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes``, each of which must be a key the daemon really sends."""
    unknown = changes.keys() - base.keys()
    assert not unknown, f"not in the recorded payload: {sorted(unknown)}"
    return copy.deepcopy(base) | changes


def forward(
    local: int | None = 8888, remote: int = 8888, state: str = "up", clients: int = 0, **kw: Any
) -> dict[str, Any]:
    return based(
        UP["endpoints"][0]["forwards"][0],
        {
            "spec": str(remote),
            "dynamic": False,
            "bind_address": "127.0.0.1",
            "local_port": local,
            "remote_host": None,
            "remote_port": remote,
            "state": state,
            "clients": clients,
            "error": None,
            "tls": None,  # not asked yet (the recorded forward's service is plain http)
        }
        | kw,
    )


def endpoint(
    job: str = "qpWia", state: str = "up", action: str = "active", **kw: Any
) -> dict[str, Any]:
    user = f"uprod_{job}"
    return based(
        UP["endpoints"][0],
        {
            "name": f"{user}@3.4.5.6:22",
            "user": user,
            "host": "3.4.5.6",
            "port": 22,
            "job_id": job,
            "action": action,
            "state": state,
            "since": NOW - 600,
            "last_error": None,
            "last_error_kind": None,
            "reconnects": 0,
            "host_key": None,
            "source": "/logs/x.log",
            "line": 3,
            "source_info": None,
            "forwards": [forward()],
            "services": [],
            "ssh_alias": f"rescale-{job}",
        }
        | kw,
    )


def snapshot(*endpoints: dict[str, Any], folders: tuple[str, ...] = ("/w",)) -> StatusSnapshot:
    return from_wire(wire_snapshot(*endpoints, folders=folders))


def wire_snapshot(*endpoints: dict[str, Any], folders: tuple[str, ...] = ("/w",)) -> dict[str, Any]:
    daemon = based(UP["daemon"], {"started": NOW - 3600, "config": CTX.config_file})
    daemon["watch"]["folders"] = list(folders)
    return based(UP, {"daemon": daemon, "endpoints": list(endpoints)})


def test_the_recorded_payloads_make_menus() -> None:
    """Each state the real daemon was recorded in, as the tray shows it."""
    shown = {name: build_menu(from_wire(recorded(name)), CTX) for name in
             ("empty", "up", "paused", "refused-key", "pending-move")}  # fmt: skip
    assert texts(shown["empty"])[0] == "no clusters yet"
    assert "No clusters yet (watching 1 folder)" in texts(shown["empty"])
    assert texts(shown["up"])[0] == "1 tunnel up"
    assert find(shown["up"], "    localhost:").action is not None
    assert "Resume all" in texts(shown["paused"]) and texts(shown["paused"])[0] == "1 paused"
    assert texts(shown["refused-key"])[0] == "1 failed"
    assert find(shown["refused-key"], "Trust") is not None
    assert find(shown["refused-key"], "Source: /home/u/JobLogs/job.log:2") is not None
    switch = find(shown["pending-move"], "    Job rec1 reports a new address 127.0.0.2 port 32100")
    assert switch.text.endswith("(from newer.log:1) - Switch")
    assert switch.action is not None and switch.action.id is TrayAction.SWITCH


def fv(*args: Any, **kw: Any) -> ForwardView:
    return ForwardView.from_wire(forward(*args, **kw))


def ev(*args: Any, **kw: Any) -> EndpointView:
    return EndpointView.from_wire(endpoint(*args, **kw))


def find(items: tuple[Item, ...], text: str) -> Item:
    for item in items:
        if (hit := item.find(text)) is not None:
            return hit
    raise AssertionError(f"no menu item {text!r} in {[i.text for i in items]}")


def texts(items: tuple[Item, ...]) -> list[str]:
    return [i.text for i in items if not i.separator]


def pixels(img: Image.Image) -> list[tuple[int, ...]]:
    raw = img.tobytes()
    return [tuple(raw[i : i + 4]) for i in range(0, len(raw), 4)]


# -- icon ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snap", "state"),
    [
        (None, Overall.NO_DAEMON),
        (snapshot(), Overall.IDLE),
        (snapshot(endpoint(state="stopped")), Overall.IDLE),
        (snapshot(endpoint()), Overall.UP),
        (snapshot(endpoint(), endpoint("b", state="reconnecting")), Overall.CONNECTING),
        (snapshot(endpoint(state="connecting")), Overall.CONNECTING),
        (snapshot(endpoint(), endpoint("b", state="failed")), Overall.FAILED),
        (snapshot(endpoint(forwards=[forward(state="error", error="port taken")])), Overall.FAILED),
        (snapshot(endpoint(state="paused", action="paused")), Overall.PAUSED),
    ],
)
def test_overall_state(snap: StatusSnapshot | None, state: Overall) -> None:
    assert overall(snap) is state


def test_tooltip_summarises() -> None:
    snap = snapshot(
        endpoint("a"), endpoint("b"), endpoint("c"), endpoint("d", state="reconnecting")
    )
    assert tooltip(snap) == "jobtunnel: 3 tunnels up, 1 reconnecting"
    assert tooltip(snapshot(endpoint())) == "jobtunnel: 1 tunnel up"
    assert tooltip(snapshot()) == "jobtunnel: no clusters yet"
    assert tooltip(snapshot(endpoint(state="failed"))) == "jobtunnel: 1 failed"
    assert tooltip(None) == "jobtunnel: daemon not running"


@pytest.mark.parametrize("size", [16, 22, 24, 32, 48, 64, 128, 256])
def test_icons_differ_in_shape_and_colour_at_every_size(size: int) -> None:
    images = {state: draw(state, size) for state in Overall}
    for state, img in images.items():
        assert img.size == (size, size) and img.mode == "RGBA"
        assert img.getbbox() is not None, f"{state} is empty at {size} px"
    # Shape alone (where the state's colour is painted, glyph cut-outs included, as a
    # one-colour mask) tells every state apart...
    masks = {
        s: bytes(c[3] > 127 and c[:3] != (255, 255, 255) for c in pixels(img))
        for s, img in images.items()
    }
    assert len(set(masks.values())) == len(Overall)
    # ...and so does shape seen in grey (no colour): luminance images all differ too.
    grey = {s: img.convert("LA").tobytes() for s, img in images.items()}
    assert len(set(grey.values())) == len(Overall)
    # ...and colour alone: each state's dominant opaque colour is its own.
    dominant = set()
    for img in images.values():
        colours = [c for c in pixels(img) if c[3] == 255 and c[:3] != (255, 255, 255)]
        dominant.add(max(set(colours), key=colours.count)[:3])
    assert len(dominant) == len(Overall)


def test_icon_is_crisp_at_16px() -> None:
    """Drawn at size, not scaled down: nearly every pixel is fully opaque or clear."""
    for state in Overall:
        alpha = list(draw(state, 16).getchannel("A").tobytes())
        assert sum(0 < a < 255 for a in alpha) <= len(alpha) // 10
    with pytest.raises(ValueError):
        draw(Overall.UP, 4)
    assert isinstance(draw(Overall.UP), Image.Image)


# -- menu: the forward and endpoint texts, URLs, ssh command ----------------------------


def test_forward_text() -> None:
    assert forward_text(fv(clients=2)) == "localhost:8888 -> 8888  up, 2 clients"
    assert forward_text(fv(clients=1)) == "localhost:8888 -> 8888  up, 1 client"
    assert forward_text(fv(18888, 8888, "held")) == (
        "localhost:18888 -> 8888  waiting for the link"
    )
    assert forward_text(fv(5000, 80, remote_host="10.0.0.5")) == (
        "localhost:5000 -> 10.0.0.5:80  up"
    )
    assert forward_text(fv(None, 80, "error", error="port in use")) == (
        "localhost:? -> 80  error: port in use"
    )
    socks = fv(1080, 0, dynamic=True, remote_port=None)
    assert forward_text(socks) == "localhost:1080 SOCKS proxy  up"


def test_notebook_url_rewritten_onto_the_tunnel() -> None:
    url = "https://platform.rescale.com/notebooks/abcDEF/?token=T0k3n"
    assert notebook_on_tunnel(url, 18888) == "https://localhost:18888/?token=T0k3n"
    ep = ev(notebook_url=url, forwards=[forward(18888, 8888), forward(6006, 6006)])
    assert forward_url(ep, ep.forwards[0]) == "https://localhost:18888/?token=T0k3n"
    # Other forwards open plainly; 8888 without a detected notebook is still TLS.
    assert forward_url(ep, ep.forwards[1]) == "http://localhost:6006/"
    assert forward_url(ev(), fv()) == "https://localhost:8888/"
    assert forward_url(ev(), fv(None)) is None
    assert forward_url(ev(), fv(1080, dynamic=True)) is None


def test_the_tunnels_tls_probe_decides_the_scheme() -> None:
    """Once the probe has answered, its word beats the port's usual scheme."""
    assert forward_url(ev(), fv(18888, 8888, tls=False)) == "http://localhost:18888/"
    assert forward_url(ev(), fv(16006, 6006, tls=True)) == "https://localhost:16006/"
    url = "https://platform.rescale.com/notebooks/abcDEF/?token=T0k3n"
    ep = ev(notebook_url=url, forwards=[forward(18888, 8888, tls=False)])
    assert forward_url(ep, ep.forwards[0]) == "http://localhost:18888/?token=T0k3n"


def test_ssh_command_is_correct_openssh() -> None:
    ep = ev(
        port=32100,
        forwards=[
            forward(18888, 8888),
            forward(5000, 80, remote_host="node2"),
            forward(1080, None, dynamic=True, remote_port=None),
        ],
    )
    cmd = ssh_command(ep, "/keys/my key")
    assert shlex.split(cmd) == [
        "ssh", "-i", "/keys/my key", "-p", "32100",
        "-L", "127.0.0.1:18888:localhost:8888",
        "-L", "127.0.0.1:5000:node2:80",
        "-D", "127.0.0.1:1080",
        "uprod_qpWia@3.4.5.6",
    ]  # fmt: skip


def test_since_text() -> None:
    assert since_text(NOW - 60, NOW) == time.strftime("since %H:%M", time.localtime(NOW - 60))
    assert since_text(NOW - 3 * 86400, NOW).startswith("since ")
    assert len(since_text(NOW - 3 * 86400, NOW)) > len("since 00:00")
    assert since_text(None, NOW) == ""


# -- menu: the whole tree for every state ----------------------------------------------


def test_menu_without_daemon_offers_to_start_it() -> None:
    items = build_menu(None, CTX)
    assert texts(items) == [
        "jobtunnel daemon is not running", "Start daemon", "Open log", "Edit settings", "Quit",
    ]  # fmt: skip
    assert find(items, "Start daemon").action == Action("start_daemon")
    assert not find(items, "jobtunnel daemon").enabled
    assert find(items, "Edit settings").action == Action("edit_settings", (CTX.config_file,))
    starting = build_menu(None, MenuContext(**{**CTX.__dict__, "starting_daemon": True}))
    assert not find(starting, "Starting daemon").enabled
    detailed = build_menu(None, MenuContext(**{**CTX.__dict__, "detail": "timed out"}))
    assert texts(detailed)[0] == "jobtunnel daemon is not running: timed out"


def test_menu_with_one_cluster_up() -> None:
    ep = endpoint(forwards=[forward(18888, 8888, clients=2)])
    items = build_menu(snapshot(ep), CTX)
    since = since_text(NOW - 600, NOW)
    assert texts(items) == [
        "1 tunnel up",
        f"qpWia  uprod_qpWia@3.4.5.6:22  up {since}",
        "    localhost:18888 -> 8888  up, 2 clients",
        "Open watched folder",
        "Add job log…",
        "Pause all",
        "Copy public key",
        "Open log",
        "Edit settings",
        "Stop daemon",
        "Quit",
    ]
    assert items[0].enabled is False
    header = find(items, "qpWia")
    assert texts(header.children) == [
        "Source: /logs/x.log:3", "Copy ssh command", "Open terminal", "Copy scp command",
        "Reconnect now", "Disconnect", "Forget",
    ]  # fmt: skip
    assert not find(items, "Source:").enabled
    assert find(items, "Open terminal").action == Action(
        "open_terminal", ("ssh", "-F", CTX.ssh_config, "rescale-qpWia")
    )
    assert find(items, "Copy scp command").action == Action(
        "copy_text", (f"scp -F {CTX.ssh_config} FILE rescale-qpWia:", "scp command")
    )
    name = "uprod_qpWia@3.4.5.6:22"
    assert find(items, "Reconnect now").action == Action("reconnect", (name,))
    assert find(items, "Disconnect").action == Action("disconnect", (name,))
    assert find(items, "Forget").action == Action("forget", (name,))
    copy_ssh = find(items, "Copy ssh command").action
    assert copy_ssh is not None and copy_ssh.id == "copy_text"
    assert copy_ssh.args == (ssh_command(ev(**ep), CTX.identity_file), "ssh command")
    assert find(items, "    localhost:18888").action == Action(
        "open_url", ("https://localhost:18888/",)
    )
    assert find(items, "Open watched folder").action == Action("open_folder", ("/w",))
    assert find(items, "Add job log").action == Action("add_job_log", ("/w",))
    assert find(items, "Pause all").action == Action("pause_all")
    assert find(items, "Copy public key").action == Action("copy_public_key", (CTX.public_key,))
    assert find(items, "Open log").action == Action("open_log", (CTX.log_file,))
    assert find(items, "Stop daemon").action == Action("stop_daemon")
    assert find(items, "Quit").action == Action("quit")


@pytest.mark.parametrize(
    ("state", "action", "toggle", "reconnect_enabled"),
    [
        ("pending", "active", "Disconnect", True),
        ("connecting", "active", "Disconnect", True),
        ("up", "active", "Disconnect", True),
        ("reconnecting", "active", "Disconnect", True),
        ("failed", "active", "Disconnect", True),
        ("stopped", "active", "Connect", False),
        ("ended", "active", "Connect", False),
        ("paused", "paused", "Connect", False),
        ("pending", "pending", "Connect", False),  # waits for the user: nothing runs
        ("stopped", "pending", "Connect", False),
    ],
)
def test_cluster_actions_follow_its_state(
    state: str, action: str, toggle: str, reconnect_enabled: bool
) -> None:
    items = build_menu(snapshot(endpoint(state=state, action=action)), CTX)
    header = next(i for i in items if i.text.startswith("qpWia"))
    assert f"  {'pending' if action == 'pending' else state} since " in header.text
    assert find(header.children, toggle).action == Action(
        toggle.lower(), ("uprod_qpWia@3.4.5.6:22",)
    )
    assert find(header.children, "Reconnect now").enabled is reconnect_enabled


def test_a_cluster_says_why_its_link_was_last_checked() -> None:
    at = NOW - 30
    checked = {"reason": "network changed", "at": at, "outcome": "answered in 4 ms"}
    items = build_menu(snapshot(endpoint(reconnects=1, checked=checked)), CTX)
    clock = time.strftime("%H:%M", time.localtime(at))
    assert texts(find(items, "qpWia").children)[:2] == [
        "Reconnected 1 time",
        f"Checked at {clock} (network changed): answered in 4 ms",
    ]


def test_failed_cluster_shows_its_error_and_reconnects() -> None:
    error = "host key for 3.4.5.6 changed: see jobtunnel hostkeys"
    items = build_menu(snapshot(endpoint(state="failed", last_error=error, reconnects=3)), CTX)
    header = find(items, "qpWia")
    assert texts(header.children)[:2] == [f"Last error: {error}", "Reconnected 3 times"]
    assert not header.children[0].enabled
    long = "Host key changed: refusing to connect (pinned SHA256:" + "x" * 300 + ")"
    items = build_menu(snapshot(endpoint(state="failed", last_error=long)), CTX)
    line = find(items, "qpWia").children[0].text
    assert len(line) == 90 and line.endswith("…") and line.startswith("Last error: Host key")


def test_a_changed_host_key_can_be_trusted_from_the_menu() -> None:
    changed = endpoint(
        state="failed", last_error="Host key changed: ...", last_error_kind="host_key_changed"
    )
    header = find(build_menu(snapshot(changed), CTX), "qpWia")
    trust = [i for i in header.children if i.text == "Trust the new host key"]
    assert len(trust) == 1 and trust[0].action == Action("trust", ("uprod_qpWia@3.4.5.6:22",))
    other = endpoint(state="failed", last_error="Authentication failed", last_error_kind="auth")
    header = find(build_menu(snapshot(other), CTX), "qpWia")
    assert "Trust the new host key" not in texts(header.children)


def test_a_refused_key_is_trusted_by_its_fingerprint() -> None:
    fp = "SHA256:q5ETpnL1lOtfkJ1o0Yxq9H3ZnVn1x0bXBqkQYqv2w3c"
    refused = endpoint(
        state="failed",
        last_error="Host key changed: refusing to connect",
        last_error_kind="host_key_changed",
        refused_key=fp,
    )
    header = find(build_menu(snapshot(refused), CTX), "qpWia")
    [trust] = [i for i in header.children if i.text.startswith("Trust")]
    assert trust.text == f"Trust key {fp}"
    assert trust.action == Action("trust", ("uprod_qpWia@3.4.5.6:22", fp))


def test_a_new_address_is_switched_to_only_from_the_menu() -> None:
    move = {
        "host": "54.1.2.3",
        "port": 22,
        "source": {"kind": "file", "path": "/dl/job2.log", "line": 14, "mtime": NOW},
        "seen": NOW,
    }
    items = build_menu(snapshot(endpoint(pending_move=move)), CTX)
    item = find(items, "    Job qpWia reports")
    assert item.text == "    Job qpWia reports a new address 54.1.2.3 (from job2.log:14) - Switch"
    assert item.action == Action("switch", ("uprod_qpWia@3.4.5.6:22",))
    other_port = dict(move, port=32100, source={"kind": "rescale-api"})
    item = find(build_menu(snapshot(endpoint(pending_move=other_port)), CTX), "    Job qpWia")
    assert "54.1.2.3 port 32100 (from the Rescale API)" in item.text
    assert not any(i.text.startswith("    Job") for i in build_menu(snapshot(endpoint()), CTX))


def test_a_pending_endpoint_waits_for_connect() -> None:
    waiting = endpoint(
        state="stopped", action="pending", waiting_reason="over the limit of 8 tunnels"
    )
    items = build_menu(snapshot(waiting), CTX)
    header = find(items, "qpWia")
    assert "  pending" in header.text
    assert texts(header.children)[0] == "Waiting: over the limit of 8 tunnels"
    connect = Action("connect", ("uprod_qpWia@3.4.5.6:22",))
    assert find(header.children, "Connect").action == connect
    assert find(items, "    Connect").action == connect
    assert not find(header.children, "Reconnect now").enabled
    assert tooltip(snapshot(waiting)) == "jobtunnel: 1 waiting for you"
    assert overall(snapshot(waiting)) is Overall.IDLE
    assert "Pause all" in texts(items)


@pytest.mark.parametrize(
    ("source_info", "source", "line", "shown"),
    [
        (None, "/logs/x.log", 3, "Source: /logs/x.log:3"),
        (None, "added by the user", 0, "Source: added by the user"),
        ({"kind": "file", "path": "/dl/a.log", "line": 9}, "/dl/a.log", 9, "Source: /dl/a.log:9"),
        ({"kind": "user"}, "added by the user", 0, "Source: added by you"),
        ({"kind": "rescale-api"}, "Rescale API", 0, "Source: the Rescale API"),
    ],
)
def test_the_source_is_shown(source_info: Any, source: str, line: int, shown: str) -> None:
    ep = endpoint(source_info=source_info, source=source, line=line)
    header = find(build_menu(snapshot(ep), CTX), "qpWia")
    assert find(header.children, "Source:").text == shown


def service(port: int, state: str, **kw: Any) -> dict[str, Any]:
    return {"port": port, "kind": "http", "title": None, "state": state,
            "local_port": None, "url": None} | kw  # fmt: skip


def test_discovered_services_are_offered_and_opened_with_their_url() -> None:
    url = "http://localhost:18888/lab?token=t0k"
    ep = endpoint(
        forwards=[
            forward(local=18888, remote=8888) | {"discovered": True},
            forward(local=15901, remote=5901, state="held") | {"no_service": True},
        ],
        services=[
            service(8888, "forwarded", kind="jupyter", local_port=18888, url=url),
            service(47827, "offered", title="STAR-CCM+ server"),
            service(6006, "gone"),
        ],
    )
    items = build_menu(snapshot(ep), CTX)
    offer = find(items, "    Forward 47827 (STAR-CCM+ server)")
    assert offer.action == Action(TrayAction.FORWARD, (ep["name"], "47827"))
    assert find(items, "    localhost:18888 -> 8888").action == Action(TrayAction.OPEN_URL, (url,))
    assert find(items, "    localhost:15901 -> 5901").text.endswith(
        "no service (nothing listens there on the cluster)"
    )
    assert not any("Forward 6006" in t for t in texts(items))


def test_every_tray_action_is_built_by_some_menu() -> None:
    fp = "SHA256:abc"
    move = {"host": "5.5.5.5", "port": 22, "source": {"kind": "file", "path": "/a"}, "seen": 1.0}
    snaps = [
        snapshot(endpoint(pending_move=move), endpoint("b", state="paused", action="paused")),
        snapshot(endpoint(state="failed", refused_key=fp), folders=("/a", "/b")),
        snapshot(endpoint(state="stopped")),
        snapshot(endpoint(services=[service(47827, "offered", title="STAR-CCM+")])),
    ]
    built: set[TrayAction] = set()

    def walk(items: tuple[Item, ...]) -> None:
        for item in items:
            if item.action is not None:
                built.add(item.action.id)
            walk(item.children)

    with_putty = MenuContext(**{**CTX.__dict__, "putty": "putty"})  # "Open in PuTTY"
    for snap in [*snaps, None]:
        walk(build_menu(snap, CTX))
        walk(build_menu(snap, with_putty))
    assert built == set(TrayAction)


def test_pause_and_resume_all() -> None:
    active, paused = endpoint("a"), endpoint("b", state="paused", action="paused")
    assert "Resume all" not in texts(build_menu(snapshot(active), CTX))
    both = build_menu(snapshot(active, paused), CTX)
    assert "Pause all" in texts(both) and "Resume all" in texts(both)
    only_paused = build_menu(snapshot(paused), CTX)
    assert "Pause all" not in texts(only_paused)
    assert find(only_paused, "Resume all").action == Action("resume_all")
    assert not find(build_menu(snapshot(), CTX), "Pause all").enabled


def test_watched_folders_none_one_many() -> None:
    none = build_menu(snapshot(folders=()), CTX)
    assert "No clusters yet (no watched folder)" in texts(none)
    assert not find(none, "Open watched folder").enabled
    assert find(none, "Add job log").action == Action("add_job_log", ("",))
    many = build_menu(snapshot(folders=("/a", "/b")), CTX)
    assert "No clusters yet (watching 2 folders)" in texts(many)
    folder = find(many, "Open watched folder")
    assert [c.action for c in folder.children] == [
        Action("open_folder", ("/a",)),
        Action("open_folder", ("/b",)),
    ]


def test_notebook_forward_opens_the_notebook() -> None:
    url = "https://platform.rescale.com/notebooks/xyz/?token=abc"
    ep = endpoint(notebook_url=url, forwards=[forward(18888, 8888)])
    item = find(build_menu(snapshot(ep), CTX), "    localhost:18888")
    assert item.action == Action("open_url", ("https://localhost:18888/?token=abc",))


def test_unusable_forwards_are_disabled() -> None:
    ep = endpoint(
        forwards=[forward(None), forward(2000, state="closed"), forward(1080, dynamic=True)]
    )
    items = build_menu(snapshot(ep), CTX)
    fwd = [i for i in items if i.text.startswith("    ")]
    assert [i.enabled for i in fwd] == [False, False, False]


def test_menu_is_pure() -> None:
    snap = snapshot(endpoint(), endpoint("b", state="failed", last_error="x"))
    before = copy.deepcopy(snap)
    assert build_menu(snap, CTX) == build_menu(snap, CTX)
    assert snap == before


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tray action"):
        Action("rm -rf")
    assert Action("quit").id is TrayAction.QUIT


def test_odd_snapshots_are_refused_before_the_menu(
    tray: tuple[tray_app.TrayApp, Desktop], caplog: pytest.LogCaptureFixture
) -> None:
    """A payload that does not fit the schema never reaches the menu: the tray shows "no
    daemon" with the reason, logged once."""
    odd: dict[str, Any] = {"daemon": None, "endpoints": [None, {"forwards": [None]}]}
    with pytest.raises(SchemaError):
        from_wire(odd)
    app, _ = tray
    app.receive(wire_snapshot(endpoint()))
    assert app.snapshot is not None and app.detail is None
    with caplog.at_level(logging.WARNING, "jobtunnel.tray"):
        app.receive(odd)
        app.receive(odd)
    assert app.snapshot is None and app.detail is not None
    assert app.detail.startswith("its status is unreadable (daemon: expected object")
    assert texts(app.menu_model())[0].startswith("jobtunnel daemon is not running: its status")
    assert sum("does not fit the schema" in r.message for r in caplog.records) == 1


# -- notices ---------------------------------------------------------------------------


def test_notices_new_down_restored() -> None:
    policy = NoticePolicy(down_after=30, per_endpoint=0, per_minute=100)
    a = endpoint("a")
    assert policy.update(snapshot(a), 0) == []  # the first snapshot seeds what is known
    b = endpoint("b")
    [new] = policy.update(snapshot(a, b), 1)
    assert new.kind == "new" and new.title == "New cluster" and "b" in new.message
    down = endpoint("a", state="reconnecting", last_error="connection lost")
    assert policy.update(snapshot(down, b), 2) == []
    assert policy.update(snapshot(down, b), 20) == []
    [late] = policy.update(snapshot(down, b), 33)
    assert late.kind == "down" and "connection lost" in late.message
    assert policy.update(snapshot(down, b), 60) == []  # once per outage
    [back] = policy.update(snapshot(a, b), 61)
    assert back.kind == "restored" and back.title == "a: tunnel restored"
    assert policy.update(None, 62) == []


def test_short_outage_and_paused_are_quiet() -> None:
    policy = NoticePolicy(down_after=30)
    policy.update(snapshot(endpoint()), 0)
    policy.update(snapshot(endpoint(state="reconnecting")), 1)
    assert policy.update(snapshot(endpoint()), 10) == []
    paused = endpoint(state="paused", action="paused")
    assert policy.update(snapshot(paused), 11) == []
    assert policy.update(snapshot(paused), 500) == []


def test_rate_limit_but_host_key_always() -> None:
    policy = NoticePolicy(down_after=0, per_endpoint=60, per_minute=2)
    policy.update(snapshot(), 0)
    got = policy.update(snapshot(endpoint("a"), endpoint("b"), endpoint("c")), 1)
    assert [n.kind for n in got] == ["new", "new"]  # the third is over the per-minute cap
    flap = NoticePolicy(down_after=0, per_endpoint=60, per_minute=100)
    flap.update(snapshot(endpoint()), 0)
    kinds = []
    for t in range(1, 20):
        state = "reconnecting" if t % 2 else "up"
        kinds += [n.kind for n in flap.update(snapshot(endpoint(state=state)), t)]
    assert kinds == ["down", "restored"]  # a flapping link says so once a minute
    err = "Host key for 3.4.5.6 changed"
    key = [
        n.kind
        for t in range(5)
        for n in flap.update(
            snapshot(
                endpoint(
                    state="failed", last_error=f"{err} ({t})", last_error_kind="host_key_changed"
                )
            ),
            100 + t,
        )
    ]
    assert key.count("host_key") == 5


def test_notifier_without_service_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[tuple[str, str]] = []
    notifier = Notifier(lambda m, t: sent.append((m, t)), check=lambda: "no service")
    with caplog.at_level(logging.INFO, "jobtunnel.tray.notify"):
        assert not notifier.show(Notice("new", "T", "M"))
        assert not notifier.show(Notice("new", "T2", "M2"))
    assert sent == []
    assert sum("notifications are skipped" in r.message for r in caplog.records) == 1

    def broken(_m: str, _t: str) -> None:
        raise RuntimeError("org.freedesktop.Notifications was not provided")

    assert not Notifier(broken, check=lambda: None).show(Notice("new", "T", "M"))
    ok = Notifier(lambda m, t: sent.append((m, t)), check=lambda: None)
    assert ok.show(Notice("new", "T", "M")) and sent == [("M", "T")]


# -- backend ---------------------------------------------------------------------------


def test_backend_xorg_has_no_menu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTRAY_BACKEND", "xorg")
    monkeypatch.setenv("DISPLAY", ":99")
    name, usable, why = backend.describe()
    assert (name, usable) == ("xorg", False) and "no menu" in why


def test_backend_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYSTRAY_BACKEND", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    _name, usable, why = backend.describe()
    assert not usable and why


# -- actions (the desktop faked) -------------------------------------------------------


class Desktop:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, Any]] = []
        for fn in ("open_path", "open_url", "spawn_daemon"):
            monkeypatch.setattr(
                tray_app.desktop, fn, lambda arg=None, _fn=fn: self.calls.append((_fn, arg))
            )
        monkeypatch.setattr(
            tray_app.desktop, "copy_text", lambda text: self.calls.append(("copy", text)) or True
        )
        monkeypatch.setattr(tray_app.desktop, "choose_file", lambda folder, done: False)


@pytest.fixture
def tray(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[tray_app.TrayApp, Desktop]:
    desktop = Desktop(monkeypatch)
    app = tray_app.TrayApp()
    told: list[tuple[str, str]] = []
    monkeypatch.setattr(app, "tell", lambda title, message: told.append((title, message)))
    app.told = told  # type: ignore[attr-defined]
    return app, desktop


def test_edit_settings_creates_the_default_config(tray: tuple[tray_app.TrayApp, Desktop]) -> None:
    app, desktop = tray
    config = Path(app.context().config_file)
    assert not config.exists()
    app.dispatch(Action("edit_settings", (str(config),)))
    assert config.read_text() == default_config_text()
    assert desktop.calls == [("open_path", config)]
    config.write_text("# mine\n")
    app.dispatch(Action("edit_settings", (str(config),)))
    assert config.read_text() == "# mine\n"


def test_copy_public_key(tray: tuple[tray_app.TrayApp, Desktop]) -> None:
    app, desktop = tray
    pub = Path(app.context().public_key)
    app.dispatch(Action("copy_public_key", (str(pub),)))
    assert app.told == [("No public key yet", f"{pub} does not exist")]  # type: ignore[attr-defined]
    pub.parent.mkdir(parents=True)
    pub.write_text("ssh-ed25519 AAAA jobtunnel\n")
    app.dispatch(Action("copy_public_key", (str(pub),)))
    assert desktop.calls == [("copy", "ssh-ed25519 AAAA jobtunnel")]


def test_start_daemon_and_open_actions(tray: tuple[tray_app.TrayApp, Desktop]) -> None:
    app, desktop = tray
    app.dispatch(Action("start_daemon"))
    assert desktop.calls == [("spawn_daemon", None)]
    assert find(app.menu_model(), "Starting daemon").enabled is False
    app.dispatch(Action("add_job_log", ("/w",)))  # no file chooser: opens the folder
    app.dispatch(Action("open_log", ("/l",)))
    assert desktop.calls[1:] == [("open_path", Path("/w")), ("open_path", Path("/l"))]
    app.dispatch(Action("copy_text", ("ssh x", "ssh command")))
    assert desktop.calls[-1] == ("copy", "ssh x")


def test_endpoint_actions_send_their_commands(
    tray: tuple[tray_app.TrayApp, Desktop], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = tray
    sent: list[tuple[Command, dict[str, Any]]] = []
    monkeypatch.setattr(app, "request", lambda cmd, **args: sent.append((cmd, args)))
    for kind in ("reconnect", "connect", "disconnect", "forget", "switch", "trust"):
        app.dispatch(Action(kind, ("n",)))
    app.dispatch(Action("trust", ("n", "SHA256:abc")))
    for kind in ("pause_all", "resume_all", "stop_daemon"):
        app.dispatch(Action(kind))
    assert sent == [
        (Command.RECONNECT, {"name": "n"}),
        (Command.CONNECT, {"name": "n"}),
        (Command.DISCONNECT, {"name": "n"}),
        (Command.FORGET, {"name": "n"}),
        (Command.SWITCH, {"name": "n"}),
        (Command.TRUST, {"name": "n"}),
        (Command.TRUST, {"name": "n", "fingerprint": "SHA256:abc"}),
        (Command.PAUSE, {}),
        (Command.RESUME, {}),
        (Command.STOP, {}),
    ]


def test_notices_name_the_file_and_announce_a_new_address() -> None:
    policy = NoticePolicy(per_endpoint=0, per_minute=1)
    policy.update(snapshot(), 0)
    src = {"kind": "file", "path": "/dl/job.log", "line": 2}
    [new] = policy.update(snapshot(endpoint(source_info=src)), 1)
    assert new.kind == "new" and "/dl/job.log" in new.message
    move = {"host": "54.1.2.3", "port": 22, "source": {"kind": "file", "path": "/dl/x.log"},
            "seen": 1.0}  # fmt: skip
    # Over the per-minute cap, yet a new address is always said, once per address.
    got = policy.update(snapshot(endpoint(source_info=src, pending_move=move)), 2)
    assert [(n.kind, n.title) for n in got] == [("move", "qpWia: new address")]
    assert "54.1.2.3:22" in got[0].message and "/dl/x.log" in got[0].message
    assert policy.update(snapshot(endpoint(source_info=src, pending_move=move)), 3) == []
    waiting = endpoint("w", action="pending", state="stopped", waiting_reason="8 already up")
    late = NoticePolicy()
    late.update(snapshot(), 0)
    [told] = late.update(snapshot(waiting), 1)
    assert "waits (8 already up); Connect in the menu" in told.message


def test_a_service_that_starts_later_is_told_once_the_first_look_is_not() -> None:
    policy = NoticePolicy(per_endpoint=0, per_minute=100)
    policy.update(snapshot(endpoint()), 0)  # before the first look: no services yet
    first = [service(22, "offered"), service(8888, "forwarded", kind="jupyter", local_port=1)]
    assert policy.update(snapshot(endpoint(services=first)), 1) == []
    later = [*first, service(47827, "offered", title="STAR-CCM+")]
    [told] = policy.update(snapshot(endpoint(services=later)), 2)
    assert (told.kind, told.title) == ("service", "qpWia: new service")
    assert told.message == "STAR-CCM+ on port 47827; Forward it from the menu"
    assert policy.update(snapshot(endpoint(services=later)), 3) == []


def test_a_failing_action_does_not_raise(
    tray: tuple[tray_app.TrayApp, Desktop], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = tray

    def boom(_p: object) -> None:
        raise OSError("no xdg-open")

    monkeypatch.setattr(tray_app.desktop, "open_path", boom)
    app.dispatch(Action("open_log", ("/l",)))  # logged, not raised


def test_follow_without_daemon_retries_with_backoff(
    tray: tuple[tray_app.TrayApp, Desktop], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No daemon: the tray shows so and retries, doubling up to 2 s, never a tight loop."""
    import asyncio

    app, _ = tray
    sleeps: list[float] = []
    shown: list[object] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        if delay != tray_app.TICK:
            sleeps.append(delay)
        if len(sleeps) >= 6:
            app.stopping.set()
        await real_sleep(0)

    monkeypatch.setattr(tray_app.asyncio, "sleep", fake_sleep)
    app.snapshot = snapshot()  # as if a daemon had been there
    monkeypatch.setattr(app, "show", lambda snap, detail=None: shown.append(snap))
    asyncio.run(asyncio.wait_for(app.follow(), 10))
    assert sleeps[:5] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert shown[0] is None


class FakeIcon:
    def __init__(self) -> None:
        self.sets: list[str] = []

    def __setattr__(self, name: str, value: object) -> None:
        if name != "sets":
            self.sets.append(name)
        object.__setattr__(self, name, value)


def test_icon_and_menu_are_replaced_only_when_they_change(
    tray: tuple[tray_app.TrayApp, Desktop], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replacing the menu closes it under the user's pointer: only on a real change."""
    import sys
    import types

    fake = types.ModuleType("jobtunnel.tray.pystray_menu")
    fake.to_pystray = lambda items, dispatch: items  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jobtunnel.tray.pystray_menu", fake)
    app, _ = tray
    icon = FakeIcon()
    app.icon = icon
    app.show(snapshot(endpoint()))
    assert icon.sets == ["icon", "title", "menu"]
    app.show(snapshot(endpoint(bytes_sent=5000)))  # nothing the user sees changed
    app.tick()
    assert icon.sets == ["icon", "title", "menu"]
    app.show(snapshot(endpoint(forwards=[forward(clients=1)])))
    assert icon.sets[3:] == ["menu"]
    app.show(snapshot(endpoint(state="reconnecting")))
    assert icon.sets[4:] == ["icon", "title", "menu"]
    app.show(None)
    assert icon.menu == build_menu(None, app.context())  # type: ignore[attr-defined]


def test_a_notification_service_that_fails_to_start_turns_notices_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pystray builds its D-Bus notifier while initialising: a failure there must not end
    the tray; notices are then logged, with one line saying why."""
    import types

    class Failing:
        def __init__(self) -> None:
            raise RuntimeError("StartServiceByName: exited with status 1")

    module = types.SimpleNamespace(Notifier=Failing)
    sent: list[tuple[str, str]] = []
    notifier = Notifier(lambda m, t: sent.append((m, t)), check=lambda: None)
    backend.guard_notifier(notifier.disable, module)  # type: ignore[arg-type]
    backend.guard_notifier(notifier.disable, module)  # type: ignore[arg-type]  # once only
    with caplog.at_level(logging.INFO, "jobtunnel.tray"):
        guarded = module.Notifier()
        guarded.hide()  # pystray hides on exit: never raises
        with pytest.raises(RuntimeError, match="status 1"):
            guarded.notify("t", "m", "/i.png")
        assert not notifier.show(Notice("new", "T", "M"))
        assert not notifier.show(Notice("new", "T2", "M2"))
    assert sent == []
    skipped = [r for r in caplog.records if "notifications are skipped" in r.message]
    assert len(skipped) == 1 and "failed to start" in skipped[0].message
