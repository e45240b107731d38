"""``S3Sink`` against moto's standalone server on loopback.

Every bucket here is versioned, so a second write of a key leaves a second
version behind: counting versions is how the tests see a duplicate write.
Faults come from a reverse proxy between the sink and moto that answers a
chosen request with a 500, either instead of forwarding it or after moto
stored the object ("succeeded but looked failed").
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from loopback_faults import FaultyHttpProxy

from statefulrt_sinks import (
    ConflictError,
    ExactlyOnceSink,
    LocalDirectorySink,
    ManifestError,
    MissingKeyError,
    sink_from_url,
)

pytest.importorskip("aiobotocore", reason="pip install 'statefulrt[s3]'")
from aiobotocore.config import AioConfig  # noqa: E402
from aiobotocore.session import get_session  # noqa: E402

from statefulrt._flush import RETRY_FIRST_DELAY  # noqa: E402
from statefulrt_sinks.s3 import S3Sink  # noqa: E402

# One attempt per call: the failure reaches the caller, as a flush sees it.
NO_RETRIES = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture
async def s3(moto_url: str, aws_env: dict[str, str]) -> AsyncIterator[Any]:
    """A raw client straight to moto, for setting up and looking."""
    async with get_session().create_client(
        "s3",
        endpoint_url=moto_url,
        config=AioConfig(s3={"addressing_style": "path"}),
    ) as client:
        yield client


@pytest.fixture
async def bucket(s3: Any) -> str:
    name = f"statefulrt-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(Bucket=name)
    await s3.put_bucket_versioning(
        Bucket=name, VersioningConfiguration={"Status": "Enabled"}
    )
    return name


@pytest.fixture
async def proxy(moto_url: str) -> AsyncIterator[FaultyHttpProxy]:
    faulty = FaultyHttpProxy(moto_url)
    await faulty.start()
    try:
        yield faulty
    finally:
        await faulty.close()


async def versions(s3: Any, bucket: str) -> dict[str, int]:
    """How many versions each key has."""
    listing = await s3.list_object_versions(Bucket=bucket)
    counts: dict[str, int] = {}
    for version in listing.get("Versions", []):
        counts[version["Key"]] = counts.get(version["Key"], 0) + 1
    return counts


def put_requests(proxy: FaultyHttpProxy) -> list[str]:
    return [outcome for method, _, outcome in proxy.log if method == "PUT"]


async def test_s3_sink_put_get_exists_under_prefix(
    moto_url: str, s3: Any, bucket: str
) -> None:
    sink = S3Sink(bucket, "/video/day-1/", endpoint_url=moto_url)
    await sink.open()
    try:
        await sink.put("playlist.m3u8", b"#EXTM3U\n", content_type="audio/mpegurl")
        await sink.put("playlist.m3u8", b"#EXTM3U\n#2\n")
        got = await sink.get("playlist.m3u8")
        there = await sink.exists("playlist.m3u8")
        absent = await sink.exists("nothing")
        with pytest.raises(MissingKeyError, match="'nothing'"):
            await sink.get("nothing")
        with pytest.raises(ValueError, match="empty, '.' or '..' segment"):
            await sink.put("../escape", b"x")
        head = await s3.head_object(Bucket=bucket, Key="video/day-1/playlist.m3u8")
    finally:
        await sink.close()

    assert (got, there, absent) == (b"#EXTM3U\n#2\n", True, False)
    assert await versions(s3, bucket) == {"video/day-1/playlist.m3u8": 2}
    assert head["ContentType"] == "binary/octet-stream"  # the second put had none
    assert repr(sink) == f"S3Sink('s3://{bucket}/video/day-1/')"


async def test_s3_sink_put_once_then_same_bytes_is_verified_not_rewritten(
    proxy: FaultyHttpProxy, s3: Any, bucket: str
) -> None:
    sink = S3Sink(bucket, "out", endpoint_url=proxy.url)
    async with _opened(sink):
        first = await sink.put_once("segments/0000000001.bin", b"segment one")
        again = await sink.put_once("segments/0000000001.bin", b"segment one")

    assert (first, again) == (True, False)
    assert put_requests(proxy) == ["200", "412"]
    assert await versions(s3, bucket) == {"out/segments/0000000001.bin": 1}


async def test_s3_sink_put_once_refuses_to_replace_other_bytes(
    moto_url: str, s3: Any, bucket: str
) -> None:
    sink = S3Sink(bucket, endpoint_url=moto_url)
    async with _opened(sink):
        await sink.put_once("seg", b"the first process wrote this")
        with pytest.raises(ConflictError, match="already holds a different object"):
            await sink.put_once("seg", b"a restarted process wrote that")
        # same length, other bytes: the ETag alone decides it
        with pytest.raises(ConflictError, match="is another writer using"):
            await sink.put_once("seg", b"the first process wrote THIS")
        kept = await sink.get("seg")

    assert kept == b"the first process wrote this"
    assert await versions(s3, bucket) == {"seg": 1}


async def test_s3_sink_put_once_500_after_landing_botocore_retry_verifies(
    proxy: FaultyHttpProxy, s3: Any, bucket: str
) -> None:
    # botocore retries a 500 by itself; its retry meets the object the first
    # attempt stored, gets 412, and the sink checks the bytes.
    sink = S3Sink(bucket, endpoint_url=proxy.url)
    async with _opened(sink):
        proxy.plan = _first_put_only("after")
        stored = await sink.put_once("seg", b"x" * 1000)

    assert stored is False  # it was there when this call looked
    assert put_requests(proxy) == ["200 then 500", "412"]
    assert await versions(s3, bucket) == {"seg": 1}


async def test_s3_sink_put_once_retry_after_failed_call_verifies(
    proxy: FaultyHttpProxy, s3: Any, bucket: str
) -> None:
    # The 500 reaches the caller (a flush fails); its retry must not write twice.
    sink = S3Sink(bucket, endpoint_url=proxy.url, config=NO_RETRIES)
    async with _opened(sink):
        proxy.plan = _first_put_only("after")
        with pytest.raises(Exception, match="InternalError"):
            await sink.put_once("seg", b"payload")
        retried = await sink.put_once("seg", b"payload")

    assert retried is False
    assert put_requests(proxy) == ["200 then 500", "412"]
    assert await versions(s3, bucket) == {"seg": 1}


async def test_s3_sink_put_once_500_before_landing_then_retry_writes(
    proxy: FaultyHttpProxy, s3: Any, bucket: str
) -> None:
    sink = S3Sink(bucket, endpoint_url=proxy.url, config=NO_RETRIES)
    async with _opened(sink):
        proxy.plan = _first_put_only("before")
        with pytest.raises(Exception, match="InternalError"):
            await sink.put_once("seg", b"payload")
        retried = await sink.put_once("seg", b"payload")

    assert retried is True
    assert put_requests(proxy) == ["500 before", "200"]
    assert await versions(s3, bucket) == {"seg": 1}


async def test_s3_sink_manifest_only_after_its_segments(
    moto_url: str, s3: Any, bucket: str
) -> None:
    sink = S3Sink(bucket, "v", endpoint_url=moto_url)
    async with _opened(sink):
        await sink.put_once("seg-1", b"1")
        with pytest.raises(ManifestError, match=r"names 'seg-2', which do not") as err:
            await sink.put_manifest("manifest", b"seg-1\nseg-2\n", requires=["seg-2"])
        written_early = await sink.exists("manifest")
        await sink.put_once("seg-2", b"2")
        await sink.put_manifest("manifest", b"seg-1\nseg-2\n", requires=["seg-2"])
        manifest = await sink.get("manifest")

    assert err.value.missing == ["seg-2"]
    assert written_early is False
    assert manifest == b"seg-1\nseg-2\n"


async def test_s3_sink_check_first_for_stores_that_ignore_the_condition(
    proxy: FaultyHttpProxy, s3: Any, bucket: str
) -> None:
    # Stand in for a store that ignores If-None-Match: the proxy drops it.
    proxy.drop_headers = {"if-none-match"}
    plain = S3Sink(bucket, endpoint_url=proxy.url)
    careful = S3Sink(bucket, endpoint_url=proxy.url, check_first=True)
    async with _opened(plain), _opened(careful):
        await plain.put_once("a", b"first")
        overwritten = await plain.put_once("a", b"second")  # undetected
        await careful.put_once("b", b"first")
        with pytest.raises(ConflictError):
            await careful.put_once("b", b"second")

    assert overwritten is True
    assert await versions(s3, bucket) == {"a": 2, "b": 1}


async def test_s3_sink_validate_and_reopen(
    moto_url: str, bucket: str, aws_env: dict[str, str]
) -> None:
    sink = S3Sink(bucket, endpoint_url=moto_url)
    await sink.open()
    healthy = await sink.validate()
    await sink.close()
    # closed sinks open again on use
    await sink.put("k", b"v")
    value = await sink.get("k")
    await sink.close()

    down = S3Sink(bucket, endpoint_url="http://127.0.0.1:9", config=NO_RETRIES)
    async with _opened(down):
        unreachable = await down.validate()

    assert (healthy, value, unreachable) == (True, b"v", False)


def test_sink_from_url_picks_the_sink(tmp_path: Path) -> None:
    local = sink_from_url(str(tmp_path / "out"))
    from_path = sink_from_url(tmp_path / "out")
    from_file_url = sink_from_url(f"file://{tmp_path}/out")
    s3_sink = sink_from_url("s3://media/timelapse/cam-1", endpoint_url="http://x:1")
    bare = sink_from_url("s3://media")

    assert isinstance(local, LocalDirectorySink)
    assert local.root == (tmp_path / "out").resolve()
    assert isinstance(from_path, LocalDirectorySink)
    assert from_path.root == local.root
    assert isinstance(from_file_url, LocalDirectorySink)
    assert from_file_url.root == local.root
    assert isinstance(s3_sink, S3Sink)
    assert (s3_sink.bucket, s3_sink.prefix, s3_sink.endpoint_url) == (
        "media",
        "timelapse/cam-1/",
        "http://x:1",
    )
    assert isinstance(bare, S3Sink)
    assert (bare.bucket, bare.prefix, bare.endpoint_url) == ("media", "", None)
    for sink in (local, s3_sink):
        assert isinstance(sink, ExactlyOnceSink)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "must be a folder path or s3://bucket/prefix"),
        ("s3:///prefix", "names no bucket: use s3://bucket/prefix$"),
        (str(Path("s3://media/x")), r"pathlib.Path turns 's3://' into 's3:/'"),
        ("gs://bucket/x", "has scheme 'gs'"),
        ("file://host/x", "names a remote host"),
    ],
)
def test_sink_from_url_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sink_from_url(url)


async def test_local_sink_put_once_and_manifest(tmp_path: Path) -> None:
    sink = LocalDirectorySink(tmp_path)
    first = await sink.put_once("s/1", b"one")
    again = await sink.put_once("s/1", b"one")
    with pytest.raises(ConflictError):
        await sink.put_once("s/1", b"two")
    with pytest.raises(ManifestError) as err:
        await sink.put_manifest("m", b"s/1 s/2", requires=["s/1", "s/2"])
    await sink.put_once("s/2", b"two")
    await sink.put_manifest("m", b"s/1 s/2", requires=["s/1", "s/2"])

    assert (first, again) == (True, False)
    assert err.value.missing == ["s/2"]
    assert (tmp_path / "s" / "1").read_bytes() == b"one"
    assert (tmp_path / "m").read_bytes() == b"s/1 s/2"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["1", "2"]


# -- under the runtime --------------------------------------------------------

APP = """
import json, os
from statefulrt import FlushPolicy, StatefulHandler
from statefulrt_sinks import sink_from_url

class Events(StatefulHandler):
    flush_policy = FlushPolicy(every=2)

    async def init(self):
        from aiobotocore.config import AioConfig
        sink = sink_from_url(
            os.environ["OUT"],
            endpoint_url=os.environ.get("S3_ENDPOINT"),
            config=AioConfig(retries={"total_max_attempts": 1}),
        )
        self.sink = await self.resources.open("sink", sink)
        self.segments = []

    async def handle(self, event, context):
        self.state.buffer("events").append(event["n"])
        return len(self.state.buffer("events"))

    async def flush(self, batch):
        key = f"segments/{batch.name}.json"
        body = json.dumps(batch.items("events")).encode()
        await self.sink.put_once(key, body)
        listed = [*self.segments, key]
        await self.sink.put_manifest(
            "manifest.json", json.dumps(listed).encode(), requires=[key]
        )
        self.segments = listed
"""


async def test_s3_sink_flush_retried_by_runtime_writes_each_segment_once(
    proxy: FaultyHttpProxy,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    aws_env: dict[str, str],
) -> None:
    from statefulrt.emulator import Emulator

    (tmp_path / "app.py").write_text(APP)
    # The segment of the second flush lands, but its PUT answers 500: the
    # flush fails, its items stay buffered, and the runtime retries it.
    second_segment = "/segments/0000000002-"  # the second flush, any writer
    proxy.plan = _first_matching(
        lambda r: r.method == "PUT" and second_segment in r.path
    )
    env = {**aws_env, "OUT": f"s3://{bucket}/run", "S3_ENDPOINT": proxy.url}
    emu = Emulator(
        [sys.executable, "-m", "statefulrt", "app.Events"],
        cwd=tmp_path,
        env=env,
        timeout=10.0,
        report_stream=None,
    )
    async with emu:
        answers = [(await emu.invoke({"n": n})).json() for n in range(1, 5)]
        await emu.wait_idle()
        # past the runtime's first retry delay, so the next boundary retries
        await asyncio.sleep(RETRY_FIRST_DELAY * 2)
        answers += [(await emu.invoke({"n": n})).json() for n in range(5, 7)]
        await emu.wait_idle()

    manifest = await s3.get_object(Bucket=bucket, Key="run/manifest.json")
    async with manifest["Body"] as body:
        listed = await body.read()
    # flush names are the epoch and this sandbox's writer id
    found = re.search(rb"0000000001-([0-9a-f]{8})", listed)
    assert found is not None
    writer = found.group(1).decode()
    listed = listed.replace(f"-{writer}".encode(), b"")
    segments = {}
    for name in ("0000000001", "0000000002", "0000000003"):
        key = f"run/segments/{name}-{writer}.json"
        obj = await s3.get_object(Bucket=bucket, Key=key)
        async with obj["Body"] as body:
            segments[name] = await body.read()

    # 1,2 flushed; 3,4 failed after landing; the retry after 5 carries 3,4
    # (the same batch, the same key); 5,6 are the third flush, and nothing
    # is left for a shutdown flush.
    assert answers == [1, 2, 1, 2, 3, 2]
    assert segments == {
        "0000000001": b"[1, 2]",
        "0000000002": b"[3, 4]",
        "0000000003": b"[5, 6]",
    }
    assert listed == (
        b'["segments/0000000001.json", "segments/0000000002.json", '
        b'"segments/0000000003.json"]'
    )
    stored = await versions(s3, bucket)
    assert {key.replace(f"-{writer}", ""): n for key, n in stored.items()} == {
        "run/segments/0000000001.json": 1,
        "run/segments/0000000002.json": 1,
        "run/segments/0000000003.json": 1,
        "run/manifest.json": 3,
    }


# -- helpers ------------------------------------------------------------------


def _first_put_only(fault: str) -> Any:
    return _first_matching(lambda request: request.method == "PUT", fault)


def _first_matching(match: Any, fault: str = "after") -> Any:
    fired = False

    def plan(n: int, request: Any) -> str | None:
        nonlocal fired
        if fired or not match(request):
            return None
        fired = True
        return fault

    return plan


class _opened:
    """``async with _opened(sink)``: open, then close whatever happens."""

    def __init__(self, sink: S3Sink) -> None:
        self.sink = sink

    async def __aenter__(self) -> S3Sink:
        await self.sink.open()
        return self.sink

    async def __aexit__(self, *exc: object) -> None:
        await self.sink.close()
