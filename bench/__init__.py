"""Burrow's load benchmark (issue 6, step 1): ``./dev bench`` runs ``python -m bench``.

:mod:`bench.stack` starts a private stack (RabbitMQ node, embedded database, gateways,
one sequencer) on free loopback ports; :mod:`bench.load` drives it with WebSocket clients
and records every delivery; :mod:`bench.report` turns the records into numbers.
"""
