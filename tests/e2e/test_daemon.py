"""End to end: `jobtunnel run` as a real process, a real sshd, a real folder of logs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers.daemonproc import (
    TIMEOUT,
    Daemon,
    Env,
    chrome_download,
    endpoint_up,
    get,
    refused,
    wait_for,
)
from tests.helpers.services import HTTP_BODY
from tests.helpers.soak import proc_tcp
from tests.helpers.sshd import free_port


@pytest.mark.timeout(180)
def test_chrome_download_to_tunnel_then_kill9_restart_then_forget(
    env: Env, daemons: Callable[[], Daemon]
) -> None:
    daemon = daemons()
    assert (env.logs).is_dir()  # created on first run
    started = time.monotonic()
    chrome_download(env.logs, "job_logs.tsv", "11/24/2026 9:06:10 AM\tINFO\t1\t" + env.log_line())
    ep = wait_for(lambda: endpoint_up(env), "the tunnel to come up")
    latency = time.monotonic() - started
    [fwd] = ep["forwards"]
    port = fwd["local_port"]
    assert fwd["bind_address"] == "127.0.0.1"
    assert fwd["remote_port"] == env.http_port
    assert ep["job_id"] is None and ep["user"] == env.sshd.user
    assert ep["last_error"] is None
    assert get(port) == HTTP_BODY
    print(f"log in folder -> tunnel up: {latency * 1000:.0f} ms (status polled every 50 ms)")

    assert daemon.kill(signal.SIGKILL) == -signal.SIGKILL
    daemon = daemons()
    again = wait_for(lambda: endpoint_up(env), "the tunnel after kill -9")
    assert again["forwards"][0]["local_port"] == port
    assert get(port) == HTTP_BODY

    name = f"{env.sshd.user}@127.0.0.1:{env.sshd.port}"
    result = env.cli("forget", name)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: refused(port), "the forgotten port to close")
    assert env.status()["endpoints"] == []
    assert daemon.kill(signal.SIGTERM) == 0
    daemons()
    time.sleep(1.0)  # the log is re-read at start: it must not bring the endpoint back
    assert env.status()["endpoints"] == []
    assert refused(port)
    listed = json.loads(env.cli("list", "--json").stdout)
    assert [r["action"] for r in listed] == ["forgotten"]
    assert env.cli("add", name).returncode == 0
    wait_for(lambda: endpoint_up(env), "the re-added endpoint")


@pytest.mark.timeout(120)
def test_firefox_download_and_bulk_copy(env: Env, daemons: Callable[[], Daemon]) -> None:
    daemons()
    env.logs.mkdir(exist_ok=True)
    final = env.logs / "job.log"
    final.write_bytes(b"")  # Firefox's placeholder under the final name
    part = env.logs / "job.log.part"
    part.write_text("Starting Cluster\n" + env.log_line())
    part.rename(final)
    wait_for(lambda: endpoint_up(env), "the tunnel from a Firefox download")

    # 100 logs at once: one names an endpoint on a closed port; all must be read.
    closed = free_port()
    for i in range(100):
        text = env.log_line(closed) if i == 73 else f"noise {i}\n"
        (env.logs / f"bulk-{i:03d}.log").write_text(text)
    found = wait_for(
        lambda: [e for e in env.status()["endpoints"] if e["port"] == closed],
        "the endpoint in the 74th of 100 copied files",
    )
    assert found[0]["source"].endswith("bulk-073.log")
    # Refused connections show as a retrying tunnel with the words a user can act on.
    retrying = wait_for(
        lambda: [e for e in env.status()["endpoints"] if e["port"] == closed and e["last_error"]],
        "the refused endpoint's error",
    )
    assert retrying[0]["state"] in ("reconnecting", "connecting")
    assert "refused" in retrying[0]["last_error"].lower()

    # A log outside the watched folders, added by hand.
    elsewhere = env.home / "Downloads" / "other job.txt"
    elsewhere.parent.mkdir()
    other = free_port()
    elsewhere.write_text("x\n" + env.log_line(other))
    added = env.cli("add", str(elsewhere))
    assert added.returncode == 0, added.stderr
    assert f"127.0.0.1:{other}" in added.stdout
    assert any(e["port"] == other for e in env.status()["endpoints"])
    empty = env.home / "Downloads" / "empty.log"
    empty.write_text("nothing here\n")
    refused_add = env.cli("add", str(empty))
    assert refused_add.returncode == 1
    assert "no cluster endpoint found" in refused_add.stderr


@pytest.mark.timeout(120)
def test_corrupt_state_second_daemon_and_clean_stop(
    env: Env, daemons: Callable[[], Daemon]
) -> None:
    state = env.home / ".local" / "state" / "jobtunnel" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"version": 1, "endpoints": [{"user": ')
    daemon = daemons()
    assert env.status()["endpoints"] == []
    aside = list(state.parent.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text().startswith('{"version": 1')
    assert "unreadable" in daemon.text()

    second = env.cli("run", timeout=30)
    assert second.returncode == 1
    assert f"already running (pid {daemon.proc.pid}" in second.stderr

    started = time.monotonic()
    assert daemon.kill(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    stopped = env.cli("status")
    assert stopped.returncode == 1
    assert "not running" in stopped.stderr


@pytest.mark.timeout(120)
def test_sighup_applies_a_changed_forwards_list(env: Env, daemons: Callable[[], Daemon]) -> None:
    daemon = daemons()
    chrome_download(env.logs, "job.log", env.log_line())
    ep = wait_for(lambda: endpoint_up(env), "the tunnel")
    first = ep["forwards"][0]
    second_port = free_port()
    env.config.write_text(
        env.config_text([first["spec"], f"{second_port}:127.0.0.1:{env.http_port}"])
    )
    daemon.proc.send_signal(signal.SIGHUP)

    def both_forwards() -> dict[str, Any] | None:
        ep = endpoint_up(env)
        return ep if ep and len(ep["forwards"]) == 2 else None

    ep = wait_for(both_forwards, "two forwards after SIGHUP")
    assert [f["local_port"] for f in ep["forwards"]] == [first["local_port"], second_port]
    assert get(second_port) == HTTP_BODY
    assert get(first["local_port"]) == HTTP_BODY

    # A broken config on SIGHUP: logged, the running one stays in force.
    env.config.write_text("[tunnels]\nforwards = 'oops'\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded" in daemon.text(), "the reload error in the log")
    assert endpoint_up(env) is not None


@pytest.mark.timeout(120)
def test_config_reload_command_over_tcp(env: Env, daemons: Callable[[], Daemon]) -> None:
    """Windows has no SIGHUP: `jobtunnel config reload` does the same on every platform,
    here over the TCP control transport with its token file (what Windows uses)."""
    tcp = 'control = "tcp"\n'
    env.config.write_text(env.config.read_text() + tcp)
    daemons()
    chrome_download(env.logs, "job.log", env.log_line())
    first = wait_for(lambda: endpoint_up(env), "the tunnel")["forwards"][0]
    second_port = free_port()
    forwards = [first["spec"], f"{second_port}:127.0.0.1:{env.http_port}"]
    env.config.write_text(env.config_text(forwards) + tcp)
    done = env.cli("config", "reload")
    assert done.returncode == 0, done.stderr
    ep = wait_for(lambda: (e := endpoint_up(env)) and len(e["forwards"]) == 2 and e, "two forwards")
    assert [f["local_port"] for f in ep["forwards"]] == [first["local_port"], second_port]
    assert get(second_port) == HTTP_BODY
    # A broken file is named by the CLI and never sent; the daemon keeps its config.
    env.config.write_text("[tunnels]\nforwards = 'oops'\n" + "[daemon]\n" + tcp)
    broken = env.cli("config", "reload")
    assert broken.returncode == 1 and "tunnels.forwards" in broken.stderr
    # The file cannot say that the daemon listens on tcp: the CLI still finds it there.
    shown = env.cli("status")
    assert shown.returncode == 0 and "config file has errors" in shown.stderr, shown.stderr
    kept = endpoint_up(env)
    assert kept is not None and len(kept["forwards"]) == 2


@pytest.mark.timeout(120)
def test_systemd_notify_tcp_control_and_log_file(env: Env, daemons: Callable[[], Daemon]) -> None:
    """Under systemd: READY, STATUS and WATCHDOG datagrams; the Windows-style transport."""
    notify_path = env.home / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(TIMEOUT)
        env.vars.update(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000")
        env.config.write_text(env.config.read_text() + 'control = "tcp"\n')
        daemon = daemons()
        messages: list[str] = []
        while not ("WATCHDOG=1" in messages and any("READY=1" in m for m in messages)):
            messages.append(notify.recv(4096).decode())
            assert len(messages) < 100, messages
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=" in ready and "endpoints known" in ready
    token_file = env.home / "run" / "jobtunnel" / "control.json"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert not (env.home / "run" / "jobtunnel" / "control.sock").exists()
    assert env.status()["daemon"]["pid"] == daemon.proc.pid
    log_file = env.home / ".local" / "state" / "jobtunnel" / "log" / "jobtunnel.log"
    assert "running (pid" in log_file.read_text()
    assert daemon.kill(signal.SIGTERM) == 0


@pytest.mark.timeout(120)
def test_a_changed_host_key_is_refused_until_the_user_trusts_it(
    env: Env, daemons: Callable[[], Daemon]
) -> None:
    daemons()
    chrome_download(env.logs, "job.log", env.log_line())
    wait_for(lambda: endpoint_up(env), "the tunnel")
    env.sshd.stop()
    env.sshd.new_host_key()
    env.sshd.start()
    name = f"{env.sshd.user}@127.0.0.1:{env.sshd.port}"

    def refused_key() -> dict[str, Any] | None:
        eps = [e for e in env.status()["endpoints"] if e["last_error_kind"] == "host_key_changed"]
        return eps[0] if eps else None

    ep = wait_for(refused_key, "the changed host key to be refused")
    assert ep["state"] == "failed"
    assert "jobtunnel trust" in ep["last_error"] and ep["last_error"].count("SHA256:") == 2
    time.sleep(1.5)  # never retried silently
    assert endpoint_up(env) is None
    # No terminal to ask on: it names the key and the command, and trusts nothing.
    unasked = env.cli("trust", name)
    assert unasked.returncode != 0 and ep["refused_key"] in unasked.stderr + unasked.stdout
    assert endpoint_up(env) is None
    trusted = env.cli("trust", name, ep["refused_key"])
    assert trusted.returncode == 0, trusted.stderr
    wait_for(lambda: endpoint_up(env), "the tunnel with the trusted new key")


@pytest.mark.timeout(120)
def test_pause_all_closes_ports_across_a_restart_and_resume_reopens_them(
    env: Env, daemons: Callable[[], Daemon]
) -> None:
    daemon = daemons()
    chrome_download(env.logs, "job.log", env.log_line())
    port = wait_for(lambda: endpoint_up(env), "the tunnel")["forwards"][0]["local_port"]
    assert env.cli("pause").returncode == 0
    wait_for(lambda: refused(port), "the paused port to close")
    assert [e["state"] for e in env.status()["endpoints"]] == ["paused"]
    assert daemon.kill(signal.SIGTERM) == 0
    daemons()
    assert [e["state"] for e in env.status()["endpoints"]] == ["paused"]
    assert refused(port)
    assert env.cli("resume").returncode == 0
    ep = wait_for(lambda: endpoint_up(env), "the resumed tunnel")
    assert ep["forwards"][0]["local_port"] == port
    assert get(port) == HTTP_BODY


def _listeners(daemon: Daemon) -> set[int]:
    return {local[1] for state, local, _ in proc_tcp(daemon.proc.pid) if state == "LISTEN"}


@pytest.mark.timeout(120)
def test_a_second_file_cannot_re_point_a_job_until_the_user_switches(
    env: Env, daemons: Callable[[], Daemon]
) -> None:
    """The hijack of issue 14: a dropped file names a known job at another address."""
    text = env.config.read_text()
    env.config.write_text(
        text.replace(
            f"username_pattern = '{env.sshd.user}'", "username_pattern = 'uprod_[a-z0-9]+'"
        )
    )
    daemon = daemons()
    job = "hijack1"
    env.logs.mkdir(exist_ok=True)
    real = env.logs / "job.log"
    real.write_text(f"ssh -p {env.sshd.port} uprod_{job}@127.0.0.1\n")
    os.utime(real, (time.time() - 100, time.time() - 100))

    def ours() -> dict[str, Any] | None:
        eps = [e for e in env.status()["endpoints"] if e["job_id"] == job]
        return eps[0] if eps and eps[0]["forwards"][0]["local_port"] else None

    first = wait_for(ours, "the job's endpoint with its listener")
    port = first["forwards"][0]["local_port"]
    assert first["source_info"]["path"] == str(real) and first["source_info"]["line"] == 1

    accepted = 0
    with socket.socket() as impostor:
        impostor.bind(("127.0.0.2", 0))
        impostor.listen()
        impostor.settimeout(0.2)
        evil_port = impostor.getsockname()[1]
        (env.logs / "evil.log").write_text(f"ssh -p {evil_port} uprod_{job}@127.0.0.2\n")

        def moved() -> dict[str, Any] | None:
            ep = ours()
            return ep if ep and ep["pending_move"] else None

        ep = wait_for(moved, "the pending move in status")
        assert ep["host"] == "127.0.0.1" and ep["forwards"][0]["local_port"] == port
        assert ep["pending_move"]["host"] == "127.0.0.2"
        assert ep["pending_move"]["source"]["path"].endswith("evil.log")
        time.sleep(1.0)
        with contextlib.suppress(TimeoutError):
            impostor.accept()[0].close()
            accepted += 1
        assert accepted == 0  # never connected to by itself
        assert port in _listeners(daemon)
        assert "reports a new address" in daemon.text()

        switched = env.cli("switch", job)
        assert switched.returncode == 0, switched.stderr

        def connected() -> bool:
            with contextlib.suppress(TimeoutError):
                impostor.accept()[0].close()
                return True
            return False

        wait_for(connected, "the switched endpoint to connect to the new address")
    after = ours()
    assert after is not None and after["host"] == "127.0.0.2" and after["pending_move"] is None
    assert after["forwards"][0]["local_port"] == port  # the ports went with it


@pytest.mark.timeout(120)
def test_two_20_endpoint_files_open_few_listeners_and_none_after_the_files_go(
    env: Env, daemons: Callable[[], Daemon]
) -> None:
    env.config.write_text(env.config_text([f"0:127.0.0.1:{env.http_port}"]))
    daemon = daemons()
    env.logs.mkdir(exist_ok=True)
    for f in range(2):
        lines = [f"ssh -p {2200 + i} {env.sshd.user}@127.1.{f}.{i + 1}" for i in range(20)]
        (env.logs / f"many-{f}.log").write_text("\n".join(lines) + "\n")
    wait_for(lambda: len(env.status()["endpoints"]) == 40, "40 endpoints known")
    time.sleep(1.0)
    listening = _listeners(daemon)
    status = env.status()["endpoints"]
    active = [e for e in status if e["action"] == "active"]
    assert len(active) == 6 and len(listening) == 6  # 3 per file, 8 at most
    waiting = [e for e in status if e["action"] == "pending"]
    assert len(waiting) == 34 and all(e["waiting_reason"] for e in waiting)
    assert "more than 3 endpoints from" in daemon.text()
    name = waiting[0]["name"]
    assert env.cli("connect", name).returncode == 0  # one click opens a waiting one
    wait_for(lambda: len(_listeners(daemon)) == 7, "the connected one's listener")

    assert daemon.kill(signal.SIGTERM) == 0
    for f in range(2):
        (env.logs / f"many-{f}.log").unlink()
    daemon = daemons()
    time.sleep(1.0)
    # The one the user connected is theirs; the rest had only their files.
    assert len(_listeners(daemon)) == 1
    reasons = {e["waiting_reason"] for e in env.status()["endpoints"] if e["name"] != name}
    assert "every log file that named it is gone" in reasons
