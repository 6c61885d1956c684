"""One line per benchmark report of this folder (summary.txt): loss, latency, CPU.

    python bench/results/issue17/session11/summ.py | sort > .../summary.txt
"""

from __future__ import annotations

import glob
import json
import re

for name in sorted(glob.glob("bench/results/issue17/session11/*c1000-*.json")):
    d = json.load(open(name))
    found = re.search(r"(\S*c1000-\w+)-(\d)", name)
    assert found is not None
    c = d["cpu_s_during_run"]
    print(f"{found.group(1):7s} {found.group(2)} sent={d['sent']} acked={d['acked']} "
          f"loss={d['loss']} lost={d['acked_but_lost']} dup={d['duplicates']} "
          f"gaps={d['gaps']} unacked={d['unacked']} err={len(d['errors'])} "
          f"e2e p50/p99={d['latency_ms']['p50']:.1f}/{d['latency_ms']['p99']:.0f} "
          f"ack p50/p99={d['ack_latency_ms']['p50']:.1f}/{d['ack_latency_ms']['p99']:.0f} "
          f"cpu seq={c['sequencer']:.2f} gw={c['gateway-0'] + c['gateway-1']:.2f} "
          f"rmq={c['rabbitmq']:.2f} db={c['database']:.2f}")
