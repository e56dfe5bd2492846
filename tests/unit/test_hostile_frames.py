"""Hostile WS frames are refused as frames, never crash the handler: deep nesting, duplicate keys."""

from __future__ import annotations

import pytest

from app.ws import frames


@pytest.mark.parametrize("depth", [1_000, 10_000])
def test_a_frame_nested_thousands_deep_is_a_frame_error(depth: int) -> None:
    data = '{"x": ' + "[" * depth + "]" * depth + ', "type": "ping"}'
    # Where the decoder's recursion limit lies depends on the Python version (3.13 decodes 1,000 levels
    # and then refuses the unknown field): either way the frame is refused as a frame, never a crash.
    with pytest.raises(frames.FrameError, match=r"nested too deeply|unknown field"):
        frames.decode(data)


def test_duplicate_keys_take_the_last_value_as_documented() -> None:
    frame = frames.decode(
        '{"type": "join", "conversation_id": "00000000-0000-0000-0000-000000000001",'
        ' "conversation_id": "00000000-0000-0000-0000-000000000002"}'
    )
    assert isinstance(frame, frames.Join) and str(frame.conversation_id).endswith("2")


def test_refresh_carries_the_new_access_token() -> None:
    assert frames.decode('{"type": "refresh", "access_token": "abc"}') == frames.Refresh(access_token="abc")
