"""Closed-loop evaluation in the simulated world, over a real ROS 2 graph.

    sim (camera + robot) ──image/depth/camera_info──► clip_vla (vla_node) ──~/plan──► sim
            ▲   └──────────────── execution (step reports) ───────►│          │
            └──────────── ~/reset, ~/task ── driver ── command ──── ~/status, ~/task_status

The driver only uses topics, as a person would: it resets an episode and says the
episode's command once ("put the yellow cup in the bowl", "put the red ball in the bowl,
then push the green block"). vla_node plans it, releases one step at a time, and the
simulator follows each step's action chunk and reports it on ``execution``; the driver
collects the command's status, the simulator's judgement of every step (by the world's
ground truth) and the plan's end on ``~/task_status``.

``--perception model`` runs whatever CLIPSeg/CLIP the config names; ``oracle`` replaces
them with the simulator's ground-truth masks (geometry + tokenizer + execution alone).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from clip_vla.core.stats import percentile
from clip_vla.sim.settings import parse_settings, sim_perception_settings

COMPOUND = "compound"  # clip_vla.sim.tasks.COMPOUND (not imported: that would load MuJoCo for --help)
FRAME_MARGIN_S = 0.1  # after the driver has a frame, for vla_node's callback on the same frame


@dataclass
class StepRecord:
    """One command of an episode: what vla_node answered and what the robot made of it."""

    command: str
    expected_skill: str
    status: str
    cmd: Optional[str] = None
    goal_xyz: Optional[List[float]] = None
    theta: Optional[float] = None
    truth_xyz: Optional[List[float]] = None
    truth_yaw: Optional[float] = None
    executed: bool = False
    success: bool = False  # the skill worked on the object nearest the goal
    task_success: bool = False  # the episode's command is carried out on its target
    holding_target: bool = False
    failure: Optional[str] = None  # why the goal failed the task (clip_vla.sim.tasks.FAILURE_LABELS)
    reason: str = ""
    latency_ms: float = 0.0
    tokens: Optional[List[int]] = None
    clip_skill: Optional[str] = None  # CLIP's top skill (status skill_probabilities), whatever the parser chose
    step_ok: bool = False  # the step did what the task needs of it (the world's ground truth)
    attempt: int = 1  # which try at its step this execution was (1: the first)
    task_step: Optional[int] = None  # the task's step it was an attempt at (the simulator's count)
    verdict: Optional[str] = None  # the verifier's on ~/task_status: success | failure | uncertain; None: not verified
    verdict_reason: Optional[str] = None  # the verdict's reason (object_lifted, wrong_object, ...)

    @property
    def xy_error(self) -> Optional[float]:
        if self.goal_xyz is None or self.truth_xyz is None:
            return None
        return math.hypot(self.goal_xyz[0] - self.truth_xyz[0], self.goal_xyz[1] - self.truth_xyz[1])

    @property
    def xyz_error(self) -> Optional[float]:
        if self.goal_xyz is None or self.truth_xyz is None:
            return None
        return float(np.linalg.norm(np.subtract(self.goal_xyz, self.truth_xyz)))

    @property
    def yaw_error(self) -> Optional[float]:
        """pi-symmetric (a parallel-jaw grasp at theta equals one at theta + pi)."""
        if self.theta is None or self.truth_yaw is None:
            return None
        d = (self.theta - self.truth_yaw) % math.pi
        return min(d, math.pi - d)


@dataclass
class Episode:
    seed: int
    skill: str
    command: str
    steps: List[StepRecord] = field(default_factory=list)
    success: bool = False
    commands: List[str] = field(default_factory=list)  # what the driver said: one per task
    steps_planned: int = 0  # steps of vla_node's plan (its accepted status), implicit picks included
    outcome: Optional[str] = None  # the plan's end on ~/task_status: done | failed | cancelled
    put_backs: int = 0  # objects set down again before a failed pick was retried (not steps of the task)

    @property
    def steps_executed(self) -> int:
        """Executions, retries included."""
        return sum(s.executed for s in self.steps)

    @property
    def retried(self) -> bool:
        """Some step was executed again after the verifier judged it failed."""
        return any(s.executed and s.attempt > 1 for s in self.steps)

    @property
    def first_try_success(self) -> bool:
        """Carried out with every step executed once: what the episode scores without the verify loop."""
        return self.success and not self.retried


@dataclass
class CommandOutcome:
    """What one command led to: its status, the simulator's result per executed step, the plan's end."""

    status: Optional[Dict[str, Any]]
    results: List[Dict[str, Any]]
    ending: Optional[Dict[str, Any]]
    latency_ms: float
    verdicts: List[Dict[str, Any]] = field(default_factory=list)  # the step verdicts before the ending

    def verdict_for(self, step: Any, attempt: int) -> Optional[Dict[str, Any]]:
        """The verdict on one execution (``step``'s ``attempt``-th try), None when it was not verified."""
        mine = [v for v in self.verdicts if (v.get("step"), v.get("attempt")) == (step, attempt)]
        return mine[-1] if mine else None


class GraphDriver:
    """Publishes commands/resets and waits for the matching answers, on its own rclpy node."""

    def __init__(self, node: Any, vla_name: str = "clip_vla", sim_name: str = "sim") -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self.node = node
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_command = node.create_publisher(String, "command", reliable)
        self.pub_reset = node.create_publisher(String, f"{sim_name}/reset", reliable)
        self._cond = threading.Condition()
        self.statuses: List[Dict[str, Any]] = []
        self.results: List[Dict[str, Any]] = []
        self.tasks: List[Dict[str, Any]] = []
        self.endings: List[Dict[str, Any]] = []
        node.create_subscription(String, f"{vla_name}/status", lambda m: self._add(self.statuses, m), reliable)
        node.create_subscription(String, f"{sim_name}/result", lambda m: self._add(self.results, m), reliable)
        node.create_subscription(String, f"{sim_name}/task", lambda m: self._add(self.tasks, m), reliable)
        node.create_subscription(String, f"{vla_name}/task_status", lambda m: self._add(self.endings, m), reliable)
        # The camera as vla_node sees it: a command waits for the first frame of the changed scene.
        self.last_frame_stamp = -math.inf
        node.create_subscription(Image, "camera/color/image_raw", self._on_frame, qos_profile_sensor_data)

    def _on_frame(self, msg: Any) -> None:
        from clip_vla.ros.conversions import stamp_to_seconds

        with self._cond:
            self.last_frame_stamp = max(self.last_frame_stamp, stamp_to_seconds(msg.header.stamp))
            self._cond.notify_all()

    def wait_for_frame_after(self, stamp: Optional[float], timeout: float = 10.0) -> bool:
        """Until a camera frame stamped after ``stamp`` (a task's or result's) has been delivered.

        Frames go to vla_node on the same executor at the same time; FRAME_MARGIN_S covers
        its callback running a moment later. A fixed sleep instead fails on a loaded machine,
        where the old scene's frame is still the freshest one when the command arrives.
        """
        if stamp is None:
            time.sleep(FRAME_MARGIN_S)
            return False
        with self._cond:
            ok = self._cond.wait_for(lambda: self.last_frame_stamp > stamp, timeout=timeout)
        time.sleep(FRAME_MARGIN_S)
        return ok

    def _add(self, box: List[Dict[str, Any]], msg: Any) -> None:
        with self._cond:
            box.append(json.loads(msg.data))
            self._cond.notify_all()

    def _wait(self, box: List[Dict[str, Any]], start: int, match: Callable[[Dict[str, Any]], bool],
              timeout: float) -> Optional[Dict[str, Any]]:
        """The first message at index >= start that matches: late answers to earlier requests are skipped."""
        def found() -> Optional[Dict[str, Any]]:
            return next((m for m in box[start:] if match(m)), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout=timeout)
            return found()

    def wait_for_graph(self, timeout: float = 30.0) -> bool:
        """Until vla_node and the simulator subscribe to what the driver publishes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pub_command.get_subscription_count() > 0 and self.pub_reset.get_subscription_count() > 0:
                return True
            time.sleep(0.05)
        return False

    def reset(self, seed: int, skill: str, destination: Optional[str] = None,
              timeout: float = 30.0) -> Optional[Dict[str, Any]]:
        from std_msgs.msg import String

        start = len(self.tasks)
        request = {"seed": seed, "skill": skill, "destination": destination}
        self.pub_reset.publish(String(data=json.dumps(request)))
        task = self._wait(self.tasks, start, lambda t: t.get("seed") == seed and t.get("skill") == skill, timeout)
        if task is not None:
            self.wait_for_frame_after(task.get("stamp"))
        return task

    def command(self, text: str, timeout: float = 60.0) -> CommandOutcome:
        """Say a command; wait for its status and, when accepted, for its plan to end (``timeout`` per step)."""
        from std_msgs.msg import String

        n_status, n_result, n_end = len(self.statuses), len(self.results), len(self.endings)
        t0 = time.perf_counter()
        self.pub_command.publish(String(data=text))
        status = self._wait(self.statuses, n_status, lambda m: m.get("command") == text, timeout)
        latency = (time.perf_counter() - t0) * 1e3
        if status is None or status.get("status") != "accepted":
            return CommandOutcome(status, [], None, latency)
        command_id = status.get("command_id")
        steps = int((status.get("plan") or {}).get("steps", 1))
        ending = self._wait(self.endings, n_end, lambda m: m.get("command_id") == command_id and m.get("final", True),
                            timeout * steps)
        with self._cond:  # published before the ending, on its topic: all in
            verdicts = [m for m in self.endings[n_end:]
                        if m.get("command_id") == command_id and not m.get("final", True)]
        executed = _executions(ending, verdicts)
        with self._cond:  # the results of the steps executed (the last may trail the ending by a moment)
            self._cond.wait_for(lambda: self._results_of(command_id, n_result) >= executed, timeout=5.0)
            results = [r for r in self.results[n_result:] if r.get("command_id") == command_id]
        if results:  # the next command must see the scene after this one
            self.wait_for_frame_after(results[-1].get("stamp"))
        return CommandOutcome(status, results, ending, latency, verdicts)

    def _results_of(self, command_id: Any, start: int) -> int:
        return sum(r.get("command_id") == command_id for r in self.results[start:])


def _executions(ending: Optional[Dict[str, Any]], verdicts: List[Dict[str, Any]]) -> int:
    """How many step executions led to ``ending``: one per verdict (retries included, a step the executor
    reported failed too), plus a failed one the node could not retry; without verification, the steps
    up to the ending's."""
    if ending is None:
        return 0
    last = verdicts[-1] if verdicts else {}
    judged = last.get("reason") == "execution_failed" and last.get("action") is None  # its verdict is in verdicts
    failed_in_hand = int(ending["reason"] == "execution_failed" and not judged)
    if verdicts:
        return len(verdicts) + failed_in_hand
    return ending["step"] + 1 if ending["reason"] in ("done", "execution_failed") else ending["step"]


def _truth(task: Dict[str, Any], k: int) -> Tuple[Optional[List[float]], Optional[float]]:
    """(xyz, yaw) step ``k`` of ``task`` (its ~/task record) is judged against; yaw only for a bar's pick."""
    parts = task.get("parts") or [task]
    flat = [(part, skill) for part in parts
            for skill in (("pick", "place") if part["skill"] == "place" else (part["skill"],))]
    part, skill = flat[min(k, len(flat) - 1)]
    if skill == "place":
        return part.get("destination_xyz"), None
    yaw = part.get("object_yaw") if skill == "pick" and part.get("object_shape") == "bar" else None
    return part.get("object_xyz"), yaw


def _records(text: str, task: Dict[str, Any], outcome: CommandOutcome) -> List[StepRecord]:
    """One StepRecord per executed step, plus one for a step refused (the command, or a later step).

    A put-back (the node's undo of a failed pick) is no step of the task: it has no record.
    """
    skills = task.get("step_skills") or [task["skill"]]
    status = outcome.status
    out: List[StepRecord] = []
    for r in outcome.results:
        if r.get("put_back"):
            continue
        k = int(r.get("step", len(out)))
        attempt = int(r.get("attempt", 1))
        task_step = r.get("task_step")
        truth_xyz, truth_yaw = _truth(task, k if task_step is None else int(task_step))
        verdict = outcome.verdict_for(k, attempt) or {}
        if verdict.get("reason") == "execution_failed":  # the executor's word, not the verifier's: unverified
            verdict = {}
        pose = (r.get("goal") or {}).get("pose") or {}
        out.append(StepRecord(command=text, expected_skill=r.get("expected_skill", skills[min(k, len(skills) - 1)]),
                              status="accepted", cmd=r.get("cmd"),
                              goal_xyz=[pose.get("x"), pose.get("y"), pose.get("z")],
                              theta=pose.get("theta"), truth_xyz=truth_xyz, truth_yaw=truth_yaw, executed=True,
                              success=bool(r.get("success")), task_success=bool(r.get("task_success")),
                              holding_target=bool(r.get("holding_target")), failure=r.get("failure"),
                              reason=r.get("reason", ""), latency_ms=outcome.latency_ms,
                              tokens=(r.get("goal") or {}).get("tokens"), step_ok=bool(r.get("step_ok")),
                              attempt=attempt, task_step=task_step,
                              verdict=verdict.get("verdict"), verdict_reason=verdict.get("reason")))
    refused_at: Optional[int] = None
    reason = ""
    if status is None or status.get("status") != "accepted":
        refused_at, reason = 0, "timeout" if status is None else status.get("status", "?")
    elif outcome.ending is None:
        refused_at, reason = len(out), "timeout"
    elif outcome.ending["reason"] not in ("done", "execution_failed") and not _failed_verification(outcome):
        refused_at, reason = outcome.ending["step"], outcome.ending["reason"]
    if refused_at is not None:
        truth_xyz, truth_yaw = _truth(task, refused_at)
        message = (status or {}).get("message", "") if refused_at == 0 else (outcome.ending or {}).get("message", "")
        out.append(StepRecord(command=text, expected_skill=skills[min(refused_at, len(skills) - 1)], status=reason,
                              cmd=(status or {}).get("skill") if refused_at == 0 else None, truth_xyz=truth_xyz,
                              truth_yaw=truth_yaw, reason=message, latency_ms=outcome.latency_ms))
    _add_clip_skill(out, status)
    return out


def _failed_verification(outcome: CommandOutcome) -> bool:
    """The plan ended because its last executed step failed verification after its retries (not a refusal)."""
    ending = outcome.ending or {}
    return any(v.get("step") == ending.get("step") and v.get("verdict") == "failure"
               and v.get("reason") == ending.get("reason") for v in outcome.verdicts)


def _add_clip_skill(records: List[StepRecord], status: Optional[Dict[str, Any]]) -> None:
    """CLIP's top skill for the command goes on the step of the command's own skill (the parser's).

    The status scores the command as said ("put X in the bowl" is a place), not its implicit steps.
    """
    top = next(iter((status or {}).get("skill_probabilities") or {}), None)
    said = (status or {}).get("skill")
    for record in records:
        if top is not None and record.expected_skill == said:
            record.clip_skill = top
            return


def run_episode(driver: GraphDriver, seed: int, skill: str) -> Episode:
    """Reset, say the task's command once, collect every step it led to."""
    task = driver.reset(seed, skill)
    if task is None:
        raise RuntimeError("the simulator did not answer a reset within 30 s")
    ep = Episode(seed=seed, skill=skill, command=task["command"], commands=[task["command"]])
    outcome = driver.command(task["command"])
    ep.steps = _records(task["command"], task, outcome)
    ep.steps_planned = int(((outcome.status or {}).get("plan") or {}).get("steps", 0))
    ep.outcome = None if outcome.ending is None else outcome.ending.get("outcome")
    ep.put_backs = sum(bool(r.get("put_back")) for r in outcome.results)
    ep.success = bool(outcome.results) and bool(outcome.results[-1].get("task_success"))
    return ep


def summarise(episodes: List[Episode]) -> Dict[str, Any]:
    """Per skill: success rate, goal errors, skill accuracy, latency."""
    out: Dict[str, Any] = {}
    for skill in sorted({e.skill for e in episodes}):
        eps = [e for e in episodes if e.skill == skill]
        steps = [s for e in eps for s in e.steps if s.expected_skill == skill or skill == COMPOUND]
        goals = [s for s in steps if s.goal_xyz is not None]
        xy = [s.xy_error for s in goals if s.xy_error is not None]
        xyz = [s.xyz_error for s in goals if s.xyz_error is not None]
        yaw = [s.yaw_error for s in goals if s.yaw_error is not None]
        lat = [e.steps[0].latency_ms for e in eps if e.steps]  # the command's: said once, answered once
        answered = [s for s in steps if s.cmd is not None]
        executed = [s for e in eps for s in e.steps if s.executed]
        success = sum(e.success for e in eps) / len(eps)
        out[skill] = {
            "episodes": len(eps),
            "success_rate": success,
            "first_try_success": sum(e.first_try_success for e in eps) / len(eps),
            "success_after_retries": success,
            "attempts_mean": attempts_mean(eps),
            "verifier": verifier_confusion(executed),
            "goals_accepted": len(goals) / max(len(steps), 1),
            "skill_accuracy": sum(s.cmd == s.expected_skill for s in answered) / max(len(answered), 1),
            "clip_skill_agreement": clip_agreement(steps),
            "xy_error_m_median": percentile(xy, 50), "xy_error_m_p95": percentile(xy, 95),
            "xyz_error_m_median": percentile(xyz, 50),
            "yaw_error_rad_median": percentile(yaw, 50),
            "latency_ms_p50": percentile(lat, 50), "latency_ms_p95": percentile(lat, 95),
            "steps_planned": sum(e.steps_planned for e in eps),
            "steps_executed": sum(e.steps_executed for e in eps),
            "put_backs": sum(e.put_backs for e in eps),
            "failures": _count([_failure(s) for e in eps for s in e.steps if not s.step_ok]),
        }
    return out


def attempts_mean(episodes: List[Episode]) -> Optional[float]:
    """Executions per executed step (1.0: no retries), over the episodes' steps."""
    steps = {(i, s.task_step if s.task_step is not None else s.expected_skill)
             for i, e in enumerate(episodes) for s in e.steps if s.executed}
    executions = sum(e.steps_executed for e in episodes)
    return executions / len(steps) if steps else None


def verifier_confusion(executed: List[StepRecord]) -> Dict[str, int]:
    """The verifier's verdicts against the simulator's ground truth (``step_ok``), over executed steps.

    ``false_success``: it said success (or uncertain, which the loop treats as success) but the
    step failed; ``false_failure``: it said failure but the step had worked. ``uncertain`` counts
    the uncertain verdicts among them; ``unverified``: executed steps without a verdict (the
    executor reported them failed, or verification is off).
    """
    out = {"true_success": 0, "true_failure": 0, "false_success": 0, "false_failure": 0,
           "uncertain": 0, "unverified": 0}
    for s in executed:
        if s.verdict is None:
            out["unverified"] += 1
            continue
        out["uncertain"] += s.verdict == "uncertain"
        said_success = s.verdict != "failure"
        key = ("true_" if said_success == s.step_ok else "false_") + ("success" if said_success else "failure")
        out[key] += 1
    return out


def caught_and_flagged(confusion: Dict[str, int]) -> Tuple[Optional[float], Optional[float]]:
    """(failed steps the verifier caught, successful steps it flagged), as fractions; None without any."""
    failed = confusion["true_failure"] + confusion["false_success"]
    succeeded = confusion["true_success"] + confusion["false_failure"]
    return (confusion["true_failure"] / failed if failed else None,
            confusion["false_failure"] / succeeded if succeeded else None)


def clip_agreement(steps: List[StepRecord]) -> Optional[float]:
    """How often CLIP alone (its top skill) names each step's expected skill; None when it scored none.

    "skill_accuracy" is the parser's figure (a spoken verb decides); this one says whether CLIP,
    consulted on the same command and frame, would have chosen the same skill.
    """
    scored = [s for s in steps if s.clip_skill is not None]
    return sum(s.clip_skill == s.expected_skill for s in scored) / len(scored) if scored else None


def _failure(step: StepRecord) -> str:
    """Why a step failed: vla_node's status when it sent no goal, else the simulator's label.

    The label is the world's (``TabletopWorld.failure_label``), which knows where the objects
    were: a goal that worked on *some* object is not thereby on the wrong one (a drop beside
    the bowl also "works").
    """
    if step.status != "accepted":
        return step.status
    return step.failure or step.reason or "not executed"


def _episode_line(ep: Episode) -> str:
    """One line per episode: steps executed of planned, and the outcome with why it failed."""
    if not ep.steps:
        return "no answer"
    first = ep.steps[0]
    last_failed = next((s for s in reversed(ep.steps) if not s.step_ok), None)
    if not first.executed:
        return f"{first.status} ({first.reason})" if first.reason else first.status
    verdict = "success" if ep.success else "failed: " + (_failure(last_failed) if last_failed else "not achieved")
    retries = sum(s.executed and s.attempt > 1 for s in ep.steps)
    tries = f" ({retries} retried)" if retries else ""
    return f"{ep.steps_executed}/{ep.steps_planned} steps{tries} -> {verdict}"


def _count(items: List[str]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for item in items:
        key = item.split(":")[0][:60]
        counts[key] = counts.get(key, 0) + 1
    return counts


def print_summary(summary: Dict[str, Any], perception: str, file=sys.stdout) -> None:
    print(f"\nclosed-loop results ({perception} perception)", file=file)
    print(f"{'skill':<8}{'eps':>5}{'success':>9}{'skill ok':>10}{'xy err':>9}{'xyz err':>9}{'yaw err':>9}"
          f"{'p50 ms':>9}{'p95 ms':>9}", file=file)

    def f(v, scale=1.0, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v * scale)

    for skill, s in summary.items():
        print(f"{skill:<8}{s['episodes']:>5}{f(s['success_rate'], 100, '{:.0f}%'):>9}"
              f"{f(s['skill_accuracy'], 100, '{:.0f}%'):>10}{f(s['xy_error_m_median']):>9}"
              f"{f(s['xyz_error_m_median']):>9}{f(s['yaw_error_rad_median']):>9}"
              f"{f(s['latency_ms_p50'], 1, '{:.0f}'):>9}{f(s['latency_ms_p95'], 1, '{:.0f}'):>9}", file=file)
        print(f"{'':8}first try {f(s['first_try_success'], 100, '{:.0f}%')}, after retries "
              f"{f(s['success_after_retries'], 100, '{:.0f}%')}, executions per step "
              f"{f(s['attempts_mean'], 1, '{:.2f}')}, put back before a retried pick {s['put_backs']}", file=file)
        print(f"{'':8}verifier: {_verifier_line(s['verifier'])}", file=file)
        print(f"{'':8}CLIP alone picks the command's skill: {f(s['clip_skill_agreement'], 100, '{:.0f}%')}", file=file)
        if s["failures"]:
            print(f"{'':8}failures: {s['failures']}", file=file)
    print("(errors in metres/radians, medians; xy/xyz against the object's true centre; yaw on bars only,\n"
          " the one shape with a single grasp axis)", file=file)


def _verifier_line(c: Dict[str, int]) -> str:
    """The verifier's confusion in words: caught failures, flagged successes, the raw counts."""
    caught, flagged = caught_and_flagged(c)
    judged = sum(c[k] for k in ("true_success", "true_failure", "false_success", "false_failure"))
    if not judged:
        return f"no verdicts ({c['unverified']} steps unverified)"
    pct = (lambda v: "-" if v is None else f"{100 * v:.0f}%")
    return (f"caught {pct(caught)} of failed steps, flagged {pct(flagged)} of successful ones "
            f"(true success {c['true_success']}, true failure {c['true_failure']}, false success "
            f"{c['false_success']}, false failure {c['false_failure']}; uncertain {c['uncertain']}, "
            f"unverified {c['unverified']})")


# --------------------------------------------------------------------------- the graph
class SimGraph:
    """sim + clip_vla + driver nodes in one process, on one multi-threaded executor.

    Nodes in one process still talk through rclpy topics (the same DDS path as separate
    processes); keeping them together lets the oracle read the simulator's ground truth
    and keeps start-up to one model load.
    """

    def __init__(self, config_overrides: Dict[str, Any], perception: str = "model", seed: int = 0,
                 n_distractors: int = 3, fps: float = 10.0, namespace: str = "/clip_vla_sim",
                 domain_id: Optional[int] = None) -> None:
        """``domain_id``: a ROS domain of the graph's own (default: ``ROS_DOMAIN_ID``), so two graphs
        on one machine (tests, a demo beside an evaluation) never answer each other's commands."""
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter

        from clip_vla.ros.sim_node import SimBridge
        from clip_vla.ros.vla_node import VlaNode
        from clip_vla.sim.oracle import GroundTruthPerception, ObservationLog
        from clip_vla.sim.world import TabletopWorld

        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context, domain_id=domain_id)
        self.world = TabletopWorld(seed=seed, n_distractors=n_distractors)
        self.log = ObservationLog() if perception == "oracle" else None
        params = dict(config_overrides)
        params["geometry.camera_to_base_matrix"] = [float(v) for v in self.world.camera_to_base().ravel()]
        params.setdefault("max_frame_age", 2.0)
        overrides = [Parameter(name, value=value) for name, value in params.items()]
        factory = _oracle_factory(GroundTruthPerception(self.log)) if self.log is not None else None
        # Camera driver names in, the plan to the robot; both publish and read `execution` in the namespace.
        self.sim_node = rclpy.create_node("sim", namespace=namespace, context=self.context,
                                          cli_args=["--ros-args", "-r", "plan:=clip_vla/plan"])
        camera = ["image:=camera/color/image_raw", "depth:=camera/depth/image_raw",
                  "camera_info:=camera/color/camera_info"]
        self.vla_node = VlaNode(namespace=namespace, context=self.context, parameter_overrides=overrides,
                                pipeline_factory=factory,
                                cli_args=["--ros-args"] + [a for r in camera for a in ("-r", r)])
        self.driver_node = rclpy.create_node("driver", namespace=namespace, context=self.context)
        self.bridge = SimBridge(self.sim_node, self.world, fps=fps, log=self.log)
        self.driver = GraphDriver(self.driver_node)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        for node in (self.sim_node, self.vla_node, self.driver_node):
            self.executor.add_node(node)
        self._spin = threading.Thread(target=self._spin_forever, daemon=True)
        self._spin.start()
        try:
            if not self.vla_node.start():
                raise RuntimeError(f"vla_node failed to configure: {self.vla_node.load_error}")
            if not self.driver.wait_for_graph():
                raise RuntimeError("the ROS graph did not connect within 30 s")
        except BaseException:
            self.close()
            raise

    def _spin_forever(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    def close(self) -> None:
        import rclpy

        self.bridge.close()
        self.vla_node.close()
        # Let running callbacks (a render, an inference on a loaded CPU) finish before their nodes
        # are destroyed under them: destroying first left "exception was never retrieved" noise.
        self.executor.shutdown(timeout_sec=10.0)
        self._spin.join(timeout=10.0)
        for node in (self.sim_node, self.vla_node, self.driver_node):
            node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.world.close()

    def __enter__(self) -> "SimGraph":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _oracle_factory(oracle: Any) -> Callable[[Any], Any]:
    """A pipeline factory for vla_node that perceives with the simulator's ground truth (no model)."""
    from clip_vla.pipeline import VLAPipeline

    return lambda config: VLAPipeline(config, oracle=oracle)


def sim_model_overrides(perception: str, clipseg: Optional[str] = None,
                        clip: Optional[str] = None) -> Dict[str, Any]:
    """vla_node parameters for the simulated world, on CPU: the models given, else the shipped
    compact sim-domain pair (needed only for ``model`` perception)."""
    from clip_vla.train.shipped import SIM_CLIP, SIM_CLIPSEG, sim_model_config

    overrides: Dict[str, Any] = {"models.device": "cpu", **sim_perception_settings()}
    if perception == "model" and not (clipseg and clip):
        missing = [str(p) for p in (SIM_CLIPSEG, SIM_CLIP) if not (p / "config.json").is_file()]
        if missing:
            raise FileNotFoundError(
                f"the compact sim-domain models are missing ({', '.join(missing)}); reinstall the package, "
                "train them with `clip-vla train` (clip_vla/weights/README.md), or pass --clipseg/--clip")
        overrides.update(sim_model_config())
    overrides.update({name: value for name, value in (("models.clipseg", clipseg), ("models.clip", clip)) if value})
    return overrides


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="clip-vla sim", description="closed-loop episodes in the simulated world")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per skill")
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed (held-out seeds: >= 1000)")
    parser.add_argument("--perception", choices=("model", "oracle"), default="model")
    parser.add_argument("--skills", default="pick,place,push",
                        help="comma-separated skills; 'compound': random 2-3 clause commands")
    parser.add_argument("--distractors", type=int, default=3,
                        help="objects besides the target: one of its colour, one of its shape, the rest random")
    parser.add_argument("--clipseg", help="CLIPSeg id or directory (default: the shipped sim model)")
    parser.add_argument("--clip", help="CLIP id or directory (default: the shipped sim model)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="extra vla_node parameter (YAML value), e.g. perception.mask_threshold=0.3")
    parser.add_argument("--json", help="write episodes + summary here")
    args = parser.parse_args(argv)

    try:
        params = parse_settings(args.param)
    except ValueError as exc:
        parser.error(str(exc))
    overrides = {**sim_model_overrides(args.perception, args.clipseg, args.clip), **params}
    skills = [s.strip() for s in args.skills.split(",") if s.strip()]
    episodes: List[Episode] = []
    started = time.perf_counter()
    with SimGraph(overrides, perception=args.perception, seed=args.seed,
                  n_distractors=args.distractors) as graph:
        for i in range(args.episodes):
            for skill in skills:
                ep = run_episode(graph.driver, args.seed + i, skill)
                episodes.append(ep)
                print(f"[{len(episodes):3d}] seed {ep.seed} {ep.command!r}: {_episode_line(ep)}", flush=True)
    summary = summarise(episodes)
    print_summary(summary, args.perception)
    print(f"{len(episodes)} episodes in {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "perception": args.perception, "summary": summary,
            "episodes": [{"seed": e.seed, "skill": e.skill, "command": e.command, "commands": e.commands,
                          "success": e.success, "steps_planned": e.steps_planned,
                          "steps_executed": e.steps_executed, "outcome": e.outcome, "put_backs": e.put_backs,
                          "steps": [dict(s.__dict__, xy_error=s.xy_error, yaw_error=s.yaw_error) for s in e.steps]}
                         for e in episodes]}, indent=2))
    return 0
