"""``statefulrt package``: a deployment zip for Lambda's OS-only runtime.

The zip holds an executable ``bootstrap``, the function's code, statefulrt and
every dependency built for Lambda's platform (manylinux wheels for the chosen
architecture and Python version).  ``provided.al2023`` brings no Python of its
own, so the bootstrap looks for the interpreter the zip was built for — a
layer under ``/opt``, a Lambda base image's ``/var/lang``, or ``PATH`` — and
says clearly which one it needs when none is there.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ARCHITECTURES = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
# what the runtime path imports; aiohttp is for the emulator and plugins only
RUNTIME_REQUIREMENTS = ["orjson>=3.9", "uvloop>=0.19"]
_SKIP = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
# Zip entries get a fixed date so the same input gives the same archive.
_EPOCH = (2020, 1, 1, 0, 0, 0)

BOOTSTRAP = """#!/bin/sh
# statefulrt bootstrap for the provided.al2023 runtime (built for Python {version})
set -e
here="$(cd "$(dirname "$0")" && pwd)"
python=""
for candidate in "$STATEFULRT_PYTHON" /opt/python/bin/python{version} \\
        /var/lang/bin/python{version} "$(command -v python{version} || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then python="$candidate"; break; fi
done
if [ -z "$python" ]; then
    echo "statefulrt: no Python {version} interpreter found: add a layer that" \\
        "provides /opt/python/bin/python{version}, or set STATEFULRT_PYTHON" >&2
    exit 127
fi
export PYTHONPATH="$here/vendor:$here${{PYTHONPATH:+:$PYTHONPATH}}"
export LAMBDA_TASK_ROOT="${{LAMBDA_TASK_ROOT:-$here}}"
cd "$here"
exec "$python" -m statefulrt "$@"
"""


def build(
    source: Path,
    output: Path,
    *,
    arch: str = "x86_64",
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}",
) -> list[str]:
    """Build the zip; returns its entry names."""
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"arch must be one of {', '.join(ARCHITECTURES)}, not {arch!r}"
        )
    major, _, minor = python.partition(".")
    if major != "3" or not minor.isdigit() or int(minor) < 11:
        raise ValueError(f"python must be '3.11' or newer, like '3.12', not {python!r}")
    if not source.is_dir():
        raise ValueError(f"source {str(source)!r} is not a directory")

    with tempfile.TemporaryDirectory(prefix="statefulrt-package-") as scratch:
        root = Path(scratch)
        # the function's code, at the top of the zip (never an earlier build
        # of this zip lying in the source folder)
        _copy_tree(source, root, leave_out=output.resolve())

        # statefulrt itself, from this installation (pure Python)
        vendor = root / "vendor"
        _copy_tree(Path(__file__).parent, vendor / "statefulrt")

        # dependencies, as wheels for Lambda's platform
        requirements = list(RUNTIME_REQUIREMENTS)
        user_requirements = source / "requirements.txt"
        command = [
            sys.executable, "-m", "pip", "install", "--quiet",
            "--target", str(vendor),
            "--platform", ARCHITECTURES[arch],
            "--implementation", "cp",
            "--python-version", python,
            "--only-binary=:all:",
            "--no-compile",
            *requirements,
        ]  # fmt: skip
        if user_requirements.is_file():
            command += ["--requirement", str(user_requirements)]
        subprocess.run(command, check=True)

        bootstrap = root / "bootstrap"
        bootstrap.write_text(BOOTSTRAP.format(version=python))
        bootstrap.chmod(0o755)
        return _zip(root, output)


def _copy_tree(source: Path, target: Path, leave_out: Path | None = None) -> None:
    def ignored(folder: str, names: list[str]) -> list[str]:
        return [
            name
            for name in names
            if name in _SKIP
            or name.startswith(".")  # .env, .git and friends stay home
            or (Path(folder) / name).resolve() == leave_out
            or _earlier_build(Path(folder) / name)
        ]

    shutil.copytree(source, target, dirs_exist_ok=True, ignore=ignored)


def _earlier_build(path: Path) -> bool:
    """Whether ``path`` is a zip this command built (it has our bootstrap)."""
    if path.suffix != ".zip" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return "bootstrap" in names and "vendor/statefulrt/__init__.py" in names


def _zip(root: Path, output: Path) -> list[str]:
    names: list[str] = []
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_dir():
                continue
            name = path.relative_to(root).as_posix()
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            mode = stat.S_IMODE(path.stat().st_mode)
            # Lambda runs the bootstrap as it is: keep the executable bits
            entry.external_attr = (stat.S_IFREG | (mode or 0o644)) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, path.read_bytes())
            names.append(name)
    return names


def extract(archive: Path, target: Path) -> None:
    """Unpack a zip keeping file modes (``zipfile`` alone drops them)."""
    with zipfile.ZipFile(archive) as source:
        for entry in source.infolist():
            path = source.extract(entry, target)
            mode = (entry.external_attr >> 16) & 0o777
            if mode:
                os.chmod(path, mode)
