"""pytest fixtures that run a handler against the built-in emulator."""

from __future__ import annotations
