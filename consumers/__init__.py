"""Burrow's queue consumers, one module per queue, run by ``python -m consumers``.

:data:`CONSUMERS` maps a consumer's name to what runs it; it is listed by hand (no
registration on import) so importing one consumer never changes another. Nothing here
imports prometheus_client: ``python -m consumers`` must set up multiprocess metrics first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from queues.consumer import ConsumerFactory


def _sequencer() -> ConsumerFactory:
    from consumers.sequencer import Sequencer
    return Sequencer


def _notifier() -> ConsumerFactory:
    from consumers.notifier import Notifier
    return Notifier


def _digester() -> ConsumerFactory:
    from consumers.digester import Digester
    return Digester


def _webhooks() -> ConsumerFactory:
    from consumers.webhooks import Webhooks
    return Webhooks


# name -> a function returning the consumer's factory (imports stay lazy: see above)
CONSUMERS: dict[str, Callable[[], ConsumerFactory]] = {
    "sequencer": _sequencer, "notifier": _notifier, "digester": _digester,
    "webhooks": _webhooks}
# Run only when named: the webhooks worker needs a receiver (BURROW_WEBHOOK_URL).
OPTIONAL = frozenset({"webhooks"})
