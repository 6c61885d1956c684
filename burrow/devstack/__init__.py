"""The local stack without Docker: a private RabbitMQ node, the embedded MongoDB-wire
server, and Burrow's own processes, all on loopback. Used by ``./dev up`` and by the tests.
"""
