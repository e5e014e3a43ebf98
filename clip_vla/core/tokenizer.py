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
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from clip_vla.core.config import WorkspaceConfig

DIMS = ("x", "y", "z", "theta")
THETA_RANGE = (-math.pi, math.pi)
Dim = Union[int, str]
Tokens = Tuple[int, int, int, int, int]

_INT_RE = re.compile(r"[0-9]+")


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
        idx = np.floor((np.clip(v, lo, hi) - lo) / w).astype(np.int64)
        return np.clip(idx, 0, self.bins - 1)

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
        return lo + (idx + 0.5) * ((hi - lo) / self.bins)

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
