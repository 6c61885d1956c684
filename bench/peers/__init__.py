"""Comparison peers for the benchmark: the same load against servers that are not Burrow.

``socketio``: python-socketio on aiohttp, several processes sharing rooms through
RabbitMQ (``AsyncAioPikaManager``) -- what a typical Python chat deployment looks like,
without auth or storage. ``websockets``: one bare ``websockets`` broadcast server, no
broker at all -- the ceiling of fan-out on this machine. Run with ``python -m bench.peers``.
"""
