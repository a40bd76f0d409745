"""The sample job logs (``tests/data/job-logs``) and what detection must find in each."""

from __future__ import annotations

import json
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "job-logs"


def samples_dir() -> Path:
    return SAMPLES


def expected_cases() -> list[tuple[str, list[dict[str, object]]]]:
    """(file name, endpoints scan --json must print for it), from expected.json."""
    expected = json.loads((SAMPLES / "expected.json").read_text())
    return [(name, want) for name, want in expected.items() if not name.startswith("_")]
