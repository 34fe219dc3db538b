"""The public API: every exported name resolves, and ``import hpacell`` stays cheap."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = [
    "hpacell",
    "hpacell.utils",
    "hpacell.segmentation",
    "hpacell.cellcrops",
    "hpacell.classifier",
    "hpacell.classifier.training",
    "hpacell.classifier.scoring",
    "hpacell.classifier.images",
    "hpacell.workflows",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name):
    package = importlib.import_module(name)
    assert package.__all__, name
    for attr in package.__all__:
        assert getattr(package, attr) is not None, f"{name}.{attr}"
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


def test_pipeline_calls_at_the_top():
    import hpacell

    for call in ("segment_folder", "build_cell_dataset", "train_cells", "run_predict", "evaluate_files"):
        assert callable(getattr(hpacell, call)), call
    assert hpacell.train_cells is importlib.import_module("hpacell.classifier.training.train").train_cells


def test_import_is_cheap():
    code = (
        "import sys, hpacell, hpacell.segmentation, hpacell.classifier; "
        "print(sorted(m for m in ('torch', 'pandas', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_wheel_installs_only_the_hpacell_namespace(tmp_path):
    """A real (non-editable) wheel: every file under hpacell/, the workflow's data files included."""
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            tmp_path,
            root,
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("hpacell-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"hpacell"}, tops
    for needed in (
        "hpacell/segmentation/io.py",
        "hpacell/classifier/scoring/evaluate.py",
        "hpacell/workflows/Snakefile",
        "hpacell/workflows/configs/train_cells.yaml",
        "hpacell/utils/files.py",
    ):
        assert needed in names, needed
