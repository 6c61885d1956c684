"""MongoDB (PyMongo's async API): one store per collection family, each owning its
documents' shape and its indexes. Messages (:mod:`~burrow.storage.messages`), rooms and
memberships, users and their settings, devices, presence, pending notifications, WebSocket
tickets; :mod:`~burrow.storage.database` holds what they share (connection, retries, the
index declarations run at start).

May import: :mod:`burrow.core`, :mod:`burrow.mail`'s pure decisions, PyMongo. Never
Sanic or aio-pika: a store serves the gateway and the workers alike.
"""
