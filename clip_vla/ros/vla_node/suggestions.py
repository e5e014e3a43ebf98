"""Suggestion rounds in the node: ``~/suggest``, ``~/suggestions`` and "option N" commands.

A round runs on the inference worker (the only thread that runs the models), on the freshest
frame, like a command::

    ~/suggest (Trigger) ──► request() ──► worker: run() ──► ~/suggestions (JSON, transient-local)
          ▲                                   │              ~/markers (numbers), ~/debug_image
          └──── the round's JSON, or why not ◄┘ (a future; suggest_timeout)
    suggest_rate > 0 ─► the worker also runs a round on each newer frame, at most that often

    command "2" | "option 2" | "do option 2" ──► resolve() ──► suggestion 2's command of the latest list
                                                         └──► unknown_option (no list, or no number 2)

The service callback waits on a future, not on the models: it sits in its own callback group,
so on a multi-threaded executor the camera keeps flowing while the worker runs the round.
"""
from __future__ import annotations

import concurrent.futures
import json
import re
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from clip_vla.core.framesync import Refusal
from clip_vla.core.records import echo
from clip_vla.core.types import NoAction, Reason
from clip_vla.ros import conversions as conv
from clip_vla.ros import qos
from clip_vla.ros.vla_node.commands import Command
from clip_vla.ros.vla_node.settings import NodeSettings

SUGGESTION_ROUND = object()  # the worker's task marker for a round
OPTION = re.compile(r"^\s*(?:(?:do\s+)?option\s+)?#?(\d{1,6})\s*[.!]?\s*$", re.IGNORECASE)
MARKER_NS = "clip_vla_suggestions"


def option_number(text: str) -> Optional[int]:
    """N of "N", "option N" or "do option N" (any case), else None: the text is a command of its own."""
    match = OPTION.match(text)
    return int(match.group(1)) if match else None


class RoundFailed(Exception):
    """A round that produced no list: ``reason`` is a stable ~/status reason string."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def record(self) -> Dict[str, Any]:
        return {"status": self.reason, "message": self.message}


class SuggestionRounds:
    """Requests for rounds, the periodic schedule, the latest list and its publishers (under ``cond``)."""

    def __init__(self, node: Any, cond: threading.Condition, outputs: Any) -> None:
        self._cond = cond
        self._outputs = outputs
        self._requests: List[concurrent.futures.Future] = []
        self._latest: Optional[Dict[str, Any]] = None
        self._rounds = 0
        self._last_run = 0.0
        self._last_version: Optional[int] = None
        self._marker_count = 0
        self._publisher = node.create_publisher(String, "~/suggestions", qos.latched_qos())

    # ---- what the executor side asks
    def request(self) -> concurrent.futures.Future:
        """Ask the worker for a round; the future gets the round's record or a ``RoundFailed``."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            self._requests.append(future)
            self._cond.notify_all()
        return future

    def latest(self) -> Optional[Dict[str, Any]]:
        with self._cond:
            return self._latest

    def resolve(self, cmd: Command) -> Tuple[Command, Optional[NoAction]]:
        """``cmd`` with an option number replaced by its suggestion's command, or the refusal of it.

        A command that is not an option number comes back unchanged. The list is the latest one
        published (what the person saw), not one computed later.
        """
        number = option_number(cmd.text)
        if number is None:
            return cmd, None
        latest = self.latest()
        items = [] if latest is None else latest.get("suggestions", [])
        chosen = next((s for s in items if s.get("rank") == number), None)
        if chosen is None:
            why = ("no suggestion list yet: call ~/suggest (or set suggest_rate) first" if latest is None else
                   f"the latest list (round {latest.get('round')}) has {len(items)} suggestion(s), not number "
                   f"{number}")
            return cmd, NoAction(Reason.UNKNOWN_OPTION, why, command=echo(cmd.text))
        return replace(cmd, text=chosen["command"], said=cmd.text, option=number), None

    # ---- what the worker asks (``cond`` held)
    def wait_time(self, rate: float, version: Optional[int]) -> Optional[float]:
        """Seconds until a round is due (<= 0: now), None when none is: asked for, or periodic on a newer frame."""
        if self._requests:
            return 0.0
        if rate <= 0 or version is None or version == self._last_version:
            return None
        return self._last_run + 1.0 / rate - time.monotonic()

    # ---- the round, on the worker
    def run(self, pipeline: Any, state: str, settings: NodeSettings,
            latest_frame: Callable[[NodeSettings], Tuple[Any, Any, Any]]) -> None:
        """One round on the freshest frame: publish it and answer every waiting request."""
        with self._cond:
            requests, self._requests = self._requests, []
            self._last_run = time.monotonic()
        try:
            record = self._round(pipeline, state, settings, latest_frame)
        except RoundFailed as failed:
            error = failed
        except Exception as exc:  # noqa: BLE001 - a round never kills the worker; its callers hear why
            error = RoundFailed(Reason.MODEL_ERROR.value, f"{type(exc).__name__}: {exc}")
        else:
            for future in requests:
                future.set_result(record)
            return
        for future in requests:
            future.set_exception(error)

    def _round(self, pipeline: Any, state: str, settings: NodeSettings,
               latest_frame: Callable[[NodeSettings], Tuple[Any, Any, Any]]) -> Dict[str, Any]:
        """Raises RoundFailed (inactive, no frame, stale frame, bad input, suggestions unavailable)."""
        from clip_vla.perception.suggest import SuggestConfig, make_suggester

        if pipeline is None or state != "active":
            raise RoundFailed(Reason.INACTIVE.value, f"the node is {state}")
        try:
            slot, frame, camera_to_base = latest_frame(settings)
        except Refusal as refusal:
            raise RoundFailed(refusal.reason.value, refusal.message) from None
        except (conv.ConversionError, ValueError) as exc:
            raise RoundFailed(Reason.BAD_INPUT.value, str(exc)) from None
        with self._cond:
            self._last_version = slot.version
        try:
            suggester = make_suggester(pipeline, SuggestConfig.from_section(pipeline.config.suggest))
        except ValueError as exc:  # ConfigError included: settings the vocabulary does not allow
            raise RoundFailed(Reason.MODEL_ERROR.value, f"no suggestions on this pipeline: {exc}") from None
        result = suggester.suggest(frame, camera_to_base)
        header = slot.msg.header
        with self._cond:
            self._rounds += 1
            record = {"round": self._rounds, **result.to_dict(), "stamp": conv.stamp_to_dict(header.stamp),
                      "frame_id": header.frame_id, "base_frame": settings.base_frame}
            self._latest = record
        self._publisher.publish(String(data=json.dumps(record)))
        self._outputs.markers(self._markers(record, header.stamp))
        if self._outputs.wants_debug_image():
            from clip_vla.core.visualize import annotate_suggestions

            image = annotate_suggestions(frame.rgb, record["suggestions"])
            self._outputs.debug_image(conv.rgb_to_image(image, header.stamp, header.frame_id))
        return record

    def _markers(self, record: Dict[str, Any], stamp: Any) -> MarkerArray:
        """A numbered label over each suggested object's point; the previous round's extra labels deleted."""
        labels: Dict[Tuple[float, ...], List[int]] = {}
        for s in record["suggestions"]:
            if s.get("xyz") is not None:
                labels.setdefault(tuple(s["xyz"]), []).append(int(s["rank"]))
        markers = []
        for mid, (xyz, ranks) in enumerate(labels.items()):
            m = Marker()
            m.header.stamp, m.header.frame_id = stamp, record["base_frame"]
            m.ns, m.id, m.type, m.action = MARKER_NS, mid, Marker.TEXT_VIEW_FACING, Marker.ADD
            m.pose.position.x, m.pose.position.y, m.pose.position.z = xyz[0], xyz[1], xyz[2] + 0.06
            m.pose.orientation.w = 1.0
            m.scale.z = 0.04
            m.color.r, m.color.g, m.color.b, m.color.a = 1.0, 0.8, 0.0, 1.0
            m.text = ",".join(str(r) for r in ranks)
            markers.append(m)
        for mid in range(len(labels), self._marker_count):
            m = Marker()
            m.header.stamp, m.header.frame_id = stamp, record["base_frame"]
            m.ns, m.id, m.action = MARKER_NS, mid, Marker.DELETE
            markers.append(m)
        self._marker_count = len(labels)
        return MarkerArray(markers=markers)


class SuggestService:
    """``~/suggest`` (std_srvs/Trigger): one fresh round; the response's message is its JSON.

    success false: the message is ``{"status": reason, "message": why}`` (inactive, no_frame,
    stale_frame, model_error, timeout).
    """

    def __init__(self, node: Any, rounds: SuggestionRounds, state: Callable[[], str],
                 settings: Callable[[], NodeSettings]) -> None:
        self._rounds = rounds
        self._state = state
        self._settings = settings
        self._group = MutuallyExclusiveCallbackGroup()  # waits here never hold up the camera callbacks
        self._service = node.create_service(Trigger, "~/suggest", self._on_request, callback_group=self._group)

    def _on_request(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        state = self._state()
        if state != "active":
            return self._answer(response, RoundFailed(Reason.INACTIVE.value, f"the node is {state}").record())
        timeout = self._settings().suggest_timeout
        try:
            record = self._rounds.request().result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return self._answer(response, {"status": "timeout", "message": f"no round within {timeout:g} s "
                                           "(suggest_timeout): the worker is busy or the models are slow"})
        except RoundFailed as failed:
            return self._answer(response, failed.record())
        return self._answer(response, record, success=True)

    @staticmethod
    def _answer(response: Trigger.Response, record: Union[Dict[str, Any], Any], success: bool = False):
        response.success = success
        response.message = json.dumps(record)
        return response
