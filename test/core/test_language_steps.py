"""Compound commands -> ordered steps (``parse_steps``), with the planner's implicit picks."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from clip_vla.core.config import Vocabulary, default_vocabulary_path
from clip_vla.core.language import CommandError, InstructionParser
from clip_vla.core.plan import make_plan

Step = Tuple[Optional[str], Optional[str], Optional[str], Optional[str]]  # skill, object, destination, direction


@pytest.fixture(scope="module")
def parser() -> InstructionParser:
    return InstructionParser(Vocabulary.from_yaml(default_vocabulary_path()))


def planned(parser: InstructionParser, command: str) -> List[Step]:
    return [(s.skill, s.object, s.destination, s.direction) for s in make_plan(parser.parse_steps(command)).steps]


PICK_CUBE = ("pick", "red cube", None, None)
PLACE_CUBE_BIN = ("place", "red cube", "blue bin", None)

# (command, planned steps in execution order; implicit picks included)
COMPOUND = [
    # "X and Y", "X, then Y", "X and then Y", "first X, then Y", "after that"
    ("pick up the apple and push the box left", [("pick", "apple", None, None), ("push", "box", None, "left")]),
    ("pick up the apple, then push the box left", [("pick", "apple", None, None), ("push", "box", None, "left")]),
    ("pick up the apple and then push the box left", [("pick", "apple", None, None), ("push", "box", None, "left")]),
    ("first pick up the apple, then push the box left",
     [("pick", "apple", None, None), ("push", "box", None, "left")]),
    ("pick up the apple. after that, push the box left",
     [("pick", "apple", None, None), ("push", "box", None, "left")]),
    ("pick up the apple and after that push the box to the right",
     [("pick", "apple", None, None), ("push", "box", None, "right")]),
    ("push the box left then pull the drawer", [("push", "box", None, "left"), ("pull", "drawer", None, None)]),
    ("point at the bottle and then push it forward",
     [("point_at", "bottle", None, None), ("push", "bottle", None, "forward")]),
    # two sentences
    ("Pick up the cup. Put it on the tray.", [("pick", "cup", None, None), ("place", "cup", "tray", None)]),
    ("pick up the cup! push the box left!", [("pick", "cup", None, None), ("push", "box", None, "left")]),
    ("Push the box left; point at the apple.", [("push", "box", None, "left"), ("point_at", "apple", None, None)]),
    # "take/grab X and put it in Y": it/them refer to the previous step's object
    ("take the red cube and put it in the blue bin", [PICK_CUBE, PLACE_CUBE_BIN]),
    ("Take the red cube and put it in the blue bin.", [PICK_CUBE, PLACE_CUBE_BIN]),
    ("grab the red cube and drop it into the blue bin", [PICK_CUBE, PLACE_CUBE_BIN]),
    ("grab the cups and put them on the tray", [("pick", "cups", None, None), ("place", "cups", "tray", None)]),
    ("pick the red cube up and put it down in the blue bin", [PICK_CUBE, PLACE_CUBE_BIN]),
    ("could you please grab the red cube and then put it in the blue bin for me", [PICK_CUBE, PLACE_CUBE_BIN]),
    # "after you X, Y" and the other orders meant, not written
    ("after you pick up the red cube, put it in the blue bin", [PICK_CUBE, PLACE_CUBE_BIN]),
    ("put the red cube in the blue bin after you pick it up", [PICK_CUBE, PLACE_CUBE_BIN]),
    ("once you grab the apple, push the box left",
     [("pick", "apple", None, None), ("push", "box", None, "left")]),
    ("before you push the box left, pick up the apple",
     [("pick", "apple", None, None), ("push", "box", None, "left")]),
    ("pick up the apple before you push the box left",
     [("pick", "apple", None, None), ("push", "box", None, "left")]),
    # "put X in Y": an implicit pick of X
    ("put the red cup in the bowl", [("pick", "red cup", None, None), ("place", "red cup", "bowl", None)]),
    ("place the apple on the tray, then push the box left",
     [("pick", "apple", None, None), ("place", "apple", "tray", None), ("push", "box", None, "left")]),
    ("push the box left and put the banana next to the bowl",
     [("push", "box", None, "left"), ("pick", "banana", None, None), ("place", "banana", "bowl", None)]),
    ("put the red cup in the bowl. Then put the apple on the tray",
     [("pick", "red cup", None, None), ("place", "red cup", "bowl", None),
      ("pick", "apple", None, None), ("place", "apple", "tray", None)]),
    # three steps
    ("pick up the apple, put it in the bowl, then push the box left",
     [("pick", "apple", None, None), ("place", "apple", "bowl", None), ("push", "box", None, "left")]),
    ("grab the sponge. drop it in the tray. then point at the bottle.",
     [("pick", "sponge", None, None), ("place", "sponge", "tray", None), ("point_at", "bottle", None, None)]),
    ("push the box left, pull the drawer and then point at the apple",
     [("push", "box", None, "left"), ("pull", "drawer", None, None), ("point_at", "apple", None, None)]),
    ("put the apple in the bowl and then put the banana on the tray",
     [("pick", "apple", None, None), ("place", "apple", "bowl", None),
      ("pick", "banana", None, None), ("place", "banana", "tray", None)]),
    # the drawer
    ("pull the drawer and then place the pen in the drawer",
     [("pull", "drawer", None, None), ("pick", "pen", None, None), ("place", "pen", "drawer", None)]),
    ("pull the drawer out, then put the pen into it", [("pull", "drawer", None, "out"),
                                                       ("pick", "pen", None, None), ("place", "pen", None, None)]),
    # "and" inside an object phrase is not a step boundary
    ("pick up the black and white mug", [("pick", "black and white mug", None, None)]),
    ("pick up the black and white mug and put it in the bowl",
     [("pick", "black and white mug", None, None), ("place", "black and white mug", "bowl", None)]),
    ("put the salt and pepper shaker on the tray",
     [("pick", "salt and pepper shaker", None, None), ("place", "salt and pepper shaker", "tray", None)]),
    ("the red cup, pick it up", [("pick", "red cup", None, None)]),
    # a stop anywhere stops everything
    ("pick up the cup and then stop", [("none", None, None, None)]),
    ("pick up the cup, no, don't", [("none", None, None, None)]),
    ("put the cup in the bowl, no, put it on the tray", [("none", None, None, None)]),
]


def test_compound_table_is_large_enough() -> None:
    assert len(COMPOUND) >= 30


@pytest.mark.parametrize("command,steps", COMPOUND)
def test_compound_phrasings(parser: InstructionParser, command: str, steps: List[Step]) -> None:
    assert planned(parser, command) == steps


# --------------------------------------------------------------------------- refusals name the part
@pytest.mark.parametrize("command,part", [
    ("pick up the cup then the ball", "the ball"),
    ("pick up the cup, then the ball", "the ball"),
    ("pick up the apple. juggle the ball.", "juggle the ball"),
    ("push the box left, then dance", "dance"),
    ("put the cup in the bowl and the apple on the tray", "the apple on the tray"),
    ("take the red cube and then put it in the blue bin. after that, wiggle", "wiggle"),
])
def test_a_part_without_a_skill_refuses_the_whole_command(parser: InstructionParser, command: str,
                                                          part: str) -> None:
    with pytest.raises(CommandError) as info:
        parser.parse_steps(command)
    assert (info.value.reason, info.value.part) == ("unknown_skill", part)
    assert f"'{part}'" in str(info.value)


def test_unreadable_commands_keep_their_reason(parser: InstructionParser) -> None:
    with pytest.raises(CommandError) as info:
        parser.parse_steps("   ")
    assert info.value.reason == "empty_command"
    with pytest.raises(CommandError) as info:
        parser.parse_steps("pick up\x00 the cup and put it in the bowl")
    assert info.value.reason == "bad_command"


def test_trailing_connectors_and_punctuation_are_not_steps(parser: InstructionParser) -> None:
    for command in ("pick up the cup then", "pick up the cup.", "pick up the cup, and", "pick up the cup!!"):
        assert parser.parse_steps(command) == [parser.parse(command)]


# --------------------------------------------------------------------------- single commands unchanged
def _single_commands() -> List[str]:
    spec = importlib.util.spec_from_file_location("_old_table", Path(__file__).with_name("test_language.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    multi = {"pick up the cup and put it in the bowl"}  # the one compound command of the old table
    return [row[0] for row in module.PHRASINGS + module.DETAILS if row[0] not in multi]


@pytest.mark.parametrize("command", _single_commands())
def test_single_commands_parse_exactly_as_before(parser: InstructionParser, command: str) -> None:
    assert parser.parse_steps(command) == [parser.parse(command)]


def test_the_first_step_of_a_compound_is_what_parse_reads(parser: InstructionParser) -> None:
    command = "pick up the cup and put it in the bowl"
    first, whole = parser.parse_steps(command)[0], parser.parse(command)
    assert first.text == "pick up the cup"  # each step carries its own clause
    assert {**first.to_full_dict(), "text": None} == {**whole.to_full_dict(), "text": None}


def test_steps_keep_relation_and_text(parser: InstructionParser) -> None:
    steps = parser.parse_steps("grab the apple, then put it to the left of the bowl")
    assert [s.text for s in steps] == ["grab the apple", "put it to the left of the bowl"]
    assert (steps[1].relation, steps[1].object, steps[1].verb) == ("left_of", "apple", "put")


def test_stop_in_a_compound_reads_the_whole_command(parser: InstructionParser) -> None:
    (step,) = parser.parse_steps("Pick up the cup and then stop!")
    assert (step.skill, step.text, step.verb, step.object) == ("none", "pick up the cup and then stop", "stop", None)


def test_decimal_points_are_not_sentence_ends(parser: InstructionParser) -> None:
    assert parser.parse_steps("move 0.5 m left") == [parser.parse("move 0.5 m left")]
