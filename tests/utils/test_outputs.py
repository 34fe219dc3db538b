import pytest

from hpacell.utils.errors import InputError
from hpacell.utils.outputs import MARKER, check_stamp, claim_folder, folder_owner, write_stamp


def test_claim_new_and_own_folder(tmp_path):
    out = claim_folder(tmp_path / "a" / "b", "segment")
    assert (out / MARKER).is_file() and folder_owner(out) == "segment"
    (out / "masks").mkdir()
    assert claim_folder(out, "segment") == out


def test_claim_refuses_foreign_folders(tmp_path):
    (tmp_path / "train.csv").write_text("ID,Label\n")
    with pytest.raises(InputError, match="no .hpacell.json marker"):
        claim_folder(tmp_path, "synth")
    sub = claim_folder(tmp_path / "run", "train-cells")
    (sub / "best.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="made by 'hpacell train-cells'"):
        claim_folder(sub, "demo")
    assert claim_folder(sub, "demo", accept=["train-cells"]) == sub
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        claim_folder(tmp_path / "file", "crop")


def test_claim_empty_folder_is_taken(tmp_path):
    (tmp_path / "e").mkdir()
    assert folder_owner(claim_folder(tmp_path / "e", "crop")) == "crop"


def test_stamp_roundtrip_and_difference(tmp_path):
    p = tmp_path / "stamp.json"
    assert check_stamp(p, {"a": 1}) is False
    write_stamp(p, {"a": 1, "b": (1, 2)})
    assert check_stamp(p, {"b": [1, 2], "a": 1}) is True
    with pytest.raises(InputError, match=r"a: 1 -> 2"):
        check_stamp(p, {"a": 2, "b": [1, 2]})
    assert check_stamp(p, {"a": 2}, overwrite=True) is False
