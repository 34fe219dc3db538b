"""``hpacell evaluate`` refuses every kind of bad row with one line naming it, and reads real-size rows."""

from __future__ import annotations

import base64
import json
import zlib

import numpy as np
import pytest
from typer.testing import CliRunner

from hpacell.classifier.scoring.evaluate import TruthImage, write_truth_csv
from hpacell.classifier.scoring.rle import decode_counts, encode_counts, encode_mask_cells
from hpacell.workflows.cli import app

runner = CliRunner()
SIDE = 256
HEADER = "ID,ImageWidth,ImageHeight,PredictionString\n"


def _cell(side: int = SIDE) -> str:
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4 : side // 2, side // 8 : side // 2] = 1
    return encode_mask_cells(mask)[1]


def _garbage_of_the_right_length() -> str:
    counts = decode_counts(_cell())
    rng = np.random.default_rng(0)
    return encode_counts(bytes(rng.integers(48, 112, len(counts), dtype=np.uint8)))


@pytest.fixture
def truth(tmp_path):
    path = tmp_path / "truth.csv"
    write_truth_csv([TruthImage("a", SIDE, SIDE, [1], [[3]], [_cell()])], path)
    return path


def _run(tmp_path, body: str, truth, *extra: str, raw: bytes | None = None):
    sub = tmp_path / "sub.csv"
    sub.write_bytes(raw if raw is not None else (HEADER + body).encode())
    return runner.invoke(app, ["evaluate", str(sub), "--truth", str(truth), *extra])


BAD = {
    "nan confidence": ("a,256,256,3 nan {m}\n", "sub.csv:2", "confidence nan"),
    "inf confidence": ("a,256,256,3 inf {m}\n", "sub.csv:2", "confidence inf"),
    "negative confidence": ("a,256,256,3 -0.5 {m}\n", "sub.csv:2", "confidence -0.5"),
    "confidence above 1": ("a,256,256,3 0.5 {m} 3 7 {m}\n", "sub.csv:2", "triple 1: confidence 7"),
    "class 19": ("a,256,256,19 0.5 {m}\n", "sub.csv:2", "class 19 out of range 0..18"),
    "class -1": ("a,256,256,-1 0.5 {m}\n", "sub.csv:2", "class -1 out of range"),
    "class not an integer": ("a,256,256,1.5 0.5 {m}\n", "sub.csv:2", "bad class or confidence"),
    "bad base64": ("a,256,256,3 0.5 not*base64\n", "sub.csv:2", "base64/zlib"),
    "bad zlib": (f"a,256,256,3 0.5 {base64.b64encode(b'not zlib').decode()}\n", "sub.csv:2", "zlib"),
    "bad RLE character": (f"a,256,256,3 0.5 {encode_counts(b'0~')}\n", "sub.csv:2", "character"),
    "unterminated RLE": (f"a,256,256,3 0.5 {encode_counts(b'0h')}\n", "sub.csv:2", "inside a number"),
    "mask for 128 px": (f"a,256,256,3 0.5 {_cell(128)}\n", "sub.csv:2", "covers 16384 pixels"),
    "mask for 512 px": (f"a,256,256,3 0.5 {_cell(512)}\n", "sub.csv:2", "covers 262144 pixels"),
    "garbage of the right length": (
        f"a,256,256,3 0.5 {_garbage_of_the_right_length()}\n",
        "sub.csv:2",
        "triple 0",
    ),
    "duplicate ID": ("a,256,256,3 0.5 {m}\nb,256,256,\na,256,256,\n", "sub.csv:4", "appears twice"),
    "size differs from the truth": ("a,128,256,\n", "sub.csv:2", "submitted size 128x256"),
    "half a triple": ("a,256,256,3 0.5\n", "sub.csv:2", "not a run of"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_rows_exit_1_with_one_line_naming_the_row(case, tmp_path, truth):
    body, where, problem = BAD[case]
    res = _run(tmp_path, body.format(m=_cell()), truth)
    assert res.exit_code == 1, res.output
    assert res.stdout == ""  # nothing scored
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpacell evaluate: error: "), res.stderr
    assert where in lines[0] and problem in lines[0], lines[0]


def test_bad_truth_mask_names_the_truth_row(tmp_path):
    path = tmp_path / "truth.csv"
    write_truth_csv([TruthImage("a", SIDE, SIDE, [1, 2], [[3], [4]], [_cell(), _cell(128)])], path)
    res = _run(tmp_path, "a,256,256,\n", path)
    assert res.exit_code == 1
    assert "truth.csv: row 2 (image a cell 2): mask covers 16384 pixels" in res.stderr


def test_bom_and_trailing_blank_line_accepted_and_both_modes_reported(tmp_path, truth):
    raw = ("\ufeff" + HEADER + f"a,256,256,3 0.9 {_cell()}\n\n").encode()
    for match in ("mask", "box"):
        js = tmp_path / f"{match}.json"
        res = _run(tmp_path, "", truth, "--match", match, "--json", str(js), raw=raw)
        assert res.exit_code == 0, res.output
        lines = res.stdout.strip().splitlines()
        assert lines[-1] == "mAP=1.000000" and lines[-3].startswith(f"match={match} (")
        figures = json.loads(js.read_text())
        assert figures["match"] == match and figures["mAP"] == 1.0
    assert "Kaggle" in json.loads((tmp_path / "mask.json").read_text())["match_used_by"]


def test_real_size_submission_through_the_cli(tmp_path):
    from hpacell.classifier.scoring.submission import prediction_string, write_submission

    side, grid = 2048, 8  # 64 cells x 19 classes at 2048 px: a row of several hundred KB
    mask = np.zeros((side, side), np.uint16)
    yy, xx = np.mgrid[-128:128, -128:128]
    theta = np.arctan2(yy, xx)
    rng = np.random.default_rng(0)
    for k in range(grid * grid):  # irregular cells, ~200 px across
        r = 95 * (1 + 0.1 * np.cos(3 * theta + rng.uniform(0, 6)) + 0.05 * np.cos(7 * theta))
        y, x = divmod(k, grid)
        mask[y * 256 : (y + 1) * 256, x * 256 : (x + 1) * 256][np.hypot(yy, xx) < r] = k + 1
    enc = encode_mask_cells(mask)
    cells = sorted(enc)
    labels = [[k % 18] for k in cells]
    scores = np.full((len(cells), 19), 0.01)
    for i, lab in enumerate(labels):
        scores[i, lab] = 0.8
    text = prediction_string([enc[c] for c in cells], scores)
    write_submission([("big", side, side, text)], tmp_path / "s.csv")
    truth = tmp_path / "truth.csv"
    write_truth_csv([TruthImage("big", side, side, cells, labels, [enc[c] for c in cells])], truth)
    assert (tmp_path / "s.csv").stat().st_size > 131072
    res = runner.invoke(app, ["evaluate", str(tmp_path / "s.csv"), "--truth", str(truth), "--match", "box"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == "mAP=1.000000"


def test_zlib_of_valid_counts_at_another_level_still_reads(tmp_path, truth):
    other = base64.b64encode(zlib.compress(decode_counts(_cell()), 1)).decode()
    res = _run(tmp_path, f"a,256,256,3 0.9 {other}\n", truth)
    assert res.exit_code == 0 and res.stdout.strip().endswith("mAP=1.000000")
