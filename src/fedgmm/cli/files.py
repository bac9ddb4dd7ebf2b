"""CSV helpers shared by the commands (``fit``, ``score``, ``audit``)."""

from __future__ import annotations

import csv
from pathlib import Path


def label_index(label_column: str | None) -> int | str | None:
    """``--label-column`` as a column index (a signed integer) or a header name."""
    if label_column is not None and label_column.lstrip("-").isdigit():
        return int(label_column)
    return label_column


def csv_header(path: Path, label_column: str | None) -> list[str] | None:
    """The feature names of a CSV file's header (the label column left out); None without a header."""
    if path.suffix.lower() != ".csv":
        return None
    with path.open(newline="", encoding="utf-8-sig") as stream:
        for row in csv.reader(stream):
            fields = [f.strip() for f in row]
            if not any(fields):
                continue
            if any(_is_number(f) for f in fields):
                return None
            label = label_index(label_column)
            if isinstance(label, int):
                del fields[label]
            elif label is not None and label in fields:
                fields.remove(label)
            return fields
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
