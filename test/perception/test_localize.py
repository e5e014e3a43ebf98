"""Localisation logic on synthetic probability maps: no model involved."""
import numpy as np
import pytest

from clip_vla.perception.localize import detect, select_component, target_mask

H, W = 60, 80


def blob(probs, k, top, left, size, value):
    probs[k, top:top + size, left:left + size] = value


def maps(k=3, base=0.05):
    return np.full((k, H, W), base, dtype=np.float32)


def test_single_object_found_with_stats():
    p = maps()
    blob(p, 0, 10, 20, 10, 0.9)
    d = detect(p, ["red cup", "background", "table"], 0, [0, 1, 2], threshold=0.5)
    assert d.found and d.phrase == "red cup"
    assert d.centroid == pytest.approx((24.5, 14.5))
    assert d.bbox == (20, 10, 29, 19)
    assert d.area == 100 and d.mask.sum() == 100 and d.mask.shape == (H, W)
    assert d.confidence == pytest.approx(0.9)
    assert d.other_instances == 0


def test_not_found_below_threshold():
    p = maps()
    blob(p, 0, 10, 20, 10, 0.3)
    d = detect(p, ["red cup", "background", "table"], 0, [0, 1, 2], threshold=0.5)
    assert not d.found and d.mask is None and d.centroid is None
    assert d.peak == pytest.approx(0.3)


def test_distractor_suppresses_look_alike():
    """Two red things: the one the distractor ("red ball") wins on is not the cup."""
    p = maps()
    blob(p, 0, 5, 5, 10, 0.8)      # the cup: only the target prompt fires
    blob(p, 0, 30, 50, 10, 0.85)   # a red ball: the target fires a bit more ...
    blob(p, 1, 30, 50, 10, 0.95)   # ... but the distractor fires more
    d = detect(p, ["red cup", "red ball", "table"], 0, [0, 1, 2], threshold=0.5)
    assert d.found and d.other_instances == 0
    assert d.centroid == pytest.approx((9.5, 9.5))
    # Without the distractor competing, the ball would have been chosen (more confident).
    d2 = detect(p, ["red cup", "red ball", "table"], 0, [0], threshold=0.5)
    assert d2.centroid == pytest.approx((54.5, 34.5)) and d2.other_instances == 1


def test_multiple_components_pick_the_most_probability_and_count_others():
    p = maps(k=1)
    blob(p, 0, 5, 5, 8, 0.7)
    blob(p, 0, 40, 60, 8, 0.95)
    blob(p, 0, 5, 60, 8, 0.6)
    d = detect(p, ["cup"], 0, [0], threshold=0.5)
    assert d.centroid == pytest.approx((63.5, 43.5))
    assert d.other_instances == 2
    assert d.confidence == pytest.approx(0.95)


def test_mass_prefers_the_object_covered_whole_over_a_certain_speck():
    """A look-alike lit up in a small, very certain patch and the target covered whole, less certainly."""
    p = maps(k=1)
    blob(p, 0, 5, 5, 5, 0.98)     # look-alike: 25 px at 0.98, mass 24.5
    blob(p, 0, 30, 40, 10, 0.7)   # target: 100 px at 0.7, mass 70
    mass = detect(p, ["red block"], 0, [0], threshold=0.5)
    assert mass.centroid == pytest.approx((44.5, 34.5)) and mass.area == 100
    assert mass.confidence == pytest.approx(0.7)  # the confidence is still the mean probability
    mean = detect(p, ["red block"], 0, [0], threshold=0.5, score="mean")
    assert mean.centroid == pytest.approx((7.0, 7.0)) and mean.confidence == pytest.approx(0.98)
    assert mass.other_instances == mean.other_instances == 1


def test_unknown_instance_score_is_a_clear_error():
    p = maps(k=1)
    blob(p, 0, 5, 5, 5, 0.9)
    with pytest.raises(ValueError, match="instance score"):
        detect(p, ["cup"], 0, [0], threshold=0.5, score="largest")


def test_small_components_are_noise():
    p = maps(k=1)
    blob(p, 0, 5, 5, 2, 0.99)   # 4 px speck, more confident
    blob(p, 0, 30, 30, 10, 0.8)
    d = detect(p, ["cup"], 0, [0], threshold=0.5, min_area=16)
    assert d.area == 100 and d.other_instances == 0
    assert not detect(p, ["cup"], 0, [0], threshold=0.5, min_area=1000).found


def test_ties_with_a_competitor_are_not_the_target():
    p = maps(k=2)
    blob(p, 0, 10, 10, 10, 0.8)
    blob(p, 1, 10, 10, 10, 0.8)
    assert not target_mask(p, 0, [0, 1], 0.5).any()


def test_bad_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="KxHxW"):
        target_mask(np.zeros((H, W)), 0, [], 0.5)


def test_empty_mask_reports_peak():
    probs = np.full((H, W), 0.2, np.float32)
    d = select_component(np.zeros((H, W), bool), probs, "cup")
    assert not d.found and d.peak == pytest.approx(0.2)
