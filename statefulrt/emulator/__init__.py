"""A local emulator of the Lambda service for runtimes and their tests.

It serves the RIE-compatible invoke endpoint and the Runtime API on loopback,
starts the runtime process at the first invoke, enforces the timeout, reports
crashes and init errors as Lambda does, and prints START/END/REPORT lines::

    async with Emulator([sys.executable, "-m", "awslambdaric", "app.handler"],
                        cwd=task_root, timeout=2) as emulator:
        result = await emulator.invoke({"hello": "world"})
"""

from __future__ import annotations

from ._emulator import Emulator, InvokeResult
from ._report import Report
from ._shutdown import Shutdown

__all__ = ["Emulator", "InvokeResult", "Report", "Shutdown"]
