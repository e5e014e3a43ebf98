"""The RT-2 style action tokenizer: bins, clamping, wrap-around, text form, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from clip_vla.core.config import WorkspaceConfig
from clip_vla.core.tokenizer import Action, ActionTokenizer, EncodedAction

BOUNDS = ((0.0, 1.0), (-0.5, 0.5), (-0.1, 0.6))


def angular_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.mod(np.asarray(a) - np.asarray(b) + np.pi, 2 * np.pi) - np.pi
    return np.abs(d)


@pytest.fixture
def tok() -> ActionTokenizer:
    return ActionTokenizer(BOUNDS, bins=256)


def test_from_config_matches_workspace():
    ws = WorkspaceConfig(x=[0.1, 0.9], y=[-0.3, 0.3], z=[0.0, 0.5], bins=128)
    t = ActionTokenizer.from_config(ws)
    assert t.bins == 128
    assert t.bounds[:3] == ((0.1, 0.9), (-0.3, 0.3), (0.0, 0.5))
    assert t.bin_width("x") == pytest.approx(0.8 / 128)
    assert t.bin_width(3) == pytest.approx(2 * math.pi / 128)


@pytest.mark.parametrize("bins", [2, 64, 256, 1000])
def test_round_trip_within_half_bin(bins):
    t = ActionTokenizer(BOUNDS, bins=bins)
    rng = np.random.default_rng(1234)
    n = 20000
    for d, (lo, hi) in enumerate(BOUNDS):
        values = rng.uniform(lo, hi, n)
        values[:3] = [lo, hi, (lo + hi) / 2]
        back = t.decode_dim(t.encode_dim(values, d), d)
        assert np.max(np.abs(back - values)) <= t.bin_width(d) / 2 + 1e-12
        assert np.all((back > lo) & (back < hi))  # bin centres lie strictly inside
    theta = rng.uniform(-4 * np.pi, 4 * np.pi, n)
    back = t.decode_dim(t.encode_dim(theta, "theta"), "theta")
    assert np.max(angular_distance(back, theta)) <= t.bin_width("theta") / 2 + 1e-12
    assert np.all((back >= -np.pi) & (back < np.pi))


def test_round_trip_whole_actions(tok):
    rng = np.random.default_rng(7)
    for _ in range(500):
        a = Action(
            cmd=int(rng.integers(0, 256)),
            x=float(rng.uniform(0.0, 1.0)),
            y=float(rng.uniform(-0.5, 0.5)),
            z=float(rng.uniform(-0.1, 0.6)),
            theta=float(rng.uniform(-np.pi, np.pi)),
        )
        enc = tok.encode(a)
        assert not enc.out_of_range
        assert all(0 <= t < 256 for t in enc.tokens)
        b = tok.decode(enc.tokens)
        assert b.cmd == a.cmd
        for dim, (va, vb) in enumerate(zip((a.x, a.y, a.z), (b.x, b.y, b.z))):
            assert abs(va - vb) <= tok.bin_width(dim) / 2 + 1e-12
        assert angular_distance(a.theta, b.theta) <= tok.bin_width("theta") / 2 + 1e-12


def test_bin_edges_by_hand():
    t = ActionTokenizer(((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)), bins=4)
    # bin i covers [i/4, (i+1)/4); the upper bound itself is the last bin
    assert t.encode_dim([0.0, 0.2499, 0.25, 0.5, 0.74, 0.75, 0.999, 1.0], "x").tolist() == [0, 0, 1, 2, 2, 3, 3, 3]
    assert t.decode_dim([0, 1, 2, 3], "x").tolist() == pytest.approx([0.125, 0.375, 0.625, 0.875])


def test_clamping_flags_and_values(tok):
    inside = tok.encode(Action(0, 0.0, 0.5, 0.6, 0.0))  # exactly on the bounds: not clamped
    assert inside.clamped == (False, False, False, False)
    assert not inside.out_of_range
    assert inside.tokens[1:4] == (0, 255, 255)

    out = tok.encode(Action(3, -0.2, 0.9, 0.2, 0.0))
    assert out.clamped == (True, True, False, False)
    assert out.out_of_range
    assert out.tokens[:4] == (3, 0, 255, tok.encode(Action(3, 0.5, 0.0, 0.2, 0.0)).tokens[3])

    far = tok.encode(Action(1, 5.0, -9.0, -3.0, 100.0))
    assert far.clamped == (True, True, True, False)  # theta never clamps
    assert far.tokens[1:4] == (255, 0, 0)
    decoded = tok.decode(far.tokens)
    assert decoded.x == pytest.approx(1.0 - tok.bin_width("x") / 2)

    mask = tok.clamp_mask([-0.1, 0.0, 1.0, 1.1], "x")
    assert mask.tolist() == [True, False, False, True]
    assert not tok.clamp_mask([10.0, -10.0], "theta").any()


def test_theta_wraps(tok):
    code = lambda th: int(tok.encode_dim(th, "theta"))  # noqa: E731
    assert code(-math.pi) == 0
    assert code(math.pi) == 0  # same angle as -pi
    assert code(3 * math.pi) == 0
    assert code(-3 * math.pi) == 0
    assert code(0.0) == 128
    assert code(-3.5) == code(-3.5 + 2 * math.pi)
    assert code(3.5) == code(3.5 - 2 * math.pi)
    assert code(math.pi - 1e-12) in (0, 255)  # floating point at the seam: either neighbour of the seam
    back = tok.decode_dim(code(-3.5), "theta")
    assert angular_distance(back, -3.5) <= tok.bin_width("theta") / 2 + 1e-12
    assert not tok.encode(Action(0, 0.5, 0.0, 0.2, 3.5)).out_of_range


@pytest.mark.parametrize("dim", ["x", "y", "z", "theta"])
def test_bins_are_monotonic(tok, dim):
    lo, hi = tok.bounds[["x", "y", "z", "theta"].index(dim)]
    if dim == "theta":
        sweep = np.linspace(-np.pi, np.pi, 100001)[:-1]
    else:
        sweep = np.linspace(lo - 0.3, hi + 0.3, 100001)
    codes = tok.encode_dim(sweep, dim)
    assert np.all(np.diff(codes) >= 0)
    assert codes[0] == 0 and codes[-1] == tok.bins - 1
    assert set(np.unique(codes).tolist()) == set(range(tok.bins))  # every bin is used


@pytest.mark.parametrize("bins", [64, 1000])
def test_bins_configurable(bins):
    t = ActionTokenizer(BOUNDS, bins=bins)
    enc = t.encode(Action(0, 1.0, 0.5, 0.6, math.pi - math.pi / bins))  # middle of the last theta bin
    assert enc.tokens[1:] == (bins - 1, bins - 1, bins - 1, bins - 1)
    assert t.bin_width("y") == pytest.approx(1.0 / bins)
    with pytest.raises(ValueError):
        t.decode((0, bins, 0, 0, 0))


def test_text_round_trip(tok):
    enc = tok.encode(Action(1, 0.5, 0.0, 0.2, 1.0))
    text = tok.to_text(enc.tokens)
    assert text == " ".join(str(t) for t in enc.tokens)
    assert tok.to_text(enc) == text
    assert tok.from_text(text) == enc.tokens
    assert tok.from_text("  1\t128 64\n30 200 ") == (1, 128, 64, 30, 200)
    assert tok.to_text((1, 128, 64, 30, 200)) == "1 128 64 30 200"


@pytest.mark.parametrize(
    "text",
    ["", "1 2 3 4", "1 2 3 4 5 6", "1 2 x 4 5", "1 2.0 3 4 5", "1 -2 3 4 5", "1 +2 3 4 5", "1 2 3 4 256",
     "300 1 1 1 1"],
)
def test_malformed_text_errors(tok, text):
    with pytest.raises(ValueError):
        tok.from_text(text)


def test_to_text_validates(tok):
    with pytest.raises(ValueError):
        tok.to_text((1, 2, 3, 4))
    with pytest.raises(ValueError):
        tok.to_text((1, 2, 3, 4, 999))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("field", ["x", "y", "z", "theta"])
def test_non_finite_errors(tok, bad, field):
    values = dict(cmd=0, x=0.5, y=0.0, z=0.2, theta=0.0)
    values[field] = bad
    with pytest.raises(ValueError, match=field):
        tok.encode(Action(**values))
    with pytest.raises(ValueError):
        tok.encode_dim([0.0, bad], field)


def test_cmd_range(tok):
    with pytest.raises(ValueError, match="cmd"):
        tok.encode(Action(-1, 0.5, 0.0, 0.2, 0.0))
    with pytest.raises(ValueError, match="cmd"):
        tok.encode(Action(256, 0.5, 0.0, 0.2, 0.0))
    with pytest.raises(ValueError, match="cmd"):
        tok.encode(Action(1.5, 0.5, 0.0, 0.2, 0.0))  # type: ignore[arg-type]
    assert tok.encode(Action(255, 0.5, 0.0, 0.2, 0.0)).tokens[0] == 255
    small = ActionTokenizer(BOUNDS, bins=256, num_commands=4)
    assert small.encode(Action(3, 0.5, 0.0, 0.2, 0.0)).tokens[0] == 3
    with pytest.raises(ValueError, match="cmd"):
        small.encode(Action(4, 0.5, 0.0, 0.2, 0.0))
    with pytest.raises(ValueError):
        small.decode((4, 0, 0, 0, 0))
    with pytest.raises(ValueError):
        small.from_text("4 0 0 0 0")


def test_decode_rejects_bad_tokens(tok):
    for tokens in [(0, -1, 0, 0, 0), (0, 0, 256, 0, 0), (0, 0, 0, 0), (0, 0.5, 0, 0, 0)]:
        with pytest.raises(ValueError):
            tok.decode(tokens)
    with pytest.raises(ValueError):
        tok.decode_dim(np.array([0, 256]), "x")
    with pytest.raises(ValueError):
        tok.decode_dim(np.array([0.5]), "x")


def test_invalid_construction():
    with pytest.raises(ValueError):
        ActionTokenizer(BOUNDS, bins=1)
    with pytest.raises(ValueError):
        ActionTokenizer(((1.0, 0.0), (0, 1), (0, 1)))
    with pytest.raises(ValueError):
        ActionTokenizer(((0, 1), (0, 1)))
    with pytest.raises(ValueError):
        ActionTokenizer(BOUNDS).bin_width("w")


def test_encoded_action_is_frozen(tok):
    enc = tok.encode(Action(0, 0.5, 0.0, 0.2, 0.0))
    assert isinstance(enc, EncodedAction)
    with pytest.raises(Exception):
        enc.tokens = (0, 0, 0, 0, 0)  # type: ignore[misc]


# --------------------------------------------------------------------------- action chunks
from clip_vla.core.tokenizer import GRIPPER_CLOSED, GRIPPER_OPEN, Waypoint  # noqa: E402


def _random_waypoints(rng: np.random.Generator, n: int):
    return [Waypoint(float(rng.uniform(*BOUNDS[0])), float(rng.uniform(*BOUNDS[1])), float(rng.uniform(*BOUNDS[2])),
                     float(rng.uniform(-math.pi, math.pi)), float(rng.uniform(0.0, 1.0))) for _ in range(n)]


@pytest.mark.parametrize("bins", [16, 256])
def test_chunk_round_trip_within_half_a_bin(bins):
    t = ActionTokenizer(BOUNDS, bins=bins)
    rng = np.random.default_rng(7)
    for length in (1, 2, 4, 9):
        for _ in range(50):
            waypoints = _random_waypoints(rng, length)
            encoded = t.encode_chunk(3, waypoints)
            assert len(encoded.tokens) == 1 + 6 * length and encoded.outside == ()
            cmd, decoded = t.decode_chunk(encoded.tokens)
            assert cmd == 3 and len(decoded) == length
            for w, d in zip(waypoints, decoded):
                for dim, (a, b) in enumerate(((w.x, d.x), (w.y, d.y), (w.z, d.z))):
                    assert abs(a - b) <= t.bin_width(dim) / 2 + 1e-12
                assert angular_distance(w.theta, d.theta) <= t.bin_width("theta") / 2 + 1e-12
                assert abs(w.gripper - d.gripper) <= 1.0 / bins / 2 + 1e-12


def test_waypoint_poses_share_the_goal_binning(tok):
    w = Waypoint(0.31, -0.12, 0.07, 1.0, GRIPPER_OPEN)
    (tokens,) = tok.encode_chunk(2, [w]).waypoints
    assert tokens[:4] == tok.encode(Action(2, w.x, w.y, w.z, w.theta)).tokens[1:]


def test_gripper_token_open_and_closed(tok):
    chunk = tok.encode_chunk(1, [Waypoint(0.5, 0.0, 0.1, 0.0, GRIPPER_OPEN),
                                 Waypoint(0.5, 0.0, 0.1, 0.0, GRIPPER_CLOSED),
                                 Waypoint(0.5, 0.0, 0.1, 0.0, 0.5)])
    assert [w[4] for w in chunk.waypoints] == [0, 255, 128]
    _, decoded = tok.decode_chunk(chunk)
    assert decoded[0].gripper < 0.01 and decoded[1].gripper > 0.99
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="gripper"):
            tok.encode_chunk(1, [Waypoint(0.5, 0.0, 0.1, 0.0, bad)])


def test_terminal_flag_is_set_on_the_last_waypoint_only(tok):
    chunk = tok.encode_chunk(1, _random_waypoints(np.random.default_rng(3), 4))
    assert [w[5] for w in chunk.waypoints] == [0, 0, 0, 1]
    tokens = list(chunk.tokens)
    tokens[6] = 1  # the first waypoint claims to end the chunk
    with pytest.raises(ValueError, match="waypoint 0: terminal flag must be 0"):
        tok.decode_chunk(tokens)
    tokens[6], tokens[-1] = 0, 0  # and now nothing ends it
    with pytest.raises(ValueError, match="waypoint 3: terminal flag must be 1"):
        tok.decode_chunk(tokens)


def test_waypoints_outside_the_workspace_are_flagged_not_hidden(tok):
    inside = Waypoint(0.5, 0.0, 0.1, 0.0, GRIPPER_OPEN)
    chunk = tok.encode_chunk(1, [inside, Waypoint(0.5, 0.0, 0.75, 0.0, GRIPPER_OPEN),
                                 Waypoint(1.2, 0.0, 0.1, 0.0, GRIPPER_OPEN), inside])
    assert chunk.outside == (1, 2)


def test_chunk_text_form_round_trip(tok):
    chunk = tok.encode_chunk(1, [Waypoint(0.5, 0.0, 0.1, 0.0, GRIPPER_OPEN),
                                 Waypoint(0.5, 0.0, 0.02, 0.0, GRIPPER_CLOSED)])
    text = chunk.text
    assert text == "1 | 128 128 73 128 0 0 | 128 128 43 128 255 1"
    assert tok.chunk_to_text(chunk.tokens) == text
    assert tok.chunk_from_text(text) == chunk.tokens
    assert tok.chunk_from_text("1|128 128 73 128 0 0|\n128 128 43 128 255 1") == chunk.tokens


@pytest.mark.parametrize("text,message", [
    ("1 128 128 72 128 0 1", "cmd \\| x y z"),
    ("1 | 128 128 72 128 0", "has 5 tokens"),
    ("1 | 128 128 72 128 0 -1", "not a non-negative integer"),
    ("1 | 128 128 72 128 256 1", "gripper token"),
    ("1 | 128 128 72 128 0 0", "terminal flag must be 1"),
    ("99 | 128 128 72 128 0 1", "cmd token 99"),
])
def test_chunk_text_errors(text, message):
    t = ActionTokenizer(BOUNDS, bins=256, num_commands=8)
    with pytest.raises(ValueError, match=message):
        t.chunk_from_text(text)


def test_chunk_needs_a_waypoint_and_the_right_length(tok):
    with pytest.raises(ValueError, match="at least one waypoint"):
        tok.encode_chunk(1, [])
    with pytest.raises(ValueError, match="1 \\+ 6k tokens"):
        tok.decode_chunk([1, 2, 3])
