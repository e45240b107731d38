"""The timelapse end to end on one machine: photos, S3 events, the emulator.

``run_demo`` writes a sequence of camera-like photos into a folder that stands
for an S3 bucket, starts the built-in Lambda emulator with
``TimelapseHandler``, sends one ``ObjectCreated:Put`` notification per photo
over real HTTP, and then decodes the HLS video the handler wrote to check it
holds every frame.

Layout under ``out``::

    photos/<bucket>/<prefix>/frame-000001.jpg   the "bucket"
    video/playlist.m3u8, video/segments/*.ts   the timelapse
    journal/                                   the runtime's journal ("/tmp")
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
from typing import Final

from ._log import logger
from .events import s3_put_event
from .handler import PLAYLIST_KEY
from .photos import PhotoSequence, write_photos
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
    """The figures the demo prints, as one JSON object."""

    frames_sent: int
    frames_in_video: int
    segments: int
    video: str
    cold_ms: float
    warm_p50_ms: float

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
) -> DemoResult:
    """Run the whole timelapse through the emulator and report what came out."""
    if frames < 1:
        raise DemoError(f"frames must be at least 1, not {frames}")
    if segment_frames < 1:
        raise DemoError(f"segment_frames must be at least 1, not {segment_frames}")
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

    # TODO(emulator-shutdown): Emulator.close() SIGKILLs the runtime, so the
    # final partial segment (frames % segment_frames) is never flushed and
    # frames_in_video falls short of frames_sent by that many. Call the
    # emulator's graceful shutdown (SIGTERM, runtime drains) here once it
    # exists; until then pick --frames as a multiple of --segment-frames.
    if frames % segment_frames:
        logger.warning(
            "%d frames is not a multiple of %d: the last %d will not reach the "
            "video until the emulator can shut the runtime down gracefully",
            frames,
            segment_frames,
            frames % segment_frames,
        )

    latencies = await _invoke_all(
        events,
        env={
            "TIMELAPSE_SOURCE_ROOT": str(source),
            "TIMELAPSE_OUTPUT": str(video),
            "TIMELAPSE_SEGMENT_FRAMES": str(segment_frames),
            "TIMELAPSE_FPS": str(fps),
            "TIMELAPSE_SIZE": f"{width}x{height}",
            "STATEFULRT_JOURNAL_DIR": str(journal),
        },
        cwd=out_dir,
        function_timeout=function_timeout,
    )

    # Decode what the function wrote, segment by segment, as a player would.
    playlist = video / PLAYLIST_KEY
    if not playlist.exists():
        raise DemoError(
            f"the function wrote no playlist at {playlist}: fewer than "
            f"{segment_frames} frames were sent, or every flush failed "
            "(see the runtime's log lines above)"
        )
    report = inspect_video(playlist)
    warm = latencies[1:]
    return DemoResult(
        frames_sent=frames,
        frames_in_video=report.frames,
        segments=report.segments,
        video=str(playlist),
        cold_ms=round(latencies[0], 2),
        warm_p50_ms=round(statistics.median(warm), 2) if warm else 0.0,
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

        # The last segment is written after the last response: wait for the
        # runtime to come back for the next event, which it does only once
        # that flush is over.
        await emulator.wait_idle()
        reports = emulator.reports
        if reports and reports[0].init_duration_ms is not None:
            logger.info(
                "init %.1f ms; first invoke %.1f ms; last %.1f ms (REPORT durations)",
                reports[0].init_duration_ms,
                reports[0].duration_ms,
                reports[-1].duration_ms,
            )
    return latencies


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
