"""Check that a timelapse plays: decode every segment its playlist lists."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av

from .playlist import HlsPlaylist

__all__ = [
    "VideoReport",
    "count_frames",
    "ffprobe_frames",
    "hls_timestamps",
    "inspect_video",
]


@dataclass(frozen=True, slots=True)
class VideoReport:
    """What decoding a whole playlist found."""

    frames: int
    segments: int
    frames_per_segment: tuple[int, ...]
    timestamps: tuple[float, ...]
    width: int
    height: int
    ended: bool


def inspect_video(playlist_path: str | Path) -> VideoReport:
    """Decode each segment on its own, in playlist order, and count frames.

    Opening every segment separately is the point: a player may start at any
    segment, so each must decode without the ones before it. Raises
    FileNotFoundError if a listed segment is missing and ValueError if one
    holds no video or the frame size changes.
    """
    playlist_path = Path(playlist_path)
    playlist = HlsPlaylist.parse(playlist_path.read_text(encoding="utf-8"))

    counts: list[int] = []
    times: list[float] = []
    size: tuple[int, int] | None = None
    for entry in playlist.entries:
        segment = playlist_path.parent / entry.uri
        with av.open(str(segment)) as container:
            if not container.streams.video:
                raise ValueError(f"segment {entry.uri} holds no video stream")
            count = 0
            for frame in container.decode(video=0):
                if size is None:
                    size = (frame.width, frame.height)
                elif size != (frame.width, frame.height):
                    raise ValueError(
                        f"segment {entry.uri} changes the frame size to "
                        f"{frame.width}x{frame.height} from {size[0]}x{size[1]}"
                    )
                times.append(_seconds(frame, entry.uri))
                count += 1
        counts.append(count)

    width, height = size or (0, 0)
    return VideoReport(
        frames=sum(counts),
        segments=len(counts),
        frames_per_segment=tuple(counts),
        timestamps=tuple(times),
        width=width,
        height=height,
        ended=playlist.ended,
    )


def count_frames(playlist_path: str | Path) -> int:
    """How many frames the whole video decodes to."""
    return inspect_video(playlist_path).frames


def hls_timestamps(playlist_path: str | Path) -> list[float]:
    """Presentation times (seconds) of every frame, read as a player reads HLS.

    This goes through FFmpeg's HLS demuxer, which follows the playlist and
    joins the segments on one timeline: the times must rise steadily across
    segment boundaries for the video to play without a jump. Only an ended
    playlist can be read to its end; a live one raises ValueError.
    """
    _require_ended(playlist_path)
    with av.open(str(playlist_path), format="hls") as container:
        return [_seconds(frame, "the playlist") for frame in container.decode(video=0)]


def _seconds(frame: av.VideoFrame, where: str) -> float:
    if frame.pts is None or frame.time_base is None:
        raise ValueError(f"a frame of {where} carries no timestamp")
    return float(frame.pts * frame.time_base)


def _require_ended(playlist_path: str | Path) -> None:
    # Without #EXT-X-ENDLIST, FFmpeg's HLS demuxer treats the stream as live
    # and waits for the playlist to grow: it would never return.
    text = Path(playlist_path).read_text(encoding="utf-8")
    if not HlsPlaylist.parse(text).ended:
        raise ValueError(
            f"{playlist_path} has no #EXT-X-ENDLIST: a player would wait for "
            "more segments; use inspect_video() to check a live playlist"
        )


def ffprobe_frames(playlist_path: str | Path, *, timeout: float = 60.0) -> int | None:
    """Frames ffprobe counts playing the playlist, or None without ffprobe.

    A second opinion from the FFmpeg command-line tools, which read the
    playlist through their HLS demuxer as a player would. Like
    ``hls_timestamps``, it needs an ended playlist.
    """
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    _require_ended(playlist_path)
    completed = subprocess.run(
        [
            ffprobe,
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "default=noprint_wrappers=1:nokey=1",
            str(playlist_path),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return int(completed.stdout.strip().splitlines()[0])
