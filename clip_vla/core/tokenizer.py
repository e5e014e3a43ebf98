"""RT-2 style action tokenizer: a goal ``(cmd, x, y, z, theta)`` as five integer tokens.

Token layout (always five integers, in this order)::

    index  name   range                      meaning
    0      cmd    [0, num_commands or bins)  the skill's token (vocabulary.yaml), passed through
    1      x      [0, bins)                  uniform bin of x over workspace.x   (metres, base frame)
    2      y      [0, bins)                  uniform bin of y over workspace.y   (metres, base frame)
    3      z      [0, bins)                  uniform bin of z over workspace.z   (metres, base frame)
    4      theta  [0, bins)                  uniform bin of yaw over [-pi, pi)   (radians, wraps)

Bins: with ``w = (hi - lo) / bins``, bin ``i`` covers ``[lo + i*w, lo + (i+1)*w)``; the upper
bound ``hi`` itself maps to ``bins - 1``. x, y, z outside the bounds are clamped to the nearest
bin and flagged (``EncodedAction.clamped``); theta never clamps, it wraps, so ``pi`` and ``-pi``
share bin 0. Decoding returns bin centres, so a round trip is off by at most half a bin
(for theta: in angular distance).

Text form (what a language model would emit): the five tokens as base-10 integers separated by
single spaces, cmd first, e.g. ``"1 128 64 30 200"``. ``from_text`` accepts any whitespace between
them but nothing else (no signs, decimals or extra fields).

Action chunks (``clip_vla.core.chunks``): the end-effector waypoints that execute one step,
tokenized with the same bins. A chunk is the step's cmd token, then six tokens per waypoint::

    cmd | x y z theta gripper terminal | x y z theta gripper terminal | ...

    x, y, z, theta  as above (a waypoint outside the workspace is flagged, never silently clamped)
    gripper         uniform bin of the gripper command over [0, 1] (0 open, 1 closed): bin 0 / bins-1
    terminal        1 on the last waypoint of the chunk, 0 on every other: where the step ends

The text form is exactly that: base-10 integers, single spaces, `` | `` between the cmd and each
waypoint, e.g. ``"1 | 128 64 200 128 0 0 | 128 64 180 128 255 1"``. ``chunk_from_text`` accepts
any whitespace around the bars. Decoding returns bin centres: every waypoint within half a bin.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from clip_vla.core.config import WorkspaceConfig

DIMS = ("x", "y", "z", "theta")
THETA_RANGE = (-math.pi, math.pi)
GRIPPER_RANGE = (0.0, 1.0)
GRIPPER_OPEN = 0.0
GRIPPER_CLOSED = 1.0
WAYPOINT_FIELDS = ("x", "y", "z", "theta", "gripper", "terminal")  # the six tokens of a waypoint
CHUNK_SEPARATOR = "|"
Dim = Union[int, str]
Tokens = Tuple[int, int, int, int, int]

_INT_RE = re.compile(r"[0-9]+")


def _bin_index(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Uniform bin of each (finite, already clamped) value over [lo, hi]; ``hi`` maps to the last bin."""
    idx = np.floor((values - lo) / ((hi - lo) / bins)).astype(np.int64)
    return np.clip(idx, 0, bins - 1)


def _bin_centre(indices: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Centre of each bin: what decoding returns, at most half a bin from the encoded value."""
    return lo + (indices + 0.5) * ((hi - lo) / bins)


@dataclass(frozen=True)
class Action:
    """A goal in the base frame: skill token, position (metres) and yaw (radians)."""

    cmd: int
    x: float
    y: float
    z: float
    theta: float


@dataclass(frozen=True)
class EncodedAction:
    """Tokens of an action, and which of (x, y, z, theta) had to be clamped into the bounds."""

    tokens: Tokens
    clamped: Tuple[bool, bool, bool, bool]  # theta is always False: it wraps

    @property
    def out_of_range(self) -> bool:
        return any(self.clamped)

    @property
    def text(self) -> str:
        return " ".join(str(t) for t in self.tokens)


@dataclass(frozen=True)
class Waypoint:
    """One end-effector pose of a chunk: TCP position (metres, base frame), yaw, gripper command.

    ``gripper`` is 0 (open) .. 1 (closed); ``label`` says what the pose is for ("grasp",
    "lift", ...) and is not tokenized.
    """

    x: float
    y: float
    z: float
    theta: float
    gripper: float
    label: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"x": round(self.x, 4), "y": round(self.y, 4), "z": round(self.z, 4),
                "theta": round(self.theta, 4), "gripper": round(self.gripper, 4), "label": self.label}


WaypointTokens = Tuple[int, int, int, int, int, int]


@dataclass(frozen=True)
class EncodedChunk:
    """Tokens of a chunk: the cmd token and six tokens per waypoint; which waypoints left the workspace."""

    cmd: int
    waypoints: Tuple[WaypointTokens, ...]
    outside: Tuple[int, ...]  # indices of waypoints whose x/y/z lie outside the workspace

    @property
    def tokens(self) -> Tuple[int, ...]:
        """The flat token sequence: cmd, then x y z theta gripper terminal per waypoint."""
        return (self.cmd,) + tuple(t for w in self.waypoints for t in w)

    @property
    def text(self) -> str:
        return f" {CHUNK_SEPARATOR} ".join([str(self.cmd)] + [" ".join(str(t) for t in w) for w in self.waypoints])


class ActionTokenizer:
    """Uniform discretisation of (x, y, z) over the workspace and theta over [-pi, pi)."""

    def __init__(
        self,
        bounds: Sequence[Sequence[float]] = ((0.0, 1.0), (-0.5, 0.5), (-0.1, 0.6)),
        bins: int = 256,
        num_commands: Optional[int] = None,
    ) -> None:
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        if num_commands is not None and (
            isinstance(num_commands, bool) or not isinstance(num_commands, (int, np.integer)) or num_commands < 1
        ):
            raise ValueError(f"num_commands must be a positive integer or None, got {num_commands!r}")
        if len(bounds) != 3:
            raise ValueError(f"bounds must be ((xmin, xmax), (ymin, ymax), (zmin, zmax)), got {bounds!r}")
        parsed = []
        for name, pair in zip("xyz", bounds):
            if len(pair) != 2:
                raise ValueError(f"bounds for {name} must be (min, max), got {pair!r}")
            lo, hi = float(pair[0]), float(pair[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds for {name} must be finite with min < max, got {pair!r}")
            parsed.append((lo, hi))
        self.bins = int(bins)
        self.num_commands = None if num_commands is None else int(num_commands)
        self.bounds: Tuple[Tuple[float, float], ...] = tuple(parsed) + (THETA_RANGE,)

    @classmethod
    def from_config(cls, workspace: WorkspaceConfig, num_commands: Optional[int] = None) -> "ActionTokenizer":
        """The tokenizer whose range is the workspace that goals must lie in anyway."""
        workspace.validate()
        return cls(workspace.bounds(), bins=workspace.bins, num_commands=num_commands)

    def __repr__(self) -> str:
        return f"ActionTokenizer(bounds={self.bounds[:3]}, bins={self.bins}, num_commands={self.num_commands})"

    # ---- per-dimension helpers (vectorised)
    @staticmethod
    def _dim_index(dim: Dim) -> int:
        if isinstance(dim, str):
            if dim not in DIMS:
                raise ValueError(f"unknown dimension '{dim}' (known: {DIMS})")
            return DIMS.index(dim)
        i = operator.index(dim)
        if not 0 <= i < 4:
            raise ValueError(f"dimension index must be 0..3 (x, y, z, theta), got {dim}")
        return i

    @property
    def command_count(self) -> int:
        """How many cmd tokens are valid: ``num_commands`` when given, else ``bins``."""
        return self.num_commands if self.num_commands is not None else self.bins

    def bin_width(self, dim: Dim) -> float:
        """Width of one bin of ``dim`` (metres for x/y/z, radians for theta)."""
        lo, hi = self.bounds[self._dim_index(dim)]
        return (hi - lo) / self.bins

    def clamp_mask(self, values: Any, dim: Dim) -> np.ndarray:
        """Which values lie outside the bounds of ``dim`` (always False for theta)."""
        i = self._dim_index(dim)
        v = self._finite(values, DIMS[i])
        if i == 3:
            return np.zeros(v.shape, dtype=bool)
        lo, hi = self.bounds[i]
        return (v < lo) | (v > hi)

    def encode_dim(self, values: Any, dim: Dim) -> np.ndarray:
        """Bin index (int64, same shape) of each value of ``dim``; x/y/z clamp, theta wraps."""
        i = self._dim_index(dim)
        v = self._finite(values, DIMS[i])
        lo, hi = self.bounds[i]
        w = (hi - lo) / self.bins
        if i == 3:
            wrapped = np.mod(v - lo, hi - lo)  # [0, 2*pi): theta = pi lands on 0 like -pi
            return np.mod(np.floor(wrapped / w).astype(np.int64), self.bins)
        return _bin_index(np.clip(v, lo, hi), lo, hi, self.bins)

    def decode_dim(self, indices: Any, dim: Dim) -> np.ndarray:
        """Bin centre (float64, same shape) of each index of ``dim``."""
        i = self._dim_index(dim)
        idx = np.asarray(indices)
        integral = np.issubdtype(idx.dtype, np.integer) or (
            np.issubdtype(idx.dtype, np.floating) and bool(np.all(np.isfinite(idx) & (idx == np.round(idx))))
        )
        if not integral:
            raise ValueError(f"{DIMS[i]} tokens must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.bins):
            bad = idx[(idx < 0) | (idx >= self.bins)].reshape(-1)[0]
            raise ValueError(f"{DIMS[i]} token {int(bad)} is outside [0, {self.bins})")
        lo, hi = self.bounds[i]
        return _bin_centre(idx, lo, hi, self.bins)

    @staticmethod
    def _finite(values: Any, name: str) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite, got {values!r} (NaN or inf cannot be tokenised)")
        return v

    # ---- whole actions
    def _check_cmd(self, cmd: Any) -> int:
        if isinstance(cmd, (bool, np.bool_)):
            raise ValueError(f"cmd must be an integer token, got {cmd!r}")
        try:
            c = operator.index(cmd)
        except TypeError:
            raise ValueError(f"cmd must be an integer token, got {cmd!r}") from None
        if not 0 <= c < self.command_count:
            raise ValueError(f"cmd token {c} is outside [0, {self.command_count})")
        return int(c)

    def encode(self, action: Action) -> EncodedAction:
        """Tokens of ``action``; x/y/z outside the bounds are clamped and flagged, theta wraps."""
        cmd = self._check_cmd(action.cmd)
        values = (action.x, action.y, action.z, action.theta)
        for name, value in zip(DIMS, values):
            try:
                ok = math.isfinite(float(value))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {value!r}") from None
            if not ok:
                raise ValueError(f"{name} must be finite, got {value} (NaN or inf cannot be tokenised)")
        tokens = tuple(int(self.encode_dim(v, d)) for d, v in enumerate(values))
        clamped = tuple(bool(self.clamp_mask(v, d)) for d, v in enumerate(values))
        return EncodedAction(tokens=(cmd,) + tokens, clamped=clamped)  # type: ignore[arg-type]

    def decode(self, tokens: Sequence[int]) -> Action:
        """The action at the bin centres of ``tokens`` (cmd, x, y, z, theta)."""
        t = self._check_tokens(tokens)
        x, y, z, theta = (float(self.decode_dim(t[d + 1], d)) for d in range(4))
        return Action(cmd=t[0], x=x, y=y, z=z, theta=theta)

    def _check_tokens(self, tokens: Any) -> Tokens:
        if isinstance(tokens, EncodedAction):
            tokens = tokens.tokens
        seq = list(tokens)
        if len(seq) != 5:
            raise ValueError(f"an action has 5 tokens (cmd x y z theta), got {len(seq)}: {seq!r}")
        out = [self._check_cmd(seq[0])]
        for name, tok in zip(DIMS, seq[1:]):
            if isinstance(tok, (bool, np.bool_)):
                raise ValueError(f"{name} token must be an integer, got {tok!r}")
            try:
                i = operator.index(tok)
            except TypeError:
                raise ValueError(f"{name} token must be an integer, got {tok!r}") from None
            if not 0 <= i < self.bins:
                raise ValueError(f"{name} token {i} is outside [0, {self.bins})")
            out.append(int(i))
        return tuple(out)  # type: ignore[return-value]

    # ---- text form
    def to_text(self, tokens: Union[Sequence[int], EncodedAction]) -> str:
        """``"cmd x y z theta"`` as space-separated integers, after validating the tokens."""
        return " ".join(str(t) for t in self._check_tokens(tokens))

    def from_text(self, text: str) -> Tokens:
        """Parse the text form back into five validated tokens; ValueError says what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"action text must be a string, got {type(text).__name__}")
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(f"action text needs 5 integers 'cmd x y z theta', got {len(parts)} in {text!r}")
        for name, part in zip(("cmd",) + DIMS, parts):
            if not _INT_RE.fullmatch(part):
                raise ValueError(f"{name} token {part!r} in {text!r} is not a non-negative integer")
        return self._check_tokens([int(p) for p in parts])

    # ---- action chunks (one step's waypoints; see the module docstring)
    def encode_chunk(self, cmd: int, waypoints: Sequence[Waypoint]) -> EncodedChunk:
        """Tokens of a chunk; waypoints outside the workspace are listed in ``outside``, not hidden.

        Raises:
            ValueError: no waypoints, a bad cmd token, a non-finite value or a gripper outside [0, 1].
        """
        if not waypoints:
            raise ValueError("a chunk needs at least one waypoint")
        encoded: List[WaypointTokens] = []
        outside: List[int] = []
        last = len(waypoints) - 1
        for i, wp in enumerate(waypoints):
            pose = self.encode(Action(cmd, wp.x, wp.y, wp.z, wp.theta))
            gripper_and_terminal = (self._gripper_token(wp.gripper), int(i == last))
            encoded.append(pose.tokens[1:] + gripper_and_terminal)  # type: ignore[arg-type]
            if pose.out_of_range:
                outside.append(i)
        return EncodedChunk(cmd=self._check_cmd(cmd), waypoints=tuple(encoded), outside=tuple(outside))

    def decode_chunk(self, tokens: Union[Sequence[int], EncodedChunk]) -> Tuple[int, List[Waypoint]]:
        """(cmd, waypoints at the bin centres) of a chunk's flat token sequence.

        Raises:
            ValueError: the length is not 1 + 6k (k >= 1), a token is out of range, or the
                terminal flag is not set on the last waypoint only.
        """
        seq = list(tokens.tokens if isinstance(tokens, EncodedChunk) else tokens)
        width = len(WAYPOINT_FIELDS)
        if len(seq) < 1 + width or (len(seq) - 1) % width:
            raise ValueError(f"a chunk has 1 + {width}k tokens (cmd, then x y z theta gripper terminal "
                             f"per waypoint), got {len(seq)}")
        cmd = self._check_cmd(seq[0])
        count = (len(seq) - 1) // width
        waypoints: List[Waypoint] = []
        for i in range(count):
            x, y, z, theta, gripper, terminal = seq[1 + i * width: 1 + (i + 1) * width]
            if terminal != int(i == count - 1):
                raise ValueError(f"waypoint {i}: terminal flag must be {int(i == count - 1)} "
                                 f"(1 on the last waypoint only), got {terminal!r}")
            pose = self.decode((cmd, x, y, z, theta))
            waypoints.append(Waypoint(pose.x, pose.y, pose.z, pose.theta, self._gripper_value(gripper)))
        return cmd, waypoints

    def chunk_to_text(self, tokens: Union[Sequence[int], EncodedChunk]) -> str:
        """The chunk's text form ``"cmd | x y z theta gripper terminal | ..."``, after validation."""
        cmd, waypoints = self.decode_chunk(tokens)
        seq = list(tokens.tokens if isinstance(tokens, EncodedChunk) else tokens)
        width = len(WAYPOINT_FIELDS)
        groups = [str(cmd)] + [" ".join(str(int(t)) for t in seq[1 + i * width: 1 + (i + 1) * width])
                               for i in range(len(waypoints))]
        return f" {CHUNK_SEPARATOR} ".join(groups)

    def chunk_from_text(self, text: str) -> Tuple[int, ...]:
        """Parse the text form back into the flat, validated token sequence.

        Raises:
            ValueError: not the documented form (bars, six integers per waypoint) or invalid tokens.
        """
        if not isinstance(text, str):
            raise ValueError(f"chunk text must be a string, got {type(text).__name__}")
        groups = [g.split() for g in text.split(CHUNK_SEPARATOR)]
        if len(groups) < 2 or len(groups[0]) != 1:
            raise ValueError(f"chunk text must be 'cmd | x y z theta gripper terminal | ...', got {text!r}")
        for i, group in enumerate(groups[1:]):
            if len(group) != len(WAYPOINT_FIELDS):
                raise ValueError(f"waypoint {i} of {text!r} has {len(group)} tokens, expected "
                                 f"{len(WAYPOINT_FIELDS)} ({' '.join(WAYPOINT_FIELDS)})")
        flat = [t for g in groups for t in g]
        for part in flat:
            if not _INT_RE.fullmatch(part):
                raise ValueError(f"token {part!r} in {text!r} is not a non-negative integer")
        values = tuple(int(p) for p in flat)
        self.decode_chunk(values)
        return values

    def _gripper_token(self, gripper: float) -> int:
        value = float(gripper)
        if not (math.isfinite(value) and GRIPPER_RANGE[0] <= value <= GRIPPER_RANGE[1]):
            raise ValueError(f"gripper must be in [0, 1] (0 open, 1 closed), got {gripper!r}")
        return int(_bin_index(np.asarray(value), *GRIPPER_RANGE, self.bins))

    def _gripper_value(self, token: Any) -> float:
        if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)) \
                or not 0 <= token < self.bins:
            raise ValueError(f"gripper token must be an integer in [0, {self.bins}), got {token!r}")
        return float(_bin_centre(np.asarray(int(token)), *GRIPPER_RANGE, self.bins))
