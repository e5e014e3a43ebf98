"""From per-prompt probability maps to one object: threshold, distractor competition, components.

Pure numpy/cv2, so the decision logic is testable on synthetic maps without any model.
A pixel belongs to the target when its probability clears ``threshold`` *and* the target
prompt beats every competing prompt (distractors, other named objects) at that pixel. Of the
connected components that remain, the most confident one is the object; the others are
counted, so "pick up the cup" with two cups in view is reported, not silently resolved.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import cv2
import numpy as np

from clip_vla.core.config import INSTANCE_SCORES
from clip_vla.core.types import Detection


def target_mask(probs: np.ndarray, target: int, competitors: Sequence[int], threshold: float) -> np.ndarray:
    """HxW bool: the target clears the threshold and strictly beats every competitor."""
    if probs.ndim != 3:
        raise ValueError(f"probs must be KxHxW, got shape {probs.shape}")
    mask = probs[target] >= threshold
    others = [c for c in competitors if c != target]
    if others:
        mask &= probs[target] > probs[others].max(axis=0)
    return mask


def select_component(mask: np.ndarray, target_probs: np.ndarray, phrase: str, min_area: int = 1,
                     score: str = "mass") -> Detection:
    """The best connected component of ``mask`` (8-connectivity, ranked by ``score``) as a Detection.

    Its confidence is the component's mean probability whatever the ranking, so
    ``perception.min_confidence`` means the same under both rules.
    """
    if score not in INSTANCE_SCORES:
        raise ValueError(f"instance score must be one of {INSTANCE_SCORES}, got {score!r}")
    peak = float(target_probs.max()) if target_probs.size else 0.0
    labels, stats, centroids, candidates, sums, means = _components(mask, target_probs, min_area)
    if not candidates:
        return Detection(phrase=phrase, found=False, confidence=0.0, peak=peak)
    ranking = sums if score == "mass" else means
    best = max(candidates, key=lambda i: (ranking[i], stats[i, cv2.CC_STAT_AREA]))
    return _component_detection(phrase, labels, stats, centroids, means, best, peak, len(candidates) - 1)


def all_components(mask: np.ndarray, target_probs: np.ndarray, phrase: str, min_area: int = 1,
                   score: str = "mass") -> List[Detection]:
    """Every connected component of ``mask`` of at least ``min_area`` pixels, best by ``score`` first.

    For callers that must see every instance (scene suggestions), not only the one a command
    would ground on; the first is the one ``select_component`` returns, and each Detection's
    ``other_instances`` counts the rest.
    """
    if score not in INSTANCE_SCORES:
        raise ValueError(f"instance score must be one of {INSTANCE_SCORES}, got {score!r}")
    peak = float(target_probs.max()) if target_probs.size else 0.0
    labels, stats, centroids, candidates, sums, means = _components(mask, target_probs, min_area)
    ranking = sums if score == "mass" else means
    order = sorted(candidates, key=lambda i: (-ranking[i], -stats[i, cv2.CC_STAT_AREA]))
    return [_component_detection(phrase, labels, stats, centroids, means, i, peak, len(order) - 1) for i in order]


def _components(mask: np.ndarray, target_probs: np.ndarray, min_area: int):
    """Labels, stats, centroids, the components kept, and per label the probability mass and mean.

    The labelling runs on the mask's bounding box only (a target covers a few percent of the
    frame, and a command's look-alikes are labelled one name at a time); labels, stats and
    centroids are in full-image coordinates.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    v0, u0 = (int(rows[0]), int(cols[0])) if rows.size else (0, 0)
    v1, u1 = (int(rows[-1]) + 1, int(cols[-1]) + 1) if rows.size else (0, 0)
    box = np.ascontiguousarray(mask[v0:v1, u0:u1], dtype=np.uint8)
    if box.size:
        count, inner, stats, centroids = cv2.connectedComponentsWithStats(box, connectivity=8)
    else:
        count, inner = 1, np.zeros((0, 0), np.int32)
        stats, centroids = np.zeros((1, 5), np.int32), np.zeros((1, 2))
    stats[1:, cv2.CC_STAT_LEFT] += u0
    stats[1:, cv2.CC_STAT_TOP] += v0
    centroids[1:] += (u0, v0)
    labels = np.zeros(mask.shape[:2], np.int32)
    labels[v0:v1, u0:u1] = inner
    candidates = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= max(1, min_area)]
    # Probability mass and mean per component in one pass over the box (bincount), not one mask each.
    sums = np.bincount(inner.ravel(), weights=target_probs[v0:v1, u0:u1].ravel(), minlength=count)
    means = sums / np.maximum(stats[:, cv2.CC_STAT_AREA], 1)
    return labels, stats, centroids, candidates, sums, means


def _component_detection(phrase: str, labels: np.ndarray, stats: np.ndarray, centroids: np.ndarray,
                         means: np.ndarray, index: int, peak: float, others: int) -> Detection:
    x, y, w, h, area = (int(v) for v in stats[index])
    return Detection(
        phrase=phrase,
        found=True,
        confidence=float(means[index]),
        mask=labels == index,
        centroid=(float(centroids[index][0]), float(centroids[index][1])),
        bbox=(x, y, x + w - 1, y + h - 1),
        area=area,
        peak=peak,
        other_instances=others,
    )


def detect(probs: np.ndarray, phrases: Sequence[str], target: int, competitors: Sequence[int],
           threshold: float, min_area: int = 1, score: str = "mass",
           keep: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Detection:
    """Threshold + competition + component selection for prompt ``target`` of ``probs``.

    ``keep`` trims the target mask before its components are taken (e.g. ``geometry.low_pixels``).
    """
    mask = target_mask(probs, target, competitors, threshold)
    if keep is not None:
        mask = keep(mask)
    return select_component(mask, probs[target], phrases[target], min_area=min_area, score=score)


def detect_all(probs: np.ndarray, phrases: Sequence[str], target: int, competitors: Sequence[int],
               threshold: float, min_area: int = 1, score: str = "mass") -> List[Detection]:
    """``detect``'s every component, best first (empty when nothing clears the threshold)."""
    mask = target_mask(probs, target, competitors, threshold)
    return all_components(mask, probs[target], phrases[target], min_area=min_area, score=score)


def detection_from_mask(phrase: str, mask: np.ndarray, min_area: int = 1) -> Detection:
    """A Detection from a known binary mask (ground truth in simulation, or a user's label)."""
    return select_component(mask.astype(bool), mask.astype(np.float32), phrase, min_area=min_area)


# --------------------------------------------------------------------------- look-alike prompts
def catalogue_names(config: Any) -> List[str]:
    """The object names the configuration knows (suggest colours x shapes, its objects, the
    vocabulary's), fixtures excluded: where look-alike competitors come from."""
    section = config.suggest
    names = [f"{c} {s}" for c in section.colours for s in section.shapes if c and s] + list(section.objects)
    if section.vocabulary_objects and config.vocabulary is not None:
        names += [str(o) for o in config.vocabulary.objects]
    fixtures = {f.strip().lower() for f in section.fixtures}
    return [n for n in dict.fromkeys(n.strip().lower() for n in names) if n and n not in fixtures]


def look_alikes(target: Optional[str], names: Sequence[str], limit: int, exclude: Sequence[str] = ()) -> List[str]:
    """Up to ``limit`` of ``names`` that share a word with ``target`` without naming it more or less
    precisely: "red ball" and "blue block" for "red block", never "block" or "big red block" (those
    would take the target's own pixels from it). In catalogue order; none for ``limit`` 0."""
    if not target or limit <= 0:
        return []
    words = set(target.lower().split())
    skip = {e.lower() for e in exclude} | {target.lower()}
    out = []
    for name in names:
        other = set(name.split())
        if name in skip or not (words & other) or words <= other or other <= words:
            continue
        out.append(name)
        if len(out) == limit:
            break
    return out
