"""``EmfMetrics``: the documents it prints, checked against the EMF spec."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from emf_spec import emf_problems
from statefulrt_metrics import METRICS, EmfMetrics

from statefulrt._metrics import LifecycleMetrics
from statefulrt.emulator import Emulator

NOW = 1_767_000_000.25  # a fixed clock: 2025-12-29, in seconds


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def make(**kwargs: Any) -> tuple[EmfMetrics, io.StringIO]:
    out = io.StringIO()
    metrics = EmfMetrics(stream=out, clock=lambda: NOW, **kwargs)
    return metrics, out


def test_emf_cold_invocation_with_flush_is_one_valid_line() -> None:
    metrics, out = make(namespace="app", dimensions={"FunctionName": "fn"})
    exporter: LifecycleMetrics = metrics  # it is what the runtime calls
    exporter.init_done(41.5)
    exporter.invocation("cold")
    exporter.flush_done(12.25, 3, 300)
    exporter.boundary(0, 0)

    [document] = lines(out)
    assert emf_problems(document) == []
    assert document == {
        "_aws": {
            "Timestamp": 1_767_000_000_250,
            "CloudWatchMetrics": [
                {
                    "Namespace": "app",
                    "Dimensions": [["FunctionName"]],
                    "Metrics": [
                        {"Name": "ColdStart", "Unit": "Count"},
                        {"Name": "WarmStart", "Unit": "Count"},
                        {"Name": "ThawedStart", "Unit": "Count"},
                        {"Name": "InitDuration", "Unit": "Milliseconds"},
                        {"Name": "FlushDuration", "Unit": "Milliseconds"},
                        {"Name": "FlushItems", "Unit": "Count"},
                        {"Name": "FlushSize", "Unit": "Bytes"},
                        {"Name": "FlushFailures", "Unit": "Count"},
                        {"Name": "PendingItems", "Unit": "Count"},
                        {"Name": "PendingBytes", "Unit": "Bytes"},
                    ],
                }
            ],
        },
        "FunctionName": "fn",
        "ColdStart": 1,
        "WarmStart": 0,
        "ThawedStart": 0,
        "InitDuration": 41.5,
        "FlushDuration": 12.25,
        "FlushItems": 3,
        "FlushSize": 300,
        "FlushFailures": 0,
        "PendingItems": 0,
        "PendingBytes": 0,
    }


def test_emf_accumulates_between_lines_and_resets_after() -> None:
    metrics, out = make(dimensions={"FunctionName": "fn"})
    metrics.invocation("thawed")
    metrics.flush_failed()
    metrics.flush_done(5.0, 2, 20)
    metrics.flush_done(7.0, 1, 10)
    metrics.boundary(4, 400)
    metrics.invocation("warm")
    metrics.boundary(5, 500)

    first, second = lines(out)
    assert [emf_problems(d) for d in (first, second)] == [[], []]
    assert {k: v for k, v in first.items() if k != "_aws"} == {
        "FunctionName": "fn",
        "ColdStart": 0,
        "WarmStart": 0,
        "ThawedStart": 1,
        "FlushDuration": [5.0, 7.0],
        "FlushItems": [2, 1],
        "FlushSize": [20, 10],
        "FlushFailures": 1,
        "PendingItems": 4,
        "PendingBytes": 400,
    }
    assert {k: v for k, v in second.items() if k != "_aws"} == {
        "FunctionName": "fn",
        "ColdStart": 0,
        "WarmStart": 1,
        "ThawedStart": 0,
        "PendingItems": 5,
        "PendingBytes": 500,
    }
    names = [m["Name"] for m in second["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert names == [
        "ColdStart",
        "WarmStart",
        "ThawedStart",
        "PendingItems",
        "PendingBytes",
    ]


def test_emf_nothing_happened_prints_nothing() -> None:
    metrics, out = make()
    metrics.boundary(0, 0)
    metrics.invocation("warm")
    metrics.boundary(0, 0)
    metrics.boundary(0, 0)
    assert len(out.getvalue().splitlines()) == 1


def test_emf_dimensions_default_to_the_function_name() -> None:
    named, _ = make(environ={"AWS_LAMBDA_FUNCTION_NAME": "orders"})
    bare, out = make(environ={})
    bare.invocation("cold")
    bare.boundary(0, 0)

    assert named.dimensions == {"FunctionName": "orders"}
    [document] = lines(out)
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]
    assert emf_problems(document) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"namespace": ""}, "namespace must be 1 to 255"),
        ({"dimensions": {"ColdStart": "x"}}, "collide with a metric"),
        ({"dimensions": {"Stage": ""}}, "non-empty string value"),
        ({"dimensions": {f"d{n}": "v" for n in range(31)}}, "at most 30"),
    ],
)
def test_emf_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmfMetrics(**kwargs)


def test_emf_checker_catches_broken_documents() -> None:
    metrics, out = make(dimensions={"FunctionName": "fn"})
    metrics.invocation("cold")
    metrics.boundary(1, 2)
    [good] = lines(out)
    seconds = json.loads(json.dumps(good))
    seconds["_aws"]["Timestamp"] = 1_767_000_000
    dangling = json.loads(json.dumps(good))
    del dangling["FunctionName"]
    wrong_type = json.loads(json.dumps(good))
    wrong_type["ColdStart"] = "1"

    assert emf_problems(seconds) == ["Timestamp is not epoch milliseconds: 1767000000"]
    assert emf_problems(dangling) == [
        "dimension 'FunctionName' has no string value in the root"
    ]
    assert emf_problems(wrong_type) == [
        "metric ColdStart has no numeric value in the root: '1'"
    ]
    assert set(METRICS) == {
        m["Name"] for m in good["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    } | {"InitDuration", "FlushDuration", "FlushItems", "FlushSize", "FlushFailures"}


APP = """
from statefulrt import FlushPolicy, StatefulHandler
from statefulrt_metrics import EmfMetrics

class Counted(StatefulHandler):
    flush_policy = FlushPolicy(every=2)

    async def init(self):
        self.metrics = EmfMetrics(namespace="it")

    async def handle(self, event, context):
        self.state.buffer("events").append(event, size=10)
        return "ok"

    async def flush(self, batch):
        pass
"""


async def test_emf_under_the_runtime_one_line_per_invocation(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    emu = Emulator(
        [sys.executable, "-m", "statefulrt", "app.Counted"],
        cwd=tmp_path,
        function_name="emf-fn",
        timeout=5.0,
        report_stream=None,
    )
    async with emu:
        for n in range(3):
            await emu.invoke({"n": n})
        await emu.wait_idle()

    documents = [
        json.loads(line)
        for line in capfd.readouterr().out.splitlines()
        if line.startswith('{"_aws"')
    ]
    assert [emf_problems(d) for d in documents] == [[], [], []]
    picked = [
        {k: d.get(k) for k in ("ColdStart", "WarmStart", "FlushItems", "PendingItems")}
        for d in documents
    ]
    assert picked == [
        {"ColdStart": 1, "WarmStart": 0, "FlushItems": None, "PendingItems": 1},
        {"ColdStart": 0, "WarmStart": 1, "FlushItems": 2, "PendingItems": 0},
        {"ColdStart": 0, "WarmStart": 1, "FlushItems": None, "PendingItems": 1},
    ]
    assert documents[0]["InitDuration"] > 0
    assert all(d["FunctionName"] == "emf-fn" for d in documents)
    assert documents[1]["FlushSize"] == 20
