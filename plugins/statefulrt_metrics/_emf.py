"""``EmfMetrics``: the runtime's lifecycle metrics as CloudWatch EMF lines."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TextIO, TypeVar

import orjson

__all__ = ["EmfMetrics", "METRICS"]

# statefulrt._metrics.InvocationKind, repeated: the core does not export it.
InvocationKind = Literal["cold", "warm", "thawed"]
Unit = Literal["Count", "Milliseconds", "Bytes"]
N = TypeVar("N", int, float)

#: every metric EmfMetrics may write, with its CloudWatch unit
METRICS: Final[Mapping[str, Unit]] = {
    "ColdStart": "Count",
    "WarmStart": "Count",
    "ThawedStart": "Count",
    "InitDuration": "Milliseconds",
    "FlushDuration": "Milliseconds",
    "FlushSize": "Bytes",
    "FlushItems": "Count",
    "FlushFailures": "Count",
    "PendingItems": "Count",
    "PendingBytes": "Bytes",
}

_STARTS: Final[Mapping[InvocationKind, str]] = {
    "cold": "ColdStart",
    "warm": "WarmStart",
    "thawed": "ThawedStart",
}
# The specification's limits: 30 dimensions in a set, 100 values per metric.
_MAX_DIMENSIONS: Final = 30
_MAX_VALUES: Final = 100


class EmfMetrics:
    """Write one CloudWatch Embedded Metric Format line per invocation.

    Set it in ``init`` (``self.metrics = EmfMetrics()``); the runtime reports
    to it, and at each invocation boundary it prints what happened since the
    last line: how the invocation started (ColdStart, WarmStart, ThawedStart,
    0 or 1 each, so that their averages are rates), the init duration once,
    each flush's duration, size and items, failed flushes, and what is still
    waiting for a flush. CloudWatch Logs turns the line into metrics; on
    Lambda, standard output is that log.

    ``dimensions`` default to ``{"FunctionName": AWS_LAMBDA_FUNCTION_NAME}``
    when that variable is set (read from ``environ``, ``os.environ`` by
    default), else none. ``stream`` defaults to ``sys.stdout`` as it is at
    each write.
    """

    _init_ms: float | None
    _flushes: list[tuple[float, int, int]]

    def __init__(
        self,
        namespace: str = "statefulrt",
        dimensions: Mapping[str, str] | None = None,
        stream: TextIO | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(namespace, str) or not 1 <= len(namespace) <= 255:
            raise ValueError(
                f"EMF namespace must be 1 to 255 characters, not {namespace!r}"
            )
        if dimensions is None:
            env = os.environ if environ is None else environ
            name = env.get("AWS_LAMBDA_FUNCTION_NAME")
            dimensions = {"FunctionName": name} if name else {}
        _check_dimensions(dimensions)
        self.namespace = namespace
        self.dimensions = dict(dimensions)
        self._stream = stream
        self._clock = clock
        self._reset()

    # -- what the runtime reports (LifecycleMetrics) ----------------------------

    def init_done(self, duration_ms: float) -> None:
        self._init_ms = duration_ms
        self._dirty = True

    def invocation(self, kind: InvocationKind) -> None:
        self._starts[_STARTS[kind]] += 1
        self._dirty = True

    def flush_done(self, duration_ms: float, items: int, nbytes: int) -> None:
        self._flushes.append((duration_ms, items, nbytes))
        self._dirty = True

    def flush_failed(self) -> None:
        self._failures += 1
        self._dirty = True

    def boundary(self, pending_items: int, pending_bytes: int) -> None:
        """Print the line for what happened since the last one, if anything."""
        if not self._dirty:
            return
        line = self.render(pending_items, pending_bytes)
        self._reset()
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(line + "\n")
        stream.flush()

    # -- the document -------------------------------------------------------------

    def render(self, pending_items: int, pending_bytes: int) -> str:
        """The EMF document for what accumulated so far, as one line of JSON."""
        values: dict[str, float | list[int] | list[float]] = {}
        if any(self._starts.values()):
            values.update(self._starts)
        if self._init_ms is not None:
            values["InitDuration"] = round(self._init_ms, 3)
        if self._flushes:
            # Several flushes between two lines are rare (a retry and the
            # flush it unblocked): a list keeps each as its own sample.
            recent = self._flushes[-_MAX_VALUES:]
            values["FlushDuration"] = _samples([round(f[0], 3) for f in recent])
            values["FlushItems"] = _samples([f[1] for f in recent])
            values["FlushSize"] = _samples([f[2] for f in recent])
        if self._flushes or self._failures:
            values["FlushFailures"] = self._failures
        values["PendingItems"] = pending_items
        values["PendingBytes"] = pending_bytes

        document: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(self._clock() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [list(self.dimensions)],
                        "Metrics": [
                            {"Name": name, "Unit": METRICS[name]} for name in values
                        ],
                    }
                ],
            },
            **self.dimensions,
            **values,
        }
        return orjson.dumps(document).decode()

    def _reset(self) -> None:
        self._dirty = False
        self._starts = dict.fromkeys(_STARTS.values(), 0)
        self._init_ms = None
        self._flushes = []
        self._failures = 0


def _samples(values: list[N]) -> N | list[N]:
    return values[0] if len(values) == 1 else values


def _check_dimensions(dimensions: Mapping[str, str]) -> None:
    if len(dimensions) > _MAX_DIMENSIONS:
        raise ValueError(
            f"EMF allows at most {_MAX_DIMENSIONS} dimensions, not {len(dimensions)}"
        )
    for name, value in dimensions.items():
        if name in METRICS or name == "_aws":
            raise ValueError(
                f"EMF dimension {name!r} would collide with a metric of the same "
                "name; rename the dimension"
            )
        if not isinstance(value, str) or not value:
            raise ValueError(
                f"EMF dimension {name!r} needs a non-empty string value, not {value!r}"
            )
