"""The output comparison of .ci/slurm-smoke: equal folders pass, a changed byte or file fails."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pandas as pd

COMPARE = runpy.run_path(str(Path(__file__).resolve().parents[2] / ".ci" / "compare_outputs.py"))["main"]


def _out(root: Path, seconds: float, written: str) -> Path:
    (root / "masks").mkdir(parents=True)
    (root / "masks" / "a_cellmask.png").write_bytes(b"\x89PNG mask")
    pd.DataFrame({"ID": ["a"], "path": [f"{root}/masks/a_cellmask.png"], "seconds": [seconds]}).to_parquet(
        root / "segmentation.parquet"
    )
    (root / "meta.json").write_text(json.dumps({"images": f"{root}/view", "written": written}))
    (root / "logs").mkdir()
    (root / "logs" / "x.log").write_text(written)
    return root


def test_equal_up_to_paths_timings_and_logs(tmp_path, capsys):
    a = _out(tmp_path / "a", 0.1, "t1")
    b = _out(tmp_path / "b", 0.7, "t2")
    assert COMPARE(str(a), str(b)) == 0
    assert capsys.readouterr().out.strip() == "3"


def test_a_changed_byte_or_a_missing_file_fails(tmp_path):
    a = _out(tmp_path / "a", 0.1, "t1")
    b = _out(tmp_path / "b", 0.1, "t1")
    (b / "masks" / "a_cellmask.png").write_bytes(b"\x89PNG masx")
    assert COMPARE(str(a), str(b)) == 1
    (b / "masks" / "a_cellmask.png").unlink()
    assert COMPARE(str(a), str(b)) == 1
