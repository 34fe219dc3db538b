"""One reader or writer per file contract: the source holds no second copy beside the shared one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p
    for stage in ("hpacell", "segmentation", "cellcrops", "classifier", "workflows")
    for p in (ROOT / stage).rglob("*.py")
)

# pattern -> the only files (relative to the repository) allowed to hold it, and why
CONTRACTS = {
    # checkpoints and pretrained weights: classifier.model's loader (weights_only=True); the
    # hpacellseg backend unpickles whole segmentation models, a different contract
    r"(?<!`)torch\.load\(": {"classifier/model.py", "segmentation/backends/hpacellseg.py"},
    # Parquet tables: hpacell.utils.tables.write_parquet (atomic; labels as list<int64>)
    r"\.to_parquet\(|pq\.write_table\(": {"hpacell/utils/tables.py"},
    # ID lists: hpacell.utils.tables.read_id_list / read_id_table
    r"def read_id_list|def read_id_table": {"hpacell/utils/tables.py"},
    # failures.csv: hpacell.utils.tables.write_failures
    r'"ID,error|\["ID", "error"\]': {"hpacell/utils/tables.py"},
}


@pytest.mark.parametrize("pattern", list(CONTRACTS))
def test_one_place_per_contract(pattern):
    found = {str(p.relative_to(ROOT)) for p in SOURCES if re.search(pattern, p.read_text())}
    assert found, f"{pattern}: the shared implementation moved; update this test"
    assert found <= CONTRACTS[pattern], (
        f"{pattern} outside its shared module: {sorted(found - CONTRACTS[pattern])}"
    )
