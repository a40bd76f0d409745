"""Property tests of detection: found in any noise, never raises, any chunking agrees."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobtunnel.daemon.core.detect import Detector, Endpoint, Rejection

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Log noise: printable text and tabs, without line breaks (the endpoint owns its line).
noise_line = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"), include_characters="\t"
    ),
    max_size=120,
)
job_ids = st.text(
    alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789", min_size=4, max_size=8
)
public_ips = st.tuples(
    st.sampled_from([3, 13, 20, 34, 52, 54, 107]),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(1, 254),
).map(lambda t: ".".join(map(str, t)))
ports = st.sampled_from([22, 32100]) | st.integers(1, 65535)
templates = st.sampled_from(
    [
        "ssh -i <path/to/key> -p {port} {user}@{host}",
        "ssh -p {port} -i ~/.ssh/id_rsa -o StrictHostKeyChecking=no {user}@{host}",
        "You can ssh to the cluster: ssh {user}@{host} -p {port};",
        "ssh://{user}@{host}:{port}",
        "{user}@{host}:{port}",
        "SSH access: ssh -o Port={port} {user}@{host}",
    ]
)


def run(chunks: list[bytes]) -> list[Endpoint | Rejection]:
    detector = Detector("f")
    out = []
    for chunk in chunks:
        out += detector.feed(chunk)
    return out + detector.close()


def endpoints(findings: list[Endpoint | Rejection]) -> set[tuple[str, str, int]]:
    return {f.key for f in findings if isinstance(f, Endpoint)}


@PROPERTY
@given(
    before=st.lists(noise_line, max_size=20),
    after=st.lists(noise_line, max_size=20),
    template=templates,
    prefix=st.sampled_from(["uprod_", "udeprod_", "ueuprod_"]),
    job=job_ids,
    host=public_ips,
    port=ports,
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_endpoint_line_is_found_among_random_noise(
    before: list[str],
    after: list[str],
    template: str,
    prefix: str,
    job: str,
    host: str,
    port: int,
    newline: str,
) -> None:
    user = prefix + job
    line = template.format(user=user, host=host, port=port)
    text = newline.join([*before, line, *after])
    found = endpoints(run([text.encode("utf-8")]))
    assert (user, host, port) in found


@PROPERTY
@given(data=st.binary(max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=8))
def test_arbitrary_bytes_never_raise_and_any_chunking_agrees(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(chunks) == run([data])


@PROPERTY
@given(
    lines=st.lists(
        st.sampled_from(
            [
                "noise line",
                "ssh -p 32100 uprod_Abc1@52.1.2.3",
                "ssh uprod_Abc1@54.9.9.9",
                "Job username: uprod_Lab1",
                "Public IP: 20.1.2.3",
                "Port: 32100",
                "debug1: Connecting to 20.83.81.241 [20.83.81.241] port 32100.",
                "debug1: Authenticating to 20.83.81.241:32100 as 'uprod_oQq'",
                "ssh -i k uprod_Priv1@10.0.0.1",
                "Notebook: https://platform.rescale.com/notebooks/Abc1/?token=ab12",
                "Größe\u00a0\u200b",
            ]
        ),
        max_size=40,
    ),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le"]),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_split_of_a_log_gives_the_same_findings(
    lines: list[str], encoding: str, cuts: list[int]
) -> None:
    data = "\r\n".join(lines).encode(encoding)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(chunks) == run([data])
    one_byte_at_a_time = [data[i : i + 1] for i in range(len(data))]
    assert run(one_byte_at_a_time) == run([data])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    piece=st.binary(min_size=1, max_size=4096).filter(lambda b: b"\n" not in b),
    sizes=st.lists(st.integers(1, 1 << 18), min_size=1, max_size=40),
)
def test_memory_stays_bounded_on_a_line_that_never_ends(piece: bytes, sizes: list[int]) -> None:
    """However a newline-free stream is chunked, the detector holds at most one line's cap."""
    from jobtunnel.daemon.core.detect import MAX_LINE

    detector = Detector("endless")
    for size in sizes:
        chunk = (piece * (size // len(piece) + 1))[:size]
        detector.feed(chunk)
        assert len(detector._partial) <= MAX_LINE
    detector.close()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        st.tuples(
            st.sampled_from(["52.1.{}.{}", "10.0.{}.{}", "127.0.{}.{}", "169.254.{}.{}"]),
            st.integers(0, 255),
            st.integers(1, 254),
            st.integers(1, 65535),
        ),
        min_size=1,
        max_size=400,
    ),
    cap=st.integers(1, 20),
)
def test_endpoints_and_rejections_per_file_are_capped(
    lines: list[tuple[str, int, int, int]], cap: int
) -> None:
    from jobtunnel.daemon.core.detect import MAX_REJECTIONS

    text = "\n".join(
        f"ssh -p {port} uprod_J{i}@{net.format(a, b)}" for i, (net, a, b, port) in enumerate(lines)
    )
    detector = Detector("flood", max_endpoints=cap)
    findings = detector.feed(text.encode()) + detector.close()
    found = [f for f in findings if isinstance(f, Endpoint)]
    rejected = [f for f in findings if isinstance(f, Rejection)]
    assert len(found) <= cap
    assert len(rejected) <= MAX_REJECTIONS
    # Public addresses are found until the cap; every private one is refused, with a reason.
    public = {
        (f"uprod_J{i}", net.format(a, b), port)
        for i, (net, a, b, port) in enumerate(lines)
        if net.startswith("52.")
    }
    assert {f.key for f in found} <= public
    assert all(r.reason for r in rejected)
