"""The local stack without Docker: a private RabbitMQ node, the embedded MongoDB-wire
server, and Burrow's own processes, all on loopback. Used by ``./dev up`` and by the tests.

May import: anything of Burrow (it starts the processes and renders the broker's
definitions from :mod:`queues`); nothing imports it but the tests and the benchmark.
"""
