"""CLIP's identity vote on an object's crop (clip_vla.perception.identity): crop geometry and ranking.

The verifier's use of the vote, on rendered simulator frames with the shipped CLIP, is in
test_verify.py; the training term in test/train/test_identity_training.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from clip_vla.perception.identity import IdentityVote, crop_box, identity_probabilities, object_crop


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
