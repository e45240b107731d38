"""Lambda's START / END / REPORT lines and the records behind them."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Literal, TextIO

__all__ = ["STDERR", "Report", "Reporter", "ReportStatus", "StreamChoice"]

ReportStatus = Literal["success", "error", "timeout", "crash"]


@dataclass(frozen=True)
class Report:
    """What Lambda's REPORT line says about one finished invocation.

    ``status`` is ``"error"`` when the function or its init reported an
    error, ``"crash"`` when the runtime died without answering or after
    answering, ``"timeout"`` when the deadline passed. ``error_type`` names
    the platform-level failure Lambda prints on the REPORT line
    (``Runtime.ExitError``, or an init error's type); it is ``None`` for a
    plain function error, which Lambda does not flag there.
    ``restore_duration_ms`` replaces the init duration for the first
    invocation of a SnapStart sandbox restored from its snapshot.
    """

    request_id: str
    duration_ms: float
    billed_duration_ms: int
    memory_size_mb: int
    max_memory_used_mb: int
    init_duration_ms: float | None
    status: ReportStatus
    error_type: str | None = None
    restore_duration_ms: float | None = None
    billed_restore_duration_ms: int | None = None

    @classmethod
    def build(
        cls,
        request_id: str,
        *,
        duration_ms: float,
        memory_size_mb: int,
        max_memory_used_mb: int,
        init_duration_ms: float | None,
        status: ReportStatus,
        error_type: str | None = None,
        restore_duration_ms: float | None = None,
    ) -> Report:
        # The billed figure is derived from the rounded duration the line
        # shows, so the two never disagree by a millisecond.
        duration_ms = round(duration_ms, 2)
        billed_restore = None
        if restore_duration_ms is not None:
            restore_duration_ms = round(restore_duration_ms, 2)
            billed_restore = math.ceil(restore_duration_ms)
        return cls(
            request_id=request_id,
            duration_ms=duration_ms,
            billed_duration_ms=math.ceil(duration_ms),
            memory_size_mb=memory_size_mb,
            max_memory_used_mb=max_memory_used_mb,
            init_duration_ms=(
                None if init_duration_ms is None else round(init_duration_ms, 2)
            ),
            status=status,
            error_type=error_type,
            restore_duration_ms=restore_duration_ms,
            billed_restore_duration_ms=billed_restore,
        )

    def line(self) -> str:
        """The REPORT line, tab-separated exactly as CloudWatch shows it."""
        fields = [
            f"REPORT RequestId: {self.request_id}",
            f"Duration: {self.duration_ms:.2f} ms",
            f"Billed Duration: {self.billed_duration_ms} ms",
            f"Memory Size: {self.memory_size_mb} MB",
            f"Max Memory Used: {self.max_memory_used_mb} MB",
        ]
        if self.init_duration_ms is not None:
            fields.append(f"Init Duration: {self.init_duration_ms:.2f} ms")
        if self.restore_duration_ms is not None:
            # NOTE(restore-billing): Lambda bills only the part of a restore
            # spent in the sandbox; all of the emulator's is, so both agree.
            fields.append(f"Restore Duration: {self.restore_duration_ms:.2f} ms")
            fields.append(
                f"Billed Restore Duration: {self.billed_restore_duration_ms} ms"
            )
        if self.status == "timeout":
            fields.append("Status: timeout")
        elif self.error_type is not None:
            fields.append("Status: error")
            fields.append(f"Error Type: {self.error_type}")
        return "\t".join(fields)


class _Stderr:
    """Marker for "whatever ``sys.stderr`` is when the line is written".

    Resolving late lets pytest's capture (which swaps ``sys.stderr``) see the
    lines, which a default bound at import time would bypass.
    """

    def __repr__(self) -> str:
        return "STDERR"


STDERR = _Stderr()
StreamChoice = TextIO | _Stderr | None


class Reporter:
    """Writes the lines and keeps the reports, in invocation order."""

    def __init__(self, stream: StreamChoice, version: str) -> None:
        self._stream = stream
        self._version = version
        self.reports: list[Report] = []

    def start(self, request_id: str) -> None:
        self._write(f"START RequestId: {request_id} Version: {self._version}")

    def end(self, report: Report) -> None:
        self.reports.append(report)
        self._write(f"END RequestId: {report.request_id}")
        self._write(report.line())

    def _write(self, line: str) -> None:
        stream = sys.stderr if isinstance(self._stream, _Stderr) else self._stream
        if stream is None:
            return
        stream.write(line + "\n")
        stream.flush()
