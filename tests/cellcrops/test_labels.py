import numpy as np
import pytest

from hpacell.cellcrops.labels import (
    HPA2018,
    HPA2021,
    LabelError,
    compare_ids,
    format_labels,
    read_labels,
    write_labels,
)


def test_real_2021_table(shared_data):
    t = read_labels(shared_data / "hpa2021" / "train.csv")
    assert t.taxonomy is HPA2021
    assert len(t) == 21806 and t.matrix.shape == (21806, 19)
    assert t.labels_of("5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0") == [0, 5, 8]
    assert t.labels_of("a34d8680-bb99-11e8-b2b9-ac1f6b6435d0") == [18]
    assert t.matrix.sum(1).min() >= 1
    assert HPA2021.classes[18] == "Negative" and HPA2021.negative == 18


def test_real_2018_table(shared_data):
    t = read_labels(shared_data / "hpa2018" / "train.csv")
    assert t.taxonomy is HPA2018
    assert len(t) == 31072 and t.matrix.shape == (31072, 28)
    assert HPA2018.classes[27] == "Rods & rings"
    assert t.matrix.sum(0).min() > 0  # every class occurs


def test_roundtrip_both_formats(tmp_path):
    labels = {"a": [0, 5], "b": [18], "c": [3]}
    for tax in (HPA2021, HPA2018):
        write_labels(tmp_path / "t.csv", labels, tax)
        t = read_labels(tmp_path / "t.csv")
        assert t.taxonomy is tax and t.as_dict() == labels
    assert format_labels([5, 0]) == "0|5"


@pytest.mark.parametrize(
    "body, match",
    [
        ("a,0|19\n", r"row 2 \(a\): class id 19 out of range"),
        ("a,0\n\nb,1\n", "row 3: empty row"),
        ("a,0\nb,\n", r"row 3 \(b\): empty label"),
        ("a,0,1\n", "row 2: expected 2 columns"),
        ("a,0\nb,x\n", r"row 3 \(b\): label 'x' is not an integer"),
        ("a,0\na,1\n", "row 3: duplicate ID"),
        ("a,0 1\n", r"row 2 \(a\): label '0 1'"),
    ],
)
def test_malformed_2021_rows(tmp_path, body, match):
    p = tmp_path / "bad.csv"
    p.write_text("ID,Label\n" + body)
    with pytest.raises(LabelError, match=match) as e:
        read_labels(p)
    assert "bad.csv" in str(e.value)


def test_2018_out_of_range_and_unknown_header(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("Id,Target\na,27 28\n")
    with pytest.raises(LabelError, match="class id 28 out of range 0..27"):
        read_labels(p)
    p.write_text("Image,Classes\na,1\n")
    with pytest.raises(LabelError, match="row 1: unrecognised header"):
        read_labels(p)


def test_compare_ids():
    missing, unlabelled = compare_ids(["a", "b", "c"], ["c", "d"])
    assert missing == ["a", "b"] and unlabelled == ["d"]
    assert np.array_equal(np.array(compare_ids([], [])), np.array(([], [])))


def test_utf8_bom_is_accepted_and_other_encodings_are_one_line(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbfID,Label\nabc,1|2\n")  # Excel's "CSV UTF-8"
    table = read_labels(p)
    assert table.ids == ["abc"] and table.as_dict() == {"abc": [1, 2]}
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"ID,Label\n\xe9t\xe9,1\n")
    with pytest.raises(LabelError, match="latin1.csv: not a UTF-8 text file"):
        read_labels(bad)
