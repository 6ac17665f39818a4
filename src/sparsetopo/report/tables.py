"""Tables written twice: CSV (numbers as plain fractions, for further analysis) and Markdown (for reading)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsetopo.fileio import atomic_write_text
from sparsetopo.report.stats import Stat


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    def add(self, *values: Any) -> None:
        self.rows.append(list(values))

    def csv_text(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        stat_cols = {i for row in self.rows for i, v in enumerate(row) if isinstance(v, Stat)}
        header: list[str] = []
        for i, col in enumerate(self.columns):
            header += [f"{col} mean", f"{col} std", f"{col} n"] if i in stat_cols else [col]
        writer.writerow(header)
        for row in self.rows:
            out: list[Any] = []
            for i, value in enumerate(row):
                if isinstance(value, Stat):
                    out += [_plain(value.mean), _plain(value.std), value.n]
                elif i in stat_cols:
                    out += ["", "", 0]
                else:
                    out.append(_plain(value))
            writer.writerow(out)
        return buf.getvalue()

    def markdown(self) -> str:
        lines = [f"| {' | '.join(self.columns)} |", f"|{'|'.join('---' for _ in self.columns)}|"]
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
        text = "\n".join(lines)
        if self.note:
            text += f"\n\n{self.note}"
        return text

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, md_path = folder / f"{self.name}.csv", folder / f"{self.name}.md"
        atomic_write_text(csv_path, self.csv_text())
        atomic_write_text(md_path, f"# {self.title}\n\n{self.markdown()}\n")
        return csv_path, md_path


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value


def _cell(value: Any) -> str:
    if isinstance(value, Stat):
        return value.text()
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:g}"
    return str(value).replace("|", "\\|")
