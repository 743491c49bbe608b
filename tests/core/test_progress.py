from __future__ import annotations

import pytest

from core.errors import Cancelled
from core.progress import CancelToken, track


def test_track_reports_each_step_and_finishes_at_one():
    seen = []
    out = list(track(["a", "b", "c"], progress=lambda f, m="": seen.append((f, m)), message="refine"))
    assert out == ["a", "b", "c"]
    assert [f for f, _ in seen] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert seen[1][1] == "refine 2/3"


def test_cancel_stops_at_the_next_item_and_reset_clears_it():
    token = CancelToken()
    done = []
    with pytest.raises(Cancelled, match="export was cancelled"):
        for item in track(range(10), cancel=token, message="export"):
            done.append(item)
            if item == 2:
                token.cancel()
    assert done == [0, 1, 2]
    token.reset()
    assert not token.cancelled
    assert list(track(range(3), cancel=token)) == [0, 1, 2]


def test_track_handles_iterators_without_length():
    seen = []
    assert list(track(iter([1, 2]), progress=lambda f, m="": seen.append(f))) == [1, 2]
    assert seen == [None, None, 1.0]
