"""Reading task files: CSV, TSV, JSONL and JSON rows with their row numbers, every problem a DatasetError that
names the file, row and column. Pure: nothing is stored."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .errors import DatasetError


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DatasetError(f"{path}: no such file.")
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder; give a CSV, TSV, JSONL or JSON file.")
    raw = path.read_bytes()
    if not raw.strip():
        raise DatasetError(f"{path}: the file is empty.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}: line {line}: bytes that are not UTF-8 (position {exc.start}). "
            "Save the file as UTF-8 and import it again."
        ) from None


def _detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        fmt = fmt.lower()
    else:
        suffix = path.suffix.lower().lstrip(".")
        fmt = {"ndjson": "jsonl", "txt": "tsv"}.get(suffix, suffix)
    if fmt not in ("csv", "tsv", "jsonl", "json"):
        raise DatasetError(
            f"{path}: cannot tell the format from the name; give it: csv, tsv, jsonl or json (--format in the CLI, "
            "Format in the TUI's import dialog)."
        )
    return fmt


def read_rows(path: Path, fmt: str | None = None) -> tuple[list[str], list[tuple[int, dict]]]:
    """Read a file into (column names, [(row number, row dict)]). Row numbers are 1-based records."""
    path = Path(path)
    fmt = _detect_format(path, fmt)
    text = _read_text(path)
    rows: list[tuple[int, dict]] = []
    if fmt in ("csv", "tsv"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="," if fmt == "csv" else "\t")
        try:
            header = reader.fieldnames
        except csv.Error as exc:  # a header field over the csv module's size limit (128 KiB)
            raise DatasetError(f"{path}: the header row is not readable as {fmt.upper()} ({exc}).") from None
        columns = [c.strip() for c in (header or [])]
        if not columns or not any(columns):
            raise DatasetError(f"{path}: no header row; the first line must name the columns.")
        reader.fieldnames = columns
        try:
            for i, row in enumerate(reader, start=1):
                if None in row:  # more fields than header columns
                    raise DatasetError(
                        f"{path}: row {i}: {len(columns) + len(row[None])} fields but the header has "
                        f"{len(columns)} columns. Quote fields that contain the delimiter."
                    )
                rows.append((i, {k: (v if v is not None else "") for k, v in row.items()}))
        except csv.Error as exc:  # e.g. a field over the csv module's size limit (an unclosed quote)
            raise DatasetError(
                f"{path}: line {reader.line_num}: not readable as {fmt.upper()} ({exc}). Check for an unclosed quote."
            ) from None
    elif fmt == "jsonl":
        columns = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: line {i}: not valid JSON ({exc.msg}, column {exc.colno}).") from None
            except RecursionError:
                raise DatasetError(f"{path}: line {i}: JSON nested too deeply to be an example.") from None
            except ValueError as exc:  # e.g. an integer of more than 4300 digits
                raise DatasetError(f"{path}: line {i}: not readable as JSON ({exc}).") from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}: line {i}: expected a JSON object, found {type(obj).__name__}.")
            for key in obj:
                if key not in columns:
                    columns.append(key)
            rows.append((i, obj))
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}).") from None
        except RecursionError:
            raise DatasetError(f"{path}: JSON nested too deeply to be a list of examples.") from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise DatasetError(f"{path}: not readable as JSON ({exc}).") from None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if "examples" in data and isinstance(data["examples"], list):
                data = data["examples"]
            elif len(lists) == 1:
                data = lists[0]
            else:
                raise DatasetError(f"{path}: expected a list of objects (or an object with an 'examples' list).")
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a list of objects.")
        columns = []
        for i, obj in enumerate(data, start=1):
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}: item {i}: expected a JSON object, found {type(obj).__name__}.")
            for key in obj:
                if key not in columns:
                    columns.append(key)
            rows.append((i, obj))
    if not rows:
        raise DatasetError(f"{path}: the file has a header but no examples.")
    return columns, rows
