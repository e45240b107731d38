"""A timelapse built one photo per invocation: the motivating case of statefulrt.

Each S3 ``ObjectCreated`` event names one JPEG. ``TimelapseHandler`` (in
``statefulrt_timelapse.handler``) decodes it, feeds it to an H.264 encoder that
stays open between warm invocations, buffers the packet, and every N frames
writes one MPEG-TS segment and an HLS playlist to a sink.

Nothing is imported here, so ``python -m statefulrt_timelapse`` and the
building blocks (``encoder``, ``playlist``, ``photos``, ``events``, ``verify``)
load only what they use.
"""

from __future__ import annotations
