import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from pathlib import Path
from pymongo import AsyncMongoClient, ASCENDING
from burrow.devstack.mongo import EmbeddedMongo
from burrow.devstack.ports import free_port

async def main() -> None:
    port = free_port(); d = Path(tempfile.mkdtemp())
    db = EmbeddedMongo(d, port); db.start(); db.wait_ready()
    try:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db.url)
        m = client["q"]["messages"]
        await m.create_index([("target", ASCENDING)], name="target", sparse=True)
        docs = [{"_id": f"m{i}", "room": "r", "seq": i, "body": "x"} for i in range(10000)]
        docs += [{"_id": f"c{i}", "room": "r", "seq": 10000 + i, "target": f"m{i % 500}",
                  "kind": ("reaction", "edit", "delete")[i % 3]} for i in range(10000)]
        await m.insert_many(docs)
        ids = [f"m{i}" for i in range(0, 40, 4)]  # 10 targets with change events
        async def t(name: str, coro_fn: Callable[[], Awaitable[list[Any]]]) -> None:
            s = time.perf_counter(); n = 0
            for _ in range(5): n = len(await coro_fn())
            print(name, round((time.perf_counter() - s) / 5 * 1000, 2), "ms", n)
        await t("target+kind", lambda: m.find({"target": {"$in": ids}, "kind": "delete"}, {"target": 1}).to_list())
        await t("target only", lambda: m.find({"target": {"$in": ids}}, {"target": 1, "kind": 1}).to_list())
        await t("kind+target order", lambda: m.find({"kind": "delete", "target": {"$in": ids}}, {"target": 1}).to_list())
        await t("single kind+target", lambda: m.find({"kind": "edit", "target": "m3"}).to_list())
        await t("target+kind hint", lambda: m.find({"target": {"$in": ids}, "kind": "delete"}, {"target": 1}).hint("target").to_list())
        await t("single target+kind hint", lambda: m.find({"target": "m3", "kind": "edit"}).hint("target").to_list())
        await t("single target", lambda: m.find({"target": "m3"}).to_list())
        s = time.perf_counter()
        r = await m.update_many({"target": "m3", "kind": "edit"}, {"$set": {"body": ""}}, hint="target")
        print("update_many hint", round((time.perf_counter() - s) * 1000, 2), r.matched_count)
        s = time.perf_counter()
        r = await m.update_many({"target": "m3", "kind": "edit"}, {"$set": {"body": ""}})
        print("update_many nohint", round((time.perf_counter() - s) * 1000, 2), r.matched_count)
        await client.close()
    finally:
        db.stop(timeout=0)
asyncio.run(main())
