"""Label tables: a CSV or Parquet file (or, from Python, a pandas DataFrame) with one row per
image: a path column, a label column and optionally a split column (``train``, ``val`` or
``validation``, ``test``) that is then used instead of random splits.

- Only the two or three columns needed are read, a block of rows at a time (a CSV line by line,
  Parquet by record batches), so a table of a million rows holds a million short strings, not
  the table.
- **The path rule**: a relative path is read from the table's folder. With
  ``data.outside_paths=false`` (the default) a row whose path is absolute, or whose relative
  path leaves the table's folder through ``..`` or a symbolic link, is skipped and listed, so
  that a table from elsewhere reads nothing outside its own folder; with ``true``, both are
  allowed. A DataFrame comes from the caller's own code: its paths may be absolute, and
  relative ones are read from the current folder.
- Rows with an empty path or label, a missing file, or a file listed again are skipped and
  listed (the first row of a file wins); the images are then decoded, cached and split as for
  folders (:func:`cnnkit.data.decoded.labelled_source`).
- A label that appears once is warned about; an empty table, a missing column, an unknown split
  value, or a label column of numbers only (more often an id than a label; allowed with
  ``data.numeric_labels=true``) is refused in one line.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnnkit.config import DataConfig
from cnnkit.data.base import Source
from cnnkit.data.decoded import labelled_source
from cnnkit.data.folder import auto_size
from cnnkit.errors import DataError

log = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "filename", "file", "image", "image_path")
LABEL_COLUMNS = ("label", "labels", "class", "category")
SPLIT_COLUMN = "split"
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SUFFIXES = (".csv", ".parquet", ".pq")
_BATCH = 65_536  # Parquet rows read together
_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")

# (row number from 1, path, label, split or "")
Row = tuple[int, str, str, str]


def load(cfg: DataConfig, frame: Any = None) -> Source:
    """Read the table at ``cfg.path`` (or the DataFrame ``frame``) and its images."""
    if frame is not None:
        name, root = "the DataFrame", Path.cwd()
        columns = [str(c) for c in frame.columns]
    else:
        table = _table_file(cfg.path)
        name, root = str(table), table.parent
        columns = _columns(table)
    path_col = _column(cfg.path_column, PATH_COLUMNS, columns, name, "data.path_column", "paths")
    label_col = _column(
        cfg.label_column, LABEL_COLUMNS, columns, name, "data.label_column", "labels"
    )
    split_col = cfg.split_column or (SPLIT_COLUMN if SPLIT_COLUMN in columns else "none")
    if split_col != "none" and split_col not in columns:
        raise DataError(_missing(name, split_col, columns, "data.split_column", "parts"))
    wanted = [path_col, label_col] + ([split_col] if split_col != "none" else [])
    rows = _frame_rows(frame, wanted) if frame is not None else _rows(table, wanted)
    # A DataFrame's paths come from the caller's own code: any path it names is read.
    parts, skipped = _entries(rows, root, cfg.outside_paths or frame is not None, name)
    if not any(parts.values()):
        raise DataError(
            f"{name} lists no image that can be read ({len(skipped)} rows skipped"
            + (f", the first: {skipped[0][0]}: {skipped[0][1]}" if skipped else "")
            + "); give each row a path and a label"
        )
    labels = [label for entries in parts.values() for _, label in entries]
    _check_labels(labels, cfg.numeric_labels, name, label_col)
    if split_col != "none" and not parts.get("train"):
        raise DataError(
            f"{name}'s column {split_col!r} gives no row to train; mark the training rows "
            f"'train' (or set data.split_column=none to split at random)"
        )
    parts = {part: entries for part, entries in parts.items() if entries or part == "train"}
    size = cfg.image_size or auto_size([f for f, _ in parts["train"]])
    notes = {"table_rows": sum(len(e) for e in parts.values()) + len(skipped)}
    if split_col != "none":
        notes["split_column"] = split_col
    return labelled_source(parts, cfg, size, name, skipped, notes)


def as_csv(frame: Any, cfg: DataConfig) -> str:
    """``frame`` as CSV text with its paths made absolute (from the current folder), so that a
    run trained on a DataFrame can read the same images again from a copy of the table."""
    columns = [str(c) for c in frame.columns]
    path_col = _column(cfg.path_column, PATH_COLUMNS, columns, "the DataFrame", "data.path_column",
                       "paths")  # fmt: skip
    copy = frame.copy()
    copy[path_col] = [
        os.path.abspath(os.path.expanduser(v)) if isinstance(v, str) and v.strip() else v
        for v in copy[path_col]
    ]
    return str(copy.to_csv(index=False))


def _table_file(path: str | None) -> Path:
    if not path:
        raise DataError("data.name=table needs data.path=FILE, a .csv or .parquet table")
    table = Path(path).expanduser()
    if table.is_dir():
        raise DataError(
            f"data.path={path} is a folder; data.name=table reads a .csv or .parquet file "
            f"(data.name=folder reads a folder of class folders)"
        )
    if not table.is_file():
        raise DataError(f"data.path={path}: no such file")
    if table.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"data.path={path} is not a .csv or .parquet file; name the table FILE.csv or "
            f"FILE.parquet"
        )
    return table


def _parquet(table: Path) -> bool:
    return table.suffix.lower() != ".csv"


def _columns(table: Path) -> list[str]:
    if _parquet(table):
        pq = _pyarrow_parquet()
        try:
            return list(pq.ParquetFile(table).schema_arrow.names)
        except Exception as exc:  # pyarrow's errors for a damaged file are many
            raise DataError(f"{table} is not a readable Parquet file ({exc})") from None
    with _open_csv(table) as f:
        header = next(csv.reader(f, _dialect(f)), None)
    if not header or not any(h.strip() for h in header):
        raise DataError(f"{table} is empty; its first line should name the columns (path,label)")
    return [h.strip() for h in header]


def _pyarrow_parquet() -> Any:
    from cnnkit import env

    env.require("pyarrow", "a Parquet table", "table")
    import pyarrow.parquet as pq

    return pq


def _open_csv(table: Path) -> Any:
    return table.open(newline="", encoding="utf-8-sig", errors="replace")


def _dialect(f: Any) -> type[csv.Dialect] | csv.Dialect:
    """Comma-separated unless the first line is clearly separated by ``;`` or tabs."""
    first = f.readline()
    f.seek(0)
    for delimiter in (",", ";", "\t"):
        if delimiter in first:
            return _Delimited(delimiter)
    return csv.excel


class _Delimited(csv.excel):
    def __init__(self, delimiter: str) -> None:
        super().__init__()
        self.delimiter = delimiter


def _column(
    chosen: str, defaults: tuple[str, ...], columns: list[str], name: str, key: str, what: str
) -> str:
    if chosen:
        if chosen not in columns:
            raise DataError(_missing(name, chosen, columns, key, what))
        return chosen
    lowered = {c.lower(): c for c in columns}
    for candidate in defaults:
        if candidate in lowered:
            return lowered[candidate]
    return _raise(
        f"{name} has no column of {what} (looked for {', '.join(defaults)}; it has "
        f"{_listed(columns)}); name it with {key}=COLUMN"
    )


def _missing(name: str, column: str, columns: list[str], key: str, what: str) -> str:
    return (
        f"{name} has no column {column!r} (it has {_listed(columns)}); set {key} to the column "
        f"of {what}"
    )


def _listed(columns: list[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:8])
    return shown + (f" and {len(columns) - 8} more" if len(columns) > 8 else "")


def _raise(message: str) -> str:
    raise DataError(message)


def _rows(table: Path, wanted: list[str]) -> Iterator[Row]:
    if _parquet(table):
        pq = _pyarrow_parquet()
        number = 0
        for batch in pq.ParquetFile(table).iter_batches(batch_size=_BATCH, columns=wanted):
            columns = [batch.column(c).to_pylist() for c in wanted]
            for values in zip(*columns, strict=True):
                number += 1
                yield _row(number, values)
        return
    with _open_csv(table) as f:
        reader = csv.reader(f, _dialect(f))
        header = [h.strip() for h in next(reader)]
        positions = [header.index(c) for c in wanted]
        for number, cells in enumerate(reader, start=1):
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            yield _row(number, [cells[i] if i < len(cells) else "" for i in positions])


def _frame_rows(frame: Any, wanted: list[str]) -> Iterator[Row]:
    columns = [frame[c].tolist() for c in wanted]
    for number, values in enumerate(zip(*columns, strict=True), start=1):
        yield _row(number, values)


def _row(number: int, values: Any) -> Row:
    cells = ["" if v is None or v != v else str(v).strip() for v in values]  # v != v: NaN
    return number, cells[0], cells[1], cells[2] if len(cells) > 2 else ""


def _entries(
    rows: Iterator[Row], root: Path, outside: bool, name: str
) -> tuple[dict[str, list[tuple[Path, str]]], list[tuple[str, str]]]:
    """Each part's (file, label), and (row, reason) for the rows skipped."""
    real_root = Path(os.path.realpath(root))
    parts: dict[str, list[tuple[Path, str]]] = {"train": [], "val": [], "test": []}
    skipped: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, path, label, split in rows:
        where = f"{name} row {number}"
        if split:
            part = SPLIT_NAMES.get(split.lower())
            if part is None:
                raise DataError(
                    f"{where} has split {split!r}; use train, val (or validation) or test"
                )
        else:
            part = "train"
        if not path or not label:
            skipped.append((where, f"no {'path' if not path else 'label'}"))
            continue
        file = Path(path).expanduser()
        if file.is_absolute() and not outside:
            skipped.append((f"{where}: {path}", "absolute path; data.outside_paths=true allows it"))
            continue
        file = file if file.is_absolute() else root / file
        real = os.path.realpath(file)
        if not outside and not Path(real).is_relative_to(real_root):
            skipped.append(
                (
                    f"{where}: {path}",
                    "leaves the table's folder (.. or a link); data.outside_paths=true allows it",
                )
            )
            continue
        if not os.path.isfile(real):
            skipped.append((f"{where}: {path}", "no such file"))
            continue
        if real in seen:
            skipped.append((f"{where}: {path}", f"listed already, on row {seen[real]}"))
            continue
        seen[real] = number
        parts[part].append((file, label))
    return parts, skipped


def _check_labels(labels: list[str], numeric: bool, name: str, column: str) -> None:
    if not numeric and all(_NUMBER.fullmatch(label) for label in labels):
        sample = ", ".join(list(dict.fromkeys(labels))[:3])
        raise DataError(
            f"{name}'s label column {column!r} holds only numbers (such as {sample}); if they "
            f"are the classes set data.numeric_labels=true, else name the label column with "
            f"data.label_column=COLUMN"
        )
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    once = sorted(label for label, n in counts.items() if n == 1)
    if once:
        shown = ", ".join(once[:5]) + (f" and {len(once) - 5} more" if len(once) > 5 else "")
        log.warning(
            "%s: %d label%s appear%s on one image only (%s): a class needs several images to "
            "be learned and tested; check for typos",
            name, len(once), "s" if len(once) > 1 else "", "" if len(once) > 1 else "s", shown,
        )  # fmt: skip
