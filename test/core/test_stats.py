"""One percentile rule for every report (clip_vla.core.stats)."""
from __future__ import annotations

import json

from clip_vla.core.stats import percentile, percentile_summary


def test_no_values_give_none_which_json_can_carry():
    assert percentile([], 50) is None
    summary = percentile_summary([])
    assert summary == {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
    assert json.loads(json.dumps(summary)) == summary


def test_percentiles_interpolate_linearly():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile_summary([1.0, 2.0, 3.0, 4.0], digits=2) == {"n": 4, "p50": 2.5, "p95": 3.85, "max": 4.0,
                                                                  "mean": 2.5}
