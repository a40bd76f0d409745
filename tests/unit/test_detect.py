"""Endpoint detection: the sample logs, unseen wordings, encodings and rejections."""

from __future__ import annotations

import tracemalloc

import pytest
from jobtunnel.daemon.core.detect import Detector, Endpoint, EndpointSet, Rejection, job_id_of

from tests.helpers.samples import expected_cases, samples_dir


def detect(data: bytes, **options: object) -> tuple[list[Endpoint], list[Rejection]]:
    detector = Detector("f", **options)  # type: ignore[arg-type]
    current = EndpointSet()
    rejected = []
    for finding in detector.feed(data) + detector.close():
        if isinstance(finding, Rejection):
            rejected.append(finding)
        else:
            current.add(finding)
    return list(current), rejected


def keys(endpoints: list[Endpoint]) -> list[tuple[str, str, int]]:
    return [e.key for e in endpoints]


@pytest.mark.parametrize(("name", "want"), expected_cases())
def test_every_shared_sample_gives_exactly_the_expected_endpoints(
    name: str, want: list[dict[str, object]]
) -> None:
    found, _ = detect((samples_dir() / name).read_bytes())
    got = [{k: v for k, v in e.to_dict().items() if k not in ("file", "line")} for e in found]
    assert got == want


@pytest.mark.parametrize(
    ("line", "port"),
    [
        (b"ssh -o StrictHostKeyChecking=no -p 32100 -i ~/.ssh/k uprod_AbC12@52.1.2.3", 32100),
        (b"ssh -i key uprod_AbC12@52.1.2.3 -p32100", 32100),
        (b"ssh uprod_AbC12@52.1.2.3 -o Port=32100", 32100),
        (b"ssh -o 'Port 32100' uprod_AbC12@52.1.2.3", 32100),
        (b"open ssh://uprod_AbC12@52.1.2.3:32100 in your client", 32100),
        (b"connect to uprod_AbC12@52.1.2.3:32100.", 32100),
        (b"uprod_AbC12@52.1.2.3 (port 32100)", 32100),
        (b"You can ssh to the cluster: ssh -i <path/to/key> uprod_AbC12@52.1.2.3;", 22),
        (b'"11/24/2026 9:06:10 AM","INFO","1","ssh -i <k> uprod_AbC12@52.1.2.3"', 22),
        (b"<td>ssh&nbsp;-p&nbsp;32100 <b>uprod_AbC12</b>&#64;<span>52.1.2.3</span></td>", 32100),
        (b"\x1b[1;32mssh -i k uprod_AbC12@52.1.2.3\x1b[0m port 32100", 32100),
        (b"ssh\xc2\xa0-p\xc2\xa032100\xc2\xa0uprod_AbC12@52.1.2.3", 32100),
        (b"The master node of job uprod_AbC12 is at 52.1.2.3 (port 32100)", 32100),
        (b"Benutzer uprod_AbC12 \xe2 Host: 52.1.2.3 Port 32100 Gr\xf6\xdfe", 32100),
    ],
)
def test_wordings_never_seen_before(line: bytes, port: int) -> None:
    found, rejected = detect(b"noise before\n" + line + b"\r\nnoise after\n")
    assert keys(found) == [("uprod_AbC12", "52.1.2.3", port)]
    assert rejected == []


def test_labelled_fields_on_nearby_lines_in_any_order() -> None:
    text = b"Port: 32100\nUnrelated line\nPublic IP: 52.1.2.3\nJob username: udeprod_Qx9\n"
    found, _ = detect(text)
    assert keys(found) == [("udeprod_Qx9", "52.1.2.3", 32100)]
    assert found[0].job_id == "Qx9"


def test_ssh_verbose_debug_lines() -> None:
    text = (
        b"debug1: Connecting to 20.83.81.241 [20.83.81.241] port 32100.\n"
        b"debug1: Connection established.\n"
        b"debug1: Authenticating to 20.83.81.241:32100 as 'uprod_oQqGTc'\n"
    )
    assert keys(detect(text)[0]) == [("uprod_oQqGTc", "20.83.81.241", 32100)]


@pytest.mark.parametrize(
    ("line", "host"),
    [
        (b"ssh -p 22 uprod_A1@[2600:1f18::5]", "2600:1f18::5"),
        (b"ssh uprod_A1@2600:1f18::5", "2600:1f18::5"),
        (b"ssh -p 22 uprod_A1@EC2-3-68-190-68.eu-central-1.compute.amazonaws.com.", None),
        (b"ssh -l uprod_A1 -p 22 ec2-52-1-2-3.compute-1.amazonaws.com", None),
    ],
)
def test_ipv6_and_dns_names(line: bytes, host: str | None) -> None:
    found, _ = detect(line)
    assert len(found) == 1
    assert found[0].host == (host or found[0].host.lower().rstrip("."))
    assert "[" not in found[0].host


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"ssh -i k uprod_A1@10.0.0.5", "private"),
        (b"ssh -i k uprod_A1@127.0.0.1", "loopback"),
        (b"ssh -i k uprod_A1@169.254.10.1", "link-local"),
        (b"ssh -i k uprod_A1@224.0.0.1", "multicast"),
        (b"ssh -i k uprod_A1@[::1]", "loopback"),
        (b"ssh -i k uprod_A1@0x7f.0x1", "numeric"),
        (b"Host: 0xa9.0xfe.0xa9.0xfe\nUser: uprod_A1", "numeric"),
        (b"ssh -i k uprod_A1@localhost", "DNS"),
        (b"ssh -p 99999 uprod_A1@52.1.2.3", "outside 1-65535"),
        (b"ssh -p 0 uprod_A1@52.1.2.3", "outside 1-65535"),
        (b"ssh uprod_A1@300.1.2.3", "IPv4"),
        (b"ssh uprod_A1@bad_name.example.com", "DNS"),
        (b"ssh uprod_A1@52.1.2.3$(reboot)", "shell"),
        (b"ssh uprod_A1@52.1.2.3`id`", "shell"),
        (b"Private IP: 10.1.2.3\nUser: uprod_A1", "private"),
    ],
)
def test_rejected_candidates_are_reported_with_a_reason(line: bytes, reason: str) -> None:
    found, rejected = detect(line)
    assert found == []
    assert len(rejected) == 1
    assert reason in rejected[0].reason
    assert rejected[0].line >= 1


def test_private_addresses_allowed_when_configured() -> None:
    found, rejected = detect(b"ssh -p 2222 uprod_A1@127.0.0.1\n", allow_private_addresses=True)
    assert keys(found) == [("uprod_A1", "127.0.0.1", 2222)]
    assert rejected == []


def test_custom_username_pattern() -> None:
    text = b"ssh alice@52.1.2.3\nssh uprod_A1@52.1.2.4\n"
    found, _ = detect(text, username_pattern=r"alice|bob")
    assert keys(found) == [("alice", "52.1.2.3", 22)]
    assert found[0].job_id is None


def test_username_in_paths_alone_is_not_an_endpoint() -> None:
    text = b"Launching ./Allrun, Working dir: /enc/uprod_Ptczhb/work/model.v2.case\n"
    assert detect(text) == ([], [])


def test_restarted_cluster_replaces_and_duplicates_collapse() -> None:
    text = (
        b"ssh uprod_Zz@54.90.110.84\nssh uprod_Zz@54.90.110.84\nrestarted\n"
        b"ssh uprod_Zz@54.210.7.19\nssh uprod_Other@54.1.1.1 -p 32100\n"
    )
    found, _ = detect(text)
    assert keys(found) == [("uprod_Zz", "54.210.7.19", 22), ("uprod_Other", "54.1.1.1", 32100)]
    assert found[0].line == 4


@pytest.mark.parametrize(
    "encode",
    [
        lambda t: t.encode("utf-8"),
        lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"),
        lambda t: t.encode("utf-16"),  # with BOM, as Notepad writes it
        lambda t: b"\xfe\xff" + t.encode("utf-16-be"),
        lambda t: t.encode("utf-16-le"),  # no BOM
        lambda t: t.encode("latin-1"),
    ],
)
def test_encodings_and_line_ends(encode: object) -> None:
    text = "Größe\r\nJob username:\xa0uprod_Wn3\r\nPublic IP: 52.14.200.9\r\nPort: 32100"
    found, _ = detect(encode(text))  # type: ignore[operator]
    assert keys(found) == [("uprod_Wn3", "52.14.200.9", 32100)]
    assert found[0].line == 2


def test_notebook_url_attached_to_its_job_in_either_order() -> None:
    url = "https://platform.rescale.com/notebooks/qpWia/?token=3f9c1e7a2b"
    before, _ = detect(f"Notebook at {url}\nssh uprod_qpWia@107.23.132.81\n".encode())
    after, _ = detect(f"ssh uprod_qpWia@107.23.132.81\n\n\nNotebook at {url}\n".encode())
    assert before[0].notebook_url == url
    assert after[0].notebook_url == url


def test_partial_last_line_waits_for_its_end() -> None:
    detector = Detector("f")
    assert detector.feed(b"noise\nssh uprod_A1@52.1.2.3 -p 321") == []
    found = detector.feed(b"00\n")
    assert [f.key for f in found if isinstance(f, Endpoint)] == [("uprod_A1", "52.1.2.3", 32100)]


def test_endpoints_per_file_are_capped() -> None:
    text = b"".join(b"ssh uprod_J%d@52.1.%d.%d\n" % (i, i // 250, i % 250 + 1) for i in range(30))
    found, rejected = detect(text, max_endpoints=10)
    assert len(found) == 10
    assert rejected and "more than 10" in rejected[0].reason


def test_memory_stays_flat_on_a_large_stream_with_the_endpoint_last() -> None:
    line = b"2026-11-24 09:06:10 INFO solver: iteration 1234 residual 1.2e-05 time step 0.01\n"
    chunk = line * ((1 << 20) // len(line))
    detector = Detector("big")
    tracemalloc.start()
    try:
        for _ in range(96):  # about 96 MiB streamed
            assert detector.feed(chunk) == []
        found = detector.feed(b"ssh -p 32100 uprod_Last1@52.1.2.3\n") + detector.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [f.key for f in found if isinstance(f, Endpoint)] == [("uprod_Last1", "52.1.2.3", 32100)]
    assert found[0].line == 96 * chunk.count(b"\n") + 1
    assert peak < 8 << 20, f"peak {peak >> 20} MiB while streaming 96 MiB"


def test_a_huge_single_line_is_read_in_bounded_slices() -> None:
    detector = Detector("one-line.html")
    tracemalloc.start()
    try:
        findings = []
        filler = b"x" * (1 << 20)
        for i in range(24):
            findings += detector.feed(filler)
            if i == 12:
                findings += detector.feed(b" ssh uprod_Mid1@52.1.2.3 ")
        findings += detector.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [f.key for f in findings if isinstance(f, Endpoint)] == [("uprod_Mid1", "52.1.2.3", 22)]
    assert peak < 16 << 20


def test_job_id_of() -> None:
    assert job_id_of("uprod_qpWia") == "qpWia"
    assert job_id_of("udeprod_Kx7pQc") == "Kx7pQc"
    assert job_id_of("alice") is None
