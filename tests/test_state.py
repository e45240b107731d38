from __future__ import annotations

import pytest

from statefulrt import State
from statefulrt._state import measure


def test_state_buffers_counters_and_values() -> None:
    state = State()
    state.buffer("a").append(b"xyz")
    state.buffer("a").append("é")
    state.buffer("b").append({"k": 1})
    assert len(state.buffer("a")) == 2
    assert state.pending_items == 3
    assert state.pending_bytes == 3 + 2 + len(b'{"k":1}')
    assert state.counter("frames").incr() == 1
    assert state.counter("frames").incr(4) == 5
    state["model"] = "loaded"
    assert state["model"] == "loaded"
    assert "model" in state
    assert state.get("missing", 7) == 7
    del state["model"]
    assert "model" not in state


def test_buffer_claim_commit_keeps_later_items() -> None:
    state = State()
    buffer = state.buffer("b")
    buffer.extend([1, 2, 3])
    assert buffer._claim() == [1, 2, 3]
    buffer.append(4)
    assert buffer._claim() == [1, 2, 3]  # a retry takes the same items
    buffer._commit()
    assert buffer.peek() == [4]
    assert buffer.nbytes == 1


def test_buffer_rejects_negative_size() -> None:
    with pytest.raises(ValueError, match="size must be a byte count >= 0, not -1"):
        State().buffer("b").append(b"x", size=-1)


def test_measure_unserialisable_counts_as_small_object() -> None:
    assert measure(object()) == 64
    assert measure(b"abcd") == 4
