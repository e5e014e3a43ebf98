"""One command length limit over DDS: the node's max_command_length, also inside the parser.

The parser once had its own hidden 512-character limit, so 513+ characters were refused under
the default of 1000 and ``-p max_command_length:=5000`` changed nothing. Each case starts a
node of its own (the limit is given at start-up, as a robot team would).
"""
from __future__ import annotations

import os

import pytest

pytest.importorskip("rclpy")

from clip_vla.testing.harness import start_ready, tabletop_scene, tiny_model_overrides, unique_domain_id  # noqa: E402

COMMAND = "pick up the red cup"


def polite(length: int) -> str:
    """``COMMAND`` after as many "please " as make ``length`` characters (the parser drops them)."""
    pleases, rest = divmod(length - len(COMMAND), len("please "))
    return " " * rest + "please " * pleases + COMMAND


@pytest.fixture()
def ask(tiny_models, open_vocabulary_file):
    """``ask(limit, lengths, offset)``: the statuses of polite commands of ``lengths`` on a node of its own."""
    def run(limit, lengths, offset):
        extra = {} if limit is None else {"max_command_length": limit}
        try:
            proc, c = start_ready(tiny_model_overrides(tiny_models, open_vocabulary_file, **extra),
                                  f"/test_length_{os.getpid()}_{offset}", unique_domain_id(offset))
        except RuntimeError as exc:
            pytest.fail(str(exc))
        try:
            rgb, depth, k = tabletop_scene(64, 48)
            answers = []
            for length in lengths:
                c.publish_frame(rgb, depth, k, wait_acked=2.0)
                text = polite(length)
                assert len(text) == length
                answers.append(c.ask(text, timeout=30.0))
            return answers
        finally:
            c.close()
            proc.stop()

    return run


def test_an_800_character_command_runs_under_the_default_limit(ask):
    (answer,) = ask(None, [800], 50)
    assert answer["status"] == "accepted", answer
    assert answer["goal"]["cmd"] == "pick" and answer["goal"]["object"] == "red cup", answer


def test_the_parameter_raises_the_limit_and_is_cited_above_it(ask):
    ran, refused = ask(5000, [3000, 5001], 51)
    assert ran["status"] == "accepted", ran
    assert refused["status"] == "bad_command", refused
    assert refused["message"] == "command has 5001 characters; the limit is 5000 (max_command_length)"
