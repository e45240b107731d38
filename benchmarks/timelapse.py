"""Timelapse: cost per frame as the video grows, stateful vs stateless.

Both sides turn the same 320x180 JPEG photos (``statefulrt_timelapse.photos``,
one S3 ``ObjectCreated`` event each) into H.264 with the same encoder settings
(``SegmentEncoder``: libx264 ``veryfast``, ``zerolatency``, an IDR every 10
frames) and write to the same kind of sink (a ``LocalDirectorySink`` in a
temporary folder, fsyncing every write as it does by default). Both run in
this process: no HTTP and no runtime loop on either side.

**stateful**: the real ``TimelapseHandler``, wired as the runtime wires it
(``open_state``: the journal in a folder of its own, the runtime's flusher).
Per frame: ``handle`` (read and decode the JPEG, encode one frame, append the
packet to the buffer and the journal), the journal's sync before the answer,
then the flush check at the boundary; every 10th frame the flush muxes one
MPEG-TS segment, stores it once and rewrites the playlist. The cost at frame
``n`` is the mean time per frame over the segment that frame ``n`` completes
(frames ``n-9..n``: one IDR, nine P frames and one flush). Each round runs
a fresh handler (a new video) through all 1,000 frames.

**stateless**: what a plain function does per photo: get the video so far
from the sink, decode it, append the photo, re-encode every frame, put the
whole video back. Its cost grows with the video, so it is timed at the
checkpoints only: the video of ``n-1`` frames is encoded once and stored
(not timed), then the ``n``-th append is timed, once per round, each time
from the same ``n-1``-frame video.

Rounds alternate the two sides (a stateful run, then one stateless append at
each checkpoint); ratios are taken within a round and the median of the
rounds is reported, with their range. One unmeasured stateful run of 20
frames warms up the process (imports, libx264, the JPEG decoder).

Two clocks: wall time, which is what Lambda bills, and CPU time (every thread
of this process, libx264's included), which other work on a shared machine
disturbs much less. The checks are made on both.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from statefulrt._runtime import open_state
from statefulrt_sinks import LocalDirectorySink, MissingKeyError
from statefulrt_timelapse.config import TimelapseConfig
from statefulrt_timelapse.encoder import EncodedPacket, SegmentEncoder, mux_segment
from statefulrt_timelapse.events import S3Event, parse_s3_event, s3_put_event
from statefulrt_timelapse.handler import TimelapseHandler
from statefulrt_timelapse.photos import PhotoSequence, write_photos

from .figures import Check, Section, Table, median
from .registry import Bench

TITLE = "timelapse: cost per frame as the video grows"
CHECKPOINTS: Final = (10, 100, 300, 1_000)
WIDTH, HEIGHT, FPS = 320, 180, 30
SEGMENT_FRAMES: Final = 10
PRESET: Final = "veryfast"
BUCKET: Final = "timelapse-photos"
WARMUP_FRAMES: Final = 2 * SEGMENT_FRAMES
# DESIGN.md, "Performance bar"
LIMIT_FLAT = 1.10  # stateful frame 1,000 / frame 10
AT_LEAST_CHEAPER = 20.0  # stateless / stateful at 300 frames
CHEAPER_AT: Final = 300

VIDEO_KEY: Final = "video.ts"
# The handler is called directly; it never looks at its context.
NO_CONTEXT: Any = None


@dataclass(frozen=True)
class Photos:
    """The photos in their stand-in bucket, and the event S3 sends for each."""

    root: Path
    events: list[S3Event]


CLOCKS: Final = ("wall", "cpu")


@dataclass(frozen=True)
class Cost:
    """One measured stretch of work, in seconds."""

    wall: float
    cpu: float

    def on(self, clock: str) -> float:
        return self.wall if clock == "wall" else self.cpu


class Stopwatch:
    """Wall and CPU time of what runs between ``start`` and ``stop``."""

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def stop(self) -> Cost:
        return Cost(time.perf_counter() - self._wall, time.process_time() - self._cpu)


@dataclass
class Rounds:
    """Every measured cost, by round."""

    stateful: list[list[Cost]] = field(default_factory=list)  # each frame
    stateless: dict[int, list[Cost]] = field(default_factory=dict)  # frame n

    def stateful_at(self, n: int, clock: str) -> list[float]:
        """Per round: mean seconds per frame over the segment ending at ``n``."""
        return [
            sum(cost.on(clock) for cost in costs[n - SEGMENT_FRAMES : n])
            / SEGMENT_FRAMES
            for costs in self.stateful
        ]

    def stateless_at(self, n: int, clock: str) -> list[float]:
        return [cost.on(clock) for cost in self.stateless[n]]

    def ratios_at(self, n: int, clock: str) -> list[float]:
        """Per round: stateless / stateful at ``n``."""
        slow, fast = self.stateless_at(n, clock), self.stateful_at(n, clock)
        return [a / b for a, b in zip(slow, fast, strict=True)]

    def flatness(self, clock: str) -> list[float]:
        """Per round: stateful at the last checkpoint / at the first."""
        pairs = zip(
            self.stateful_at(CHECKPOINTS[-1], clock),
            self.stateful_at(CHECKPOINTS[0], clock),
            strict=True,
        )
        return [late / early for late, early in pairs]


def config(source_root: Path, output: Path) -> dict[str, str]:
    """The environment both sides read their settings from."""
    return {
        "TIMELAPSE_SOURCE_ROOT": str(source_root),
        "TIMELAPSE_OUTPUT": str(output),
        "TIMELAPSE_SEGMENT_FRAMES": str(SEGMENT_FRAMES),
        "TIMELAPSE_FPS": str(FPS),
        "TIMELAPSE_SIZE": f"{WIDTH}x{HEIGHT}",
        "TIMELAPSE_PRESET": PRESET,
    }


def write_photo_events(root: Path, count: int) -> Photos:
    sequence = PhotoSequence(width=WIDTH, height=HEIGHT)
    keys = write_photos(root, count, bucket=BUCKET, sequence=sequence)
    events = [
        s3_put_event(BUCKET, key, (root / BUCKET / key).read_bytes(), sequence=index)
        for index, key in enumerate(keys)
    ]
    return Photos(root, events)


# -- stateful: the real handler ------------------------------------------------


async def stateful_run(photos: Photos, folder: Path, frames: int) -> list[Cost]:
    """The cost of each frame of one fresh TimelapseHandler over ``frames``."""
    handler = TimelapseHandler(environ=config(photos.root, folder / "video"))
    journal_dir = folder / "journal"
    journal_dir.mkdir(parents=True)
    flusher = open_state(
        handler,
        handler.state,
        journal_dir=str(journal_dir),
        function_name="timelapse-bench",
    )
    await handler.init()
    flusher.policy = handler.flush_policy  # as the runtime does after init()
    journal = handler.state.journal

    costs: list[Cost] = []
    watch = Stopwatch()
    try:
        for event in photos.events[:frames]:
            watch.start()
            await handler.handle(event, NO_CONTEXT)
            if journal is not None:
                journal.sync()  # the runtime syncs before it answers
            await flusher.at_boundary()
            costs.append(watch.stop())
    finally:
        await flusher.flush("shutdown")
        await handler.close()
        await handler.resources.close()
        if journal is not None:
            journal.close()
            journal.unlock()
    return costs


# -- stateless: re-encode everything per photo ----------------------------------


class StatelessTimelapse:
    """What a plain Lambda function does with each photo: the whole video again."""

    def __init__(self, env: dict[str, str]) -> None:
        self.config = TimelapseConfig.from_env(env)
        self.sink = LocalDirectorySink(self.config.output)

    async def handle(self, event: object) -> int:
        """Append the photo ``event`` names; return the frames in the video."""
        config = self.config
        (ref,) = parse_s3_event(event)

        # Get the video so far.
        try:
            video = await self.sink.get(VIDEO_KEY)
        except MissingKeyError:
            video = b""

        # Decode it, re-encoding each frame as it comes, then the new photo.
        encoder = self.encoder()
        packets: list[EncodedPacket] = []
        if video:
            with av.open(io.BytesIO(video), "r", format="mpegts") as container:
                for frame in container.decode(video=0):
                    packets.extend(encoder.encode_frame(frame))
        photo = config.source_root.joinpath(ref.bucket, *ref.key.split("/"))
        packets.extend(encoder.encode(read_photo(photo, config)))
        packets.extend(encoder.close())

        # Put the whole video back.
        data = mux_segment(packets, fps=config.fps, width=WIDTH, height=HEIGHT)
        await self.sink.put(VIDEO_KEY, data, content_type="video/mp2t")
        return len(packets)

    def encoder(self) -> SegmentEncoder:
        config = self.config
        return SegmentEncoder(
            width=config.width,
            height=config.height,
            fps=config.fps,
            keyint=config.segment_frames,
            preset=config.preset,
        )


def read_photo(path: Path, config: TimelapseConfig) -> npt.NDArray[np.uint8]:
    """The JPEG at ``path`` as RGB pixels, decoded the way the handler does."""
    with Image.open(io.BytesIO(path.read_bytes()), formats=["JPEG"]) as image:
        image.draft("RGB", (config.width, config.height))
        upright = ImageOps.exif_transpose(image).convert("RGB")
    fitted = ImageOps.fit(
        upright, (config.width, config.height), Image.Resampling.BILINEAR
    )
    return np.asarray(fitted, dtype=np.uint8)


class StatelessCheckpoints:
    """The stateless function, timed on the ``n``-th photo of each checkpoint."""

    def __init__(self, photos: Photos, folder: Path) -> None:
        self.photos = photos
        self.function = StatelessTimelapse(config(photos.root, folder))
        self._prefix: list[EncodedPacket] = []

    def prepare(self, longest: int) -> None:
        """Encode the first ``longest - 1`` photos once (not timed)."""
        function = self.function
        encoder = function.encoder()
        for event in self.photos.events[: longest - 1]:
            (ref,) = parse_s3_event(event)
            path = function.config.source_root.joinpath(ref.bucket, *ref.key.split("/"))
            self._prefix.extend(encoder.encode(read_photo(path, function.config)))
        self._prefix.extend(encoder.close())

    async def time_append(self, n: int) -> Cost:
        """Store the video of ``n - 1`` frames, then time appending photo ``n``."""
        sink = self.function.sink
        if n > 1:
            prefix = mux_segment(
                self._prefix[: n - 1], fps=FPS, width=WIDTH, height=HEIGHT
            )
            await sink.put(VIDEO_KEY, prefix)
        else:
            sink.path_for(VIDEO_KEY).unlink(missing_ok=True)

        watch = Stopwatch()
        watch.start()
        frames = await self.function.handle(self.photos.events[n - 1])
        cost = watch.stop()
        if frames != n:
            raise RuntimeError(f"the stateless video holds {frames} frames, not {n}")
        return cost


# -- the run -----------------------------------------------------------------------


async def measure(bench: Bench, work: Path, rounds: int) -> Rounds:
    longest = max(CHECKPOINTS)
    bench.progress(f"timelapse: writing {longest:,} photos at {WIDTH}x{HEIGHT}")
    photos = await asyncio.to_thread(write_photo_events, work / "photos", longest)

    bench.progress(f"timelapse: encoding the stateless video up to {longest - 1:,}")
    stateless = StatelessCheckpoints(photos, work / "stateless")
    await asyncio.to_thread(stateless.prepare, longest)
    await stateful_run(photos, work / "warmup", WARMUP_FRAMES)

    result = Rounds(stateless={n: [] for n in CHECKPOINTS})
    for index in range(rounds):
        folder = work / f"stateful-{index}"
        result.stateful.append(await stateful_run(photos, folder, longest))
        shutil.rmtree(folder)
        for n in CHECKPOINTS:
            result.stateless[n].append(await stateless.time_append(n))
        latest = ", ".join(
            f"{n:,} {result.stateful_at(n, 'wall')[-1] * 1000:.2f}" for n in CHECKPOINTS
        )
        bench.progress(
            f"timelapse round {index + 1}/{rounds}: stateful ms/frame {latest}; "
            f"stateless at {CHEAPER_AT} "
            f"{result.stateless[CHEAPER_AT][-1].wall * 1000:.0f} ms"
        )
    return result


async def run(bench: Bench) -> Section:
    rounds = 3 if bench.quick else 7
    work = Path(tempfile.mkdtemp(prefix="statefulrt-bench-timelapse-"))
    try:
        result = await measure(bench, work, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(result, rounds)


def report(result: Rounds, rounds: int) -> Section:
    section = Section("timelapse", TITLE)
    figures: dict[str, Any] = {
        "size": f"{WIDTH}x{HEIGHT}",
        "preset": PRESET,
        "segment_frames": SEGMENT_FRAMES,
        "rounds": rounds,
    }
    for clock in CLOCKS:
        table = Table(
            f"{TITLE}, {clock} time ({WIDTH}x{HEIGHT}, libx264 {PRESET}, a "
            f"segment every {SEGMENT_FRAMES} frames; ms per frame, median of "
            f"{rounds} rounds)",
            [
                "frames",
                "stateful",
                "stateful range",
                "stateless",
                "stateless range",
                "stateless / stateful",
            ],
        )
        points: dict[str, Any] = {}
        for n in CHECKPOINTS:
            fast = [s * 1000 for s in result.stateful_at(n, clock)]
            slow = [s * 1000 for s in result.stateless_at(n, clock)]
            ratio = median(result.ratios_at(n, clock))
            table.rows.append(
                [f"{n:,}", median(fast), _span(fast), median(slow), _span(slow), ratio]
            )
            points[str(n)] = {
                "stateful_ms": median(fast),
                "stateless_ms": median(slow),
                "stateless_x_stateful": ratio,
            }
        section.tables.append(table)

        # The two figures DESIGN.md asks for, each taken within a round.
        flat = result.flatness(clock)
        cheaper = result.ratios_at(CHEAPER_AT, clock)
        section.checks.append(
            Check(
                f"timelapse stateful frame {CHECKPOINTS[-1]:,} / frame "
                f"{CHECKPOINTS[0]}, {clock}",
                median(flat),
                LIMIT_FLAT,
                detail=f"rounds {min(flat):.2f}-{max(flat):.2f}",
            )
        )
        section.checks.append(
            Check(
                f"timelapse stateless / stateful at {CHEAPER_AT} frames, {clock}",
                1 / median(cheaper),
                1 / AT_LEAST_CHEAPER,
                detail=f"rounds {min(cheaper):.1f}-{max(cheaper):.1f} x",
                shown=f"{median(cheaper):,.1f} x cheaper",
                wanted=f">= {AT_LEAST_CHEAPER:g} x cheaper",
            )
        )
        figures[clock] = {
            "checkpoints": points,
            "stateful_last_x_first": median(flat),
            "stateless_x_stateful_at_300": median(cheaper),
        }

    section.notes.append(
        "stateful: per frame, handle (JPEG decode, one encode, buffer, journal "
        "append) + journal sync + the flush check, the segment flush shared "
        f"by its {SEGMENT_FRAMES} frames; the segment at frame "
        f"{CHECKPOINTS[0]} is the video's first (it also creates the folders)"
    )
    section.notes.append(
        "stateless: the n-th photo appended to a video of n-1 frames "
        "(get, decode, re-encode every frame, put)"
    )
    section.figures = figures
    section.samples = {
        clock: {
            "stateful_seconds_per_frame": [
                [cost.on(clock) for cost in costs] for costs in result.stateful
            ],
            "stateless_seconds": {
                str(n): result.stateless_at(n, clock) for n in CHECKPOINTS
            },
        }
        for clock in CLOCKS
    }
    section.plot = lambda path: plot_timelapse(path, result)
    return section


def _span(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def plot_timelapse(path: Path, result: Rounds) -> None:
    from .report import pyplot

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))

    # Stateful: every segment of the video, each the median of the rounds.
    ends = list(range(SEGMENT_FRAMES, max(CHECKPOINTS) + 1, SEGMENT_FRAMES))
    for clock, style in zip(CLOCKS, ("-", ":"), strict=True):
        axis.plot(
            ends,
            [median(result.stateful_at(n, clock)) * 1000 for n in ends],
            style,
            color="tab:blue",
            label=f"stateful, {clock} (each {SEGMENT_FRAMES}-frame segment)",
        )
        axis.plot(
            list(CHECKPOINTS),
            [median(result.stateless_at(n, clock)) * 1000 for n in CHECKPOINTS],
            style,
            color="tab:red",
            marker="s",
            label=f"stateless, {clock} (get, decode, re-encode all, put)",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("frames in the video")
    axis.set_ylabel("ms per frame")
    axis.set_title(f"timelapse, {WIDTH}x{HEIGHT}: cost per frame as the video grows")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
