"""Jobs by name in the tray menu, its notices and ``jobtunnel status``, from the payload the
real daemon sent with a (fake) Rescale API as its source (tests/data/status/rescale.json)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.api import client
from jobtunnel.daemon.api.schema import TrayAction, from_wire
from jobtunnel.daemon.cli import main
from jobtunnel.tray.menu import MenuContext, build_menu
from jobtunnel.tray.notify import NoticePolicy

from tests.helpers.recorded import recorded

RESCALE = recorded("rescale")
CHECKED = RESCALE["daemon"]["rescale"]["checked_at"]
CTX = MenuContext(
    now=CHECKED + 12,
    identity_file="/home/u/.local/share/jobtunnel/id_ed25519",
    public_key="/home/u/.local/share/jobtunnel/id_ed25519.pub",
    log_file="/home/u/.local/state/jobtunnel/log/jobtunnel.log",
    config_file="/home/u/.config/jobtunnel/config.toml",
)


def _all(items: Any) -> list[Any]:
    out = []
    for item in items:
        out.append(item)
        out += _all(item.children or ())
    return out


def test_menu_names_the_job_links_it_and_shows_the_api_health() -> None:
    items = _all(build_menu(from_wire(RESCALE), CTX))
    texts = [i.text for i in items]
    assert "Rescale: 1 running job, checked 12 s ago" in texts
    assert any(t.startswith("the FOAM 2 (OsKBd)  ") for t in texts)
    [link] = [i for i in items if i.text == "Open job in Rescale"]
    assert link.action is not None and link.action.id is TrayAction.OPEN_URL
    assert link.action.args == ("https://platform.rescale.com/jobs/OsKBd/",)
    assert any(t == "Source: the Rescale API" for t in texts)


def test_menu_without_the_api_has_no_rescale_items() -> None:
    texts = [i.text for i in _all(build_menu(from_wire(recorded("up")), CTX))]
    assert not any("Rescale" in t for t in texts)


def test_api_errors_are_shown_as_the_health_line() -> None:
    payload = copy.deepcopy(RESCALE)
    payload["daemon"]["rescale"] |= {"state": "stopped", "error": "refused the key (401)"}
    texts = [i.text for i in _all(build_menu(from_wire(payload), CTX))]
    assert "Rescale: refused the key (401)" in texts


def test_a_finished_job_is_notified_once_by_name() -> None:
    policy = NoticePolicy()
    assert policy.update(from_wire(RESCALE), CHECKED) == []
    ended = copy.deepcopy(RESCALE)
    ended["endpoints"][0]["state"] = "ended"
    notices = policy.update(from_wire(ended), CHECKED + 70)
    assert [(n.kind, n.title, n.message) for n in notices] == [
        ("finished", "Job the FOAM 2 finished", "the FOAM 2 (OsKBd)")
    ]
    assert policy.update(from_wire(ended), CHECKED + 200) == []


def test_cli_status_shows_jobs_by_name_and_the_api_health(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(client, "call_sync", lambda cmd, params=None, **kw: RESCALE)
    monkeypatch.setattr("time.time", lambda: CHECKED + 5)
    assert main(["status"]) == 0
    shown = capsys.readouterr().out
    assert "Rescale: 1 running job, checked 5 s ago" in shown
    assert "the FOAM 2 (OsKBd)" in shown


def test_an_ended_api_job_leaves_the_menu_after_the_configured_time() -> None:
    import dataclasses

    ended = copy.deepcopy(RESCALE)
    ended["endpoints"][0] |= {"state": "ended", "since": CHECKED}
    snapshot = from_wire(ended)

    def shown(now: float) -> bool:
        ctx = dataclasses.replace(CTX, now=now, hide_ended_after=600)
        return any("(OsKBd)" in i.text for i in _all(build_menu(snapshot, ctx)))

    assert shown(CHECKED + 599) and not shown(CHECKED + 601)
    log_only = copy.deepcopy(recorded("up"))
    log_only["endpoints"][0] |= {"state": "ended", "since": CHECKED}
    ctx = dataclasses.replace(CTX, now=CHECKED + 10**6, hide_ended_after=600)
    assert any("ended" in i.text for i in build_menu(from_wire(log_only), ctx))
