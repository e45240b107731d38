"""The printed table, the JSON figures and the plots of a run."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .figures import Section, Table
from .machine import one_line


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported only when drawing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render(sections: list[Section], machine: dict[str, Any], quick: bool) -> str:
    """The whole run as text: each section's tables, then every target."""
    blocks = [f"machine: {one_line(machine)}" + ("  [--quick]" if quick else "")]
    for section in sections:
        if section.skipped:
            blocks.append(f"{section.name}: skipped, {section.skipped}")
            continue
        if section.failure:
            blocks.append(f"{section.name}: FAILED\n{section.failure}")
            continue
        blocks.extend(table.render() for table in section.tables)
        blocks.extend(f"  note: {note}" for note in section.notes)

    checks = [check for section in sections for check in section.checks]
    if checks:
        targets = Table(
            "targets (DESIGN.md, Performance bar)",
            ["figure", "value", "target", "result", "spread"],
        )
        for check in checks:
            targets.rows.append(
                [
                    check.name,
                    check.value_text(),
                    check.limit_text(),
                    "met" if check.met else "MISSED",
                    check.detail,
                ]
            )
        blocks.append(targets.render())
    return "\n\n".join(blocks)


def write(
    sections: list[Section],
    machine: dict[str, Any],
    out: Path,
    *,
    quick: bool,
    table: str,
) -> list[Path]:
    """Write ``<name>.json``, ``<name>.png`` and ``raw/<name>-samples.json``."""
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    written: list[Path] = []

    for section in sections:
        if section.skipped:
            continue
        document = {
            "benchmark": section.name,
            "title": section.title,
            "when": when,
            "quick": quick,
            "machine": machine,
            "failure": section.failure or None,
            "figures": section.figures,
            "checks": [check.as_json() for check in section.checks],
            "notes": section.notes,
        }
        written.append(_dump(out / f"{section.name}.json", document))
        if section.samples:
            written.append(_dump(raw / f"{section.name}-samples.json", section.samples))
        if section.plot is not None and not section.failure:
            path = out / f"{section.name}.png"
            section.plot(path)
            written.append(path)

    path = out / "table.txt"
    path.write_text(table + "\n")
    written.append(path)
    return written


def _dump(path: Path, document: Any) -> Path:
    # written whole, then renamed: an interrupted run leaves the old file
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(document, indent=1) + "\n")
    os.replace(partial, path)
    return path
