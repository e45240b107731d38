"""The timelapse handler's settings, read once from an environment mapping."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from .errors import TimelapseConfigError

__all__ = ["TimelapseConfig"]

SOURCE_ROOT: Final = "TIMELAPSE_SOURCE_ROOT"
OUTPUT: Final = "TIMELAPSE_OUTPUT"
S3_ENDPOINT: Final = "TIMELAPSE_S3_ENDPOINT"
SEGMENT_FRAMES: Final = "TIMELAPSE_SEGMENT_FRAMES"
FPS: Final = "TIMELAPSE_FPS"
SIZE: Final = "TIMELAPSE_SIZE"
PRESET: Final = "TIMELAPSE_PRESET"

# libx264's own preset names, fastest first.
_PRESETS: Final = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


@dataclass(frozen=True, kw_only=True)
class TimelapseConfig:
    """Where photos come from, where video goes, and how it is encoded.

    ``source_root`` is a local folder standing in for S3: the object ``key`` of
    bucket ``b`` is the file ``source_root / b / key``. ``output`` is kept as
    written, a folder path or ``s3://bucket/prefix`` (a ``Path`` would fold
    ``s3://`` into ``s3:/``); ``s3_endpoint`` points an ``s3://`` output at
    another S3 implementation (moto, MinIO) instead of AWS.
    """

    source_root: Path
    output: str
    s3_endpoint: str | None = None
    segment_frames: int = 30
    fps: int = 30
    width: int = 640
    height: int = 360
    preset: str = "veryfast"

    @property
    def output_is_s3(self) -> bool:
        return urlsplit(self.output).scheme.lower() == "s3"

    def __post_init__(self) -> None:
        _, problem = _output_problem(self.output, self.s3_endpoint)
        if problem:
            raise TimelapseConfigError(problem)
        if self.segment_frames < 1:
            raise TimelapseConfigError(
                f"segment_frames must be at least 1, not {self.segment_frames}"
            )
        if self.fps < 1:
            raise TimelapseConfigError(f"fps must be at least 1, not {self.fps}")
        # yuv420p stores colour at half resolution in both directions.
        if self.width < 2 or self.height < 2 or self.width % 2 or self.height % 2:
            raise TimelapseConfigError(
                f"frame size {self.width}x{self.height} must have even sides "
                "of at least 2 pixels (H.264 4:2:0 needs them)"
            )
        if self.preset not in _PRESETS:
            raise TimelapseConfigError(
                f"preset {self.preset!r} is not a libx264 preset; "
                f"use one of {', '.join(_PRESETS)}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TimelapseConfig:
        """Read the TIMELAPSE_* variables; raise naming the one that is wrong."""
        source_root = Path(_required(env, SOURCE_ROOT, "a local folder"))
        output = _required(env, OUTPUT, "a local folder or s3://bucket/prefix")
        endpoint = env.get(S3_ENDPOINT) or None
        # Checked here as well as in __post_init__, to name the variable.
        name, problem = _output_problem(output, endpoint)
        if problem:
            raise TimelapseConfigError(f"{name}: {problem}")
        width, height = _size(env.get(SIZE) or "640x360")
        return cls(
            source_root=source_root,
            output=output,
            s3_endpoint=endpoint,
            segment_frames=_positive_int(env, SEGMENT_FRAMES, 30),
            fps=_positive_int(env, FPS, 30),
            width=width,
            height=height,
            preset=env.get(PRESET) or "veryfast",
        )


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "")
    if not value:
        raise TimelapseConfigError(f"{name} is not set: it must name {what}")
    return value


def _output_problem(output: str, endpoint: str | None) -> tuple[str, str]:
    """The variable at fault and what is wrong, or ("", "") if nothing is."""
    if not output.strip():
        return OUTPUT, "the output must be a folder path or s3://bucket/prefix"
    target = urlsplit(output)
    is_s3 = target.scheme.lower() == "s3"
    if is_s3 and not target.netloc:
        return OUTPUT, f"output {output!r} names no bucket: use s3://bucket/prefix"
    if endpoint is None:
        return "", ""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return S3_ENDPOINT, (
            f"S3 endpoint {endpoint!r} must be an http:// or https:// URL, "
            "such as http://127.0.0.1:5000"
        )
    if not is_s3:
        return S3_ENDPOINT, (
            f"an S3 endpoint applies to s3:// outputs only, not to {output!r}"
        )
    return "", ""


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or ""
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise TimelapseConfigError(f"{name} must be a positive integer, not {raw!r}")
    return value


def _size(raw: str) -> tuple[int, int]:
    width, sep, height = raw.lower().partition("x")
    if sep and width.isdigit() and height.isdigit():
        return int(width), int(height)
    raise TimelapseConfigError(
        f"{SIZE} must look like WIDTHxHEIGHT (e.g. 640x360), not {raw!r}"
    )
