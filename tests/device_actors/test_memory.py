"""The peak-RSS tracker sees what one block of work allocated, even late in a long-lived process."""
from __future__ import annotations

import numpy as np

from device_actors.memory import PeakRssTracker


def test_peak_rss_increase_covers_a_freed_allocation_and_resets_between_blocks():
    tracker = PeakRssTracker()
    tracker.start()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    del block
    first = tracker.increase_mb()
    assert first is not None and first >= 60

    tracker.start()  # a new block that allocates nothing: the earlier peak must not leak into it
    second = tracker.increase_mb()
    assert second is not None and second < 16


def test_peak_rss_is_none_where_proc_does_not_tell(tmp_path):
    tracker = PeakRssTracker(proc_self=tmp_path)
    tracker.start()
    assert tracker.increase_mb() is None
