"""Our submission CSV parses like the competition's sample submission."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpacell.classifier.scoring.rle import decode_mask, encode_mask_cells
from hpacell.classifier.scoring.submission import (
    SubmissionError,
    parse_prediction_string,
    prediction_string,
    read_ids,
    read_submission,
    write_submission,
)


def test_sample_submission_parses(hpa2021):
    subs = read_submission(hpa2021 / "sample_submission.csv")
    assert len(subs) == 559
    sizes = pd.Series([s.width for s in subs]).value_counts().to_dict()
    assert sizes == {2048: 462, 1728: 68, 3072: 29}
    s = subs[0]
    assert s.classes == [0] and s.confidences == [1.0]
    assert decode_mask(s.masks[0], s.height, s.width).shape == (s.height, s.width)


def test_written_file_reads_back_like_the_sample(tmp_path, hpa2021):
    ids, sizes = read_ids(hpa2021 / "sample_submission.csv")
    mask = np.zeros((sizes[ids[0]][1], sizes[ids[0]][0]), np.uint16)
    mask[10:20, 30:45] = 1
    mask[100:130, 5:9] = 2
    enc = encode_mask_cells(mask)
    scores = np.array([[0.9] + [0.01] * 18, [0.2] * 19])
    text = prediction_string([enc[1], enc[2]], scores)
    out = write_submission([(ids[0], mask.shape[1], mask.shape[0], text)], tmp_path / "s.csv", ids, sizes)
    ours = pd.read_csv(out, keep_default_na=False)
    sample = pd.read_csv(hpa2021 / "sample_submission.csv", keep_default_na=False)
    assert list(ours.columns) == list(sample.columns)
    assert ours["ID"].tolist() == sample["ID"].tolist()
    assert (ours[["ImageWidth", "ImageHeight"]].values == sample[["ImageWidth", "ImageHeight"]].values).all()
    assert ours.dtypes.to_dict() == sample.dtypes.to_dict()
    back = read_submission(out)
    assert len(back[0]) == 2 * 19  # every cell once per class
    assert back[0].classes[:3] == [0, 1, 2] and back[0].confidences[0] == 0.9
    assert all(len(b) == 0 for b in back[1:])  # images without cells: empty string
    m = decode_mask(back[0].masks[19], mask.shape[0], mask.shape[1])
    assert np.array_equal(m.astype(bool), mask == 2)


def test_bad_files_name_the_problem(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("ID,Width\na,1\n")
    with pytest.raises(SubmissionError, match="header"):
        read_submission(p)
    p.write_text("ID,ImageWidth,ImageHeight,PredictionString\na,4,4,0 1\n")
    with pytest.raises(SubmissionError, match="bad.csv:2"):
        read_submission(p)
    p.write_text("ID,ImageWidth,ImageHeight,PredictionString\na,4,4,\na,4,4,\n")
    with pytest.raises(SubmissionError, match="twice"):
        read_submission(p)
    with pytest.raises(ValueError, match="no known size"):
        write_submission([], tmp_path / "x.csv", ids=["zz"])
    with pytest.raises(ValueError, match="triple 0"):
        parse_prediction_string("x 1 m")
