"""Shared fixtures: the real HPA data beside the repo and small synthetic inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never use the network: albumentations otherwise checks for a newer version at import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HPACELL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$HPACELL_SHARED_DATA``); tests using it skip when absent."""
    if not (SHARED_DATA / "hpa2021" / "images").is_dir():
        pytest.skip(f"real HPA data not found at {SHARED_DATA} (set HPACELL_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def hpa2021(shared_data: Path) -> Path:
    return shared_data / "hpa2021"


@pytest.fixture(scope="session")
def real_ids(hpa2021: Path) -> list[str]:
    ids = sorted(p.name[: -len("_cellmask.png")] for p in (hpa2021 / "masks").glob("*_cellmask.png"))
    assert len(ids) == 5
    return ids
