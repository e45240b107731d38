"""A note of the machine a run happened on, stored next to its figures."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

PACKAGES = ("statefulrt", "awslambdaric", "uvloop", "orjson", "aiohttp")


def describe() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "memory_mib": _memory_mib(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "versions": {name: _version(name) for name in PACKAGES},
    }


def one_line(machine: dict[str, Any]) -> str:
    versions = ", ".join(
        f"{name} {version}" for name, version in machine["versions"].items()
    )
    return (
        f"{machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory_mib']:,} MiB, Linux {machine['kernel']}, "
        f"Python {machine['python']}; {versions}; "
        f"load {' '.join(str(load) for load in machine['load_average'])}"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_mib() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
