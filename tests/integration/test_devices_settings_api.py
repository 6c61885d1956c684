"""``/v1/devices`` and ``/v1/me/settings`` against a real gateway and database, and the
device and user stores' own promises (moves, eviction, stale invalid results)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient

from burrow.mail.verification import EmailState
from burrow.push import Device
from burrow.storage import database
from burrow.storage.devices import MAX_DEVICES_PER_USER, DeviceStore
from burrow.storage.users import UserSettings, UserStore, stamp
from gateway.http_json import MAX_REQUEST_BYTES
from tests.conftest import eventually
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

APNS = "A1B2C3D4" * 8  # 64 hex digits, upper case
FCM = "dGVzdC10b2tlbg:APA91b" + "x" * 140
FID = "cAbCdEfGhIjKlMnOpQrStU"  # 22 characters, as Firebase installation ids are


def sync_client(stack: Stack) -> MongoClient[dict[str, Any]]:
    return MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000)


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``), its
    ``devices`` and ``users`` emptied before each test: every test starts from the empty
    collections a stack of its own had (the assertions here count whole collections, and
    the tokens move between users). Documents only: the indexes the gateway made at its
    start stay, as they would on a gateway of the test's own."""
    with sync_client(shared_stack) as client:
        for collection in ("devices", "users"):
            client.get_default_database()[collection].delete_many({})
    return shared_stack


def devices_in_db(stack: Stack, **query: Any) -> list[dict[str, Any]]:
    with sync_client(stack) as client:
        return list(client.get_default_database().devices.find(query).sort("token", 1))


def user_in_db(stack: Stack, user: str) -> dict[str, Any] | None:
    with sync_client(stack) as client:
        doc: dict[str, Any] | None = client.get_default_database().users.find_one(
            {"_id": user})
        return doc


def my_devices(stack: Stack, user: str) -> list[dict[str, Any]]:
    status, body = stack.http("GET", "/v1/devices", user)
    assert status == 200, body
    devices: list[dict[str, Any]] = body["devices"]
    return devices


def register(stack: Stack, user: str, body: dict[str, Any], want: int = 201) -> str:
    status, answer = stack.http("POST", "/v1/devices", user, body)
    assert status == want, answer
    device_id: str = answer["id"]
    return device_id


def test_register_list_and_delete_devices(stack: Stack) -> None:
    status, body = stack.http("POST", "/v1/devices", "ann", {"platform": "fcm", "token": FCM})
    assert status == 201, body
    fcm_id = body["id"]
    assert body == {"id": fcm_id, "platform": "fcm", "token_kind": "registration_token",
                    "app": ""}
    status, body = stack.http("POST", "/v1/devices", "ann",
                              {"platform": "fcm", "token": FID, "token_kind": "fid",
                               "app": "1:123:android:abc"})
    assert status == 201 and body["token_kind"] == "fid", body
    fid_id = body["id"]
    status, body = stack.http("POST", "/v1/devices", "ann",
                              {"platform": "apns", "token": APNS, "app": "chat.burrow.ios"})
    assert status == 201 and body["token_kind"] is None, body
    apns_id = body["id"]
    # The app registers again at every start: same id, 200, nothing duplicated.
    assert register(stack, "ann", {"platform": "apns", "token": APNS.lower(),
                                   "app": "chat.burrow.ios"}, want=200) == apns_id
    assert register(stack, "ann", {"platform": "fcm", "token": FCM}, want=200) == fcm_id
    assert len({fcm_id, fid_id, apns_id}) == 3

    listed = my_devices(stack, "ann")
    assert sorted(d["id"] for d in listed) == sorted([fcm_id, apns_id, fid_id])
    by_id = {d["id"]: d for d in listed}
    assert by_id[fid_id]["token_kind"] == "fid" and by_id[fid_id]["app"] == "1:123:android:abc"
    assert by_id[apns_id]["token_kind"] is None and by_id[apns_id]["platform"] == "apns"
    assert by_id[fcm_id]["token_suffix"] == FCM[-6:]
    assert by_id[fid_id]["token_suffix"] == FID[-5:]  # never more than a quarter of it
    assert all(d["created_at"] <= d["updated_at"] for d in listed)
    text = json.dumps(listed)
    assert FCM not in text and FID not in text and APNS.lower() not in text

    docs = {d["_id"]: d for d in devices_in_db(stack)}
    assert set(docs) == {fcm_id, fid_id, apns_id}
    assert docs[fid_id]["token"] == FID and docs[fid_id]["token_kind"] == "fid"
    assert docs[apns_id]["token"] == APNS.lower() and docs[apns_id]["token_kind"] is None
    assert docs[apns_id]["app"] == "chat.burrow.ios"
    assert {d["user"] for d in docs.values()} == {"ann"}

    status, body = stack.http("DELETE", f"/v1/devices/{fid_id}", "ann")
    assert status == 204 and body is None
    status, body = stack.http("DELETE", f"/v1/devices/{fid_id}", "ann")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert sorted(d["id"] for d in my_devices(stack, "ann")) == sorted([fcm_id, apns_id])
    assert {d["_id"] for d in devices_in_db(stack)} == {fcm_id, apns_id}

    # The largest FCM token fits the unique index.
    assert register(stack, "ann", {"platform": "fcm", "token": "t" * 4096})


def test_a_token_registered_by_another_user_moves_to_them(stack: Stack) -> None:
    ann_id = register(stack, "ann", {"platform": "apns", "token": APNS})
    assert register(stack, "ann", {"platform": "fcm", "token": FCM})
    assert register(stack, "ben", {"platform": "apns", "token": APNS}) == ann_id
    assert [d["id"] for d in my_devices(stack, "ben")] == [ann_id]
    assert [d["platform"] for d in my_devices(stack, "ann")] == ["fcm"]
    moved = devices_in_db(stack, platform="apns")
    assert len(moved) == 1 and moved[0]["user"] == "ben"
    # The old owner cannot remove it any more; the new one can.
    assert stack.http("DELETE", f"/v1/devices/{ann_id}", "ann")[0] == 404
    assert stack.http("DELETE", f"/v1/devices/{ann_id}", "ben")[0] == 204
    assert devices_in_db(stack, platform="apns") == []

    def unique_index() -> bool:
        with sync_client(stack) as client:
            info = client.get_default_database().devices.index_information()
        index = info.get("platform_token", {})
        return bool(index.get("unique")) and index["key"] == [("platform", 1), ("token", 1)]

    eventually(unique_index)


def test_devices_are_private_and_need_a_token(stack: Stack) -> None:
    ann_id = register(stack, "ann", {"platform": "fcm", "token": FCM})
    status, body = stack.http("DELETE", f"/v1/devices/{ann_id}", "ben")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert my_devices(stack, "ben") == []
    assert [d["id"] for d in my_devices(stack, "ann")] == [ann_id]
    for method, path, body in (("GET", "/v1/devices", None),
                               ("POST", "/v1/devices", {"platform": "fcm", "token": "x"}),
                               ("DELETE", f"/v1/devices/{ann_id}", None),
                               ("GET", "/v1/me/settings", None),
                               ("PUT", "/v1/me/settings", {"push": False})):
        status, answer = stack.http(method, path, None, body)
        assert status == 401 and answer["error"]["reason"] == "missing", (method, path)
        expired = stack.token("ann", ttl=-60)
        status, answer = stack.http(method, path, None, body, token=expired)
        assert status == 401 and answer["error"]["reason"] == "expired", (method, path)
    assert [d["_id"] for d in devices_in_db(stack)] == [ann_id]
    assert user_in_db(stack, "ann") is None


BAD_DEVICES: list[tuple[Any, str, str | None]] = [
    (b"{oops", "bad_json", None),
    (b"", "bad_json", None),
    (b"\xff\xfe", "bad_json", None),
    ([{"platform": "fcm", "token": FCM}], "bad_request", None),
    ("fcm", "bad_request", None),
    ({"platform": "fcm", "token": FCM, "user": "ben"}, "bad_request", "user"),
    ({"token": FCM}, "bad_request", "platform"),
    ({"platform": "gcm", "token": FCM}, "bad_request", "platform"),
    ({"platform": ["fcm"], "token": FCM}, "bad_request", "platform"),
    ({"platform": "fcm"}, "bad_request", "token"),
    ({"platform": "fcm", "token": 12345}, "bad_request", "token"),
    ({"platform": "fcm", "token": ""}, "bad_request", "token"),
    ({"platform": "fcm", "token": "has space"}, "bad_request", "token"),
    ({"platform": "fcm", "token": "caf\u00e9"}, "bad_request", "token"),
    ({"platform": "fcm", "token": "t" * 4097}, "bad_request", "token"),
    ({"platform": "fcm", "token": FCM, "token_kind": "apns"}, "bad_request", "token_kind"),
    ({"platform": "fcm", "token": FCM, "token_kind": None}, "bad_request", "token_kind"),
    ({"platform": "apns", "token": "g" * 64}, "bad_request", "token"),
    ({"platform": "apns", "token": "a" * 63}, "bad_request", "token"),
    ({"platform": "apns", "token": "a" * 201}, "bad_request", "token"),
    ({"platform": "apns", "token": APNS, "token_kind": "registration_token"}, "bad_request",
     "token_kind"),
    ({"platform": "fcm", "token": FCM, "app": 7}, "bad_request", "app"),
    ({"platform": "fcm", "token": FCM, "app": "a" * 256}, "bad_request", "app"),
    ({"platform": "apns", "token": APNS, "app": "bad\r\ntopic"}, "bad_request", "app"),
]


def test_invalid_device_registrations_get_400_naming_the_field(stack: Stack) -> None:
    for body, code, field in BAD_DEVICES:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, answer = stack.http("POST", "/v1/devices", "ann", raw)
        assert status == 400, (body, answer)
        error = answer["error"]
        assert error["code"] == code and error["message"], (body, error)
        assert error.get("field") == field, (body, error)
        if field is not None:
            assert field in error["message"], (body, error)
    status, answer = stack.http("POST", "/v1/devices", "ann",
                                {"platform": "fcm", "token": "t" * MAX_REQUEST_BYTES})
    assert status == 413 and answer["error"]["code"] == "too_large", answer

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"platform": "fcm", "token": "'
        for _ in range(40):
            yield b"t" * 1024
        yield b'"}'

    refused = httpx.post(stack.gateways[0].url("/v1/devices"), content=chunks(), timeout=30,
                         headers={"Authorization": f"Bearer {stack.token('ann')}"})
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "too_large"
    assert devices_in_db(stack) == []
    # The connection closed after the 413 does not hurt the next request.
    assert register(stack, "ann", {"platform": "fcm", "token": FCM})


def test_the_device_limit_evicts_the_least_recently_updated(stack: Stack) -> None:
    ids = [register(stack, "ann", {"platform": "fcm", "token": f"token-{n}"})
           for n in range(MAX_DEVICES_PER_USER)]
    assert register(stack, "ben", {"platform": "fcm", "token": "ben-token"})
    # The oldest comes back (its app started again): token-1 is now the least recent.
    assert register(stack, "ann", {"platform": "fcm", "token": "token-0"}, want=200) == ids[0]
    newest = register(stack, "ann", {"platform": "fcm", "token": "token-new"})
    listed = {d["id"] for d in my_devices(stack, "ann")}
    assert len(listed) == MAX_DEVICES_PER_USER
    assert listed == (set(ids) - {ids[1]}) | {newest}
    tokens = {d["token"] for d in devices_in_db(stack, user="ann")}
    assert "token-1" not in tokens and {"token-0", "token-new"} <= tokens
    assert len(tokens) == MAX_DEVICES_PER_USER
    assert len(my_devices(stack, "ben")) == 1  # other users' devices are not counted


def test_settings_defaults_partial_updates_and_validation(stack: Stack) -> None:
    stack.vhost.load_topology()  # email.verify, where a new address's mail is queued
    defaults = {"email": None, "email_verified": False, "push": True, "digest": "daily",
                "previews": True, "snooze_until": None, "quiet_hours": None}
    assert stack.http("GET", "/v1/me/settings", "ann") == (200, defaults)
    assert stack.http("PUT", "/v1/me/settings", "ann", {}) == (200, defaults)
    assert user_in_db(stack, "ann") is None  # nothing to write, nothing written
    status, body = stack.http("PUT", "/v1/me/settings", "ann", {"digest": "hourly"})
    assert (status, body) == (200, {**defaults, "digest": "hourly"})
    status, body = stack.http("PUT", "/v1/me/settings", "ann",
                              {"email": "ann.lee+chat@mail.example.org", "previews": False})
    want = {"email": "ann.lee+chat@mail.example.org", "email_verified": False, "push": True,
            "digest": "hourly", "previews": False, "snooze_until": None, "quiet_hours": None}
    assert (status, body) == (200, want)
    assert stack.http("GET", "/v1/me/settings", "ann") == (200, want)
    doc = user_in_db(stack, "ann")
    assert doc is not None and doc["updated_at"] is not None
    # Only what was changed is stored: defaults stay defaults, not copies of them (the
    # address comes with its verification state: unverified, a mail asked for).
    assert {k: v for k, v in doc.items() if k not in ("_id", "updated_at")} == {
        "email": "ann.lee+chat@mail.example.org", "email_verified": False,
        "email_verify_sent_at": doc["email_verify_sent_at"], "digest": "hourly",
        "previews": False}
    assert stack.http("GET", "/v1/me/settings", "ben") == (200, defaults)

    bad: list[tuple[Any, str, str | None]] = [
        (b"{oops", "bad_json", None),
        (b"", "bad_json", None),
        (["push"], "bad_request", None),
        ({"push": False, "sms": True}, "bad_request", "sms"),
        ({"push": "false"}, "bad_request", "push"),
        ({"push": 0}, "bad_request", "push"),
        ({"push": None}, "bad_request", "push"),
        ({"previews": 1}, "bad_request", "previews"),
        ({"digest": "weekly"}, "bad_request", "digest"),
        ({"digest": None}, "bad_request", "digest"),
        ({"digest": "Daily"}, "bad_request", "digest"),
        ({"email": "ann"}, "bad_request", "email"),
        ({"email": "ann@localhost"}, "bad_request", "email"),
        ({"email": "ann lee@example.org"}, "bad_request", "email"),
        ({"email": "ann@example.org\r\nBcc: eve@example.org"}, "bad_request", "email"),
        ({"email": "ann@example.org, eve@example.org"}, "bad_request", "email"),
        ({"email": "<ann@example.org>"}, "bad_request", "email"),
        ({"email": "a..b@example.org"}, "bad_request", "email"),
        ({"email": "x" * 65 + "@example.org"}, "bad_request", "email"),
        ({"email": "ann@" + ".".join(c * 63 for c in "defg") + ".org"}, "bad_request",
         "email"),  # 263 characters, every part of it in bounds
        ({"email": 42}, "bad_request", "email"),
        ({"email": "ann@example.org", "push": "yes"}, "bad_request", "push"),
        ({"email_verified": True}, "bad_request", "email_verified"),  # only the link sets it
    ]
    for payload, code, field in bad:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, answer = stack.http("PUT", "/v1/me/settings", "ann", raw)
        assert status == 400, (payload, answer)
        error = answer["error"]
        assert error["code"] == code and error.get("field") == field, (payload, error)
        if field is not None:
            assert field in error["message"], (payload, error)
    status, answer = stack.http("PUT", "/v1/me/settings", "ann",
                                {"email": "a" * MAX_REQUEST_BYTES + "@example.org"})
    assert status == 413 and answer["error"]["code"] == "too_large", answer
    assert stack.http("GET", "/v1/me/settings", "ann") == (200, want)  # nothing changed

    assert stack.http("PUT", "/v1/me/settings", "ann",
                      {"email": None, "push": False, "digest": "off"}) == (
        200, {"email": None, "email_verified": False, "push": False, "digest": "off",
              "previews": False, "snooze_until": None, "quiet_hours": None})
    doc = user_in_db(stack, "ann")
    assert doc is not None and doc["email"] is None and doc["push"] is False


async def test_the_stores_keep_their_promises(mongo_url: str) -> None:
    """What the HTTP API cannot show: racing first registrations, stale invalid results,
    the notifier's view of devices, the digest's unsubscribe."""
    client: AsyncMongoClient[dict[str, object]] = database.open_client(mongo_url, 5)
    try:
        db = database.database(client)
        devices, users = DeviceStore(db), UserStore(db)
        await devices.ensure_indexes()

        # racing first registrations of one token: one device, new for exactly one of
        # them (many rounds: on a cold connection pool they hardly overlap)
        for round_ in range(20):
            token = f"race-{round_}-" + "x" * 20
            raced = await asyncio.gather(*(devices.register("bea", "fcm", token, "fid")
                                           for _ in range(8)))
            assert len({device_id for device_id, _ in raced}) == 1, round_
            assert [new for _, new in raced].count(True) == 1, (round_, raced)
        results = await asyncio.gather(*(devices.register("ann", "fcm", FCM, "fid")
                                         for _ in range(8)))
        assert len({device_id for device_id, _ in results}) == 1
        assert [new for _, new in results].count(True) == 1
        device_id = results[0][0]
        assert await devices.of_user("ann") == [
            Device(device_id, "ann", "fcm", FCM, "fid", "")]

        apns_id, new = await devices.register("ben", "apns", APNS.lower(), None, "chat.ios")
        assert new
        assert await devices.users_with_devices(["ann", "ben", "cat"]) == {"ann", "ben"}
        assert await devices.users_with_devices([]) == set()
        assert await devices.of_user("ben") == [
            Device(apns_id, "ben", "apns", APNS.lower(), "registration_token", "chat.ios")]

        # A push result about a token the device no longer has deletes nothing.
        assert not await devices.delete_invalid(device_id, "another-token")
        assert not await devices.delete_invalid(apns_id, FCM)
        assert await devices.delete_invalid(device_id, FCM)
        assert await devices.of_user("ann") == []
        # Registered again after the deletion: a new id the stale result cannot reach.
        again, new = await devices.register("ann", "fcm", FCM, "fid")
        assert new and again != device_id
        assert not await devices.delete_invalid(device_id, FCM)
        assert [d.id for d in await devices.of_user("ann")] == [again]
        assert not await devices.remove("ben", again)
        assert await devices.remove("ann", again)

        assert await users.settings("cat") == UserSettings()
        await users.unsubscribe_digest("cat")
        assert await users.settings("cat") == UserSettings(digest="off")
        with pytest.raises(ValueError, match="change_email"):  # never without its state
            await users.update("cat", {"email": "cat@example.org"})
        changed = await users.change_email("cat", None, EmailState("cat@example.org"),
                                           {"digest": "daily"})
        assert changed == UserSettings(email="cat@example.org", digest="daily")
        await users.unsubscribe_digest("cat")
        assert await users.settings("cat") == UserSettings(email="cat@example.org",
                                                           digest="off")
        with pytest.raises(ValueError):
            await users.update("cat", {"admin": True})

        # The address changes only from the one the caller read (a racing change wins,
        # the loser re-reads), and is verified only while it is still the user's.
        assert await users.change_email("cat", "stale@example.org",
                                        EmailState("dog@example.org"), {}) is None
        assert await users.change_email("new", None, EmailState("dog@example.org"),
                                        {}) is not None
        assert not await users.confirm_email("cat", "dog@example.org")
        assert await users.confirm_email("cat", "cat@example.org")
        assert (await users.settings("cat")).email_verified
        # one first verification mail per address, and none for a verified one
        assert not await users.mark_verification_sent("cat", "cat@example.org", stamp())
        asked = stamp()
        assert await users.mark_verification_sent("new", "dog@example.org", asked)
        assert not await users.mark_verification_sent("new", "dog@example.org", stamp())
        assert (await users.email_state("new")).sent_at == asked
        await users.forget_verification_sent("new", "dog@example.org", asked)
        assert (await users.email_state("new")).sent_at is None
    finally:
        await client.close()
