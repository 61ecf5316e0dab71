"""Shared fixtures: tiny network configurations that run in milliseconds."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests on a loaded 2-core machine: no per-example deadline, no "too slow" health
# check, and a fixed search (the same examples every run), so a failure reproduces.
settings.register_profile(
    "calm", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("calm")

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture
def realdata() -> Path:
    """The folder of real camera recordings beside the repository; skips when absent."""
    if not (REALDATA / "REFERENCE.json").is_file():
        pytest.skip("real recordings (shared/realdata beside the repository) are absent")
    return REALDATA
