"""The timelapse end to end on one machine: photos, S3 events, the emulator.

``run_demo`` writes a sequence of camera-like photos into a folder that stands
for an S3 bucket, starts the built-in Lambda emulator with
``TimelapseHandler``, sends one ``ObjectCreated:Put`` notification per photo
over real HTTP, shuts the environment down as Lambda does (SIGTERM: the
runtime flushes the last, partial segment and ends the playlist), and then
decodes the HLS video the handler wrote to check it holds every frame.

Layout under ``out``::

    photos/<bucket>/<prefix>/frame-000001.jpg   the "bucket"
    video/playlist.m3u8, video/segments/*.ts   the timelapse
    journal/                                   the runtime's journal ("/tmp")

With ``output="s3://bucket/prefix"`` the handler writes the video to that
bucket instead (``endpoint`` names an S3-compatible server such as moto; the
bucket is created if missing), and ``video/`` holds the copy downloaded from
it that the demo verified.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from statefulrt_sinks import LocalDirectorySink, MissingKeyError, sink_from_url

from ._log import logger
from .events import s3_put_event
from .handler import PLAYLIST_KEY
from .photos import PhotoSequence, write_photos
from .playlist import HlsPlaylist
from .verify import inspect_video

__all__ = ["DemoError", "DemoResult", "run_demo"]

HANDLER: Final = "statefulrt_timelapse.handler.TimelapseHandler"
BUCKET: Final = "timelapse-photos"
PREFIX: Final = "camera-1"

# Written into ``out`` so a later run knows the folder is the demo's to clear.
_MARKER: Final = ".statefulrt-timelapse-demo"


class DemoError(Exception):
    """The demo could not run, or the function failed during it."""


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    """The figures the demo prints, as one JSON object.

    ``video`` is the local playlist that was decoded: the handler's own output
    folder, or, for an ``s3://`` output, the copy downloaded from the bucket.
    """

    frames_sent: int
    frames_in_video: int
    segments: int
    video: str
    cold_ms: float
    warm_p50_ms: float | None  # None with a single frame: nothing was warm

    def as_json(self) -> dict[str, object]:
        return asdict(self)


async def run_demo(
    *,
    frames: int = 120,
    out: str | os.PathLike[str] = "timelapse-out",
    segment_frames: int = 30,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    seed: int = 0,
    function_timeout: float = 10.0,
    output: str | None = None,
    endpoint: str | None = None,
) -> DemoResult:
    """Run the whole timelapse through the emulator and report what came out.

    ``output`` (``s3://bucket/prefix``) sends the video to a bucket rather
    than to ``out/video``; ``endpoint`` is the S3 server's URL when it is not
    AWS. Credentials come from the environment as usual (moto takes any).
    """
    if frames < 1:
        raise DemoError(f"frames must be at least 1, not {frames}")
    if segment_frames < 1:
        raise DemoError(f"segment_frames must be at least 1, not {segment_frames}")
    if output is not None:
        parts = urlsplit(output)
        if parts.scheme != "s3" or not parts.netloc:
            raise DemoError(
                f"output must look like s3://bucket/prefix, not {output!r}; "
                "a local video goes under out"
            )
    elif endpoint is not None:
        raise DemoError("endpoint applies to an s3:// output only; pass one too")
    out_dir = _prepare(Path(out))
    source = out_dir / "photos"
    video = out_dir / "video"
    # A journal of its own: one left in the shared temporary folder by another
    # run would be replayed into this video.
    journal = out_dir / "journal"
    journal.mkdir()

    # The photos, and the notification S3 would send for each, one second apart.
    sequence = PhotoSequence(width=width, height=height, seed=seed)
    keys = write_photos(source, frames, bucket=BUCKET, prefix=PREFIX, sequence=sequence)
    first_at = datetime(2024, 6, 21, 4, 30, tzinfo=UTC)
    events = [
        s3_put_event(
            BUCKET,
            key,
            (source / BUCKET / key).read_bytes(),
            event_time=first_at + timedelta(seconds=index),
            sequence=index + 1,
        )
        for index, key in enumerate(keys)
    ]
    logger.info("wrote %d photos under %s", frames, source / BUCKET)

    env = {
        "TIMELAPSE_SOURCE_ROOT": str(source),
        "TIMELAPSE_OUTPUT": str(video),
        "TIMELAPSE_SEGMENT_FRAMES": str(segment_frames),
        "TIMELAPSE_FPS": str(fps),
        "TIMELAPSE_SIZE": f"{width}x{height}",
        "STATEFULRT_JOURNAL_DIR": str(journal),
    }
    if output is not None:
        await _ensure_bucket(output, endpoint)
        env["TIMELAPSE_OUTPUT"] = output
        if endpoint is not None:
            env["TIMELAPSE_S3_ENDPOINT"] = endpoint

    latencies = await _invoke_all(
        events, env=env, cwd=out_dir, function_timeout=function_timeout
    )

    # Decode what the function wrote, segment by segment, as a player would.
    if output is not None:
        await _download(output, endpoint, video)
        logger.info("video in %s; downloaded to %s to check it", output, video)
    playlist = video / PLAYLIST_KEY
    if not playlist.exists():
        raise DemoError(
            f"the function wrote no playlist at {playlist}: every flush failed "
            "(see the runtime's log lines above)"
        )
    report = inspect_video(playlist)
    if not report.ended:
        logger.warning(
            "%s has no #EXT-X-ENDLIST: the shutdown flush did not finish", playlist
        )
    warm = latencies[1:]
    return DemoResult(
        frames_sent=frames,
        frames_in_video=report.frames,
        segments=report.segments,
        video=_shown(playlist),
        cold_ms=round(latencies[0], 2),
        warm_p50_ms=round(statistics.median(warm), 2) if warm else None,
    )


async def _invoke_all(
    events: Sequence[object], *, env: dict[str, str], cwd: Path, function_timeout: float
) -> list[float]:
    """Send each event through the emulator; return each round trip in ms."""
    # Imported here: the emulator pulls in aiohttp, which nothing else needs.
    from statefulrt.emulator import Emulator

    command = [sys.executable, "-m", "statefulrt", HANDLER]
    latencies: list[float] = []
    async with Emulator(
        command, timeout=function_timeout, memory_mb=1024, env=env, cwd=cwd
    ) as emulator:
        for index, event in enumerate(events, start=1):
            started = time.perf_counter()
            result = await emulator.invoke(event)
            latencies.append((time.perf_counter() - started) * 1000)
            if result.status != 200 or result.function_error is not None:
                text = result.payload[:500].decode("utf-8", "replace")
                raise DemoError(
                    f"invocation {index} failed ({result.status}, "
                    f"{result.function_error}): {text}"
                )

        # Then spin the environment down as Lambda does: SIGTERM, and the
        # runtime's shutdown flush writes the last, partial segment and
        # ends the playlist before the process exits.
        await emulator.wait_idle()
        await emulator.shutdown()
        ended = emulator.shutdowns[-1]
        if (ended.signal, ended.exit_code) != ("SIGTERM", 0):
            logger.warning(
                "the runtime did not end cleanly at shutdown (%s, exit code %s): "
                "frames still buffered may be missing from the video",
                ended.signal,
                ended.exit_code,
            )
        reports = emulator.reports
        if reports and reports[0].init_duration_ms is not None:
            logger.info(
                "init %.1f ms; first invoke %.1f ms; last %.1f ms (REPORT durations)",
                reports[0].init_duration_ms,
                reports[0].duration_ms,
                reports[-1].duration_ms,
            )
    return latencies


async def _ensure_bucket(url: str, endpoint: str | None) -> None:
    """Create the bucket ``url`` names unless it exists already."""
    try:
        from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
        from aiobotocore.session import get_session  # type: ignore[import-untyped]
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
        )
    except ImportError:
        raise DemoError(
            f"output {url} needs aiobotocore: pip install 'statefulrt[s3]'"
        ) from None

    bucket = urlsplit(url).netloc
    # An endpoint like http://127.0.0.1:5000 cannot put the bucket in its
    # host name: address it by path, as the sink does.
    config = None if endpoint is None else AioConfig(s3={"addressing_style": "path"})
    where = f"s3://{bucket}" + ("" if endpoint is None else f" at {endpoint}")
    try:
        async with get_session().create_client(
            "s3", endpoint_url=endpoint, config=config
        ) as s3:
            try:
                await s3.head_bucket(Bucket=bucket)
                return
            except ClientError as exc:
                if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            region = s3.meta.region_name
            located: dict[str, Any] = {}
            if region not in (None, "us-east-1", "aws-global"):
                located["CreateBucketConfiguration"] = {"LocationConstraint": region}
            await s3.create_bucket(Bucket=bucket, **located)
            logger.info("created bucket %s", where)
    except (BotoCoreError, ClientError) as exc:
        raise DemoError(f"cannot use bucket {where}: {exc}") from exc


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


async def _download(url: str, endpoint: str | None, video: Path) -> None:
    """Copy the playlist at ``url`` and every segment it lists into ``video``."""
    remote = sink_from_url(url, endpoint_url=endpoint)
    local = LocalDirectorySink(video, fsync=False)
    await remote.open()
    try:
        try:
            text = await remote.get(PLAYLIST_KEY)
        except MissingKeyError:
            raise DemoError(
                f"the function wrote no playlist under {url}: every flush "
                "failed (see the runtime's log lines above)"
            ) from None
        for entry in HlsPlaylist.parse(text.decode("utf-8")).entries:
            try:
                segment = await remote.get(entry.uri)
            except MissingKeyError:
                raise DemoError(
                    f"{url} lists {entry.uri}, which is not in the bucket"
                ) from None
            await local.put(entry.uri, segment)
        await local.put(PLAYLIST_KEY, text)
    finally:
        await remote.close()


def _prepare(out: Path) -> Path:
    """Create ``out``, or clear what a previous demo run left in it.

    A folder that is not empty and was not made by the demo is left alone:
    the demo deletes nothing it did not create.
    """
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        if not (out / _MARKER).exists():
            raise DemoError(
                f"{out} exists and was not made by this demo; "
                "pass an empty or new folder with --out"
            )
        for name in ("photos", "video", "journal"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("made by python -m statefulrt_timelapse\n")
    return out


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
