"""Shared test fixtures. Real data lives outside the repository (academic use only) and is used by path:
``$CSTF_DATA`` or ``<repo>/../shared/data``; tests that need it skip with the reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared(name: str, env: str) -> Path:
    return Path(os.environ.get(env, REPO.parent / "shared" / name))


DATA_ROOT = _shared("data", "CSTF_DATA")
FIXTURES_ROOT = _shared("fixtures", "CSTF_FIXTURES")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real sample data (DOTA, HRSC2016, multimodal pairs)."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"real sample data not found at {DATA_ROOT} (set CSTF_DATA)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """Root of the official-devkit evaluation fixtures."""
    if not FIXTURES_ROOT.is_dir():
        pytest.skip(f"evaluation fixtures not found at {FIXTURES_ROOT} (set CSTF_FIXTURES)")
    return FIXTURES_ROOT
