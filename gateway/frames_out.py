"""The children of ``burrow_gateway_frames_out_total``, one per frame type the gateway sends.

Bound once: ``labels()`` takes a lock and a dict lookup on every call, and fan-out counts
every message. A module of its own because the transports (:mod:`gateway.ws`,
:mod:`gateway.sse`, :mod:`gateway.streams`) count the frames they send here too, beside
the node's pieces, and none of them should import the node, or one another, for a
counter.
"""

from __future__ import annotations

from burrow.runtime import metrics

OUT = {kind: metrics.GATEWAY_FRAMES_OUT.labels(kind) for kind in (
    "message", "ack", "error", "subscribed", "unsubscribed", "presence", "typing", "pong")}
