"""The identity provider's signing keys (``BURROW_JWKS_URL``), kept so that a key-server
outage or a hostile client costs neither the key server nor the gateway.

- **Stale if error**: a key set older than :data:`LIFESPAN` is fetched again, but when
  that fetch fails the keys already held keep verifying (a token signed with a key that
  was valid a few minutes ago is still one); without that, every new connection failed
  once the cache expired during an outage.
- **Back-off**: after a failed fetch nothing is fetched for 1 s, then 2, 4 ... up to
  :data:`MAX_BACKOFF`; a fetch in flight is shared by everyone waiting for it (one lock).
- **Unknown key ids**: a ``kid`` not in the set may be a rotation, so the set is fetched
  again, but at most every :data:`UNKNOWN_KID_INTERVAL` seconds: a client sending made-up
  key ids cannot make the gateway fetch on its behalf.

The fetch itself is PyJWT's (``PyJWKClient``), in a thread so the event loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Final

import jwt

log = logging.getLogger(__name__)

LIFESPAN: Final = 300.0
TIMEOUT: Final = 5.0
MAX_BACKOFF: Final = 60.0
UNKNOWN_KID_INTERVAL: Final = 10.0
FETCH_ERRORS = (jwt.PyJWKClientError, jwt.PyJWKSetError, OSError, ValueError)


class KeysUnavailable(Exception):
    """No key set could be fetched (and none is held)."""


class KeySet:
    def __init__(self, url: str, *, lifespan: float = LIFESPAN, timeout: float = TIMEOUT) -> None:
        self.uri = url
        self.lifespan = lifespan
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, cache_keys=False,
                                       timeout=timeout)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -math.inf  # the held set's age starts here
        self._tried_at = -math.inf    # the last attempt, failed or not
        self._retry_at = -math.inf    # no attempt before this (back-off)
        self._backoff = 1.0
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key *kid*; :exc:`KeyError` if the set does not have it,
        :exc:`KeysUnavailable` if no set could be had."""
        if self._wants_fetch(kid):
            async with self._lock:
                if self._wants_fetch(kid):  # nobody fetched it meanwhile
                    await self._fetch()
        if kid in self._keys:
            return self._keys[kid]
        if not self._keys and self._fetched_at == -math.inf:
            raise KeysUnavailable(self.uri)
        raise KeyError(kid)

    def _wants_fetch(self, kid: str) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False  # backing off: answer from what is held
        if kid in self._keys:
            return now - self._fetched_at >= self.lifespan
        # an unknown kid: fetch if the set is old, or at most every UNKNOWN_KID_INTERVAL
        return (now - self._fetched_at >= self.lifespan
                or now - self._tried_at >= UNKNOWN_KID_INTERVAL)

    async def _fetch(self) -> None:
        self._tried_at = time.monotonic()
        try:
            found = await asyncio.to_thread(self._client.get_jwk_set)
            keys = {k.key_id: k for k in found.keys if k.key_id}
        except FETCH_ERRORS as exc:
            # urllib errors become PyJWKClientConnectionError, but a body that is not
            # JSON (ValueError) or a reset during the read (OSError) escape as they are.
            self._retry_at = time.monotonic() + self._backoff
            log.warning("JWKS %s unusable (%s: %s); %s, next try in %.0f s", self.uri,
                        type(exc).__name__, exc,
                        f"keeping the {len(self._keys)} keys held" if self._keys
                        else "no keys held", self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            return
        self._keys, self._fetched_at = keys, time.monotonic()
        self._backoff, self._retry_at = 1.0, -math.inf
