"""Results written down as ``eval`` and ``bench`` report them: markdown tables and CSV files."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table of the given header and rows of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report_paths(out_dir: str | Path, names: Sequence[str]) -> dict[str, Path]:
    """The files of a report, by name, in ``out_dir`` (made if missing)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {name: out_dir / name for name in names}


def write_csv(path: Path, records: Sequence[dict]) -> None:
    """One row per record; the columns are every key of any record, in the order first seen."""
    fields = list(dict.fromkeys(key for record in records for key in record))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)
