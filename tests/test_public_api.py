from __future__ import annotations

import subprocess
import sys

import statefulrt


def test_public_api_all_is_exact() -> None:
    assert sorted(statefulrt.__all__) == [
        "Buffer",
        "ConfigError",
        "Context",
        "Counter",
        "ErrorPayload",
        "Flush",
        "FlushError",
        "FlushPolicy",
        "HandlerError",
        "HandlerLoadError",
        "HttpStreamingResponse",
        "InvocationKind",
        "LifecycleMetrics",
        "Resource",
        "ResourceUnavailable",
        "Resources",
        "ResponseStream",
        "RuntimeApiError",
        "RuntimeApiUnavailable",
        "RuntimeConfig",
        "State",
        "StatefulHandler",
        "StatefulRuntimeError",
        "StreamingResponse",
        "__version__",
        "flush_hook",
    ]
    for name in statefulrt.__all__:
        assert hasattr(statefulrt, name), name


def test_public_api_import_stays_lean() -> None:
    code = (
        "import sys, statefulrt, statefulrt._bootstrap;"
        "heavy = [m for m in ('aiohttp', 'argparse', 'statefulrt.emulator',"
        " 'statefulrt_timelapse', 'av', 'numpy') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
