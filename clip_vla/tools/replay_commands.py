"""Where ``clip-vla replay`` takes its commands from: the bag's command topic, or the command line.

A camera-only bag has no command topic, yet a robot team wants to replay it with commands of
its choice:

- ``--command TEXT`` (repeatable) sends each text right after the first colour frame (at that
  frame's bag time, so it pairs with it), or at ``--command-at SECONDS`` from the bag's start
  (one ``--command-at`` for all, or one per ``--command``, in order);
- ``--commands-file FILE`` gives times and texts, one command per line::

      # seconds from the bag's start, then whitespace, then the command text
      0.5    pick up the red cup
      2.25   put the red cup in the box
      frame  push the block        <- "frame": right after the first colour frame

  Blank lines and lines starting with ``#`` are skipped; the rest of a line is the text as is
  (a ``#`` inside it is part of the command).

Commands given this way replace the bag's command topic, which is then not read. Commands
are answered in time order (commands of equal time keep the order given).

Without them, the bag's command topic is checked up front (present, ``std_msgs/msg/String``,
with messages), so a wrong ``--command-topic`` is one clear error rather than "0 commands".
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from clip_vla.tools import bags
from clip_vla.tools.bags import BagError, BagIndex, TopicMessage

__all__ = ["CommandSourceError", "ScheduledCommand", "add_arguments", "from_arguments", "parse_commands_file",
           "check_topics", "use_commands", "AT_FIRST_FRAME"]

AT_FIRST_FRAME = "frame"  # the time word of a --commands-file line sent right after the first colour frame
_IMAGE_TYPES = (bags.IMAGE, bags.COMPRESSED_IMAGE)


class CommandSourceError(BagError):
    """The commands to replay cannot be had as asked; the message says why (a ``BagError``, so the
    CLI reports it like any other bag problem: one line, exit 2)."""


@dataclass(frozen=True)
class ScheduledCommand:
    """A command given on the command line: its text and when to send it."""

    text: str
    at: Optional[float] = None  # seconds from the bag's start; None: right after the first colour frame


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--command``, ``--command-at`` and ``--commands-file`` options of ``clip-vla replay``."""
    g = parser.add_argument_group("commands of your choice (replace the bag's command topic)")
    g.add_argument("--command", action="append", default=[], metavar="TEXT",
                   help="a command to send (repeatable): right after the first colour frame, or at --command-at")
    g.add_argument("--command-at", action="append", default=[], type=float, metavar="SECONDS",
                   help="seconds from the bag's start: once for every --command, or once per --command in order")
    g.add_argument("--commands-file", metavar="FILE",
                   help="one command per line: SECONDS (from the bag's start) or 'frame', whitespace, the text; "
                        "'#' lines are comments")


def from_arguments(args: argparse.Namespace) -> Tuple[ScheduledCommand, ...]:
    """The commands that ``add_arguments``' options give (empty: use the bag's command topic).

    Raises:
        CommandSourceError: ``--command-at`` without ``--command``, a count that matches neither
            one nor every ``--command``, a negative or non-finite time, or a bad commands file.
    """
    texts: List[str] = list(getattr(args, "command", None) or [])
    times: List[float] = list(getattr(args, "command_at", None) or [])
    if times and not texts:
        raise CommandSourceError("--command-at needs a --command to send")
    if len(times) not in (0, 1, len(texts)):
        raise CommandSourceError(f"{len(times)} --command-at for {len(texts)} --command: give one for all, "
                                 "or one per --command")
    for t in times:
        _check_time(t, "--command-at")
    at: List[Optional[float]] = times * len(texts) if len(times) == 1 else list(times) or [None] * len(texts)
    out = [ScheduledCommand(text, when) for text, when in zip(texts, at)]
    if getattr(args, "commands_file", None):
        out.extend(parse_commands_file(args.commands_file))
    return tuple(out)


def parse_commands_file(path: Union[str, Path]) -> List[ScheduledCommand]:
    """The commands of a ``--commands-file`` (format in the module docstring).

    Raises:
        CommandSourceError: the file is missing or unreadable, a line is not ``TIME TEXT``, or it
            holds no command.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CommandSourceError(f"commands file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandSourceError(f"cannot read commands file {p}: {exc}") from exc
    out: List[ScheduledCommand] = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(None, 1)
        if len(parts) < 2:
            raise CommandSourceError(f"{p}:{number}: expected 'SECONDS TEXT' or '{AT_FIRST_FRAME} TEXT', "
                                     f"got '{stripped[:60]}'")
        word, text = parts
        if word.lower() == AT_FIRST_FRAME:
            out.append(ScheduledCommand(text, None))
            continue
        try:
            seconds = float(word)
        except ValueError:
            raise CommandSourceError(f"{p}:{number}: '{word[:30]}' is not a time in seconds "
                                     f"(or '{AT_FIRST_FRAME}')") from None
        _check_time(seconds, f"{p}:{number}")
        out.append(ScheduledCommand(text, seconds))
    if not out:
        raise CommandSourceError(f"{p} holds no command (one per line: SECONDS TEXT)")
    return out


def _check_time(seconds: float, where: str) -> None:
    if not math.isfinite(seconds) or seconds < 0:
        raise CommandSourceError(f"{where}: {seconds} is not a time from the bag's start (seconds >= 0)")


def check_topics(topics: Mapping[str, Tuple[str, int]], options: Any) -> None:
    """Fail early, before models load, when nothing could be replayed: without commands of the
    caller's choice, a command topic that is missing, not std_msgs/String, or without messages.

    ``topics`` is ``bags.bag_topics``' ``{topic: (msgtype, message count)}``; ``options`` a
    ``ReplayOptions`` (``command_topic``, ``commands``).

    Raises:
        CommandSourceError: with what is wrong and which option to set.
    """
    if getattr(options, "commands", ()):
        return
    topic = options.command_topic
    if topic not in topics:
        names = ", ".join(sorted(topics)) or "none"
        raise CommandSourceError(f"no command topic '{topic}' in the bag; topics: {names} "
                                 "(set --command-topic, or give --command / --commands-file)")
    msgtype, count = topics[topic]
    if msgtype != bags.STRING:
        raise CommandSourceError(f"command topic {topic} has type {msgtype}, expected {bags.STRING} "
                                 "(set --command-topic, or give --command / --commands-file)")
    if count == 0:
        raise CommandSourceError(f"command topic {topic} has no messages: nothing to replay "
                                 "(give --command or --commands-file)")


def use_commands(index: BagIndex, options: Any) -> None:
    """Check the scanned bag's topics (``check_topics``) and, when ``options.commands`` is given,
    make them the commands of ``index`` (under ``options.command_topic``, at their bag times).
    A colour topic the bag lacks is a note in ``index.notes`` (every command answers no_frame,
    as the node would), so a misspelt ``--color-topic`` is said, not silent.

    Raises:
        CommandSourceError: as ``check_topics``; a command to send after the first colour frame
            of a bag that has none; a command topic that yielded no message.
    """
    check_topics({t: (info.msgtype, info.expected) for t, info in index.infos.items()}, options)
    if options.color_topic not in index.topics:
        images = sorted(t for t, msgtype in index.topics.items() if msgtype in _IMAGE_TYPES)
        index.notes.append(f"no colour topic '{options.color_topic}' in the bag (its image topics: "
                           f"{', '.join(images) or 'none'}): every command answers no_frame (set --color-topic)")
    commands: Sequence[ScheduledCommand] = getattr(options, "commands", ())
    if not commands:
        if not index.messages.get(options.command_topic):
            why = "; ".join(index.notes) or "the topic yielded none"
            raise CommandSourceError(f"no command could be read from {options.command_topic}: {why}")
        return
    frames = index.messages.get(options.color_topic, [])
    timed = []
    for command in commands:
        if command.at is not None:
            timed.append((index.start_ns + bags.seconds_to_ns(command.at), command.text))
        elif frames:
            timed.append((frames[0].time_ns, command.text))
        else:
            raise CommandSourceError(f"no colour frame on {options.color_topic} to send '{command.text[:60]}' "
                                     "after (give --command-at)")
    timed.sort(key=lambda item: item[0])  # stable: commands of equal time keep their order
    index.messages[options.command_topic] = [TopicMessage(i, t, None, bags.STRING, text=text)
                                             for i, (t, text) in enumerate(timed)]
