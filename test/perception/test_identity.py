"""CLIP's identity vote on an object's crop (clip_vla.perception.identity): crop geometry and ranking.

The verifier's use of the vote, on rendered simulator frames with the shipped CLIP, is in
test_verify.py; the training term in test/train/test_identity_training.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from clip_vla.perception.identity import IdentityVote, crop_box, identity_probabilities, object_crop, rank_by_identity


def _mask(h=100, w=200, box=(50, 20, 70, 30)):
    m = np.zeros((h, w), bool)
    u0, v0, u1, v1 = box
    m[v0:v1, u0:u1] = True
    return m


def test_the_crop_is_square_and_padded_around_the_mask():
    u0, v0, u1, v1 = crop_box(_mask(), pad=0.25)  # mask 20 wide, 10 high: side 20 * 1.5 = 30
    assert (u1 - u0, v1 - v0) == (30, 30)
    assert (u0 + u1) / 2 == pytest.approx(60) and (v0 + v1) / 2 == pytest.approx(25)


def test_a_tiny_mask_gets_the_minimum_side():
    u0, v0, u1, v1 = crop_box(_mask(box=(100, 50, 102, 52)), pad=0.25, min_side=24)
    assert u1 - u0 == 24 and v1 - v0 == 24


def test_the_crop_is_moved_inside_the_image_not_shrunk():
    u0, v0, u1, v1 = crop_box(_mask(box=(0, 0, 20, 10)), pad=0.25)
    assert (u0, v0) == (0, 0) and (u1, v1) == (30, 30)
    u0, v0, u1, v1 = crop_box(_mask(box=(190, 95, 200, 100)), pad=0.25, min_side=24)
    assert (u1, v1) == (200, 100) and u1 - u0 == 24


def test_a_box_larger_than_the_image_is_clipped_to_its_short_side_and_stays_centred():
    u0, v0, u1, v1 = crop_box(_mask(h=40, w=60, box=(0, 0, 60, 40)), pad=0.5)
    assert (u0, v0, u1, v1) == (10, 0, 50, 40)


def test_jitter_scales_and_shifts_the_box():
    plain = crop_box(_mask(), pad=0.25)
    bigger = crop_box(_mask(), pad=0.25, scale=1.2)
    shifted = crop_box(_mask(), pad=0.25, shift=(0.1, 0.0))
    assert bigger[2] - bigger[0] == 36
    assert shifted[0] == plain[0] + 3


def test_an_empty_mask_has_no_crop():
    empty = np.zeros((10, 10), bool)
    assert crop_box(empty) is None
    assert object_crop(np.zeros((10, 10, 3), np.uint8), empty) is None


def test_the_crop_holds_the_objects_pixels():
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[20:30, 50:70] = (255, 0, 0)
    crop = object_crop(rgb, _mask(), pad=0.25)
    assert crop.shape == (30, 30, 3)
    assert np.count_nonzero(crop[..., 0] == 255) == 200


def test_names_are_ranked_by_similarity_and_the_vote_reports_the_gap():
    torch = pytest.importorskip("torch")
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    image = torch.tensor([0.0, 1.0])
    probs = identity_probabilities(image, texts, ["red cup", "red bar", "green cup"], temperature=0.1)
    assert list(probs) == ["green cup", "red bar", "red cup"]
    assert sum(probs.values()) == pytest.approx(1.0)
    vote = IdentityVote("red cup", probs, float(np.log(probs["green cup"]) - np.log(probs["red cup"])))
    assert vote.best == "green cup" and vote.gap_nats == pytest.approx(10.0, rel=1e-4)
    assert vote.to_dict(top=2)["top"] == {k: round(v, 4) for k, v in list(probs.items())[:2]}


def _component(area: int, confidence: float, u: int):
    from clip_vla.core.types import Detection

    mask = np.zeros((20, 60), bool)
    mask[5:5 + max(1, area // 10), u:u + 10] = True
    return Detection(phrase="yellow cup", found=True, confidence=confidence, mask=mask,
                     centroid=(u + 5.0, 7.0), bbox=(u, 5, u + 9, 5 + area // 10 - 1), area=area, peak=0.9)


def _vote(p_named: float) -> IdentityVote:
    return IdentityVote("yellow cup", {"yellow block": 1.0 - p_named, "yellow cup": p_named}, 0.0)


def test_clip_moves_a_component_it_names_ahead_of_a_larger_look_alike():
    look_alike, cup = _component(100, 0.9, 0), _component(60, 0.9, 30)
    # ln(90) - ln(54) = 0.51 for the look-alike's mass; CLIP: ln(0.9) - ln(0.1) = 2.2 for the cup
    ranked = rank_by_identity([look_alike, cup], [_vote(0.1), _vote(0.9)], weight=1.0)
    assert ranked == [cup, look_alike]


def test_mass_still_counts_clip_is_weighed_not_obeyed():
    large, speck = _component(100, 0.9, 0), _component(10, 0.9, 30)
    # mass ratio 10 (2.3 nats) beats a CLIP preference of 0.6 / 0.4 (0.41 nats) at weight 1, not at weight 10
    assert rank_by_identity([large, speck], [_vote(0.4), _vote(0.6)], weight=1.0) == [large, speck]
    assert rank_by_identity([large, speck], [_vote(0.4), _vote(0.6)], weight=10.0) == [speck, large]


def test_weight_zero_keeps_clipsegs_order_and_a_missing_vote_is_not_a_win():
    a, b = _component(100, 0.9, 0), _component(60, 0.9, 30)
    assert rank_by_identity([a, b], [_vote(0.01), _vote(0.99)], weight=0.0) == [a, b]
    assert rank_by_identity([a, b], [None, _vote(0.99)], weight=5.0) == [a, b]  # None: the worst vote seen
    with pytest.raises(ValueError, match="votes"):
        rank_by_identity([a, b], [_vote(0.5)], weight=1.0)
