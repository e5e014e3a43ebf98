"""The executor's report of one plan step: the ``execution`` topic's JSON, read and written by one class.

A plan is released one step at a time: the node publishes a step's goal and chunk, the
executor (a robot, ``sim_node``, ``examples/minimal_executor.py``) runs it and answers::

    {"command_id": 7, "step": 0, "outcome": "done", "holding": "red cup"}

``outcome`` is ``done`` or ``failed``; ``holding`` is the name of what the hand holds after the
step (the object phrase of the pick, as the plan names it), or null for an empty hand. The
node grounds the next step on a frame stamped after the report. Outside any plan the
executor may say what the hand holds with ``{"holding": "red cup"}`` alone (after a reset,
or when a person took the object): a *hand report*, which only updates what the planner
assumes held. Reading a report never trusts the sender: anything else is a ``ReportError``
(the node logs it and ignores it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

__all__ = ["DONE", "FAILED", "OUTCOMES", "ExecutionReport", "ReportError"]

DONE = "done"
FAILED = "failed"
OUTCOMES = (DONE, FAILED)
MAX_REPORT_CHARS = 4096  # a report is a few fields: anything longer is not one


class ReportError(ValueError):
    """An ``execution`` message that is not a report (not JSON, a missing or mistyped field)."""


@dataclass(frozen=True)
class ExecutionReport:
    """What the executor did with step ``step`` of command ``command_id``."""

    command_id: Optional[int]
    step: Optional[int]
    outcome: Optional[str]
    holding: Optional[str] = None

    @classmethod
    def hand(cls, holding: Optional[str]) -> "ExecutionReport":
        """A hand report: what the hand holds now, about no step."""
        return cls(None, None, None, holding)

    @property
    def about_hand_only(self) -> bool:
        return self.command_id is None

    @property
    def done(self) -> bool:
        return self.outcome == DONE

    def to_dict(self) -> Dict[str, Any]:
        if self.about_hand_only:
            return {"holding": self.holding}
        return {"command_id": self.command_id, "step": self.step, "outcome": self.outcome, "holding": self.holding}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: Any) -> "ExecutionReport":
        """Read one report.

        Raises:
            ReportError: not a JSON object of the four fields with their types (``command_id`` and
                ``step`` non-negative integers, ``outcome`` one of ``OUTCOMES``, ``holding`` a
                string or null), nor a hand report (``holding`` alone).
        """
        if not isinstance(text, str) or len(text) > MAX_REPORT_CHARS:
            raise ReportError(f"an execution report is a JSON string of at most {MAX_REPORT_CHARS} characters")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ReportError(f"an execution report is JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ReportError(f"an execution report is a JSON object, not {type(data).__name__}")
        holding = data.get("holding")
        if holding is not None and not isinstance(holding, str):
            raise ReportError(f"'holding' must be a string or null, got {holding!r}")
        if set(data) == {"holding"}:
            return cls.hand(holding or None)
        for key in ("command_id", "step"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ReportError(f"'{key}' must be a non-negative integer, got {value!r}")
        if data.get("outcome") not in OUTCOMES:
            raise ReportError(f"'outcome' must be one of {list(OUTCOMES)}, got {data.get('outcome')!r}")
        return cls(int(data["command_id"]), int(data["step"]), str(data["outcome"]), holding or None)
