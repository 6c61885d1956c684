"""Insert cost on the embedded database with and without the two partial indexes."""
import asyncio
import tempfile
import time
import uuid
from typing import Any
from pathlib import Path
from pymongo import AsyncMongoClient, ASCENDING
from burrow.devstack.mongo import EmbeddedMongo
from burrow.devstack.ports import free_port

async def run(url: str, partial: bool) -> float:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    db = client[f"b{uuid.uuid4().hex[:6]}"]
    m = db["messages"]
    await m.create_index([("room", ASCENDING), ("seq", ASCENDING)], unique=True)
    await m.create_index([("dedup", ASCENDING)], unique=True, sparse=True)
    await m.create_index([("thread", ASCENDING), ("seq", ASCENDING)], sparse=True)
    await m.create_index([("target", ASCENDING)], sparse=True)
    if partial:
        for kind in ("edit", "delete"):
            await m.create_index([("target", ASCENDING)], name=f"{kind}_target",
                                 partialFilterExpression={"kind": kind})
    # warm up and fill 3000
    seq = 0
    times: list[float] = []
    for b in range(600):
        docs: list[dict[str, Any]] = []
        for i in range(10):
            seq += 1
            docs.append({"_id": uuid.uuid4().hex, "room": f"r{seq % 100}", "seq": seq,
                         "dedup": uuid.uuid4().hex, "sender": "u", "body": "x" * 100, "ts": 1})
        t = time.perf_counter()
        await m.insert_many(docs, ordered=False)
        times.append(time.perf_counter() - t)
    await client.close()
    times = times[100:]
    return sum(times) / len(times) * 1000

async def main() -> None:
    port = free_port()
    d = Path(tempfile.mkdtemp())
    db = EmbeddedMongo(d, port); db.start(); db.wait_ready()
    try:
        url = db.url
        for r in range(3):
            for partial in (False, True):
                print(r, "partial" if partial else "plain", round(await run(url, partial), 3), "ms/batch", flush=True)
    finally:
        db.stop(timeout=0)
asyncio.run(main())
