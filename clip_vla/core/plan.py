"""Plans: a command's steps with their preconditions, grounded on frames one step at a time.

A command is a task, not one goal: "take the red cube and put it in the blue bin" is a
pick and a place, and "put the cup in the bowl" needs the cup in the hand first::

    text ──parse_steps──► steps as said ──make_plan(holding)──► Plan (implicit picks inserted)
    frame + PlanStep ──ground_step(pipeline)──► GroundedStep: ActionGoal + Chunk | NoAction
    goal records + grounded steps ──plan_record──► the ~/plan JSON

Preconditions: placing X needs X held, so a pick of X is inserted before the place unless
the robot already holds X (``holding``, as the executor reports it) or the step before
picks it. "put it in the bowl" while holding the cup places the cup. Nothing else is
assumed about the hand. A step is grounded on the frame it is given by the same
``VLAPipeline`` that answers single commands (``prepare_parsed``: the step is never re-read
from text), then expanded into its action chunk (``clip_vla.core.chunks``). A step that
cannot be grounded or chunked is a ``NoAction`` with the step's reason; ``ground_plan``
stops there: later steps are never grounded after a refusal.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from clip_vla.core.chunks import Chunk, ChunkError, build_chunk
from clip_vla.core.language import CommandError, InstructionParser, ParsedInstruction
from clip_vla.core.tokenizer import Action
from clip_vla.core.types import ActionGoal, Frame, NoAction, Reason

if TYPE_CHECKING:  # the planner joins core and perception; importing the pipeline here would load torch
    from clip_vla.pipeline import VLAPipeline

__all__ = [
    "GroundedStep",
    "Plan",
    "PlanResult",
    "PlanStep",
    "ground_plan",
    "chunk_step",
    "current_step",
    "ground_step",
    "make_plan",
    "plan_command",
    "plan_record",
    "prepare_plan",
    "put_back_goal",
]

PICK = "pick"
PLACE = "place"
Result = Union[ActionGoal, NoAction]


@dataclass(frozen=True)
class PlanStep:
    """One step of a plan; ``implicit`` steps were not said but are needed (the pick before a place).

    ``put_back``: an implicit place the node inserts before retrying a pick whose verification
    failed while the hand holds something: the held object goes back where it was picked up
    (``put_back_goal``), so the retried pick starts with an empty hand.
    """

    index: int
    skill: Optional[str]
    object: Optional[str]
    destination: Optional[str] = None
    direction: Optional[str] = None
    implicit: bool = False
    relation: Optional[str] = None
    instruction: Optional[ParsedInstruction] = None  # what was said; None for an implicit step
    put_back: bool = False

    @classmethod
    def from_instruction(cls, index: int, parsed: ParsedInstruction) -> "PlanStep":
        return cls(index, parsed.skill, parsed.object, parsed.destination, parsed.direction,
                   relation=parsed.relation, instruction=parsed)

    @property
    def text(self) -> str:
        """The step in words: the clause as said, "pick <object>" for an implicit pick, "put back <object>"."""
        if self.instruction is not None:
            return self.instruction.text
        if self.put_back:
            return f"put back {self.object}"
        return " ".join(w for w in (self.skill, self.object) if w)

    def parsed(self) -> ParsedInstruction:
        """The instruction the pipeline grounds: what was said, with the plan's object (it/them, held)."""
        if self.instruction is None:
            return ParsedInstruction(text=self.text, skill=self.skill, object=self.object, skill_source="plan")
        return dataclasses.replace(self.instruction, object=self.object)

    def to_dict(self) -> Dict[str, Optional[str]]:
        """The four fields of ``clip-vla parse``'s ``steps``."""
        return {"skill": self.skill, "object": self.object, "destination": self.destination,
                "direction": self.direction}

    def to_full_dict(self) -> Dict[str, Any]:
        return {"index": self.index, **self.to_dict(), "relation": self.relation, "implicit": self.implicit,
                "put_back": self.put_back, "text": self.text}


@dataclass(frozen=True)
class Plan:
    """The steps of one command in execution order, for a hand that held ``holding`` at the start."""

    command: str
    steps: Tuple[PlanStep, ...]
    holding: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"command": self.command, "holding": self.holding, "steps": [s.to_full_dict() for s in self.steps]}

    def summary(self) -> Dict[str, Any]:
        """What an ``accepted`` status says of the plan: how many steps, each in words."""
        return {"steps": len(self.steps), "texts": [s.text for s in self.steps]}


@dataclass(frozen=True)
class GroundedStep:
    """A step on one frame: its goal and chunk, or the refusal that stops the plan."""

    step: PlanStep
    result: Result
    chunk: Optional[Chunk] = None

    @property
    def accepted(self) -> bool:
        return self.result.accepted and self.chunk is not None

    @property
    def reason(self) -> Optional[str]:
        """The refusal's stable reason (``no_object``, ``outside_workspace``, ...), None when accepted."""
        return None if isinstance(self.result, ActionGoal) else self.result.reason.value


@dataclass(frozen=True)
class PlanResult:
    """Steps grounded in order until the first refusal (``stopped_at``, its reason in the step)."""

    plan: Plan
    grounded: Tuple[GroundedStep, ...]

    @property
    def complete(self) -> bool:
        return len(self.grounded) == len(self.plan.steps) and all(g.accepted for g in self.grounded)

    @property
    def stopped_at(self) -> Optional[int]:
        """Index of the step that was refused, None when every step was grounded."""
        for g in self.grounded:
            if not g.accepted:
                return g.step.index
        return None


# --------------------------------------------------------------------------- planning
def make_plan(steps: Sequence[ParsedInstruction], holding: Optional[str] = None, command: str = "") -> Plan:
    """Steps as said -> a plan whose places are all preceded by a pick of what they place.

    ``holding`` is what the hand holds now (the executor reports it), None for an empty hand.
    """
    planned: List[PlanStep] = []
    held = holding
    for parsed in steps:
        step = PlanStep.from_instruction(len(planned), parsed)
        if step.skill == PLACE:
            obj = step.object or held  # "put it in the bowl" while holding the cup
            if obj is not None and obj != held:
                planned.append(PlanStep(len(planned), PICK, obj, implicit=True))
            step = dataclasses.replace(step, index=len(planned), object=obj)
            held = None
        elif step.skill == PICK:
            held = step.object
        planned.append(step)
    return Plan(command=command or (steps[0].text if steps else ""), steps=tuple(planned), holding=holding)


def prepare_plan(pipeline: "VLAPipeline", text: str, holding: Optional[str] = None) -> Tuple[Optional[Plan], Any]:
    """(plan, its first step prepared) of a command, or (None, the command's refusal): the node's and replay's rule.

    A one-clause command is prepared exactly as before plans existed (``pipeline.prepare``:
    cached, the same refusals, ``stop`` included); a compound command's first step is prepared
    from its parse. A command whose parts cannot all be read is refused whole.
    """
    prepared = pipeline.prepare(text)
    try:
        plan = plan_command(pipeline.parser, text, holding)
    except CommandError as exc:
        if isinstance(prepared, NoAction):
            return None, prepared
        reason = next((r for r in Reason if r.value == exc.reason), Reason.BAD_COMMAND)
        return None, NoAction(reason, str(exc), command=text)
    first = plan.steps[0]
    if len(plan.steps) == 1 and not first.implicit:
        return plan, prepared
    return plan, pipeline.prepare_parsed(first.parsed(), text)


def plan_command(parser: InstructionParser, text: str, holding: Optional[str] = None) -> Plan:
    """Read a command and plan it: ``make_plan(parser.parse_steps(text), holding)``.

    Raises:
        CommandError: the command, or one part of it, cannot be read (see ``parse_steps``).
    """
    return make_plan(parser.parse_steps(text), holding=holding, command=text)


# --------------------------------------------------------------------------- grounding
def ground_step(pipeline: "VLAPipeline", frame: Frame, step: PlanStep, camera_to_base: Any = None) -> GroundedStep:
    """Ground one step on ``frame`` through the pipeline, then build its chunk.

    Never raises for a step that cannot be executed: the refusal is the result, with the
    pipeline's reason, or ``no_motion`` / ``outside_workspace`` from the chunk.
    """
    prepared = pipeline.prepare_parsed(step.parsed())
    if isinstance(prepared, NoAction):
        prepared.stamp = frame.stamp
        return GroundedStep(step, prepared)
    return chunk_step(pipeline, step, pipeline.run(frame, prepared, camera_to_base))


def chunk_step(pipeline: "VLAPipeline", step: PlanStep, result: Result) -> GroundedStep:
    """A step's pipeline result -> its GroundedStep: an accepted goal gets its chunk, or the chunk's refusal.

    Shared by ``ground_step`` and the node's worker (which picks the frame itself), so a goal
    becomes a chunk by one rule everywhere. Never raises: a chunk that cannot be built or leaves
    the workspace is the step's refusal (``no_motion`` / ``outside_workspace``).
    """
    if not isinstance(result, ActionGoal):
        return GroundedStep(step, result)
    config = pipeline.config
    try:
        chunk = build_chunk(result.cmd, result.cmd_token, result.xyz_base, result.theta, config.motion,
                            pipeline.tokenizer, table_z=config.geometry.table_height)
    except ChunkError as exc:
        refusal = NoAction(exc.reason, f"step {step.index} ({step.text}): {exc}", command=step.text,
                           skill=step.skill, object_phrase=step.object, stamp=result.stamp)
        return GroundedStep(step, refusal)
    return GroundedStep(step, result, chunk)


def put_back_goal(pipeline: "VLAPipeline", pick: ActionGoal, step: PlanStep) -> ActionGoal:
    """The goal of a put-back step: a place on the table where the failed pick was sent, at its yaw.

    Why no perception: the held object was lifted from that spot a moment ago (it is empty now),
    so nothing has to be found; setting it down there undoes the pick before it is retried.
    """
    config = pipeline.config
    place = config.vocabulary.skill(PLACE)
    x, y, z = pick.xyz_base[0], pick.xyz_base[1], config.geometry.table_height
    encoded = pipeline.tokenizer.encode(Action(place.token, x, y, z, pick.theta))
    return ActionGoal(cmd=PLACE, cmd_token=place.token, skill_probabilities={}, object_phrase=step.object,
                      destination_phrase=None, pixel=None, detection=None, xyz_camera=None, xyz_base=(x, y, z),
                      theta=pick.theta, tokens=encoded.tokens, confidence=1.0, depth_source="none",
                      command=pick.command, stamp=pick.stamp, frame_id=pick.frame_id,
                      message=f"{step.text}: set down where it was picked up")


def ground_plan(pipeline: "VLAPipeline", frame: Frame, plan: Plan, camera_to_base: Any = None,
                first: Optional[GroundedStep] = None) -> PlanResult:
    """Ground every step on one frame, in order, stopping at the first refusal.

    For offline use (CLI, replay, tests, benchmarks). A robot grounds each step on a fresh
    frame after the executor reports the previous one: call ``ground_step`` per step instead.
    ``first`` is step 0 already grounded (replay grounds it as the node does).
    """
    grounded: List[GroundedStep] = [] if first is None else [first]
    if first is not None and not first.accepted:
        return PlanResult(plan, tuple(grounded))
    for step in plan.steps[len(grounded):]:
        grounded.append(ground_step(pipeline, frame, step, camera_to_base))
        if not grounded[-1].accepted:
            break
    return PlanResult(plan, tuple(grounded))


# --------------------------------------------------------------------------- record
def plan_record(command_id: Any, stamp: float, plan: Plan, grounded: Sequence[GroundedStep] = (),
                goal_records: Sequence[Optional[Dict[str, Any]]] = (), attempt: int = 1) -> Dict[str, Any]:
    """The ``~/plan`` JSON: every step, with goal, tokens, chunk tokens and decoded waypoints once grounded.

    ``grounded`` are the steps grounded so far, in order; ``goal_records[i]`` is the ``~/goal``
    record the caller built for ``grounded[i]`` (the node's and replay's shared record code),
    None for a refused step. Steps not grounded yet carry ``None`` in those fields. ``attempt`` is
    the try of the last grounded step (1: first): a retried step comes again under the same index,
    so an executor tells a new try from a repeated record by (command_id, index, attempt).

    Raises:
        ValueError: more grounded steps than the plan has, or goal records that do not line up.
    """
    if len(grounded) > len(plan.steps) or len(goal_records) not in (0, len(grounded)):
        raise ValueError(f"plan_record: {len(grounded)} grounded steps and {len(goal_records)} goal records "
                         f"for a plan of {len(plan.steps)} steps")
    steps = []
    for i, step in enumerate(plan.steps):
        entry: Dict[str, Any] = {**step.to_full_dict(), "goal": None, "tokens": None, "chunk_tokens": None,
                                 "chunk_text": None, "waypoints": None, "refusal": None}
        if i < len(grounded):
            entry.update(_grounded_fields(grounded[i], goal_records[i] if goal_records else None))
        steps.append(entry)
    return {"command_id": command_id, "stamp": stamp, "command": plan.command, "holding": plan.holding,
            "attempt": int(attempt), "steps": steps}


def current_step(record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The step of a ``~/plan`` record that is out now (the last with a goal and waypoints); None if none.

    What an executor runs: the node republishes the plan as steps are grounded, and a refused
    step carries no waypoints.

    Raises:
        KeyError: ``record`` has no ``steps`` (not a plan record).
    """
    grounded = [s for s in record["steps"] if s.get("goal") is not None and s.get("waypoints")]
    return grounded[-1] if grounded else None


def _grounded_fields(g: GroundedStep, goal_record: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if not g.accepted:
        return {"refusal": {"reason": g.reason, "message": g.result.message}}  # type: ignore[union-attr]
    chunk = g.chunk.to_dict()  # type: ignore[union-attr]
    return {"goal": goal_record, "tokens": list(g.result.tokens),  # type: ignore[union-attr]
            "chunk_tokens": chunk["tokens"], "chunk_text": chunk["text"], "waypoints": chunk["waypoints"]}
