import json,glob,re
rows=[]
for f in sorted(glob.glob('bench/results/issue17/session11/*c1000-*.json')):
    d=json.load(open(f)); m=re.search(r'(\S*c1000-\w+)-(\d)',f)
    c=d['cpu_s_during_run']
    print(f"{m.group(1):7s} {m.group(2)} sent={d['sent']} acked={d['acked']} loss={d['loss']} lost={d['acked_but_lost']} dup={d['duplicates']} gaps={d['gaps']} unacked={d['unacked']} err={len(d['errors'])} e2e p50/p99={d['latency_ms']['p50']:.1f}/{d['latency_ms']['p99']:.0f} ack p50/p99={d['ack_latency_ms']['p50']:.1f}/{d['ack_latency_ms']['p99']:.0f} cpu seq={c['sequencer']:.2f} gw={c['gateway-0']+c['gateway-1']:.2f} rmq={c['rabbitmq']:.2f} db={c['database']:.2f}")
