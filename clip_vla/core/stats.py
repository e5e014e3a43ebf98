"""Latency and error figures for reports: one percentile rule for the node, the tools and the tests.

Empty input gives ``None`` (never NaN): every report is JSON, and JSON has no NaN.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The ``q``-th percentile (0..100, linear interpolation) of ``values``; None when there are none."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def percentile_summary(values: Sequence[float], digits: int = 3) -> Dict[str, Optional[float]]:
    """``n``, ``p50``, ``p95``, ``max`` and ``mean`` of ``values``, rounded; None figures when empty."""
    if len(values) == 0:
        return {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
    a = np.asarray(values, dtype=np.float64)
    return {"n": int(a.size), "p50": round(percentile(a, 50), digits), "p95": round(percentile(a, 95), digits),
            "max": round(float(a.max()), digits), "mean": round(float(a.mean()), digits)}
