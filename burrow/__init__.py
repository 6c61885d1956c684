"""Burrow's shared code, one package per concern; the processes live beside it
(``gateway/``, ``consumers/``, ``queues/``).

* :mod:`burrow.core`: the domain's decisions without I/O (envelopes, ids, sequencing,
  dedup, resume seams, notification plans, readiness, URL and TLS policy);
* :mod:`burrow.storage`: MongoDB, one store per collection family;
* :mod:`burrow.runtime`: what every server process runs on (settings, logs, metrics,
  probes, the broker link, rate limits);
* :mod:`burrow.push` and :mod:`burrow.mail`: the notification channels;
* :mod:`burrow.client`: the Python client and the ``burrow`` command (no server code);
* :mod:`burrow.devstack`: the local stack behind ``./dev up`` and the tests.

Which package may import which is written in each package's docstring and checked by
``tests/unit/test_layout.py``.
"""
