"""Pre-publish moderation, without I/O: blocklists, their decisions, the hook's wire format.

Before the sequencer numbers a message (or an edit, which carries new text) it may be
checked against a blocklist and/or a backend moderation service (docs/moderation.md,
"Pre-publish hook"). Each check ends in a :class:`Decision`: ``allow``, ``reject`` with a
reason shown to the sender (nothing stored, no seq), or ``replace`` with the body to
store instead. This module decides; :mod:`consumers.prepublish` reads the settings, the
rooms' filters and asks the service.

A blocklist has two kinds of entries (:meth:`Blocklist.parse`):

- **words** (and phrases of up to :data:`MAX_PHRASE_WORDS` words), matched as whole
  words, case-insensitively with Unicode case folding (``STRASSE`` matches ``Straße``):
  the body is split into runs of Unicode word characters (``\\w+``) and each run (or run
  of consecutive runs, for a phrase) is looked up in a set. Linear in the body, however
  many words: 1,000 words cost what 10 do.
- **patterns** (``re:`` lines of a filter file), Python regular expressions searched
  case-insensitively. ``re`` backtracks, and a message body is up to 16 kB of text the
  sender chooses, so a pattern is refused **when it is loaded** unless its worst case is
  small (:func:`check_pattern`): no unbounded repeat (``*``, ``+``, ``{n,}``: even one
  single ``a.*b`` costs 0.8 s on 16 kB of ``a``, measured), no repeat inside a repeat,
  no alternation inside a repeat, no backreference, the product of the repeats' bounds at
  most :data:`MAX_REPEAT_PRODUCT` (``.{0,99}`` is fine), at most
  :data:`MAX_PATTERN_CHARS` characters and :data:`MAX_PATTERNS` patterns. What is left
  is linear in the body: the worst body for the worst allowed list (50 patterns
  ``a.{0,98}bN`` against 16 kB of ``a``) took 1.2 s on the 2-core development machine,
  an ordinary message microseconds (tests/unit/test_prepublish.py). A refused pattern stops the process at
  start (a filter file) or is answered 400 (a room's filter): never silently skipped.

Replacing masks every match with ``*`` (as many as the characters matched); a service
may answer any replacement body instead.
"""

from __future__ import annotations

import re
import re._parser as sre  # the stdlib's own parser: what a pattern really contains
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

MAX_WORDS = 10_000
MAX_WORD_CHARS = 100
MAX_PHRASE_WORDS = 5
MAX_PATTERNS = 50
MAX_PATTERN_CHARS = 200
MAX_REPEAT_PRODUCT = 100
MAX_REASON_CHARS = 200
PATTERN_PREFIX = "re:"
ACTIONS = ("reject", "replace")
#: The wire format's version (docs/moderation.md): a request carries it, an answer
#: names it back.
SCHEMA = "burrow.moderation/1"

Action = Literal["allow", "reject", "replace"]
_WORD = re.compile(r"\w+")


class FilterError(ValueError):
    """A blocklist entry or a hook answer that cannot be used, saying why."""


@dataclass(frozen=True)
class Decision:
    """What becomes of one message: stored as sent, refused, or stored with *body*."""

    action: Action
    reason: str = ""
    body: str | None = None


ALLOW = Decision("allow")


def _nodes(parsed: Any) -> Iterable[tuple[Any, Any]]:
    """The (opcode, argument) items of a parsed pattern (a SubPattern or a list)."""
    return list(parsed)


def _walk(items: Iterable[tuple[Any, Any]], in_repeat: bool) -> int:
    """The product of the repeat bounds under *items*; raises :exc:`FilterError` for
    what can backtrack badly. *in_repeat*: these items are repeated already."""
    product = 1
    for op, arg in items:
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            _low, high, sub = arg
            if high == sre.MAXREPEAT:
                raise FilterError("unbounded repeats (*, +, {n,}) are not allowed: "
                                  "use a bound, e.g. {0,50}")
            if in_repeat:
                raise FilterError("a repeat inside a repeat is not allowed")
            product *= (high + 1) * _walk(_nodes(sub), True)
        elif op is sre.BRANCH:
            if in_repeat:
                raise FilterError("an alternation (|) inside a repeat is not allowed")
            product *= max((_walk(_nodes(b), in_repeat) for b in arg[1]), default=1)
        elif op is sre.SUBPATTERN:
            product *= _walk(_nodes(arg[3]), in_repeat)
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            product *= _walk(_nodes(arg[1]), in_repeat)
        elif op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            raise FilterError("backreferences are not allowed")
        elif op is sre.ATOMIC_GROUP:
            product *= _walk(_nodes(arg), in_repeat)
        if product > MAX_REPEAT_PRODUCT:
            raise FilterError(f"the repeats' bounds multiply to more than "
                              f"{MAX_REPEAT_PRODUCT}")
    return product


def check_pattern(source: str) -> re.Pattern[str]:
    """*source* compiled (case-insensitive), if its worst case is small (module doc)."""
    if not source:
        raise FilterError("an empty pattern matches everything")
    if len(source) > MAX_PATTERN_CHARS:
        raise FilterError(f"a pattern has at most {MAX_PATTERN_CHARS} characters")
    try:
        compiled = re.compile(source, re.IGNORECASE)
        _walk(_nodes(sre.parse(source, re.IGNORECASE)), False)
    except re.error as exc:
        raise FilterError(f"not a regular expression: {exc}") from None
    except RecursionError:
        raise FilterError("a pattern nested too deeply") from None
    if compiled.search(""):
        raise FilterError("a pattern that matches the empty text matches everything")
    return compiled


def _tokens(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group().casefold()) for m in _WORD.finditer(text)]


class Blocklist:
    """Words, phrases and patterns; :meth:`spans` finds them in a body."""

    def __init__(self, words: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        self.words: set[tuple[str, ...]] = set()
        self.lengths: list[int] = []  # the words' lengths in tokens, ascending
        self.sources: list[str] = []
        self.patterns: list[re.Pattern[str]] = []
        for word in words:
            self.add_word(word)
        for pattern in patterns:
            self.add_pattern(pattern)

    def add_word(self, word: str) -> None:
        word = word.strip()
        if not word:
            return
        if len(word) > MAX_WORD_CHARS:
            raise FilterError(f"a word or phrase has at most {MAX_WORD_CHARS} characters")
        tokens = tuple(t for _, _, t in _tokens(word))
        if not tokens:
            raise FilterError(f"{word!r} has no letters or digits: use a re: pattern")
        if len(tokens) > MAX_PHRASE_WORDS:
            raise FilterError(f"a phrase has at most {MAX_PHRASE_WORDS} words")
        if len(self.words) >= MAX_WORDS and tokens not in self.words:
            raise FilterError(f"a blocklist has at most {MAX_WORDS} words")
        self.words.add(tokens)
        if len(tokens) not in self.lengths:
            self.lengths = sorted({*self.lengths, len(tokens)})

    def add_pattern(self, source: str) -> None:
        if len(self.patterns) >= MAX_PATTERNS:
            raise FilterError(f"a blocklist has at most {MAX_PATTERNS} patterns")
        self.patterns.append(check_pattern(source))
        self.sources.append(source)

    @classmethod
    def parse(cls, words: str = "", lines: str = "") -> Blocklist:
        """From ``BURROW_FILTER_WORDS`` (comma-separated words) and the text of a
        ``BURROW_FILTER_FILE`` (one word, phrase or ``re:`` pattern per line; blank
        lines and lines starting with ``#`` are skipped). Raises :exc:`FilterError`
        naming the line."""
        found = cls(words.split(","))
        for number, line in enumerate(lines.splitlines(), 1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            try:
                if entry.startswith(PATTERN_PREFIX):
                    found.add_pattern(entry[len(PATTERN_PREFIX):])
                else:
                    found.add_word(entry)
            except FilterError as exc:
                raise FilterError(f"line {number}: {exc}") from None
        return found

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> Blocklist:
        """From a room filter's entries: each a word, a phrase or ``re:`` and a pattern.
        Raises :exc:`FilterError` naming the entry (numbered from 1)."""
        found = cls()
        for number, entry in enumerate(entries, 1):
            try:
                if not isinstance(entry, str):
                    raise FilterError("an entry is a string")
                if any(ord(c) < 32 for c in entry):
                    raise FilterError("an entry has no control characters")
                if entry.startswith(PATTERN_PREFIX):
                    found.add_pattern(entry[len(PATTERN_PREFIX):])
                elif entry.strip():
                    found.add_word(entry)
                else:
                    raise FilterError("an entry is not blank")
            except FilterError as exc:
                raise FilterError(f"entry {number}: {exc}") from None
        return found

    def entries(self) -> list[str]:
        """The entries as a filter lists them: words (phrases) and ``re:`` patterns."""
        return ([" ".join(w) for w in sorted(self.words)]
                + [PATTERN_PREFIX + s for s in self.sources])

    def __bool__(self) -> bool:
        return bool(self.words or self.patterns)

    def spans(self, body: str) -> list[tuple[int, int]]:
        """Where *body* has a blocked word, phrase or pattern (start, end), any order."""
        found: list[tuple[int, int]] = []
        if self.words:
            tokens = _tokens(body)
            for i in range(len(tokens)):
                for n in self.lengths:
                    if i + n > len(tokens):
                        break
                    if tuple(t for _, _, t in tokens[i:i + n]) in self.words:
                        found.append((tokens[i][0], tokens[i + n - 1][1]))
        for pattern in self.patterns:
            found += [m.span() for m in pattern.finditer(body) if m.end() > m.start()]
        return found

    def decide(self, body: str, action: str) -> Decision:
        """``allow`` when nothing matches; else ``reject`` or ``replace`` (each match
        masked with ``*``), as *action* says."""
        spans = self.spans(body)
        if not spans:
            return ALLOW
        if action == "reject":
            return Decision("reject", "the message contains a blocked word")
        return Decision("replace", body=mask(body, spans))


def mask(body: str, spans: Iterable[tuple[int, int]]) -> str:
    """*body* with every character of every span replaced by ``*``."""
    chars = list(body)
    for start, end in spans:
        for i in range(start, end):
            chars[i] = "*"
    return "".join(chars)


@dataclass(frozen=True)
class RoomFilter:
    """A room's own filter (``PUT /v1/rooms/{room}/filter``): its blocklist and action,
    and whether the room asks the moderation service (``hook``)."""

    blocklist: Blocklist
    action: str = "reject"
    hook: bool = False

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> RoomFilter:
        """From what the API stored (checked there already; checked again: a document
        edited by hand must not stop the sequencer, so the caller skips on error)."""
        action = doc.get("action", "reject")
        if action not in ACTIONS:
            raise FilterError(f"action must be one of {', '.join(ACTIONS)}")
        entries = doc.get("entries", [])
        if not isinstance(entries, list):
            raise FilterError("entries must be a list of strings")
        return cls(Blocklist.from_entries(entries), action, doc.get("hook") is True)


def first_decision(body: str, checks: Sequence[tuple[Blocklist, str]]) -> Decision:
    """Apply each (blocklist, action) in turn: the first reject wins; replacements
    compose (the second blocklist sees the first one's masked body)."""
    decision = ALLOW
    for blocklist, action in checks:
        found = blocklist.decide(decision.body if decision.body is not None else body, action)
        if found.action == "reject":
            return found
        if found.action == "replace":
            decision = found
    return decision


# The hook's wire format (docs/moderation.md, "Pre-publish hook").

def hook_request(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The request body for the messages *items* (``ref`` and what the service sees)."""
    return {"schema": SCHEMA, "messages": list(items)}


def parse_answer(raw: bytes | str, refs: Iterable[str], max_body_bytes: int
                 ) -> dict[str, Decision]:
    """The decisions an answer gives, by ref, for the refs asked about. A decision that
    is malformed (unknown action, a replacement that is no string or too large) or names
    a ref not asked about is left out: the caller applies its failure policy to every
    ref without one. Raises :exc:`FilterError` when the answer as a whole is unusable."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FilterError("the answer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("decisions"), list):
        raise FilterError("the answer has no decisions list")
    wanted = set(refs)
    found: dict[str, Decision] = {}
    for entry in data["decisions"]:
        if not isinstance(entry, dict) or entry.get("ref") not in wanted:
            continue
        ref, action = str(entry["ref"]), entry.get("decision")
        if action == "allow":
            found[ref] = ALLOW
        elif action == "reject":
            reason = entry.get("reason")
            reason = reason if isinstance(reason, str) and reason else "refused by moderation"
            found[ref] = Decision("reject", reason[:MAX_REASON_CHARS])
        elif action == "replace":
            body = entry.get("body")
            if isinstance(body, str) and len(body.encode(errors="replace")) <= max_body_bytes:
                found[ref] = Decision("replace", body=body)
    return found
