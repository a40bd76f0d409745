"""Hostile and broken input against the real daemon: abused watched folder, endpoints that
must be refused, a full or read-only state dir. The daemon must stay responsive (``status``
answers) throughout, log a reason for everything it skips, and never log a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.api.client import ControlClient

from tests.helpers.daemonproc import Daemon, Env, wait_for
from tests.helpers.deps import dependency_missing

# The daemon test's fixtures: an isolated user with a config, a real sshd, daemon starter.

NO_TRACEBACK = ("Traceback", "Exception in callback", "exception was never retrieved")


def control_path(env: Env) -> Path:
    return Path(env.vars["XDG_RUNTIME_DIR"]) / "jobtunnel" / "control.sock"


def ask(env: Env, cmd: str, timeout: float = 10, **args: Any) -> Any:
    async def go() -> Any:
        async with asyncio.timeout(timeout), ControlClient(control_path(env), "unix") as client:
            return await client.request(cmd, **args)

    return asyncio.run(go())


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


class Responsiveness:
    """Asks ``status`` every 0.2 s in a thread; remembers the slowest answer and failures."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.slowest = 0.0
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.answers < 10_000:
            started = time.monotonic()
            try:
                ask(self.env, "status", timeout=10)
                self.answers += 1
            except Exception as exc:
                self.failures.append(repr(exc))
            self.slowest = max(self.slowest, time.monotonic() - started)
            self._stop.wait(0.2)

    def __enter__(self) -> Responsiveness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def clean_log(daemon: Daemon) -> str:
    text = daemon.text()
    for word in NO_TRACEBACK:
        assert word not in text, text[text.index(word) - 2000 : text.index(word) + 2000]
    return text


def set_config(env: Env, **replace: str) -> None:
    text = env.config_text([])
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    env.config.write_text(text)


@pytest.mark.timeout(180)
def test_abused_watched_folder(env: Env, daemons: Callable[[], Daemon], tmp_path: Path) -> None:
    # No forwards (1000 endpoints would mean 1000 listeners) and slow retries: the point
    # is detection and responsiveness, not 1000 refused connections a second.
    set_config(
        env,
        **{
            "initial_delay = 0.1": "initial_delay = 30",
            "max_delay = 1": "max_delay = 60",
            "forwards = []": "forwards = []",
        },
    )
    daemon = daemons()
    pid = daemon.proc.pid
    logs = env.logs
    user = env.sshd.user
    rss = {"start": rss_kb(pid)}
    outside = tmp_path / "outside.log"
    outside.write_text(f"ssh -p 2201 {user}@127.1.200.1\n")

    with Responsiveness(env) as probe:
        # A 10 MB line with no newline in it, then an endpoint.
        with (logs / "huge.log").open("wb") as f:
            f.write(b"x" * (10 << 20))
            f.write(f"\nssh -p 2202 {user}@127.1.200.2\n".encode())
        wait_for(lambda: _ports(env) >= {2202}, "the endpoint after a 10 MB line", 60)
        rss["after 10 MB line"] = rss_kb(pid)

        # 100 000 endpoints in one file: capped at 1000, with a bounded number of warnings.
        lines = (
            f"ssh -p {2000 + i % 50000} {user}@127.{1 + i // 65536}.{(i // 256) % 256}.{i % 256}"
            for i in range(100_000)
        )
        (logs / "flood.log").write_text("\n".join(lines) + "\n")
        wait_for(lambda: len(ask(env, "status")["endpoints"]) >= 1001, "1000 endpoints", 90)
        rss["after 100 000 endpoints"] = rss_kb(pid)

        # Things never to read: a symlink out, FIFOs, device files, files that vanish.
        (logs / "out.log").symlink_to(outside)
        os.mkfifo(logs / "pipe.log")
        (logs / "zero.log").symlink_to("/dev/zero")
        (logs / "urandom.log").symlink_to("/dev/urandom")
        device = logs / "device.log"
        with contextlib.suppress(PermissionError):  # needs CAP_MKNOD
            os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero itself
        for i in range(20):
            gone = logs / f"gone-{i}.log"
            gone.write_bytes(
                b"y" * (2 << 20) + f"\nssh -p {3000 + i} {user}@127.1.201.1\n".encode()
            )
            gone.unlink()
        (logs / "after.log").write_text(f"ssh -p 2203 {user}@127.1.200.3\n")
        wait_for(lambda: _ports(env) >= {2203}, "the endpoint written after the abuse", 60)
        time.sleep(2.5)  # at least one safety rescan of the folder (rescan_interval = 2)
        rss["end"] = rss_kb(pid)

    assert not probe.failures, probe.failures
    assert probe.answers > 5
    print(f"status answered {probe.answers} times, slowest {probe.slowest:.2f} s; RSS kB {rss}")
    assert probe.slowest < 10
    assert max(rss.values()) < 500_000, rss  # memory bounded

    status = ask(env, "status")
    assert "127.1.200.1" not in {e["host"] for e in status["endpoints"]}  # behind the symlink
    assert len([e for e in status["endpoints"] if e["source"].endswith("flood.log")]) == 1000
    assert not daemon.dead()
    text = clean_log(daemon)
    capped = [ln for ln in text.splitlines() if "more than 1000 endpoints in one file" in ln]
    assert 1 <= len(capped) <= 100
    assert "no more are listed" in text
    for name in ("out.log", "pipe.log", "zero.log", "urandom.log"):
        assert any(name in ln and "skipping" in ln for ln in text.splitlines()), name
    if device.exists():
        assert any("device.log" in ln and "skipping" in ln for ln in text.splitlines())
    assert ask(env, "pause")  # all 1003 paused at once: still answering
    assert all(e["action"] == "paused" for e in ask(env, "status")["endpoints"])


def _ports(env: Env) -> set[int]:
    return {e["port"] for e in ask(env, "status")["endpoints"]}


@pytest.mark.timeout(60)
def test_private_loopback_link_local_and_shell_metacharacters_are_refused_with_reasons(
    env: Env, daemons: Callable[[], Daemon]
) -> None:
    set_config(env, **{"allow_private_addresses = true": "allow_private_addresses = false"})
    daemon = daemons()
    user = env.sshd.user
    # Only private and loopback addresses, even the shell-metacharacter cases: nothing
    # here may be reachable beyond this machine should detection ever accept it.
    env.logs.mkdir(exist_ok=True)
    (env.logs / "refused.log").write_text(
        "\n".join(
            [
                f"ssh -p 22 {user}@10.1.2.3",
                f"ssh {user}@127.0.0.1 -p 2222",
                f"ssh {user}@169.254.10.10",
                f"ssh {user}@[::1]:2222",
                f"ssh {user}@127.1.2.3$(reboot)",
                f"ssh {user}@127.1.2.4`id`",
                f"ssh {user}@127.1.2.5|sh",
            ]
        )
        + "\n"
    )
    expected = {
        "10.1.2.3": "a private address",
        "127.0.0.1": "a loopback address",
        "169.254.10.10": "a link-local address",
        "::1": "a loopback address",
        "127.1.2.3$": "shell metacharacters",
        "127.1.2.4`": "shell metacharacters",
        "127.1.2.5|": "shell metacharacters",
    }

    def all_logged() -> bool:
        lines = [ln for ln in daemon.text().splitlines() if "refused.log" in ln and "ignored" in ln]
        return all(any(c in ln and why in ln for ln in lines) for c, why in expected.items())

    wait_for(all_logged, "a logged reason for every refused endpoint")
    assert ask(env, "status")["endpoints"] == []
    clean_log(daemon)
    # The same through `add`: refused with the reason, nothing added.
    result = env.cli("add", f"{user}@10.9.8.7:22")
    assert result.returncode != 0 and "a private address" in result.stderr


# -- a full or read-only state dir ----------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        dependency_missing(
            f"cannot mount a tmpfs here ({result.stderr.strip()}); see tests/test_store.py"
        )


@contextlib.contextmanager
def small_state_dir(env: Env) -> Iterator[Path]:
    """The daemon's state dir on a 64 KiB tmpfs (its log dir inside on a separate one)."""
    state = Path(env.vars["XDG_STATE_HOME"]) / "jobtunnel"
    mounted: list[Path] = []
    try:
        _mount_tmpfs(state, "64k")
        mounted.append(state)
        _mount_tmpfs(state / "log", "4m")
        mounted.append(state / "log")
        yield state
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.timeout(120)
def test_disk_full_and_read_only_state_dir_keep_the_previous_state(
    env: Env, daemons: Callable[[], Daemon]
) -> None:
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with small_state_dir(env) as state_dir:
        daemon = daemons()
        state = state_dir / "state.json"
        assert env.cli("add", f"{env.sshd.user}@127.1.0.1:2201").returncode == 0
        wait_for(lambda: state.exists() and "127.1.0.1" in state.read_text(), "the first save")
        before = state.read_bytes()

        # Disk full.
        filler = state_dir / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            for _ in range(1000):  # 64 KiB tmpfs: full long before 1000 x 4 KiB
                f.write(b"\0" * 4096)
                f.flush()
        assert env.cli("add", f"{env.sshd.user}@127.1.0.2:2202").returncode == 0
        full = wait_for(lambda: env.status()["daemon"]["save_error"], "save_error in status")
        assert "No space left on device" in full and str(state) in full
        assert state.read_bytes() == before
        assert "the previous state file is kept" in daemon.text()
        assert {p.name for p in state_dir.iterdir()} >= {"state.json", "filler"}
        assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]

        filler.unlink()
        assert env.cli("add", f"{env.sshd.user}@127.1.0.3:2203").returncode == 0
        # A retry of the failed save may land first (without .3); the add's save follows.
        wait_for(
            lambda: (
                env.status()["daemon"]["save_error"] is None and "127.1.0.3" in state.read_text()
            ),
            "a good save again",
        )
        assert "127.1.0.2" in state.read_text()
        assert "state saved again" in daemon.text()
        before = state.read_bytes()

        # Read-only.
        subprocess.run(["mount", "-o", "remount,ro", str(state_dir)], check=True)
        try:
            assert env.cli("add", f"{env.sshd.user}@127.1.0.4:2204").returncode == 0
            ro = wait_for(lambda: env.status()["daemon"]["save_error"], "save_error (read-only)")
            assert "Read-only file system" in ro
            assert state.read_bytes() == before
            assert env.status()["daemon"]["pid"] == daemon.proc.pid  # still serving
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(state_dir)], check=True)
        assert env.cli("add", f"{env.sshd.user}@127.1.0.5:2205").returncode == 0
        wait_for(
            lambda: (
                env.status()["daemon"]["save_error"] is None and "127.1.0.5" in state.read_text()
            ),
            "saving after remount rw",
        )
        saved = json.loads(state.read_text())
        assert len(saved["endpoints"]) == 5
        clean_log(daemon)
        daemon.kill()


@pytest.mark.timeout(90)
def test_control_api_of_the_real_daemon_under_hostile_clients(
    env: Env, daemons: Callable[[], Daemon]
) -> None:
    """A byte-a-second client, 50 clients at once, an 8 MiB line and garbage, all at once
    against `jobtunnel run`: everyone else is answered, memory stays bounded."""
    daemon = daemons()
    path = control_path(env)
    rss_before = rss_kb(daemon.proc.pid)

    async def body() -> tuple[list[Any], Any, Any]:
        # One byte a second (faster here: 20 per second) of a valid request.
        slow_r, slow_w = await asyncio.open_unix_connection(str(path))
        request = b'{"v": 1, "id": 5, "cmd": "status", "args": {}}\n'
        others_done = asyncio.Event()

        async def dribble() -> Any:
            sent = 0
            while not others_done.is_set() and sent < len(request) - 1:
                slow_w.write(request[sent : sent + 1])
                await slow_w.drain()
                sent += 1
                await asyncio.sleep(0.05)
            slow_w.write(request[sent:])
            return json.loads(await slow_r.readline())

        slow = asyncio.create_task(dribble())

        # A client that sends 8 MiB with no newline: cut off after the 1 MiB limit.
        big_r, big_w = await asyncio.open_unix_connection(str(path))

        async def flood() -> Any:
            answer = asyncio.create_task(big_r.readline())
            with contextlib.suppress(ConnectionError):
                for _ in range(128):
                    if answer.done():
                        break
                    big_w.write(b"x" * 65536)
                    await big_w.drain()
            try:
                return json.loads(await answer)
            except ConnectionError:
                # Our own write after the daemon hung up can make asyncio drop the error
                # line still unread in the socket: the cut-off itself is what counts.
                return {"ok": False, "closed": True}

        flooded = asyncio.create_task(flood())

        # Garbage, then a good request, on one connection.
        bad_r, bad_w = await asyncio.open_unix_connection(str(path))
        for junk in (b"\xff\xfe\x00", b"[" * 50_000, b'{"v":1,"id":1,"cmd":"add","args":7}'):
            bad_w.write(junk + b"\n")
        bad_w.write(b'{"v":1,"id":2,"cmd":"hello"}\n')
        junk_replies = [json.loads(await bad_r.readline()) for _ in range(4)]

        async def one() -> Any:
            async with ControlClient(path, "unix") as client:
                return await client.request("status")

        many = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(50))), 60)
        assert not slow.done()  # still dribbling while the 50 were served
        others_done.set()
        slow_reply = await asyncio.wait_for(slow, 30)
        big_reply = await asyncio.wait_for(flooded, 30)
        for w in (slow_w, big_w, bad_w):
            w.transport.abort()
        assert [r["ok"] for r in junk_replies] == [False, False, False, True]
        return many, slow_reply, big_reply

    many, slow_reply, big_reply = asyncio.run(body())
    assert all("endpoints" in m for m in many)
    assert slow_reply["ok"] is True and slow_reply["id"] == 5
    assert big_reply["ok"] is False
    assert big_reply.get("closed") or "longer than" in big_reply["error"]
    assert rss_kb(daemon.proc.pid) < rss_before + 100_000
    assert env.status()["daemon"]["pid"] == daemon.proc.pid
    clean_log(daemon)
