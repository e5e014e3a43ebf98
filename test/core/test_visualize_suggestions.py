"""The debug image of a suggestion round: each suggested object boxed and numbered."""
from __future__ import annotations

import numpy as np

from clip_vla.core.visualize import SUGGESTION_COLOR, annotate_suggestions


def suggestion(rank, box, command="pick up the red block"):
    return {"rank": rank, "command": command, "box": list(box), "pixel": [0.0, 0.0], "xyz": None}


def test_each_suggested_object_is_boxed_in_the_suggestion_colour():
    rgb = np.full((240, 320, 3), 90, np.uint8)
    out = annotate_suggestions(rgb, [suggestion(1, (100, 120, 160, 200)), suggestion(2, (200, 60, 260, 110))])
    assert out.shape == rgb.shape and not np.shares_memory(out, rgb)
    assert (rgb == 90).all()  # the input is left alone
    assert tuple(out[200, 130]) == SUGGESTION_COLOR  # bottom edge of box 1
    assert tuple(out[110, 230]) == SUGGESTION_COLOR  # bottom edge of box 2


def test_suggestions_about_one_object_share_one_label():
    rgb = np.zeros((240, 320, 3), np.uint8)
    one = annotate_suggestions(rgb, [suggestion(1, (100, 120, 160, 200))])
    two = annotate_suggestions(rgb, [suggestion(1, (100, 120, 160, 200)), suggestion(3, (100, 120, 160, 200), "push")])
    label_rows = slice(95, 121)
    assert (two[label_rows, 100:140] != one[label_rows, 100:140]).any()  # "1,3" is wider than "1"


def test_an_empty_round_still_draws_a_legend():
    rgb = np.zeros((120, 160, 3), np.uint8)
    assert annotate_suggestions(rgb, []).any()
