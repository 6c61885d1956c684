"""What every Burrow server process runs on: its settings (:mod:`~burrow.runtime.settings`,
the one table of ``BURROW_*`` variables), JSON logs, Prometheus metrics, health probes,
the broker link (aio-pika), rate limits (the ``limits`` package) and
:class:`~burrow.runtime.process.Runtime`, which opens and closes the broker and database
links as one.

May import: :mod:`burrow.core`, :mod:`burrow.storage`, :mod:`burrow.mail`'s URL parsing,
and the libraries it adapts. Never the processes (``gateway``, ``consumers``, ``queues``).
"""
