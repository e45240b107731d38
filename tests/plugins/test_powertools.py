"""AWS Lambda Powertools runs under statefulrt as under the official runtime.

The same plain handler, decorated with Powertools' Logger, Metrics and Tracer,
runs once under awslambdaric and once under statefulrt, each behind the same
emulator, with two invocations each. What Powertools prints to standard
output (its JSON log records and its EMF metric documents) must say the same
things under both: cold_start true then false, the request id of each
invocation, the ColdStart metric on the first invocation only, and the
handler's own metric on both.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from emf_spec import emf_problems

from statefulrt.emulator import Emulator

pytest.importorskip("aws_lambda_powertools", reason="pip install 'statefulrt[test]'")

APP = """
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="compat")
metrics = Metrics(namespace="Compat", service="compat")
tracer = Tracer()  # POWERTOOLS_TRACE_DISABLED=true: no X-Ray daemon here


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event, context):
    logger.info("handled", extra={"n": event["n"]})
    metrics.add_metric(name="Handled", unit=MetricUnit.Count, value=event["n"])
    return {"n": event["n"]}
"""

RUNTIMES = {
    "awslambdaric": [sys.executable, "-m", "awslambdaric", "app.handler"],
    "statefulrt": [sys.executable, "-m", "statefulrt", "app.handler"],
}


def summarize(stdout: str, request_ids: list[str]) -> dict[str, Any]:
    """What Powertools printed, with request ids named by invocation."""
    label = {rid: f"invocation-{n}" for n, rid in enumerate(request_ids, 1)}
    records: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue  # START/END lines, the runtimes' own text logs
        document = json.loads(line)
        if "_aws" in document:
            assert emf_problems(document) == []
            [directive] = document["_aws"]["CloudWatchMetrics"]
            metrics.append(
                {
                    "namespace": directive["Namespace"],
                    "dimensions": directive["Dimensions"],
                    "metrics": {
                        m["Name"]: (m["Unit"], document[m["Name"]])
                        for m in directive["Metrics"]
                    },
                    "values": {
                        k: v
                        for k, v in document.items()
                        if k not in ("_aws", *(m["Name"] for m in directive["Metrics"]))
                    },
                }
            )
        elif document.get("service") == "compat":
            records.append(
                {
                    "message": document["message"],
                    "level": document["level"],
                    "n": document.get("n"),
                    "cold_start": document.get("cold_start"),
                    "request": label.get(document.get("function_request_id"), "?"),
                    "function_name": document.get("function_name"),
                    "function_memory_size": document.get("function_memory_size"),
                    "function_arn": document.get("function_arn"),
                    "trace": str(document.get("xray_trace_id", "")).startswith("1-"),
                    "keys": sorted(document),
                }
            )
    return {"records": records, "metrics": metrics}


async def run(runtime: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> Any:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    capfd.readouterr()  # start from nothing
    emu = Emulator(
        RUNTIMES[runtime],
        cwd=tmp_path,
        env={"POWERTOOLS_TRACE_DISABLED": "true"},
        function_name="compat-fn",
        memory_mb=256,
        timeout=10.0,
        report_stream=None,
    )
    async with emu:
        results = [await emu.invoke({"n": n}) for n in (1, 2)]
        await emu.wait_idle()
    assert [r.json() for r in results] == [{"n": 1}, {"n": 2}]
    return summarize(capfd.readouterr().out, [r.request_id for r in results])


ARN = "arn:aws:lambda:us-east-1:012345678912:function:compat-fn"


def expected_record(n: int) -> dict[str, Any]:
    return {
        "message": "handled",
        "level": "INFO",
        "n": n,
        "cold_start": n == 1,
        "request": f"invocation-{n}",
        "function_name": "compat-fn",
        "function_memory_size": "256",
        "function_arn": ARN,
        "trace": True,
        "keys": [
            "cold_start",
            "function_arn",
            "function_memory_size",
            "function_name",
            "function_request_id",
            "level",
            "location",
            "message",
            "n",
            "service",
            "timestamp",
            "xray_trace_id",
        ],
    }


def handled(n: int) -> dict[str, Any]:
    return {
        "namespace": "Compat",
        "dimensions": [["service"]],
        "metrics": {"Handled": ("Count", [float(n)])},
        "values": {"service": "compat"},
    }


COLD_START = {
    "namespace": "Compat",
    "dimensions": [["function_name", "service"]],
    "metrics": {"ColdStart": ("Count", [1.0])},
    "values": {"function_name": "compat-fn", "service": "compat"},
}


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
async def test_powertools_logger_and_metrics_under(
    runtime: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    got = await run(runtime, tmp_path, capfd)

    assert got["records"] == [expected_record(1), expected_record(2)]
    assert got["metrics"] == [COLD_START, handled(1), handled(2)]


async def test_powertools_same_output_under_both_runtimes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    official = await run("awslambdaric", tmp_path / "ric", capfd)
    ours = await run("statefulrt", tmp_path / "ours", capfd)
    assert ours == official
