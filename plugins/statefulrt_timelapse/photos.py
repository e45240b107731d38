"""Real photographs made to look like a camera's timelapse, written as JPEGs.

The photos are the ones that ship inside scikit-image (an astronaut, a cup of
coffee, a cat, a rocket, the Hubble deep field), so they load offline. A
sequence of frames shows one photo at a time with a slow pan and zoom across
it (the Ken Burns effect), cuts to another photo every ``scene_frames`` frames,
and drifts in exposure and colour temperature like a day going by: dim and
warm at the ends, bright and neutral in the middle. A little sensor noise
keeps consecutive frames from being identical even where the motion is slow.

Every frame depends only on its index and the seed, so a sequence is the same
on every machine and any frame can be rendered on its own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from ._log import logger

__all__ = ["DEFAULT_PHOTOS", "PhotoSequence", "frame_key", "write_photos"]

# Colour photographs in skimage.data that need no download.
DEFAULT_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
)

RGBFrame = npt.NDArray[np.uint8]


@functools.cache
def _load_photo(name: str) -> Image.Image:
    # Imported here: scikit-image takes a while to import and only the photo
    # generator needs it, never the handler.
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise ValueError(f"skimage.data has no photo named {name!r}")
    pixels = np.asarray(loader())
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3], dtype=np.uint8))


@dataclass(frozen=True, slots=True)
class _Shot:
    """One scene: which photo, and the crop window at its first and last frame."""

    photo: str
    start: tuple[float, float, float]  # centre x, centre y, crop width (pixels)
    end: tuple[float, float, float]


class PhotoSequence:
    """Frames of a fake timelapse, rendered on demand at ``width`` x ``height``."""

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 360,
        seed: int = 0,
        scene_frames: int = 45,
        day_frames: int = 240,
        photos: Sequence[str] = DEFAULT_PHOTOS,
    ) -> None:
        if width < 2 or height < 2:
            raise ValueError(f"frame size {width}x{height} is too small")
        if scene_frames < 2 or day_frames < 2:
            raise ValueError("scene_frames and day_frames must be at least 2")
        if not photos:
            raise ValueError("photos must name at least one skimage.data photo")
        self.width = width
        self.height = height
        self.seed = seed
        self.scene_frames = scene_frames
        self.day_frames = day_frames
        order = np.random.default_rng(seed).permutation(len(photos))
        self._photos = tuple(photos[i] for i in order)

    def frame(self, index: int) -> RGBFrame:
        """The RGB frame number ``index`` (from 0), shape (height, width, 3)."""
        if index < 0:
            raise ValueError(f"frame index must be >= 0, not {index}")
        shot = self._shot(index // self.scene_frames)
        progress = (index % self.scene_frames) / (self.scene_frames - 1)

        # Pan and zoom: ease in and out so the camera never jerks at a cut.
        eased = progress * progress * (3 - 2 * progress)
        cx, cy, crop_w = (
            a + (b - a) * eased for a, b in zip(shot.start, shot.end, strict=True)
        )
        crop_h = crop_w * self.height / self.width
        box = (cx - crop_w / 2, cy - crop_h / 2, cx + crop_w / 2, cy + crop_h / 2)
        image = _load_photo(shot.photo).resize(
            (self.width, self.height), Image.Resampling.BILINEAR, box=box
        )

        pixels = np.asarray(image, dtype=np.float32)
        pixels *= self._daylight(index)
        noise = np.random.default_rng((self.seed, index)).standard_normal(
            pixels.shape, dtype=np.float32
        )
        pixels += 2.0 * noise
        return np.clip(pixels, 0, 255).astype(np.uint8)

    def _shot(self, scene: int) -> _Shot:
        photo = self._photos[scene % len(self._photos)]
        source = _load_photo(photo)
        rng = np.random.default_rng((self.seed, scene, 7))

        # The widest crop of the output's aspect ratio that fits in the photo.
        aspect = self.width / self.height
        full_w = min(source.width, source.height * aspect)

        def window(zoom: float) -> tuple[float, float, float]:
            crop_w = full_w * zoom
            crop_h = crop_w / aspect
            cx = rng.uniform(crop_w / 2, source.width - crop_w / 2)
            cy = rng.uniform(crop_h / 2, source.height - crop_h / 2)
            return (float(cx), float(cy), float(crop_w))

        # Zoom in or out between 100 % and 55 % of the widest crop.
        near, far = sorted(rng.uniform(0.55, 1.0, size=2))
        zooms = (far, near) if rng.random() < 0.5 else (near, far)
        return _Shot(photo, window(float(zooms[0])), window(float(zooms[1])))

    def _daylight(self, index: int) -> npt.NDArray[np.float32]:
        # 0 at dawn and dusk, 1 at noon; one day every ``day_frames`` frames.
        phase = (index % self.day_frames) / self.day_frames
        sun = math.sin(math.pi * phase)
        exposure = 0.45 + 0.65 * sun
        warmth = 0.18 * (1 - sun)
        gains = (exposure * (1 + warmth), exposure, exposure * (1 - warmth))
        return np.asarray(gains, dtype=np.float32)


def frame_key(prefix: str, index: int) -> str:
    """The object key of frame ``index`` (from 0): ``<prefix>/frame-000001.jpg``."""
    name = f"frame-{index + 1:06d}.jpg"
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def write_photos(
    root: str | Path,
    count: int,
    *,
    bucket: str = "timelapse-photos",
    prefix: str = "camera-1",
    sequence: PhotoSequence | None = None,
    quality: int = 90,
) -> list[str]:
    """Write ``count`` frames as JPEGs under ``root/bucket/prefix``; return keys.

    The folder layout is the one the handler reads: object ``key`` of
    ``bucket`` lives at ``root / bucket / key``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    sequence = sequence or PhotoSequence()
    keys = []
    for index in range(count):
        key = frame_key(prefix, index)
        path = Path(root, bucket, *key.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sequence.frame(index)).save(
            path, format="JPEG", quality=quality
        )
        keys.append(key)
    logger.debug("wrote %d photos under %s", count, Path(root, bucket, prefix))
    return keys
