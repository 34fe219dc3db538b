"""Compare two workflow output folders (used by .ci/slurm-smoke): same files, same contents.

Masks, crops (.npy) and ID lists byte for byte; tables (.parquet) by content without the timing column
``seconds``; JSON without write times (``written``); in tables, JSON and link targets each folder's own
path is replaced by OUT. Logs and Snakemake's timestamps are skipped. Prints the number of files
compared; exits 1 naming the first differences.

    python .ci/compare_outputs.py REFERENCE OTHER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

SKIP_DIRS = {"logs", ".snakemake"}
SKIP_NAMES = {".snakemake_timestamp"}
VOLATILE = {"seconds", "written"}  # timings and write times


def files(root: Path) -> dict[str, Path]:
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if SKIP_DIRS & set(rel.parts) or p.name in SKIP_NAMES or (p.is_dir() and not p.is_symlink()):
            continue
        out[rel.as_posix()] = p
    return out


def normalised(value, root: str):
    if isinstance(value, str):
        return value.replace(root, "OUT")
    if isinstance(value, list):
        return [normalised(v, root) for v in value]
    if isinstance(value, dict):
        return {k: normalised(v, root) for k, v in value.items() if k not in VOLATILE}
    return value


def table(path: Path, root: str) -> pd.DataFrame:
    t = pd.read_parquet(path).drop(columns=sorted(VOLATILE), errors="ignore")
    for c in t.columns:
        if t[c].dtype == object or pd.api.types.is_string_dtype(t[c]):
            t[c] = t[c].map(lambda v: normalised(v, root))
    return t


def same(a: Path, b: Path, ra: str, rb: str) -> bool:
    if a.is_symlink() or b.is_symlink():
        return (
            a.is_symlink()
            and b.is_symlink()
            and normalised(str(a.readlink()), ra) == normalised(str(b.readlink()), rb)
        )
    if a.suffix == ".parquet":
        return table(a, ra).equals(table(b, rb))
    if a.suffix == ".json":
        return normalised(json.loads(a.read_text()), ra) == normalised(json.loads(b.read_text()), rb)
    return a.read_bytes() == b.read_bytes()


def main(ref: str, other: str) -> int:
    a, b = Path(ref).resolve(), Path(other).resolve()
    fa, fb = files(a), files(b)
    problems = [f"only in {a}: {k}" for k in sorted(fa.keys() - fb.keys())]
    problems += [f"only in {b}: {k}" for k in sorted(fb.keys() - fa.keys())]
    common = sorted(fa.keys() & fb.keys())
    problems += [f"differs: {k}" for k in common if not same(fa[k], fb[k], str(a), str(b))]
    if problems or not fa:
        print("\n".join(problems[:20]) or f"{a}: no files", file=sys.stderr)
        return 1
    print(len(fa))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
