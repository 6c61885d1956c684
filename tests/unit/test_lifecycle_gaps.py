"""The pure parts of the lifecycle gaps (issue 16): which messages of a sequencer batch a
later send of it may reply to (:class:`BatchParents`), and the replies that go when
their parent of the batch is refused (:class:`Lost`, :func:`consumers.send_checks.orphans`)."""

from __future__ import annotations

from burrow.core.envelopes import Send, message_id_of
from burrow.core.lifecycle import BatchParents, Lost
from consumers.send_checks import orphans

FILE = "0123456789abcdef01234567"


def test_only_a_new_message_with_attachments_can_be_a_parent_in_its_batch() -> None:
    parents = BatchParents()
    plain = Send("r", "a", "plain", "no files: a random id, unknown before its ack")
    with_files = Send("r", "a", "files", "x", attachments=(FILE,))
    change = Send("r", "a", "edit", "x", kind="edit", target=message_id_of("r", "a", "files"))
    for send in (plain, with_files, change):
        parents.add(send)
    mid = message_id_of("r", "a", "files")
    assert parents.roots == {mid: ("r", mid)}
    assert parents.thread_of(Send("r", "b", "c", "x", reply_to=mid)) == mid
    assert parents.thread_of(Send("elsewhere", "b", "c", "x", reply_to=mid)) is None
    assert parents.thread_of(Send("r", "b", "c", "x", reply_to="unknown")) is None
    assert parents.thread_of(Send("r", "b", "c", "x")) is None
    # a reply with files joins its parent's thread, and is a parent in turn
    reply = Send("r", "b", "reply", "x", attachments=(FILE,), reply_to=mid, thread=mid)
    parents.add(reply)
    deeper = Send("r", "a", "deeper", "x", reply_to=message_id_of("r", "b", "reply"))
    assert parents.thread_of(deeper) == mid


def test_replies_to_a_refused_message_of_the_batch_are_refused_down_the_chain() -> None:
    refused = Send("r", "a", "p", "refused later", attachments=(FILE,))
    child = Send("r", "b", "c1", "x", attachments=(FILE,),
                 reply_to=message_id_of("r", "a", "p"))
    grandchild = Send("r", "a", "c2", "x", reply_to=message_id_of("r", "b", "c1"))
    unrelated = Send("r", "a", "u", "x", reply_to="stored-parent")
    plain = Send("r", "a", "v", "x")
    kept, dropped = orphans([(s, None) for s in (child, grandchild, unrelated, plain)],
                            Lost([refused]))  # type: ignore[list-item]
    assert [s.client_id for s, _ in kept] == ["u", "v"]
    assert [(s.client_id, exc.code) for s, _, exc in dropped] == [
        ("c1", "not_found"), ("c2", "not_found")]
    # a refused message without files could not have been named: nothing is lost
    assert Lost([Send("r", "a", "p", "x")]).ids == set()
