"""Instruction parser: phrasings -> (skill, object, destination) against the package vocabulary."""
from __future__ import annotations

import json
from typing import List, Optional

import pytest

from clip_vla.core.config import Vocabulary, default_vocabulary_path
from clip_vla.core.language import (
    CommandError,
    InstructionParser,
    ParsedInstruction,
    normalise,
    parse_to_json,
)


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return Vocabulary.from_yaml(default_vocabulary_path())


@pytest.fixture(scope="module")
def parser(vocabulary: Vocabulary) -> InstructionParser:
    return InstructionParser(vocabulary)


# (command, skill, object, destination)
PHRASINGS = [
    # pick
    ("pick up the red cup", "pick", "red cup", None),
    ("Pick up the red cup.", "pick", "red cup", None),
    ("PLEASE pick up the red cup!", "pick", "red cup", None),
    ("could you grab the apple?", "pick", "apple", None),
    ("Robot, could you please grab the apple now?", "pick", "apple", None),
    ("pick the red cup up", "pick", "red cup", None),
    ("grasp the blue cup", "pick", "blue cup", None),
    ("lift the bottle", "pick", "bottle", None),
    ("lift the bottle up", "pick", "bottle", None),
    ("take the apple from the table", "pick", "apple", None),
    ("take the cup out of the box", "pick", "cup", None),
    ("pick up the t-shirt", "pick", "t-shirt", None),
    ("grab the child's toy", "pick", "child's toy", None),
    ("grab the child\u2019s toy", "pick", "child's toy", None),
    ("pick it up", "pick", None, None),
    ("grab that one", "pick", None, None),
    ("the red cup, pick it up", "pick", "red cup", None),
    ("pick up the cup on the left", "pick", "cup on the left", None),
    ("pick up the cup and put it in the bowl", "pick", "cup", None),
    ("bring me the apple", "place", "apple", None),
    # place
    ("put the red cup in the bowl", "place", "red cup", "bowl"),
    ("Put the red cup into the bowl.", "place", "red cup", "bowl"),
    ("place the apple on the tray", "place", "apple", "tray"),
    ("place the apple onto the tray", "place", "apple", "tray"),
    ("put the banana next to the bowl", "place", "banana", "bowl"),
    ("drop the sponge inside the box", "place", "sponge", "box"),
    ("move the block to the tray", "place", "block", "tray"),
    ("put the apple down on the tray", "place", "apple", "tray"),
    ("set the cup down on the tray", "place", "cup", "tray"),
    ("put the cup back on the tray", "place", "cup", "tray"),
    ("put it in the bowl", "place", None, "bowl"),
    ("put the cup on top of the box", "place", "cup", "box"),
    ("put the cup to the left of the bowl", "place", "cup", "bowl"),
    ("could you put the blue cup in front of the bowl please", "place", "blue cup", "bowl"),
    ("place the stack of plates on the tray", "place", "stack of plates", "tray"),
    ("move the cup from the table to the bowl", "place", "cup", "bowl"),
    # push / pull
    ("push the box", "push", "box", None),
    ("push the box to the left", "push", "box", None),
    ("push the box left", "push", "box", None),
    ("move the box left", "push", "box", None),
    ("move the box to the left", "push", "box", None),
    ("slide the red cup towards the bowl", "push", "red cup", "bowl"),
    ("push the box away from the bowl", "push", "box", None),
    ("pull the drawer", "pull", "drawer", None),
    ("pull the drawer towards me", "pull", "drawer", None),
    # open / close
    ("open the drawer", "open", "drawer", None),
    ("close the box", "close", "box", None),
    ("shut the drawer", "close", "drawer", None),
    # point
    ("point at the apple", "point_at", "apple", None),
    ("point to the green cup", "point_at", "green cup", None),
    ("show me the bottle", "point_at", "bottle", None),
    ("touch the sponge", "point_at", "sponge", None),
    # stop
    ("stop", "none", None, None),
    ("Stop!", "none", None, None),
    ("halt", "none", None, None),
    ("cancel", "none", None, None),
    ("cancel that", "none", None, None),
    ("stop pushing the box", "none", None, None),
    ("don't push the cup", "none", None, None),
    # no verb, no fallback
    ("the red cup", None, "red cup", None),
]


def test_table_is_large_enough() -> None:
    assert len(PHRASINGS) >= 30


@pytest.mark.parametrize("command,skill,obj,destination", PHRASINGS)
def test_phrasings(parser: InstructionParser, command: str, skill: Optional[str], obj: Optional[str],
                   destination: Optional[str]) -> None:
    parsed = parser.parse(command)
    assert parsed.to_dict() == {"skill": skill, "object": obj, "destination": destination}, parsed


# (command, relation, direction, source, verb): the fields beyond to_dict()
DETAILS = [
    ("put the red cup in the bowl", "in", None, None, "put"),
    ("put the red cup into the bowl", "in", None, None, "put"),
    ("drop the sponge inside the box", "in", None, None, "drop"),
    ("place the apple onto the tray", "on", None, None, "place"),
    ("put the cup on top of the box", "on", None, None, "put"),
    ("put the banana next to the bowl", "next_to", None, None, "put"),
    ("put the banana beside the bowl", "next_to", None, None, "put"),
    ("put the banana near the bowl", "near", None, None, "put"),
    ("move the block to the tray", "to", None, None, "move"),
    ("slide the red cup towards the bowl", "to", None, None, "slide"),
    ("put the cup behind the box", "behind", None, None, "put"),
    ("put the cup in front of the box", "in_front_of", None, None, "put"),
    ("put the cup to the left of the bowl", "left_of", None, None, "put"),
    ("put the cup right of the bowl", "right_of", None, None, "put"),
    ("put the cup under the shelf", "under", None, None, "put"),
    ("push the box to the left", None, "left", None, "push"),
    ("push the box to the right-hand side", None, "right", None, "push"),
    ("move the box left", None, "left", None, "move"),
    ("pull the drawer towards me", None, "closer", None, "pull"),
    ("pull the drawer out", None, "out", None, "pull"),
    ("push the drawer in", None, "in", None, "push"),
    ("push the box away from the bowl", None, "away", "bowl", "push"),
    ("put the apple on the left", None, "left", None, "put"),
    ("take the apple from the table", None, None, "table", "take"),
    ("move the cup from the table to the bowl", "to", None, "table", "move"),
    ("pick the red cup up", None, None, None, "pick up"),
    ("put the apple down on the tray", "on", None, None, "put down"),
    ("point at the apple", None, None, None, "point at"),
    ("cancel that", None, None, None, "cancel"),
]


@pytest.mark.parametrize("command,relation,direction,source,verb", DETAILS)
def test_details(parser: InstructionParser, command: str, relation: Optional[str], direction: Optional[str],
                 source: Optional[str], verb: Optional[str]) -> None:
    parsed = parser.parse(command)
    got = (parsed.relation, parsed.direction, parsed.source, parsed.verb)
    assert got == (relation, direction, source, verb), parsed


def test_direction_is_never_a_destination(parser: InstructionParser) -> None:
    for command in ("push the box to the left", "push the box towards the right", "slide the cup forward",
                    "move the box to the back", "nudge the cup closer"):
        parsed = parser.parse(command)
        assert parsed.destination is None, parsed
        assert parsed.direction is not None, parsed
        assert parsed.skill == "push", parsed


def test_stop_clears_everything(parser: InstructionParser) -> None:
    parsed = parser.parse("stop moving the red cup into the bowl")
    assert parsed.skill == "none"
    assert parsed.skill_source == "verb"
    assert (parsed.object, parsed.destination, parsed.relation, parsed.direction) == (None, None, None, None)


def test_skill_source_and_text(parser: InstructionParser) -> None:
    parsed = parser.parse("  PLEASE   pick up the Red Cup!! ")
    assert parsed.text == "please pick up the red cup"
    assert parsed.skill_source == "verb"


def test_to_dict_and_full_dict(parser: InstructionParser) -> None:
    parsed = parser.parse("put the red cup in the bowl")
    assert isinstance(parsed, ParsedInstruction)
    assert parsed.to_dict() == {"skill": "place", "object": "red cup", "destination": "bowl"}
    full = parsed.to_full_dict()
    assert full == {
        "text": "put the red cup in the bowl",
        "skill": "place",
        "object": "red cup",
        "destination": "bowl",
        "relation": "in",
        "verb": "put",
        "skill_source": "verb",
        "direction": None,
        "source": None,
    }
    with pytest.raises(Exception):
        parsed.skill = "pick"  # type: ignore[misc]  # frozen


def test_parse_to_json(vocabulary: Vocabulary) -> None:
    out = parse_to_json("Put the red cup into the bowl.", vocabulary)
    assert json.loads(out) == {"skill": "place", "object": "red cup", "destination": "bowl"}
    assert json.loads(parse_to_json("stop", vocabulary)) == {"skill": "none", "object": None, "destination": None}


# --------------------------------------------------------------------------- fallback
def test_fallback_used_when_no_verb(vocabulary: Vocabulary) -> None:
    seen: List[str] = []

    def always_pick(text: str) -> Optional[str]:
        seen.append(text)
        return "pick"

    parser = InstructionParser(vocabulary, similarity_fallback=always_pick)
    parsed = parser.parse("The red cup!")
    assert (parsed.skill, parsed.object, parsed.skill_source) == ("pick", "red cup", "similarity")
    assert seen == ["the red cup"]  # the fallback sees the normalised command


def test_fallback_not_called_when_verb_present(vocabulary: Vocabulary) -> None:
    def broken(text: str) -> Optional[str]:
        raise AssertionError(f"fallback called for {text!r}")

    parsed = InstructionParser(vocabulary, similarity_fallback=broken).parse("push the box")
    assert (parsed.skill, parsed.skill_source) == ("push", "verb")


def test_no_fallback_or_fallback_none(vocabulary: Vocabulary) -> None:
    parsed = InstructionParser(vocabulary).parse("the red cup")
    assert (parsed.skill, parsed.object, parsed.skill_source) == (None, "red cup", "none")
    parsed = InstructionParser(vocabulary, similarity_fallback=lambda text: None).parse("the red cup")
    assert (parsed.skill, parsed.object, parsed.skill_source) == (None, "red cup", "none")


def test_fallback_keeps_destination(vocabulary: Vocabulary) -> None:
    parser = InstructionParser(vocabulary, similarity_fallback=lambda text: "place")
    parsed = parser.parse("red cup into the bowl")
    assert parsed.to_dict() == {"skill": "place", "object": "red cup", "destination": "bowl"}
    assert parsed.skill_source == "similarity"


def test_fallback_stop_clears_object(vocabulary: Vocabulary) -> None:
    parsed = InstructionParser(vocabulary, similarity_fallback=lambda text: "none").parse("the red cup")
    assert (parsed.skill, parsed.object) == ("none", None)


def test_fallback_unknown_skill_is_an_error(vocabulary: Vocabulary) -> None:
    parser = InstructionParser(vocabulary, similarity_fallback=lambda text: "juggle")
    with pytest.raises(ValueError, match="juggle"):
        parser.parse("the red cup")


def test_parse_to_json_with_fallback(vocabulary: Vocabulary) -> None:
    out = parse_to_json("red cup", vocabulary, similarity_fallback=lambda text: "pick")
    assert json.loads(out) == {"skill": "pick", "object": "red cup", "destination": None}


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "command,message",
    [
        ("", "command is empty"),
        ("   \t\n  ", "command is empty"),
        ("?!...", "no letters"),
        ("!!! 123 ---", "no letters"),
        ("pick up\x00 the cup", "control character"),
        ("pick up the cup\x1b[2J", "control character"),
        ("pick\x7f up", "control character"),
    ],
)
def test_unreadable_commands(parser: InstructionParser, command: str, message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("?", r"\?")):
        parser.parse(command)


def test_huge_command_rejected(parser: InstructionParser) -> None:
    with pytest.raises(CommandError) as info:
        parser.parse("a" * 102400)
    assert str(info.value) == "command is 102400 characters long; the limit is 1000"
    with pytest.raises(CommandError, match="limit is 1000"):
        parser.parse("put the red cup in the bowl " * 4000)
    with pytest.raises(CommandError, match="limit is 1000"):
        parser.parse("(" * 102400 + "a")


def test_length_limit_is_after_normalisation(vocabulary: Vocabulary) -> None:
    parser = InstructionParser(vocabulary, max_length=20)
    assert parser.parse("pick up   the   cup!!!!!!!!!!!!").object == "cup"  # 31 raw, 18 normalised
    with pytest.raises(CommandError, match="command is 27 characters long; the limit is 20"):
        parser.parse("pick up the red cup quickly")
    with pytest.raises(ValueError):
        InstructionParser(vocabulary, max_length=0)


def test_command_error_is_value_error() -> None:
    assert issubclass(CommandError, ValueError)


def test_non_text_rejected(parser: InstructionParser) -> None:
    with pytest.raises(CommandError, match="str"):
        parser.parse(b"pick up the cup")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- normalise
@pytest.mark.parametrize(
    "raw,expected",
    [
        ("Put the Red Cup into the bowl.", "put the red cup into the bowl"),
        ("  pick\tup\n the  cup  ", "pick up the cup"),
        ("pick up the T-shirt", "pick up the t-shirt"),
        ("grab the child\u2019s toy", "grab the child's toy"),
        ("'quoted' - dashed -- words", "quoted dashed words"),
        ("\uff30\uff29\uff23\uff2b up", "pick up"),  # full-width letters (NFKC)
        ("move 0.5 m left.", "move 0.5 m left"),
        ("pi\u200bck up", "pick up"),  # zero-width space is not a word break
        ("robot, stop!!!", "robot stop"),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


# --------------------------------------------------------------------------- vocabulary driven
def test_verbs_come_from_the_vocabulary() -> None:
    vocab = Vocabulary.from_dict(
        {
            "stop_skill": "idle",
            "skills": [
                {"name": "idle", "token": 0, "verbs": ["freeze"], "needs_object": False},
                {"name": "wipe", "token": 1, "verbs": ["wipe", "wipe down", "clean"]},
                {"name": "place", "token": 2, "verbs": ["move"], "needs_destination": True},
            ],
        }
    )
    parser = InstructionParser(vocab)
    assert parser.parse("wipe the table down").to_full_dict()["verb"] == "wipe down"
    assert parser.parse("clean the table").to_dict() == {"skill": "wipe", "object": "table", "destination": None}
    assert parser.parse("freeze!").skill == "idle"
    assert parser.parse("pick up the cup").skill is None  # "pick" is not in this vocabulary
    # Without a push skill, "move X left" stays the vocabulary's place.
    parsed = parser.parse("move the box left")
    assert (parsed.skill, parsed.direction) == ("place", "left")
