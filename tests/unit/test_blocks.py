"""Blocks and invitations as pure decisions (issue 17, item 2): burrow.core.blocks, the
blocks argument of burrow.core.notify_plan (who a batch schedules a push or mention
for), and burrow.core.admission (who an add invites). The stack: 
tests/integration/test_protect.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from burrow.core.admission import asks_strangers, invited, parse_mode
from burrow.core.blocks import blocked_pairs, is_blocked, unblocked
from burrow.core.mentions import Mentions
from burrow.core.notify_plan import MemberState, Notice, plan_mentions, plan_pushes, unread

STALE_BEFORE = datetime(2024, 5, 1, tzinfo=UTC) - timedelta(minutes=10)


def test_pairs_become_each_blockers_set_and_filter_one_readers_messages() -> None:
    blocks = blocked_pairs([("ann", "bob"), ("ann", "cat"), ("dan", "bob")])
    assert blocks == {"ann": frozenset({"bob", "cat"}), "dan": frozenset({"bob"})}
    assert is_blocked(blocks, "ann", "cat") and not is_blocked(blocks, "cat", "ann")
    notices = [Notice("a", "bob", 1), Notice("a", "eve", 2), Notice("a", "cat", 3)]
    assert unblocked(notices, blocks["ann"]) == [Notice("a", "eve", 2)]
    assert unblocked(notices, frozenset()) == notices


def test_a_blocked_senders_messages_schedule_nothing_for_the_blocker() -> None:
    notices = [Notice("a", "eve", 1), Notice("a", "bob", 2), Notice("b", "bob", 5)]
    members = [MemberState("a", "ann"), MemberState("a", "cat"), MemberState("b", "ann")]
    blocks = {"ann": frozenset({"bob"})}
    # ann is told of eve's message (the newest she did not block), not of bob's; cat of
    # bob's; in room b only bob wrote: nothing for ann.
    assert unread(notices, members, blocks) == {("a", "ann"): 1, ("a", "cat"): 2}
    assert unread(notices, members) == {("a", "ann"): 2, ("a", "cat"): 2, ("b", "ann"): 5}
    plan = plan_pushes(notices, members, STALE_BEFORE, blocks)
    assert plan.claim == {("a", "ann"): 1, ("a", "cat"): 2}


def test_a_blocked_sender_mentioning_the_blocker_pushes_nobody_but_the_others() -> None:
    at_room = Mentions((), True)
    notices = [Notice("a", "bob", 3, mentions=Mentions(("ann", "cat"))),
               Notice("a", "bob", 4, mentions=at_room)]
    members = [MemberState("a", "ann"), MemberState("a", "cat"), MemberState("a", "bob")]
    assert plan_mentions(notices, members, {"ann": frozenset({"bob"})}) == {
        ("a", "cat"): 4}
    assert plan_mentions(notices, members) == {("a", "ann"): 4, ("a", "cat"): 4}


@pytest.mark.parametrize("mode", ["off", "strangers", "all"])
def test_admins_and_self_adds_are_never_invitations(mode: str) -> None:
    assert invited(mode, adder="root", users=["ann", "bob"], is_admin=True,
                   strangers=["ann", "bob"]) == set()
    assert invited(mode, adder="ann", users=["ann"], is_admin=False,
                   strangers=["ann"]) == set()
    assert not asks_strangers(mode, True)


def test_invites_follow_the_mode() -> None:
    users, strangers = ["bob", "cat", "ann"], {"cat"}
    assert invited("off", adder="ann", users=users, is_admin=False, strangers=strangers) == set()
    assert invited("strangers", adder="ann", users=users, is_admin=False,
                   strangers=strangers) == {"cat"}
    assert invited("all", adder="ann", users=users, is_admin=False) == {"bob", "cat"}
    assert asks_strangers("strangers", False) and not asks_strangers("all", False)
    assert parse_mode("strangers") == "strangers"
    for raw in ("", "Strangers", "none", "yes"):
        with pytest.raises(ValueError):
            parse_mode(raw)


def test_the_cli_knows_who_leaves_from_user_or_the_tokens_subject() -> None:
    from burrow.client.cli import parser
    from burrow.client.cli.output import CliError
    from burrow.client.cli.protect import me
    from burrow.core.tokens import mint

    args = parser().parse_args(["--token", mint("s" * 32, "a@b"), "leave", "lobby"])
    assert (args.command, me(args)) == ("leave", "a@b")
    assert me(parser().parse_args(["--user", "ann", "leave", "lobby"])) == "ann"
    with pytest.raises(CliError):
        me(parser().parse_args(["--token", "not-a-jwt", "leave", "lobby"]))
    for argv in (["block", "bob"], ["unblock", "bob"], ["blocks"], ["invitations"],
                 ["accept", "0" * 32], ["decline", "0" * 32]):
        assert parser().parse_args(["--user", "ann", *argv]).command == argv[0]
