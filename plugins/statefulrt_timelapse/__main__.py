"""``python -m statefulrt_timelapse``: run the timelapse demo, print one JSON line.

Everything but the result goes to stderr: the demo's logs, the emulator's
START/END/REPORT lines and the runtime's own output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from .demo import DemoError, run_demo

# Bounds that keep a typo from filling the disk or the memory: a 4K frame, and
# about an hour of timelapse at 30 frames per second.
MAX_SIDE = 3840
MAX_FRAMES = 100_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m statefulrt_timelapse",
        description=(
            "Build a timelapse from photos through the Lambda emulator and "
            "print what came out as one JSON line."
        ),
    )
    parser.add_argument("--frames", type=int, default=120, help="photos to send")
    parser.add_argument(
        "--out", default="timelapse-out", help="folder for photos and video"
    )
    parser.add_argument(
        "--segment-frames", type=int, default=30, help="frames per HLS segment"
    )
    parser.add_argument("--size", default="640x360", help="frame size, WxH")
    parser.add_argument("--seed", type=int, default=0, help="photo sequence seed")
    parser.add_argument(
        "--output",
        metavar="s3://BUCKET/PREFIX",
        help=(
            "write the video to this bucket (created if missing) instead of "
            "OUT/video; it is downloaded to OUT/video to be checked"
        ),
    )
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="an S3-compatible server for --output, e.g. http://127.0.0.1:5000",
    )
    args = parser.parse_args(argv)

    width, sep, height = args.size.partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        parser.error(f"--size must look like 640x360, not {args.size!r}")
    if not (2 <= int(width) <= MAX_SIDE and 2 <= int(height) <= MAX_SIDE):
        parser.error(f"--size sides must be 2 to {MAX_SIDE} pixels, not {args.size!r}")
    if not 1 <= args.frames <= MAX_FRAMES:
        parser.error(f"--frames must be 1 to {MAX_FRAMES}, not {args.frames}")
    if args.seed < 0:
        parser.error(f"--seed must be 0 or more, not {args.seed}")
    if args.output is not None and not args.output.startswith("s3://"):
        parser.error(f"--output must look like s3://bucket/prefix, not {args.output!r}")
    if args.endpoint is not None and args.output is None:
        parser.error("--endpoint needs --output s3://bucket/prefix")

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        with _stdout_to_stderr():
            result = asyncio.run(
                run_demo(
                    frames=args.frames,
                    out=args.out,
                    segment_frames=args.segment_frames,
                    width=int(width),
                    height=int(height),
                    seed=args.seed,
                    output=args.output,
                    endpoint=args.endpoint,
                )
            )
    except DemoError as exc:
        print(f"statefulrt_timelapse: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an --out the demo cannot write to, say
        print(f"statefulrt_timelapse: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("statefulrt_timelapse: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result.as_json()), flush=True)
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # The runtime process inherits file descriptor 1 and logs there, as Lambda
    # expects; pointing it at stderr keeps stdout for the one result line.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
