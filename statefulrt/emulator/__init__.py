"""A local emulator of the Lambda service for runtimes and their tests.

It serves the RIE-compatible invoke endpoint, the Runtime API and the
Extensions API on loopback, starts the runtime (and any external extensions)
at the first invoke, enforces the timeout, reports crashes and init errors as
Lambda does, freezes the sandbox between invocations if asked, ends it through
Lambda's shutdown phase (SIGTERM and a budget once an extension registered,
SIGKILL otherwise), and prints START/END/REPORT lines. It also streams
responses (``InvokeWithResponseStream``, ``Emulator.invoke_stream``) and plays
Managed Instances (``max_concurrency``) and SnapStart (``snap_start``)::

    async with Emulator([sys.executable, "-m", "awslambdaric", "app.handler"],
                        cwd=task_root, timeout=2) as emulator:
        result = await emulator.invoke({"hello": "world"})
"""

from __future__ import annotations

from ._emulator import Emulator, InvokeResult, InvokeStream
from ._report import Report
from ._shutdown import Shutdown

__all__ = ["Emulator", "InvokeResult", "InvokeStream", "Report", "Shutdown"]
