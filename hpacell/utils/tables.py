"""The small tables every stage reads or writes the same way: ID lists, failures, Parquet.

* :func:`read_id_list` / :func:`read_id_table`: the one reader of ID lists (``segment --ids``,
  ``predict --ids``, ``predict-images --ids``, Snakemake shards): a text file with one ID a line,
  or a CSV with an ``ID``/``Id`` column (a label table or a sample submission works).
* :func:`write_failures`: ``failures.csv`` (``ID,error``, UTF-8, CSV quoting, sorted by ID).
* :func:`write_parquet`: a table written atomically; a ``labels`` column is list<int64>.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hpacell.utils.errors import InputError
from hpacell.utils.files import atomic_file, atomic_write_bytes

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ID_COLUMNS", "read_id_list", "read_id_table", "write_failures", "write_parquet"]

ID_COLUMNS = ("ID", "Id", "id")
"""Column names an ID list may use in a CSV (the first one present is the ID)."""


def read_id_table(path: str | os.PathLike, *, repeats: Literal["drop", "error"] = "drop") -> pd.DataFrame:
    """An ID list as a table: column ``ID`` first (text), then the CSV's other columns (text).

    A file whose name ends in ``.csv``, or whose first non-blank line holds a comma, is a CSV
    with an ``ID``, ``Id`` or ``id`` column; anything else is one ID a line (blank lines and
    ``#`` comments ignored). IDs are stripped; blank ones dropped; the file order is kept.

    Parameters
    ----------
    repeats : {"drop", "error"}
        A repeated ID is dropped (its first row kept) or an :class:`InputError`.

    Raises
    ------
    FileNotFoundError, InputError
        Naming the file: missing, no ID column, or (``repeats="error"``) a repeated ID.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "ids.txt"
    >>> _ = p.write_text("# shard 0\\nb\\na\\n\\nb\\n")
    >>> read_id_table(p)["ID"].tolist()
    ['b', 'a']
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ID list not found")
    text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first ID
    first = next((line for line in text.splitlines() if line.strip()), "")
    if path.suffix.lower() == ".csv" or "," in first:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        col = next((c for c in ID_COLUMNS if c in table.columns), None)
        if col is None:
            raise InputError(f"{path}: CSV has no ID/Id column (columns: {list(table.columns)})")
        table = table.rename(columns={col: "ID"})
        table = table[["ID", *[c for c in table.columns if c != "ID"]]]
        table["ID"] = table["ID"].str.strip()
    else:
        ids = [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]
        table = pd.DataFrame({"ID": pd.Series(ids, dtype=object)})
    table = table[table["ID"] != ""]
    dup = table["ID"].duplicated()
    if dup.any() and repeats == "error":
        raise InputError(f"{path}: repeated ID {table['ID'][dup].iloc[0]!r}")
    return table[~dup].reset_index(drop=True)


def read_id_list(path: str | os.PathLike, *, repeats: Literal["drop", "error"] = "drop") -> list[str]:
    """The IDs of an ID list, in file order (see :func:`read_id_table` for the formats).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "sample_submission.csv"
    >>> _ = p.write_text("ID,ImageWidth,ImageHeight,PredictionString\\nx1,2048,2048,\\nx0,1728,1728,\\n")
    >>> read_id_list(p)
    ['x1', 'x0']
    """
    return read_id_table(path, repeats=repeats)["ID"].tolist()


def write_failures(path: str | os.PathLike, failures: Mapping[str, str]) -> Path:
    """Write ``failures.csv``: ``ID,error`` rows sorted by ID, CSV-quoted, UTF-8, atomically.

    Examples
    --------
    >>> import tempfile
    >>> p = write_failures(Path(tempfile.mkdtemp()) / "failures.csv", {"b": 'OSError: "x", y', "a": "e"})
    >>> print(p.read_text(), end="")
    ID,error
    a,e
    b,"OSError: ""x"", y"
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["ID", "error"])
    w.writerows(sorted((str(k), str(v)) for k, v in failures.items()))
    return atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` (without its index) to ``path`` atomically.

    A ``labels`` column (lists of class ids) is stored as list<int64> even when every list is
    empty, so readers always see the same type.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if "labels" in df.columns:
        labels = pa.array(list(df["labels"]), type=pa.list_(pa.int64()))
        table = table.set_column(table.schema.get_field_index("labels"), "labels", labels)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)
