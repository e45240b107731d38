"""What a benchmark hands back: figures, tables, checks against the design.

Every benchmark module returns one ``Section``.  Its tables are printed as they
are, its checks are gathered into the run's list of targets, its ``figures``
become ``results/<name>.json`` and its ``samples`` (the long lists) go to
``results/raw/``, which git ignores.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Cell = str | float | int | None


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median() of no values")
    return float(statistics.median(values))


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0.99 is p99)."""
    if not values:
        raise ValueError("percentile() of no values")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    ordered = sorted(values)
    return float(ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)])


@dataclass(frozen=True)
class Spread:
    """Median, p99 and count of one set of samples."""

    median: float
    p99: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(median(values), percentile(values, 0.99), len(values))

    def as_json(self) -> dict[str, float]:
        return {"median": self.median, "p99": self.p99, "count": self.count}


@dataclass(frozen=True)
class Check:
    """One figure held against the design's bar (``value <= limit``, or
    ``value >= limit`` when ``at_least``)."""

    name: str
    value: float
    limit: float
    unit: str = "x"
    detail: str = ""
    digits: int = 2
    shown: str = ""  # the value in words, when a number would mislead
    wanted: str = ""  # the target in words, likewise
    at_least: bool = False  # the bar is a floor, not a ceiling

    @property
    def met(self) -> bool:
        if self.at_least:
            return self.value >= self.limit
        return self.value <= self.limit

    def value_text(self) -> str:
        return self.shown or f"{self.value:,.{self.digits}f}{self.unit}"

    def limit_text(self) -> str:
        bound = ">=" if self.at_least else "<="
        return self.wanted or f"{bound} {self.limit:,g}{self.unit}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "bound": ">=" if self.at_least else "<=",
            "unit": self.unit,
            "met": self.met,
            "detail": self.detail,
            "shown": self.shown or None,
        }


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)

    def render(self) -> str:
        cells = [[_cell(value) for value in row] for row in self.rows]
        widths = [
            max([len(name)] + [len(row[index]) for row in cells])
            for index, name in enumerate(self.columns)
        ]
        lines = [self.title]
        lines.append(_line(self.columns, widths))
        lines.append("  " + "  ".join("-" * width for width in widths))
        lines.extend(_line(row, widths) for row in cells)
        return "\n".join(lines)


Plot = Callable[[Path], None]


@dataclass
class Section:
    """One benchmark's outcome."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plot: Plot | None = None
    failure: str = ""  # the run broke: no figures
    skipped: str = ""  # not run, and why


def _cell(value: Cell) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return value


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    # the first column is a name (left-aligned); the others are figures
    parts = [cells[0].ljust(widths[0])]
    parts.extend(
        cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
    )
    return "  " + "  ".join(parts)
