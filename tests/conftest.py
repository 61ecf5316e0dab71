"""Shared fixtures: tiny network configurations that run in milliseconds."""

from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture
def realdata() -> Path:
    """The folder of real camera recordings beside the repository; skips when absent."""
    if not (REALDATA / "REFERENCE.json").is_file():
        pytest.skip("real recordings (shared/realdata beside the repository) are absent")
    return REALDATA
