"""Plain-language commands -> (skill, object, destination): the instruction parser.

"Please put the red cup into the bowl!" becomes ``skill="place", object="red cup",
destination="bowl", relation="in"``. The grammar is deliberately small and
deterministic, because its output drives a robot: everything it cannot read is
reported as ``None`` (the pipeline then says what is missing) instead of guessed.

How a command is read (all matching is on whole words of the normalised text):

1. Validation: empty, absurdly long, letter-free or control-character commands raise
   :class:`CommandError` before any real work (no regexes, so nothing can blow up).
2. Politeness/fillers are dropped at the ends ("please", "could you", "robot", "now").
   A leading negation ("don't", "do not", "never mind") is read as the stop skill:
   a robot told "don't push the cup" must not move.
3. The skill verb is the longest vocabulary verb phrase (``Skill.verbs``) at the start;
   failing that, the first one elsewhere that is not used as a noun ("the drop zone",
   "a stack of plates"). Words before a late verb name the object when the words after
   it do not ("the red cup, pick it up"). With no verb at all the optional
   ``similarity_fallback`` (CLIP text similarity in the pipeline) picks the skill.
4. ``parse`` reads only the first clause: "pick up the cup and put it in the bowl" -> pick.
   ``parse_steps`` reads every clause as one step (see "Steps" below).
5. The rest splits at relation words ("in", "on top of", "next to", ...) and source
   words ("from", "out of", "off"): the first part is the object, the first relation
   phrase naming a thing is the destination; a source ("from the table") is where the
   object is now, never where it goes, and is kept apart in ``source``.
6. Separable particles join the verb when the vocabulary uses them with that skill:
   "pick the cup up" -> "pick up"; "put the apple down on the tray" -> "put down".
7. Direction words (left, right, forward, backward, away, closer, up, down, ...) are
   never objects: "push the box to the left" / "push the box left" -> ``direction="left"``
   and no destination. "on the left" after a skill that needs no destination is a
   locator of the object instead: "pick up the cup on the left" -> object
   "cup on the left", which is what CLIPSeg should look for.
8. "move" is a place verb, but "move X <direction>" with no destination means a push
   ("move the box left" -> push, direction left); "move the box to the tray" stays place.
9. Pronouns ("it", "them", "that one") are not objects: ``object=None``.

Steps (``parse_steps``): a command is cut into clauses, each read by ``parse``::

    "first take the red cube, and then put it in the blue bin. after that push the box left"
      |-- pick red cube --|          |-- place (it) -> blue bin --|   |-- push box, left --|

* Connectors: "and", ",", "next", "also" are *weak*: they split only where the words after
  them start with a known verb, so object phrases keep their "and" ("the black and white
  mug", "salt and pepper"). "then", "after that", "afterwards", "finally" and the end of a
  sentence are *strong*: the words after them must start a step, or the command is refused
  (``CommandError``, reason ``unknown_skill``, naming the part: "then the ball"). So must
  "and" followed by an article: "put the cup in the bowl and the apple on the tray" elides
  a verb, and the robot is not left to guess it.
  Either split also needs a verb in the clause before it, so "the red cup, pick it up" stays
  one step, read exactly as ``parse`` reads it.
* Subordinate clauses follow the meaning, not the writing: "after you X, Y" and "Y after you
  X" -> X, Y; "before you X, Y" and "Y before you X" -> Y, X.
* "it"/"them" (any step with no object named) refer to the object of the step before; in a
  reordered pair ("after you pick it up, put the cup in the bowl") to the other clause's.
* A stop anywhere ("pick up the cup, no, stop") makes the whole command a stop.
* A command with one clause is exactly ``[parse(text)]``. Implicit steps (the pick before
  "put X in Y") are the planner's job (``clip_vla.core.plan``), not the parser's.
"""
from __future__ import annotations

import dataclasses
import json
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from clip_vla.core.config import Vocabulary

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "CommandError",
    "InstructionParser",
    "ParsedInstruction",
    "normalise",
    "parse_to_json",
]

Phrase = Tuple[str, ...]
SimilarityFallback = Callable[[str], Optional[str]]

DEFAULT_MAX_LENGTH = 1000  # the node's max_command_length default; callers pass their own
# A raw command longer than this multiple of the limit is refused before normalisation,
# so a 100 kB (or 100 MB) string costs one len() call.
_RAW_LENGTH_FACTOR = 4
_RAW_LENGTH_SLACK = 1024


# --------------------------------------------------------------------------- word lists
def _phrases(*items: str) -> Tuple[Phrase, ...]:
    """Space-separated phrases as word tuples, longest first (so longer ones win)."""
    return tuple(sorted((tuple(i.split()) for i in items), key=len, reverse=True))


def _phrases_with(*items: Tuple[str, Any]) -> Tuple[Tuple[Phrase, Any], ...]:
    """(phrase, value) pairs as (word tuple, value), longest phrase first."""
    return tuple(sorted(((tuple(p.split()), v) for p, v in items), key=lambda e: len(e[0]), reverse=True))


# Dropped wherever they occur: never part of an object or a verb.
_DROP_ANYWHERE = frozenset({"please", "pls", "plz", "kindly"})

# Dropped (repeatedly) at the start of a command.
_LEADING_FILLERS = _phrases(
    "robot", "hey", "hey robot", "hi", "ok", "okay", "alright", "now", "then", "and", "so", "just",
    "could you", "can you", "would you", "will you", "could you maybe",
    "would you mind", "do you mind",
    "i want you to", "i'd like you to", "i would like you to", "i need you to",
    "you should", "you can", "you need to", "try to", "go ahead and", "go and", "go", "let's", "lets",
    "first", "next", "finally",
)

# Dropped (repeatedly) at the end of a command and of each phrase.
_TRAILING_FILLERS = _phrases(
    "now", "right now", "then", "again", "for me", "thanks", "thank you", "thank you very much",
    "quickly", "slowly", "carefully", "gently", "immediately", "as well", "too", "ok", "okay",
    "if you can", "if possible", "robot",
)

# A leading negation makes the whole command a stop.
_NEGATIONS = _phrases("don't", "dont", "do not", "never", "never mind", "nevermind", "no")

# Determiners and indirect objects dropped at the start of an object/destination phrase.
_DETERMINERS = _phrases(
    "the", "a", "an", "this", "that", "these", "those", "some", "any", "my", "your", "its", "his",
    "her", "their", "our", "me", "us", "one of the", "both", "each", "every",
)
_DETERMINER_WORDS = frozenset(w for p in _DETERMINERS for w in p)
_ARTICLES = _phrases("the", "a", "an")  # before a direction: "the left", not "me" (which is one)
_ARTICLE_WORDS = frozenset({"the", "a", "an"})

# Phrases that refer to something without naming it: the object is then unknown.
_PRONOUNS = frozenset(
    _phrases(
        "it", "them", "they", "itself", "him", "her", "one", "ones", "this", "that", "these", "those",
        "there", "something", "anything", "everything", "thing", "stuff", "that one", "this one",
        "me", "us", "you", "yourself",
    )
)

# Relation phrase -> normalised relation token.
_RELATIONS: Dict[str, str] = {
    "in": "in", "into": "in", "inside": "in", "inside of": "in", "within": "in",
    "on": "on", "onto": "on", "upon": "on", "atop": "on", "on top of": "on", "on the top of": "on",
    "next to": "next_to", "beside": "next_to", "alongside": "next_to", "adjacent to": "next_to",
    "near": "near", "near to": "near", "close to": "near", "closer to": "near", "nearer to": "near",
    "to": "to", "towards": "to", "toward": "to",
    "behind": "behind", "in back of": "behind",
    "in front of": "in_front_of",
    "under": "under", "underneath": "under", "below": "under", "beneath": "under",
    "above": "above",
}
for _side in ("left", "right"):
    for _lead in ("", "to the ", "on the ", "at the "):
        for _tail in (" of", " side of", " hand side of", "-hand side of"):
            _RELATIONS[f"{_lead}{_side}{_tail}"] = f"{_side}_of"

# Where the object is now ("take the apple from the table"): kept apart, never a destination.
_SOURCE_MARKERS = ("from", "off", "off of", "out of")
_SOURCE = "__source__"

# Relations after which "the left/right" locates the object rather than moving it.
_LOCATIVE_RELATIONS = frozenset({"in", "on"})

# Direction word -> normalised direction. Never an object or destination.
_DIRECTIONS: Dict[str, str] = {
    "left": "left", "left-hand": "left", "leftward": "left", "leftwards": "left",
    "right": "right", "right-hand": "right", "rightward": "right", "rightwards": "right",
    "forward": "forward", "forwards": "forward", "ahead": "forward", "front": "forward",
    "backward": "backward", "backwards": "backward", "back": "backward",
    "away": "away", "further": "away", "farther": "away",
    "closer": "closer", "nearer": "closer", "here": "closer",
    "me": "closer", "us": "closer", "you": "closer", "yourself": "closer",
    "up": "up", "upward": "up", "upwards": "up",
    "down": "down", "downward": "down", "downwards": "down",
    "out": "out", "outward": "out", "outwards": "out",
    "inward": "in", "inwards": "in",
    "aside": "aside", "sideways": "aside",
}
_DIRECTION_FILLER = frozenset({"side", "sides", "hand", "hand-side", "direction", "way", "edge"})

# Particles that may be separated from their verb ("pick the cup up").
_PARTICLES = frozenset({"up", "down", "back", "away", "out", "off", "over", "in", "aside"})

# Clause boundaries: "pick up the cup and then put it in the bowl" reads the first clause only.
_CLAUSE_WORDS = frozenset({"and", "then"})

# Verbs that name a push when they come with a direction but no destination.
_MOVE_VERBS = frozenset({"move", "shift"})

# ---- steps (parse_steps). Punctuation becomes these marker tokens before normalisation.
_SENTENCE_MARK = "<.>"  # . ! ? ; :  end a sentence: a strong connector
_COMMA_MARK = "<,>"  # a comma: a weak connector
_SENTENCE_PUNCTUATION = frozenset(".!?;:")

# Connector phrase -> strong? Strong connectors must be followed by a step; weak ones split
# only before a verb (so "the black and white mug" keeps its "and").
_CONNECTORS = _phrases_with(
    ("and", False), ("next", False), ("also", False), ("and also", False), (_COMMA_MARK, False),
    ("then", True), ("and then", True), ("after that", True), ("after this", True), ("afterwards", True),
    ("afterward", True), ("finally", True), ("and finally", True), ("lastly", True), (_SENTENCE_MARK, True),
)
# Subordinators -> which clause happens first: "after you X, Y" -> X first ("after");
# "before you X, Y" -> Y first ("before").
_SUBORDINATORS = _phrases_with(
    ("after you", "after"), ("after i", "after"), ("after we", "after"), ("once you", "after"),
    ("when you", "after"), ("as soon as you", "after"), ("after you have", "after"), ("once you have", "after"),
    ("before you", "before"), ("before i", "before"), ("before we", "before"),
)


class CommandError(ValueError):
    """The command cannot be read (empty, too long, no letters, control characters, a step with no skill).

    ``reason`` is a stable status string (``bad_command``, ``empty_command``, ``unknown_skill``);
    ``part`` is the piece of the command that could not be read, when it is one piece of several.
    """

    def __init__(self, message: str, reason: str = "bad_command", part: Optional[str] = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.part = part


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ParsedInstruction:
    """What a command asks for; ``None`` wherever the command does not say."""

    text: str
    skill: Optional[str] = None
    object: Optional[str] = None
    destination: Optional[str] = None
    relation: Optional[str] = None  # in | on | next_to | near | to | behind | in_front_of | ...
    verb: Optional[str] = None  # the verb phrase as matched, particle included ("pick up")
    skill_source: str = "none"  # verb | similarity | none | plan (a step the planner added)
    direction: Optional[str] = None  # left | right | forward | backward | away | closer | up | ...
    source: Optional[str] = None  # "from the table": where the object is now

    def to_dict(self) -> Dict[str, Optional[str]]:
        """The three fields the action goal needs: the CLI's JSON output."""
        return {"skill": self.skill, "object": self.object, "destination": self.destination}

    def to_full_dict(self) -> Dict[str, Any]:
        """Every field, for logs and status messages."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- normalisation
_APOSTROPHES = {"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u2032": "'", "`": "'", "\u00b4": "'"}
_HYPHENS = {"\u2010": "-", "\u2011": "-", "\u2212": "-"}


def normalise(text: str) -> str:
    """NFKC, lowercase, punctuation to spaces, single spaces: what the grammar matches on.

    Hyphens and apostrophes survive only between two letters/digits ("t-shirt",
    "child's"), and a dot only between digits ("0.5"), so quotes and dashes used as
    punctuation vanish while words keep their spelling.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    chars: List[str] = []
    n = len(text)
    for i, ch in enumerate(text):
        ch = _APOSTROPHES.get(ch) or _HYPHENS.get(ch) or ch
        cat = unicodedata.category(ch)
        if ch.isalnum() or cat[0] == "M":
            chars.append(ch)
        elif cat == "Cf":  # zero-width joiners etc.: invisible, not a word break
            continue
        elif ch in "'-" or (ch == "." and i > 0 and text[i - 1].isdigit()):
            prev = text[i - 1] if i > 0 else ""
            nxt = text[i + 1] if i + 1 < n else ""
            keep = prev.isalnum() and nxt.isalnum()
            if ch == "." and not nxt.isdigit():
                keep = False
            chars.append(ch if keep else " ")
        else:
            chars.append(" ")
    return " ".join("".join(chars).split())


def _marked_tokens(text: str) -> List[str]:
    """Normalised words with punctuation kept as marker tokens (``<.>`` sentence end, ``<,>`` comma).

    ``normalise`` turns punctuation into spaces, which is right for one clause but loses where
    one sentence ends and the next begins; this keeps that, and nothing else, for ``parse_steps``.
    A dot between digits ("0.5") is a decimal point, not a sentence end.
    """
    text = unicodedata.normalize("NFKC", text)
    tokens: List[str] = []
    piece: List[str] = []
    for i, ch in enumerate(text):
        decimal = ch == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()
        if (ch in _SENTENCE_PUNCTUATION and not decimal) or ch == ",":
            tokens.extend(normalise("".join(piece)).split())
            tokens.append(_COMMA_MARK if ch == "," else _SENTENCE_MARK)
            piece = []
        else:
            piece.append(ch)
    tokens.extend(normalise("".join(piece)).split())
    return tokens


# --------------------------------------------------------------------------- word helpers
class _PhraseTable:
    """Word-tuple phrases indexed by first word; ``match`` returns the longest at a position."""

    def __init__(self, items: Iterable[Tuple[Sequence[str], Any]]) -> None:
        self._by_first: Dict[str, List[Tuple[Phrase, Any]]] = {}
        for words, value in items:
            key = tuple(words)
            if not key:
                continue
            bucket = self._by_first.setdefault(key[0], [])
            if all(existing != key for existing, _ in bucket):  # first definition wins
                bucket.append((key, value))
        for bucket in self._by_first.values():
            bucket.sort(key=lambda entry: len(entry[0]), reverse=True)

    def match(self, tokens: Sequence[str], i: int) -> Optional[Tuple[Phrase, Any]]:
        if i >= len(tokens):
            return None
        for words, value in self._by_first.get(tokens[i], ()):
            if tuple(tokens[i:i + len(words)]) == words:
                return words, value
        return None


def _strip_prefixes(tokens: List[str], phrases: Sequence[Phrase]) -> List[str]:
    changed = True
    while changed and tokens:
        changed = False
        for p in phrases:
            if len(p) <= len(tokens) and tuple(tokens[:len(p)]) == p:
                tokens = tokens[len(p):]
                changed = True
                break
    return tokens


def _strip_suffixes(tokens: List[str], phrases: Sequence[Phrase]) -> List[str]:
    changed = True
    while changed and tokens:
        changed = False
        for p in phrases:
            if len(p) <= len(tokens) and tuple(tokens[len(tokens) - len(p):]) == p:
                tokens = tokens[:len(tokens) - len(p)]
                changed = True
                break
    return tokens


def _prefix(tokens: Sequence[str], phrases: Sequence[Phrase]) -> Optional[Phrase]:
    for p in phrases:
        if tuple(tokens[: len(p)]) == p:
            return p
    return None


def _clean(tokens: Sequence[str]) -> List[str]:
    """Drop trailing fillers and leading determiners of a noun phrase."""
    return _strip_prefixes(_strip_suffixes(list(tokens), _TRAILING_FILLERS), _DETERMINERS)


def _noun(tokens: Sequence[str]) -> Optional[str]:
    """The named thing of a phrase, or None for nothing/pronouns ("it", "that one")."""
    words = _clean(tokens)
    if not words or tuple(words) in _PRONOUNS:
        return None
    return " ".join(words)


def _direction(tokens: Sequence[str]) -> Optional[str]:
    """"the left", "the right-hand side", "me" -> a direction token; anything else None."""
    words = _strip_prefixes(_strip_suffixes(list(tokens), _TRAILING_FILLERS), _ARTICLES)
    if not words or words[0] not in _DIRECTIONS:
        return None
    if any(w not in _DIRECTION_FILLER for w in words[1:]):
        return None
    return _DIRECTIONS[words[0]]


_RELATION_TABLE = _PhraseTable(
    [(k.split(), v) for k, v in _RELATIONS.items()] + [(m.split(), _SOURCE) for m in _SOURCE_MARKERS]
)
_RELATION_FIRST_WORDS = frozenset(k.split()[0] for k in _RELATIONS) | frozenset(m.split()[0] for m in _SOURCE_MARKERS)


@dataclass
class _Segment:
    marker: Phrase  # the relation/source words that opened it; () for the object part
    relation: Optional[str]  # normalised relation, _SOURCE, or None for the object part
    words: List[str]


def _segments(tokens: Sequence[str]) -> List[_Segment]:
    """Split at relation and source words: [object part, (relation, phrase), ...]."""
    segments = [_Segment((), None, [])]
    i = 0
    while i < len(tokens):
        found = _RELATION_TABLE.match(tokens, i)
        if found is None:
            segments[-1].words.append(tokens[i])
            i += 1
            continue
        words, relation = found
        segments.append(_Segment(words, relation, []))
        i += len(words)
    return segments


_CONNECTOR_TABLE = _PhraseTable(_CONNECTORS)
_SUBORDINATOR_TABLE = _PhraseTable(_SUBORDINATORS)


@dataclass
class _Clause:
    """The words of one step as written, and how it is ordered against its neighbour."""

    words: List[str]
    order: Optional[str] = None  # "after" | "before" for a subordinate clause ("after you X")
    opens_sentence: bool = True  # its partner is the next clause when it opens a sentence, else the previous


@dataclass(frozen=True)
class _Connector:
    """A run of connector words between two clauses, and what it says about them."""

    end: int  # index of the first word after the run
    strong: bool  # "then", a sentence end: the words after must start a step
    order: Optional[str]  # "after" | "before" when the run holds a subordinator
    new_sentence: bool


def _connector_at(tokens: Sequence[str], i: int) -> Optional[_Connector]:
    """The run of connectors/subordinators starting at ``i`` ("and then", ", after you"), if any."""
    j, strong, order, sentence = i, False, None, False
    while True:
        found = _CONNECTOR_TABLE.match(tokens, j)
        if found is not None:
            words, is_strong = found
            strong = strong or is_strong
            sentence = sentence or words == (_SENTENCE_MARK,)
            j += len(words)
            continue
        found = _SUBORDINATOR_TABLE.match(tokens, j)
        if found is not None:
            words, order = found
            j += len(words)
            continue
        break
    return _Connector(j, strong, order, sentence) if j > i else None


# --------------------------------------------------------------------------- parser
class InstructionParser:
    """Reads commands against one vocabulary; build once, ``parse`` many times (stateless)."""

    def __init__(
        self,
        vocabulary: Vocabulary,
        similarity_fallback: Optional[SimilarityFallback] = None,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        self.vocabulary = vocabulary
        self.similarity_fallback = similarity_fallback
        self.max_length = max_length
        self._stop = vocabulary.stop_skill
        verbs: List[Tuple[List[str], Tuple[str, str]]] = []
        particles: Dict[str, set] = {}
        for skill in vocabulary.skills:
            for verb in skill.verbs:
                words = normalise(str(verb)).split()
                if not words:
                    continue
                verbs.append((words, (" ".join(words), skill.name)))
                if len(words) > 1 and words[-1] in _PARTICLES:
                    particles.setdefault(skill.name, set()).add(words[-1])
        self._verbs = _PhraseTable(verbs)
        self._particles = {k: frozenset(v) for k, v in particles.items()}
        # "move the box left" is a push: the skill that owns the verb "push", if any.
        push = self._verbs.match(["push"], 0)
        self._push_skill: Optional[str] = push[1][1] if push else None

    # ---- validation
    def validate(self, text: str) -> str:
        """Normalised text, or CommandError saying why the command cannot be read at all."""
        if not isinstance(text, str):
            raise CommandError(f"command must be text (str), got {type(text).__name__}")
        raw_limit = self.max_length * _RAW_LENGTH_FACTOR + _RAW_LENGTH_SLACK
        if len(text) > raw_limit:  # refuse before touching the characters
            raise CommandError(f"command is {len(text)} characters long; the limit is {self.max_length}")
        if not text.strip():
            raise CommandError("command is empty", reason="empty_command")
        for pos, ch in enumerate(text):
            if unicodedata.category(ch) == "Cc" and not ch.isspace():
                raise CommandError(
                    f"command contains a control character (U+{ord(ch):04X}) at position {pos}"
                )
        norm = normalise(text)
        if len(norm) > self.max_length:
            raise CommandError(f"command is {len(norm)} characters long; the limit is {self.max_length}")
        if not any(ch.isalpha() for ch in norm):
            shown = text.strip()
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise CommandError(f"command contains no letters: {shown!r}")
        return norm

    # ---- parsing
    def parse(self, text: str) -> ParsedInstruction:
        """Read one command; raises CommandError only when it cannot be read at all."""
        norm = self.validate(text)
        tokens = [t for t in norm.split() if t not in _DROP_ANYWHERE]
        tokens = _strip_prefixes(tokens, _LEADING_FILLERS)
        tokens = _strip_suffixes(tokens, _TRAILING_FILLERS)

        negation = _prefix(tokens, _NEGATIONS)
        if negation is not None:
            return ParsedInstruction(text=norm, skill=self._stop, verb=" ".join(negation), skill_source="verb")

        found = self._find_verb(tokens)
        if found is None:
            skill = self._fallback(norm)
            source = "similarity" if skill is not None else "none"
            if skill == self._stop:
                return ParsedInstruction(text=norm, skill=skill, skill_source=source)
            return self._assemble(norm, skill, None, source, tokens, [])

        start, end, verb, skill = found
        if skill == self._stop:
            return ParsedInstruction(text=norm, skill=skill, verb=verb, skill_source="verb")
        rest = self._first_clause(tokens[end:])
        return self._assemble(norm, skill, verb, "verb", rest, tokens[:start])

    def parse_steps(self, text: str) -> List[ParsedInstruction]:
        """Every step of a command, in the order meant (see "Steps" in the module docstring).

        A command with one clause gives ``[parse(text)]``, unchanged. The steps are what was
        said: the planner adds the implicit ones (a pick before a place).

        Raises:
            CommandError: the command cannot be read at all (as ``parse``), or one part of a
                compound command names no known skill (reason ``unknown_skill``, ``part`` set):
                the whole command is refused, never a partial plan.
        """
        norm = self.validate(text)
        clauses = self._clauses(_marked_tokens(text))
        if len(clauses) == 1:
            return [self.parse(text)]
        steps = [self.parse(" ".join(c.words)) for c in clauses]
        for step in steps:
            if step.skill == self._stop:  # "pick up the cup, no, stop": the robot must not move
                return [ParsedInstruction(text=norm, skill=self._stop, verb=step.verb, skill_source="verb")]
        order, partner = _execution_order(clauses)
        return _resolve_references([steps[k] for k in order], [partner.get(k) for k in order], steps)

    def _clauses(self, tokens: Sequence[str]) -> List[_Clause]:
        """Cut marked tokens into clauses at connectors followed by a verb (see the docstring)."""
        tokens = [t for t in tokens if t not in _DROP_ANYWHERE]
        clauses = [_Clause([])]
        i = 0
        while i < len(tokens):
            run = _connector_at(tokens, i)
            if run is None:
                clauses[-1].words.append(tokens[i])
                i += 1
                continue
            current = clauses[-1]
            if not current.words:  # "after you X, ..." or leading punctuation: nothing to cut yet
                current.order = current.order or run.order
            elif self._starts_step(tokens, run.end) and self._find_verb(current.words) is not None:
                clauses.append(_Clause([], run.order, run.new_sentence))
            else:
                # "put the cup in the bowl and the apple on the tray": a second step without its verb
                elided = "and" in tokens[i:run.end] and run.end < len(tokens) and tokens[run.end] in _ARTICLE_WORDS
                if (run.strong or elided) and self._find_verb(current.words) is not None:
                    self._refuse_part(tokens, run.end)
                current.words.extend(t for t in tokens[i:run.end] if t not in (_SENTENCE_MARK, _COMMA_MARK))
            i = run.end
        return [c for c in clauses if c.words] or [_Clause([])]

    def _starts_step(self, tokens: Sequence[str], i: int) -> bool:
        """Whether the words from ``i`` (after polite fillers) begin with a skill verb."""
        rest = _strip_prefixes(list(tokens[i:]), _LEADING_FILLERS)
        found = self._verbs.match(rest, 0) if rest else None
        if found is None:
            return _prefix(rest, _NEGATIONS) is not None  # "..., don't": read as a stop step
        end = len(found[0])
        return not (end < len(rest) and rest[end] == "of")  # "a stack of plates" is a noun

    def _refuse_part(self, tokens: Sequence[str], i: int) -> None:
        """Refuse the command at a part after "then"/a sentence end that starts no step.

        Raises:
            CommandError: always (reason ``unknown_skill``), unless the part is empty/filler only.
        """
        part: List[str] = []
        for t in tokens[i:]:
            if t in (_SENTENCE_MARK, _COMMA_MARK):
                break
            part.append(t)
        words = _strip_suffixes(_strip_prefixes(part, _LEADING_FILLERS), _TRAILING_FILLERS)
        if words:
            shown = " ".join(part)
            skills = ", ".join(self.vocabulary.skill_names)
            raise CommandError(f"no known skill in the part '{shown}' (skills: {skills})", reason="unknown_skill",
                               part=shown)

    def _fallback(self, norm: str) -> Optional[str]:
        if self.similarity_fallback is None:
            return None
        skill = self.similarity_fallback(norm)
        if skill is None:
            return None
        if skill not in self.vocabulary.skill_names:
            raise ValueError(
                f"similarity_fallback returned unknown skill {skill!r} "
                f"(known: {self.vocabulary.skill_names})"
            )
        return skill

    def _find_verb(self, tokens: Sequence[str]) -> Optional[Tuple[int, int, str, str]]:
        """(start, end, verb phrase, skill) of the skill verb, preferring the first word."""
        for i in range(len(tokens)):
            if i > 0:
                prev = tokens[i - 1]
                if prev in _DETERMINER_WORDS or prev in _RELATION_FIRST_WORDS:
                    continue  # "the drop zone", "in the set": a noun, not the verb
            found = self._verbs.match(tokens, i)
            if found is None:
                continue
            words, (verb, skill) = found
            end = i + len(words)
            if i > 0 and end < len(tokens) and tokens[end] == "of":
                continue  # "a stack of plates"
            return i, end, verb, skill
        return None

    def _first_clause(self, tokens: List[str]) -> List[str]:
        """Cut at "and"/"then" followed by another verb: one command, one skill."""
        for j, word in enumerate(tokens):
            if word not in _CLAUSE_WORDS:
                continue
            k = j + 1
            while k < len(tokens) and tokens[k] in _CLAUSE_WORDS:
                k += 1
            if self._verbs.match(tokens, k) is not None:
                return tokens[:j]
        return tokens

    def _needs_destination(self, skill: Optional[str]) -> bool:
        if skill is None:
            return False
        try:
            return self.vocabulary.skill(skill).needs_destination
        except KeyError:
            return False

    def _assemble(
        self,
        norm: str,
        skill: Optional[str],
        verb: Optional[str],
        skill_source: str,
        rest: Sequence[str],
        before: Sequence[str],
    ) -> ParsedInstruction:
        segments = _segments(rest)
        head = _strip_suffixes(list(segments[0].words), _TRAILING_FILLERS)
        direction: Optional[str] = None
        if verb is not None and skill is not None and head and head[-1] in self._particles.get(skill, ()):
            verb = f"{verb} {head[-1]}"  # "pick the cup up" -> "pick up"
            head = _strip_suffixes(head[:-1], _TRAILING_FILLERS)
        if head and head[-1] in _DIRECTIONS:  # "push the box left"
            direction = _DIRECTIONS[head[-1]]
            head = head[:-1]
        obj = _noun(head)
        if obj is None and before:
            obj = _noun(before)  # "the red cup, pick it up"

        destination: Optional[str] = None
        relation: Optional[str] = None
        source: Optional[str] = None
        needs_destination = self._needs_destination(skill)
        for seg in segments[1:]:
            if seg.relation == _SOURCE:
                if source is None:
                    source = _noun(seg.words)
                continue
            towards = _direction(seg.words)
            if towards is None and not _clean(seg.words):
                if seg.relation == "in" and direction is None:  # "push the drawer in"
                    direction = "in"
                continue
            if towards is not None:
                if seg.relation in _LOCATIVE_RELATIONS and not needs_destination and obj is not None:
                    # "pick up the cup on the left": which cup, not where it goes.
                    obj = " ".join([obj, *seg.marker, *_strip_suffixes(list(seg.words), _TRAILING_FILLERS)])
                elif direction is None:
                    direction = towards
                continue
            if destination is None:
                name = _noun(seg.words)
                if name is not None:
                    destination, relation = name, seg.relation

        if (
            verb is not None
            and verb.split()[0] in _MOVE_VERBS
            and destination is None
            and direction is not None
            and self._push_skill is not None
        ):
            skill = self._push_skill  # "move the box left": no place to put it, so a push

        return ParsedInstruction(
            text=norm,
            skill=skill,
            object=obj,
            destination=destination,
            relation=relation,
            verb=verb,
            skill_source=skill_source,
            direction=direction,
            source=source,
        )


def _execution_order(clauses: Sequence[_Clause]) -> Tuple[List[int], Dict[int, int]]:
    """Clause indices in the order meant, and each subordinate clause's partner (both ways).

    "after you X, Y": X (subordinate, order "after") happens before its partner Y;
    "before you X, Y": after it. The partner is the next clause when the subordinate opens its
    sentence, else the previous one ("Y, after you X").
    """
    order = list(range(len(clauses)))
    partner: Dict[int, int] = {}
    for k, clause in enumerate(clauses):
        if clause.order is None:
            continue
        main = k + 1 if clause.opens_sentence else k - 1
        if not 0 <= main < len(clauses):
            continue
        partner[k], partner[main] = main, k
        pos_sub, pos_main = order.index(k), order.index(main)
        if (pos_sub < pos_main) != (clause.order == "after"):
            order[pos_sub], order[pos_main] = order[pos_main], order[pos_sub]
    return order, partner


def _resolve_references(steps: List[ParsedInstruction], partners: List[Optional[int]],
                        written: List[ParsedInstruction]) -> List[ParsedInstruction]:
    """Give "it"/"them" (a step with no object) the object of the step before, else of its partner.

    ``steps`` are in execution order, ``partners[i]`` the written index of step i's subordinate
    partner (None without one), ``written`` the steps in the order they were said.
    """
    resolved: List[ParsedInstruction] = []
    previous: Optional[str] = None
    for step, partner in zip(steps, partners):
        obj = step.object or previous
        if obj is None and partner is not None:
            obj = written[partner].object  # "after you pick it up, put the cup in the bowl"
        if obj != step.object:
            step = dataclasses.replace(step, object=obj)
        resolved.append(step)
        previous = step.object or previous
    return resolved


def parse_to_json(
    text: str,
    vocabulary: Vocabulary,
    similarity_fallback: Optional[SimilarityFallback] = None,
) -> str:
    """JSON of ``{"skill", "object", "destination"}`` for the ``clip-vla parse`` CLI."""
    parsed = InstructionParser(vocabulary, similarity_fallback=similarity_fallback).parse(text)
    return json.dumps(parsed.to_dict())
