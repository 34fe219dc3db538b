"""The one reader of ID lists, the one failures.csv writer and the one Parquet writer."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from hpacell.classifier.scoring.submission import SubmissionError, read_ids
from hpacell.utils.errors import InputError
from hpacell.utils.tables import read_id_list, read_id_table, write_failures, write_parquet


def test_text_and_csv_id_lists(tmp_path):
    (tmp_path / "ids.txt").write_text("# shard 0\n a \n\nb\na\n")
    assert read_id_list(tmp_path / "ids.txt") == ["a", "b"]
    with pytest.raises(InputError, match=r"ids.txt: repeated ID 'a'"):
        read_id_list(tmp_path / "ids.txt", repeats="error")
    (tmp_path / "labels.csv").write_text("Label,Id\n0,x\n1|2,NA\n")  # the ID column need not come first
    table = read_id_table(tmp_path / "labels.csv")
    assert list(table.columns) == ["ID", "Label"] and table["ID"].tolist() == ["x", "NA"]
    (tmp_path / "noext").write_text("ID,Label\ny,3\n")  # a comma in the first line: a CSV
    assert read_id_list(tmp_path / "noext") == ["y"]
    (tmp_path / "bad.csv").write_text("Image,Label\nx,1\n")
    with pytest.raises(InputError, match=r"bad.csv: CSV has no ID/Id column"):
        read_id_list(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_id_list(tmp_path / "missing.txt")


def test_submission_ids_and_sizes_use_the_same_reader(tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("ID,ImageWidth,ImageHeight,PredictionString\nb,64,32,\na,16,16,\n")
    assert read_ids(sample) == (["b", "a"], {"b": (64, 32), "a": (16, 16)})
    (tmp_path / "plain.txt").write_text("b\na\n")  # any ID list: sizes then come from the masks
    assert read_ids(tmp_path / "plain.txt") == (["b", "a"], {})
    (tmp_path / "rep.csv").write_text("ID,ImageWidth,ImageHeight,PredictionString\nb,1,1,\nb,1,1,\n")
    with pytest.raises(SubmissionError, match="rep.csv: repeated ID 'b'"):
        read_ids(tmp_path / "rep.csv")
    (tmp_path / "size.csv").write_text("ID,ImageWidth,ImageHeight,PredictionString\nb,0,1,\n")
    with pytest.raises(SubmissionError, match="size.csv: image 'b': bad image size 0 x 1"):
        read_ids(tmp_path / "size.csv")


def test_failures_csv_is_one_format(tmp_path):
    path = write_failures(tmp_path / "failures.csv", {"z": "OSError: a, b", "é": 'ValueError: "q"\nline 2'})
    back = pd.read_csv(path, dtype=str, encoding="utf-8")
    assert back.to_dict("list") == {"ID": ["z", "é"], "error": ["OSError: a, b", 'ValueError: "q"\nline 2']}


def test_parquet_labels_are_int_lists_even_when_empty(tmp_path):
    df = pd.DataFrame({"cell_uid": ["a", "b"], "labels": [[], []]})
    write_parquet(df, tmp_path / "t.parquet")
    assert str(pq.read_schema(tmp_path / "t.parquet").field("labels").type) == "list<element: int64>"
    assert not list(tmp_path.glob(".*tmp*"))
