"""Shared fixtures: the real HPA data beside the repo and small synthetic inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
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


def _make_weak_cells(folder: Path, n_img: int = 12, per: int = 4, size: int = 32, seed: int = 0) -> Path:
    """A crop-layout cell dataset; in every image the last cell shows no pattern (it lacks the label)."""
    rng = np.random.default_rng(seed)
    rows, crops, truth = [], [], ["ID,cell,Label"]
    for i in range(n_img):
        labels = [i % 3]
        for c in range(1, per + 1):
            crop = rng.integers(0, 30, (4, size, size), dtype=np.uint8)
            shows = c < per
            if shows:
                crop[1, labels[0] * 10 : labels[0] * 10 + 10] = 220
            crops.append(crop)
            rows.append({"cell_uid": f"im{i}_{c}", "image_id": f"im{i}", "cell": c, "shard": 0})
            rows[-1] |= {"row": len(rows) - 1, "labels": labels}
            truth.append(f"im{i},{c},{labels[0] if shows else ''}")
    folder.mkdir(parents=True)
    np.save(folder / "shard-00000.npy", np.stack(crops))
    pd.DataFrame(rows).to_parquet(folder / "cells.parquet")
    meta = {"version": 1, "crop_size": size, "channels": ["red", "green", "blue", "yellow"], "taxonomy": "t"}
    meta |= {"classes": ["a", "b", "c"], "n_cells": len(rows)}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder.parent / "truth.csv").write_text("\n".join(truth) + "\n")
    return folder


@pytest.fixture
def weak_cells():
    """Factory ``(folder, n_img, per) -> folder`` of a crop-layout cell dataset (3 classes, 32 px) in which
    the last cell of every image shows none of its image's pattern; ``folder/../truth.csv`` has the truth."""
    return _make_weak_cells
