"""The domain's decisions, with no I/O: what a send and a stored message are
(:mod:`~burrow.core.envelopes`), how sends are deduplicated and numbered per room
(:mod:`~burrow.core.sequencing`), where a resume starts (:mod:`~burrow.core.seam`), whom a
batch of messages notifies (:mod:`~burrow.core.notify_plan`), when a process is ready
(:mod:`~burrow.core.health`), which URLs and certificates are acceptable
(:mod:`~burrow.core.tls`).

May import: the standard library, orjson and PyJWT, and nothing else of Burrow. Never a
network library (Sanic, aio-pika, PyMongo, httpx, websockets...): the adapters call the
core, not the other way round, so every rule here is tested without a server.
"""
