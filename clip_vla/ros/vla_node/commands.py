"""Commands on their way to the worker: numbering, quick refusals, a bounded queue, the continuous job.

A command is numbered on arrival (``command_id``, from 1), refused at once when nothing could
run it (``quick_refusal``), else queued; the queue is bounded by ``command_queue_size`` so a
burst is answered ``queue_full`` instead of growing without limit. New commands enter an
*incoming* list and join the queue on the executor's next turn (``flush``), after the camera
messages that arrived with them.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import List, Optional

from clip_vla.core import framesync
from clip_vla.core.records import echo
from clip_vla.core.types import NoAction, Reason
from clip_vla.ros.vla_node.diagnostics import Stats

SHUTDOWN_STATES = ("shuttingdown", "finalized")  # rclpy's lifecycle labels
SHUTTING_DOWN = "node shutting down"  # the message of every command answered at shutdown


@dataclass(frozen=True)
class Command:
    command_id: int
    text: str  # what runs: for "option 2", suggestion 2's command
    received: float  # time.monotonic()
    said: Optional[str] = None  # what was sent, when it differs from ``text`` ("option 2")
    option: Optional[int] = None  # the suggestion number it chose


@dataclass
class Job:
    """A continuous-mode command: re-localised on every new frame until replaced or stopped."""

    command: Command
    last_version: int = -1
    last_run: float = 0.0
    updates: int = 0


def quick_refusal(text: str, state: str, load_error: Optional[str], max_length: int) -> Optional[NoAction]:
    """The answer of a command that needs no inference: the node is not active, or the text is unusable.

    A node shutting down (lifecycle ``shuttingdown``/``finalized``, also while the process exits)
    answers ``stopped``: the command was heard, and nothing will run it.
    """
    if state in SHUTDOWN_STATES:
        return NoAction(Reason.STOPPED, SHUTTING_DOWN, command=echo(text))
    if state != "active":
        if load_error:
            return NoAction(Reason.MODEL_ERROR, f"models are not loaded: {load_error}", command=echo(text))
        return NoAction(Reason.INACTIVE, f"the node is {state}: activate it (lifecycle) first", command=echo(text))
    try:
        framesync.check_command_text(text, max_length)
    except framesync.Refusal as refusal:
        return framesync.refused(refusal, text)
    return None


class CommandQueue:
    """The waiting commands and the continuous job; every method locks ``cond``, which it notifies."""

    def __init__(self, cond: threading.Condition, stats: Stats) -> None:
        self._cond = cond
        self._stats = stats
        self._next_id = 0
        self._incoming: List[Command] = []
        self._queue: List[Command] = []
        self.job: Optional[Job] = None  # read and written under ``cond``

    def receive(self, text: str) -> Command:
        """Number a new command."""
        with self._cond:
            self._next_id += 1
            self._stats.commands_received += 1
            return Command(self._next_id, text, time.monotonic())

    def offer(self, cmd: Command, limit: int) -> bool:
        """Add ``cmd`` to the incoming list; False (counted) when ``limit`` commands already wait."""
        with self._cond:
            if self.waiting() >= limit:
                self._stats.queue_full += 1
                return False
            self._incoming.append(cmd)
            return True

    def flush(self) -> None:
        """Move the incoming commands to the queue and wake the worker."""
        with self._cond:
            self._queue.extend(self._incoming)
            self._incoming.clear()
            self._cond.notify_all()

    def pop(self) -> Optional[Command]:
        """The oldest queued command, if any (call with ``cond`` held)."""
        return self._queue.pop(0) if self._queue else None

    def has_queued(self) -> bool:
        """Whether a command waits in the queue (call with ``cond`` held)."""
        return bool(self._queue)

    def waiting(self) -> int:
        """How many commands wait (incoming and queued)."""
        with self._cond:
            return len(self._incoming) + len(self._queue)

    def drain(self) -> List[Command]:
        """Remove and return every waiting command and end the job (the node is pausing)."""
        with self._cond:
            pending = self._incoming + self._queue
            self._incoming, self._queue = [], []
            self.job = None
            self._cond.notify_all()
            return pending
