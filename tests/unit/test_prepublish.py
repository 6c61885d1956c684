"""Pre-publish moderation's decisions (burrow.core.prepublish): whole words, Unicode case,
phrases, bounded patterns, hostile patterns refused at load, masking, the hook's answer
parsing; and the sequencer adapter's batch logic (consumers.prepublish) with the service
and the database replaced by in-memory stand-ins."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from burrow.core.envelopes import Send
from burrow.core.prepublish import (
    ALLOW,
    MAX_PATTERNS,
    MAX_REPEAT_PRODUCT,
    Blocklist,
    Decision,
    FilterError,
    RoomFilter,
    check_pattern,
    first_decision,
    mask,
    parse_answer,
)
from burrow.runtime.settings import Settings
from consumers import prepublish as adapter


def test_words_match_whole_words_ignoring_case_with_unicode_folding() -> None:
    words = Blocklist(["darn", "Straße", "ВОДКА"])
    assert words.decide("DaRn it", "reject").action == "reject"
    assert words.decide("darned socks", "reject") == ALLOW  # a whole word only
    assert words.decide("undarn", "reject") == ALLOW
    assert words.decide("in der STRASSE", "reject").action == "reject"  # casefold: ß = ss
    assert words.decide("водка!", "reject").action == "reject"  # Cyrillic, lower case
    assert words.decide("darn_it", "reject") == ALLOW  # _ is a word character


def test_phrases_match_consecutive_words_across_any_separator() -> None:
    words = Blocklist(["buy pills"])
    assert words.decide("please BUY   pills now", "reject").action == "reject"
    assert words.decide("buy, pills", "reject").action == "reject"
    assert words.decide("buy some pills", "reject") == ALLOW
    assert words.decide("pills", "reject") == ALLOW


def test_replace_masks_each_match_with_as_many_stars() -> None:
    words = Blocklist(["darn", "buy pills"], ["fr[e3]{2} money"])
    decision = words.decide("Darn: buy pills, FREE money, darn.", "replace")
    assert decision == Decision("replace", body="****: *********, **********, ****.")
    assert mask("abc", [(0, 1), (2, 3)]) == "*b*"


def test_parse_reads_comma_words_and_a_file_with_patterns_and_comments() -> None:
    found = Blocklist.parse(" darn , ,heck", "# a comment\n\nre:\\bsp[a4]m\\b\nbuy pills\n")
    assert found.entries() == ["buy pills", "darn", "heck", "re:\\bsp[a4]m\\b"]
    assert found.decide("SP4M", "reject").action == "reject"
    with pytest.raises(FilterError, match="line 2"):
        Blocklist.parse("", "ok\nre:(a+)+$\n")
    with pytest.raises(FilterError, match="no letters"):
        Blocklist.parse("!!!")


@pytest.mark.parametrize("pattern, why", [
    ("a.*b", "unbounded"), ("a+", "unbounded"), ("x{2,}", "unbounded"),
    ("(a+)+$", "unbounded"), ("(?=a+)", "unbounded"),
    ("(a{0,3}){0,3}", "inside a repeat"), ("(?:ab|a){0,5}c", "alternation"),
    ("(x)\\1", "backreference"), ("a.{0,50}b.{0,2}c", "multiply"),
    ("", "empty"), ("a?", "empty text"), ("(", "not a regular expression"),
    ("a" * 201, "characters"),
])
def test_hostile_or_broken_patterns_are_refused_at_load(pattern: str, why: str) -> None:
    with pytest.raises(FilterError, match=why):
        check_pattern(pattern)


def test_allowed_patterns_stay_fast_on_the_worst_body() -> None:
    """The most patterns, each at the bound, on 16 kB built to make them backtrack:
    linear, with a small constant (seconds per message would stop a shard). CPU time
    of this process: other work on the machine does not count."""
    patterns = [f"a.{{0,{MAX_REPEAT_PRODUCT - 2}}}b{i}" for i in range(MAX_PATTERNS)]
    blocklist = Blocklist([], patterns)
    with pytest.raises(FilterError, match="at most"):
        blocklist.add_pattern("c")
    started = time.process_time()
    assert blocklist.decide("a" * 16384, "reject") == ALLOW
    assert time.process_time() - started < 4.0


def test_a_thousand_words_cost_what_ten_do() -> None:
    many = Blocklist([f"word{i}" for i in range(1000)])
    body = "an ordinary message of several words " * 100
    started = time.process_time()
    for _ in range(20):
        assert many.decide(body, "reject") == ALLOW
    assert time.process_time() - started < 2.0
    assert many.decide(body + " WORD999", "reject").action == "reject"


def test_first_decision_rejects_first_and_composes_replacements() -> None:
    mild, harsh = Blocklist(["darn"]), Blocklist(["heck"])
    assert first_decision("darn heck", [(mild, "replace"), (harsh, "reject")]).action == "reject"
    assert first_decision("darn heck", [(mild, "replace"), (harsh, "replace")]) == Decision(
        "replace", body="**** ****")
    assert first_decision("fine", [(mild, "reject")]) == ALLOW


def test_room_filters_from_documents_check_their_entries_again() -> None:
    room = RoomFilter.from_document({"entries": ["darn", "re:x{1,3}y"], "action": "replace",
                                     "hook": True})
    assert room.hook and room.action == "replace" and room.blocklist
    for bad in ({"entries": ["re:a*"]}, {"entries": "darn"}, {"entries": [], "action": "x"},
                {"entries": [1]}, {"entries": ["a\nb"]}, {"entries": [" "]}):
        with pytest.raises(FilterError):
            RoomFilter.from_document(bad)


def test_answers_are_parsed_defensively() -> None:
    raw = orjson.dumps({"decisions": [
        {"ref": "0", "decision": "allow"},
        {"ref": "1", "decision": "reject", "reason": "no spam here" + "!" * 500},
        {"ref": "2", "decision": "replace", "body": "[removed]"},
        {"ref": "3", "decision": "replace", "body": "x" * 20},  # over the body limit
        {"ref": "4", "decision": "maybe"},
        {"ref": "5", "decision": "reject"},  # no reason: a generic one
        {"ref": "99", "decision": "reject"},  # not asked about
        "junk"]})
    found = parse_answer(raw, ["0", "1", "2", "3", "4", "5"], max_body_bytes=10)
    assert found["0"] == ALLOW
    assert found["1"].action == "reject" and len(found["1"].reason) == 200
    assert found["2"] == Decision("replace", body="[removed]")
    assert "3" not in found and "4" not in found and "99" not in found
    assert found["5"] == Decision("reject", "refused by moderation")
    for bad in (b"not json", b"[]", b'{"decisions": 3}'):
        with pytest.raises(FilterError):
            parse_answer(bad, ["0"], 10)


# The adapter's batch logic, without a broker or a database.

ENV = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/b", "BURROW_JWT_SECRET": "s" * 32}


class Messages:
    """MessageStore.existing over a set of stored dedup keys; counts its reads."""

    def __init__(self, stored: set[tuple[str, str, str]] = frozenset()) -> None:  # type: ignore[assignment]
        self.stored, self.reads = set(stored), 0

    async def existing(self, keys: list[tuple[str, str, str]]) -> dict[Any, Any]:
        self.reads += 1
        return {k: object() for k in keys if k in self.stored}


def moderation(messages: Messages, answer: Any = None, **env: str) -> adapter.Prepublish:
    checker = adapter.Prepublish(Settings.from_env({**ENV, **env}), messages,  # type: ignore[arg-type]
                                 None)  # type: ignore[arg-type]
    checker.asked = []  # type: ignore[attr-defined]

    async def request(body: bytes) -> bytes:
        checker.asked.append(orjson.loads(body))  # type: ignore[attr-defined]
        if isinstance(answer, BaseException):
            raise answer
        return orjson.dumps(answer(orjson.loads(body)))
    checker._request = request  # type: ignore[method-assign]
    return checker


def send(body: str, client_id: str = "c1", kind: str | None = None,
         room: str = "r") -> tuple[Send, int]:
    return Send(room, "alice", client_id, body, kind=kind,
                target="m1" if kind else None), 0


async def test_everything_off_reads_nothing_and_passes_the_batch_as_it_is() -> None:
    messages = Messages()
    checker = moderation(messages)
    batch = [send("darn"), send("x", "c2")]
    assert await checker.check(batch) == (batch, [])
    assert messages.reads == 0 and checker.asked == []  # type: ignore[attr-defined]


async def test_global_words_reject_and_the_stored_are_not_refused() -> None:
    messages = Messages({("r", "alice", "old")})
    checker = moderation(messages, BURROW_FILTER_WORDS="darn")
    batch = [send("darn", "new"), send("darn", "old"), send("fine", "ok"),
             send("darn", "react", kind="reaction")]
    allowed, refused = await checker.check(batch)
    assert [s.client_id for s, _ in allowed] == ["old", "ok", "react"]
    assert [(s.client_id, r.code) for s, _, r in refused] == [("new", "rejected")]
    assert messages.reads == 1  # the refused ones looked up, once
    # a batch that nobody is refused in reads nothing: checking costs no database work
    allowed, refused = await checker.check([send("fine", "a"), send("also fine", "b")])
    assert (len(allowed), refused, messages.reads) == (2, [], 1)


async def test_the_hook_is_asked_once_per_batch_about_messages_and_edits() -> None:
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        return {"decisions": [
            {"ref": m["ref"], "decision": "reject", "reason": "rude"} if "rude" in m["body"]
            else {"ref": m["ref"], "decision": "replace", "body": "[edited]"}
            if m["kind"] == "edit" else {"ref": m["ref"], "decision": "allow"}
            for m in request["messages"]]}
    checker = moderation(Messages(), answer, BURROW_MODERATION_HOOK="on",
                         BURROW_FILTER_WORDS="darn", BURROW_FILTER_ACTION="replace")
    batch = [send("rude words", "a"), send("new text darn", "b", kind="edit"),
             send("", "c", kind="delete"), send("hello", "d")]
    allowed, refused = await checker.check(batch)
    [request] = checker.asked  # type: ignore[attr-defined]
    assert request["schema"] == "burrow.moderation/1"
    assert [(m["ref"], m["kind"], m["body"]) for m in request["messages"]] == [
        ("0", "message", "rude words"), ("1", "edit", "new text ****"), ("3", "message", "hello")]
    assert request["messages"][1]["target"] == "m1"
    assert [(s.client_id, s.body) for s, _ in allowed] == [("b", "[edited]"), ("c", ""),
                                                          ("d", "hello")]
    assert [(s.client_id, r.code, r.message) for s, _, r in refused] == [("a", "rejected", "rude")]


@pytest.mark.parametrize("failure, stored", [("open", True), ("closed", False)])
async def test_a_silent_service_applies_the_failure_policy(failure: str, stored: bool) -> None:
    checker = moderation(Messages(), TimeoutError(), BURROW_MODERATION_HOOK="on",
                         BURROW_MODERATION_HOOK_FAILURE=failure)
    allowed, refused = await checker.check([send("hello")])
    assert bool(allowed) is stored
    assert [r.code for _, _, r in refused] == ([] if stored else ["moderation_unavailable"])


async def test_a_decision_missing_from_the_answer_fails_that_message_only() -> None:
    checker = moderation(Messages(), lambda _: {"decisions": [{"ref": "0", "decision": "allow"}]},
                         BURROW_MODERATION_HOOK="on", BURROW_MODERATION_HOOK_FAILURE="closed")
    allowed, refused = await checker.check([send("a", "a"), send("b", "b")])
    assert [s.client_id for s, _ in allowed] == ["a"]
    assert [(s.client_id, r.code) for s, _, r in refused] == [("b", "moderation_unavailable")]


async def test_rooms_mode_asks_only_for_rooms_whose_filter_asks() -> None:
    checker = moderation(Messages(), lambda r: {"decisions": [
        {"ref": m["ref"], "decision": "reject", "reason": "no"} for m in r["messages"]]},
        BURROW_MODERATION_HOOK="rooms")
    batch = [send("x", "a", room="quiet"), send("y", "b", room="asks")]
    assert await checker.check(batch) == (batch, [])  # no room filter yet: nothing asked
    checker.rooms = {"asks": RoomFilter(Blocklist(), hook=True)}
    allowed, refused = await checker.check(batch)
    assert [s.room for s, _ in allowed] == ["quiet"]
    assert [s.room for s, _, _ in refused] == ["asks"]
    assert [m["room"] for m in checker.asked[-1]["messages"]] == ["asks"]  # type: ignore[attr-defined]


def test_a_bad_filter_file_stops_the_process_naming_the_line(tmp_path: Any) -> None:
    path = tmp_path / "words.txt"
    path.write_text("fine\nre:(a|b)+\n")
    with pytest.raises(adapter.ConfigError, match="line 2"):
        adapter.global_blocklist(Settings.from_env({**ENV, "BURROW_FILTER_FILE": str(path)}))
    with pytest.raises(adapter.ConfigError, match="cannot read"):
        adapter.global_blocklist(Settings.from_env({**ENV, "BURROW_FILTER_FILE": "/nope"}))


class Answer:
    """What the adapter reads of an answer delivery."""

    def __init__(self, correlation_id: str | None, body: bytes) -> None:
        self.correlation_id, self.body = correlation_id, body


class Exchange:
    """moderation.ask as the adapter publishes to it; *answer* says what the service
    does with each request: answer at once, or never."""

    def __init__(self, checker: adapter.Prepublish, answer: bool) -> None:
        self.checker, self.answer, self.published = checker, answer, []  # type: list[Any]

    async def publish(self, message: Any, routing_key: str, mandatory: bool) -> None:
        self.published.append((message, routing_key, mandatory))
        if self.answer:
            answer = Answer(message.correlation_id, b'{"decisions": []}')
            asyncio.get_running_loop().call_soon(
                asyncio.ensure_future, self.checker._answered(answer))  # type: ignore[arg-type]


async def test_answers_meet_their_request_by_correlation_id_and_late_ones_are_dropped(
        ) -> None:
    checker = adapter.Prepublish(Settings.from_env({
        **ENV, "BURROW_MODERATION_HOOK": "on", "BURROW_MODERATION_HOOK_TIMEOUT_MS": "50"}),
        Messages(), None)  # type: ignore[arg-type]
    checker.answers = "moderation.answers.x"
    checker.ask = Exchange(checker, answer=True)  # type: ignore[assignment]
    assert await checker._request(b"{}") == b'{"decisions": []}'
    [(message, key, mandatory)] = checker.ask.published  # type: ignore[attr-defined]
    assert (key, mandatory, message.reply_to) == ("moderation.hook", True,
                                                  "moderation.answers.x")
    assert message.expiration is not None and checker.pending == {}
    # silence: a timeout, then the late answer finds nobody waiting and changes nothing
    checker.ask = Exchange(checker, answer=False)  # type: ignore[assignment]
    with pytest.raises(TimeoutError):
        await checker._request(b"{}")
    [(late, _, _)] = checker.ask.published  # type: ignore[attr-defined]
    await checker._answered(Answer(late.correlation_id, b"late"))  # type: ignore[arg-type]
    await checker._answered(Answer(None, b"stray"))  # type: ignore[arg-type]
    assert checker.pending == {}
