"""The mixed workload's pure parts: drawing operations, picking targets, the client-side
reducer and the convergence check (bench/mix.py, bench/views.py)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import orjson
import pytest

from bench import mix
from bench.load import LoadConfig, LoadResult
from bench.views import Member, RoomView, converge, stored_state

ROOM = "benchx-0"


def message(seq: int, id: str, sender: str, body: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "room": ROOM, "seq": seq, "id": id, "sender": sender,
            "client_id": f"0-{seq}:1.0", "body": body, **extra}


def change(seq: int, kind: str, target: str, sender: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "room": ROOM, "seq": seq, "id": f"c{seq}", "target": target,
            "sender": sender, "client_id": f"0-{seq}:1.0", **extra}


# ---- drawing the next operation ---------------------------------------------------------

def test_parse_reads_kinds_and_weights_and_refuses_the_rest() -> None:
    assert mix.parse("send=80,react=10,edit=5,delete=5") == (
        ("send", 80), ("react", 10), ("edit", 5), ("delete", 5))
    assert mix.parse(" send=1 , edit=0") == (("send", 1), ("edit", 0))
    for bad, says in [("send=80,shout=5", "KIND one of"), ("send", "KIND=WEIGHT"),
                      ("send=80,send=5", "twice"), ("send=8.5", "integer"),
                      ("send=-1", "integer"), ("react=10", "send must weigh"),
                      ("send=0,react=3", "send must weigh")]:
        with pytest.raises(ValueError, match=says):
            mix.parse(bad)


def test_the_draw_follows_the_weights_and_the_seed() -> None:
    chooser = mix.Mix(mix.parse("send=80,react=10,edit=5,delete=5"))
    one, other = random.Random(7), random.Random(7)
    assert [chooser.choose(one) for _ in range(200)] == [
        chooser.choose(other) for _ in range(200)]  # one seed, one sequence
    rng = random.Random(1)
    counts = Counter(chooser.choose(rng) for _ in range(20_000))
    assert abs(counts["send"] / 20_000 - 0.80) < 0.015
    assert abs(counts["react"] / 20_000 - 0.10) < 0.01
    assert abs(counts["edit"] / 20_000 - 0.05) < 0.008
    assert abs(counts["delete"] / 20_000 - 0.05) < 0.008
    never = mix.Mix((("send", 3), ("edit", 0)))
    assert {never.choose(rng) for _ in range(1000)} == {"send"}


# ---- the reducer ------------------------------------------------------------------------

def test_the_view_applies_messages_and_changes_in_seq_order() -> None:
    view = RoomView("u0")
    view.apply(message(1, "m1", "u0", "first"))
    view.apply(message(2, "m2", "u1", "second"))
    view.apply(change(3, "edit", "m1", "u0", body="first, edited", edit_count=1))
    view.apply(change(4, "reaction", "m2", "u0", emoji="👍", op="add"))
    view.apply(change(5, "reaction", "m2", "u1", emoji="👍", op="add"))
    view.apply(change(6, "reaction", "m2", "u1", emoji="👍", op="remove"))
    view.apply(change(7, "reaction", "m2", "u1", emoji="🎉", op="remove"))  # not there
    assert view.messages["m1"].state() == ("u0", "first, edited", 1, False, ())
    assert view.messages["m2"].state() == ("u1", "second", 0, False, (("👍", 1),))
    assert view.reacted("m2", "👍") and not view.reacted("m2", "🎉")
    assert (view.last_seq, view.applied, view.dropped) == (7, 7, 0)


def test_a_frame_already_applied_is_dropped() -> None:
    view = RoomView("u0")
    view.apply(message(1, "m1", "u1"))
    view.apply(change(2, "reaction", "m1", "u0", emoji="👍", op="add"))
    view.apply(change(2, "reaction", "m1", "u0", emoji="👍", op="add"))
    view.apply(change(1, "reaction", "m1", "u2", emoji="👍", op="add"))  # stale seq
    assert view.messages["m1"].state()[4] == (("👍", 1),)
    assert (view.last_seq, view.applied, view.dropped) == (2, 2, 2)


def test_a_delete_is_a_tombstone_that_absorbs_later_changes() -> None:
    view = RoomView("u0")
    view.apply(message(1, "m1", "u0", "secret"))
    view.apply(change(2, "reaction", "m1", "u1", emoji="👍", op="add"))
    view.apply(change(3, "delete", "m1", "u0", deleted_by="u0"))
    view.apply(change(4, "edit", "m1", "u0", body="again", edit_count=1))
    view.apply(change(5, "reaction", "m1", "u1", emoji="🎉", op="add"))
    assert view.messages["m1"].state() == ("u0", "", 0, True, ())
    assert len(view.alive) == len(view.own) == 0


def test_a_replayed_message_comes_in_its_current_state() -> None:
    """After a resume, v2 replays a message as it is now (edited, or a tombstone)."""
    view = RoomView("u0")
    view.apply(message(1, "m1", "u1", "now", edit_count=2, edited_at=5))
    view.apply(message(2, "m2", "u1", "", deleted_at=6, deleted_by="u1"))
    view.apply(change(3, "edit", "m1", "u1", body="then", edit_count=1))
    view.apply(change(4, "edit", "m1", "u1", body="now", edit_count=2))
    view.apply(change(5, "edit", "m2", "u1", body="", edit_count=1))
    assert view.messages["m1"].state() == ("u1", "now", 2, False, ())
    assert view.messages["m2"].state() == ("u1", "", 0, True, ())
    assert "m2" not in view.alive


def test_a_change_of_an_unknown_message_is_counted_not_a_crash() -> None:
    view = RoomView("u0")
    view.apply(change(1, "edit", "nope", "u0", body="x", edit_count=1))
    assert view.orphans == 1 and view.messages == {}


# ---- picking targets --------------------------------------------------------------------

def client(index: int = 0) -> mix.MixClient:
    result = LoadResult(LoadConfig(connections=2, room_size=2, mix=(("send", 1),)), 1)
    return mix.MixClient(index, ROOM, result, ["ws://127.0.0.1:1/v1/ws"], "t",
                         asyncio.Semaphore(1))


def test_edits_and_deletes_target_own_messages_and_a_deleted_one_never_again() -> None:
    c, rng = client(0), random.Random(3)
    assert c.change("edit", "0-1:1.0", 1.0, rng) is None  # nothing stored yet
    assert c.change("react", "0-1:1.0", 1.0, rng) is None
    c.view.apply(message(1, "theirs", "u1"))
    assert c.change("edit", "0-1:1.0", 1.0, rng) is None  # not its own
    c.view.apply(message(2, "mine", "u0"))
    edit = orjson.loads(c.change("edit", "0-2:2.5", 2.5, rng) or "")
    assert edit["type"] == "edit" and edit["id"] == "mine" and edit["room"] == ROOM
    assert edit["client_id"] == "0-2:2.5" and len(edit["body"]) == 100
    delete = orjson.loads(c.change("delete", "0-3:3.0", 3.0, rng) or "")
    assert delete == {"type": "delete", "room": ROOM, "client_id": "0-3:3.0", "id": "mine"}
    # its delete is on the way: no second delete, no edit, no reaction of it
    assert c.change("delete", "0-4:4.0", 4.0, rng) is None
    assert c.change("edit", "0-4:4.0", 4.0, rng) is None
    assert {orjson.loads(c.change("react", f"0-{k}:5.0", 5.0, rng) or "")["id"]
            for k in range(20)} == {"theirs"}


def test_reactions_toggle_on_what_the_view_shows() -> None:
    c, rng = client(0), random.Random(5)
    c.view.apply(message(1, "m1", "u1"))
    first = orjson.loads(c.change("react", "0-1:1.0", 1.0, rng) or "")
    assert first["remove"] is False and first["emoji"] in mix.EMOJI
    c.view.apply(change(2, "reaction", "m1", "u0", emoji=first["emoji"], op="add"))
    again = [orjson.loads(c.change("react", "0-2:1.0", 1.0, rng) or "") for _ in range(40)]
    assert all(f["remove"] == (f["emoji"] == first["emoji"]) for f in again)
    assert any(f["remove"] for f in again)


def test_a_change_without_a_target_goes_out_as_a_message() -> None:
    workload = mix.MixWorkload((("send", 0), ("edit", 1)), seed=1)  # every draw: edit
    c = workload.client(0, ROOM, client().result, ["ws://127.0.0.1:1/v1/ws"], "t",
                        asyncio.Semaphore(1))
    asyncio.run(workload.send(c, 0))  # no connection: the write waits for a reconnect
    assert workload.fallbacks == {"edit": 1} and c.result.kinds == {}
    c.view.apply(message(1, "mine", "u0"))
    asyncio.run(workload.send(c, 1))
    (client_id,) = c.result.kinds
    assert c.result.kinds[client_id] == "edit" and client_id.startswith("0-1:")
    assert orjson.loads(c.frame_of(client_id))["type"] == "edit"  # resent as it was
    assert orjson.loads(c.frame_of(c.sent[0]))["type"] == "send"
    assert c.result.deferred == 2 and set(c.result.sent_room) == set(c.sent)
    c.result.refused[client_id] = "not_found"
    assert c.unacked() == [c.sent[0]]  # a refused change waits for no ack


# ---- convergence ------------------------------------------------------------------------

def stored_room() -> list[dict[str, Any]]:
    return [message(1, "m1", "u0", "", deleted_at=9, deleted_by="u0"),
            message(2, "m2", "u1", "edited", edit_count=1,
                    reactions=[{"emoji": "👍", "count": 2, "me": True}]),
            change(3, "delete", "m1", "u0"),
            change(4, "edit", "m2", "u1", body="edited", edit_count=1),
            change(5, "reaction", "m2", "u0", emoji="👍", op="add"),
            change(6, "reaction", "m2", "u1", emoji="👍", op="add")]


def live_view(user: str) -> RoomView:
    view = RoomView(user)
    for frame in [message(1, "m1", "u0", "gone soon"), message(2, "m2", "u1", "before"),
                  change(3, "delete", "m1", "u0"),
                  change(4, "edit", "m2", "u1", body="edited", edit_count=1),
                  change(5, "reaction", "m2", "u0", emoji="👍", op="add"),
                  change(6, "reaction", "m2", "u1", emoji="👍", op="add")]:
        view.apply(frame)
    return view


def check(views: dict[int, RoomView], stored: list[dict[str, Any]] | None = None,
          acked: dict[str, tuple[str, int]] | None = None,
          refused: tuple[str, ...] = ()) -> dict[str, Any]:
    members = {ROOM: [Member(i, v, reader=i == 0) for i, v in views.items()]}
    return converge({ROOM: stored_room() if stored is None else stored}, members,
                    acked or {}, refused)


def test_views_that_match_the_stored_room_converge() -> None:
    assert stored_state(stored_room()[1]) == ("u1", "edited", 1, False, (("👍", 2),))
    result = check({0: live_view("u0"), 1: live_view("u1")},
                   acked={"0-3:1.0": (ROOM, 3), "0-5:1.0": (ROOM, 5)})
    assert result["ok"], result
    assert (result["messages"], result["change_events"], result["clients_converged"]) == (
        2, 4, 2)


def test_a_view_that_differs_from_the_stored_room_diverges() -> None:
    wrong = live_view("u1")
    wrong.messages["m2"].reactions["👍"].discard("u0")  # it missed u0's reaction
    result = check({0: live_view("u0"), 1: wrong})
    assert not result["ok"] and result["clients_diverged"] == 1
    assert "client 1" in result["examples"][0] and "m2" in result["examples"][0]


def test_the_readers_own_reactions_must_match_its_me_flags() -> None:
    stored = stored_room()
    stored[1]["reactions"] = [{"emoji": "👍", "count": 2, "me": False}]
    result = check({0: live_view("u0")}, stored)
    assert result["clients_diverged"] == 1
    assert check({1: live_view("u1")}, stored)["ok"]  # not the reader: counts only


def test_a_client_that_did_not_apply_every_stored_seq_is_behind() -> None:
    short = RoomView("u1")
    for frame in stored_room()[:2]:
        short.apply(frame)
    result = check({0: live_view("u0"), 1: short})
    assert result["clients_behind"] == 1 and not result["ok"]


def test_stored_seqs_must_be_one_to_n_and_acks_and_refusals_must_match_them() -> None:
    gap = [e for e in stored_room() if e["seq"] != 4]
    assert check({}, gap)["rooms_with_seq_faults"] == 1
    twice = stored_room() + [change(6, "reaction", "m2", "u1", emoji="👍", op="add")]
    assert check({}, twice)["rooms_with_seq_faults"] == 1
    result = check({}, acked={"0-4:1.0": (ROOM, 5), "nope": (ROOM, 9)})
    assert result["acked_not_stored"] == 2 and not result["ok"]
    assert check({}, refused=("0-6:1.0",))["refused_but_stored"] == 1
    assert check({}, refused=("0-7:1.0",))["ok"]


def test_one_seed_draws_one_sequence_of_kinds_whatever_the_targets() -> None:
    """Targets come from a second RNG: how many picks a run made (it depends on what had
    arrived) does not move the kinds drawn after them."""
    weights = mix.parse("send=50,react=20,edit=15,delete=15")
    busy, idle = mix.MixWorkload(weights, seed=9), mix.MixWorkload(weights, seed=9)
    with_targets = busy.client(0, ROOM, client().result, ["ws://127.0.0.1:1/v1/ws"], "t",
                               asyncio.Semaphore(1))
    for seq in range(1, 30):
        with_targets.view.apply(message(seq, f"m{seq}", "u0"))
    without = idle.client(0, ROOM, client().result, ["ws://127.0.0.1:1/v1/ws"], "t",
                          asyncio.Semaphore(1))

    async def run(workload: mix.MixWorkload, c: mix.MixClient) -> None:
        for k in range(40):
            await workload.send(c, k)

    asyncio.run(run(busy, with_targets))
    asyncio.run(run(idle, without))
    assert with_targets.result.kinds and not without.result.kinds
    assert busy.rng.random() == idle.rng.random()
