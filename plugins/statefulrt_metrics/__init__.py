"""Lifecycle metrics for statefulrt handlers, as CloudWatch embedded metrics.

``EmfMetrics`` receives what the runtime reports (invocations by kind, init
and flush durations, flush sizes and failures, data waiting for a flush) and
prints one Embedded Metric Format line per invocation, which CloudWatch Logs
turns into metrics without an API call::

    class Handler(StatefulHandler):
        async def init(self):
            self.metrics = EmfMetrics(namespace="my-app")
"""

from __future__ import annotations

from ._emf import METRICS, EmfMetrics

__all__ = ["METRICS", "EmfMetrics"]
