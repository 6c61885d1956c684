"""Run the benchmark: ``python -m bench`` (``./dev bench`` does it in the venv).

Starts a private stack (RabbitMQ, the embedded database, G gateways, one sequencer) on
free loopback ports, drives it with C WebSocket clients in rooms of S at M sends/s for
D seconds, stops everything, prints a Markdown table and writes
``bench/results/<timestamp>.json`` and ``bench/results/latest.md``.

``--faults``: the same run with 2 gateways and 2 sequencers while :mod:`bench.faults`
kills gateway-0 and the active sequencer (kill -9) and restarts RabbitMQ; the report
adds each fault's recovery time, and acked-but-lost and gaps must be 0.

``--scale``: the same run with 2 sequencers (``--sequencers N``) while
:data:`bench.faults.SCALE` starts one more sequencer, SIGTERMs the one holding the most
shards, then kills (-9) the one holding the most; the report adds per step the time until
the shards were spread again and the recovery of deliveries (docs/scaling.md).

``--cluster N``: the same stack on N clustered RabbitMQ nodes (:mod:`bench.cluster_stack`);
with ``--faults``, :mod:`bench.cluster_faults` kills, restarts, stops and partitions nodes
while the clients send (bench/README.md, "Cluster faults").

``--compare``: Burrow, python-socketio with its RabbitMQ manager and a broker-less
websockets server under the same load, one table with the ratios (:mod:`bench.compare`).

``--curve``: deliveries/s and p99 as connections and room size grow (:mod:`bench.curve`).

``--mix send=80,react=10,edit=5,delete=5``: sends, reactions, edits and deletes drawn
by weight (:mod:`bench.mix`); the report adds the numbers per kind and the convergence
of every client's view with the stored rooms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from bench import cluster_faults, compare, curve, kinds, mix, report
from bench import faults as fault_mode
from bench.cluster_stack import ClusterBenchStack
from bench.load import LoadConfig, LoadResult, run_load
from bench.measure import OnConnected, add_load_arguments, measure, prepare_process
from bench.peers.stack import PeerFailed
from bench.stack import BenchStack, StackFailed
from burrow.devstack.rabbitmq import NodeFailed

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parent / "results"
NOTIFICATION_QUEUES = ("notify.messages", "push.due", "digest.due", "email.due")


def failures(summary: dict[str, Any]) -> list[str]:
    """What makes the run fail (exit status 1): the names of the non-zero counts."""
    counts = ["acked_but_lost", "gaps", "duplicates", "order_violations", "stored_twice"]
    if not summary.get("faults"):
        counts.append("loss")  # with faults, a send still unacked at the end may be unstored
    bad = [name for name in counts if summary.get(name)]
    bad += kinds.failures(summary.get("mix") or {})
    if summary.get("faults") and not summary.get("faults_recovered"):
        bad.append("unrecovered faults")
    return bad


def run_burrow(config: LoadConfig, gateways: int, keep: bool = False,
               faults: bool = False, notifications: bool = True,
               history: int = 0, seed: int = 1, cluster: int = 0,
               cluster_faults_name: str = "full", scale: bool = False,
               sequencers: int | None = None) -> dict[str, Any]:
    """One run against a fresh Burrow stack; returns the report.

    *faults*: 2 sequencers (one active, one standby) and :data:`bench.faults.SCHEDULE`
    during the send phase (the caller passes at least 2 gateways).
    *notifications* False: the reduced stack without notifier and digester.
    *history*: messages already stored when the run starts (:mod:`bench.seed`).
    *seed*: of the RNG that draws the mixed workload's operations (``config.mix``).
    *cluster*: that many RabbitMQ nodes, clustered (:mod:`bench.cluster_stack`); with
    *faults*, :data:`bench.cluster_faults.SCHEDULES` [*cluster_faults_name*] instead of
    the single-node schedule.
    *scale*: :data:`bench.faults.SCALE` (sequencers started, stopped, killed) instead.
    *sequencers*: sequencer processes at the start (default 1, 2 with faults or scale).
    """
    sequencers = sequencers or (2 if faults or scale else 1)
    stack_class = partial(ClusterBenchStack, cluster) if cluster else BenchStack
    schedule = (cluster_faults.SCHEDULES[cluster_faults_name] if cluster
                else fault_mode.SCALE if scale else fault_mode.SCHEDULE)
    faults = faults or scale
    with stack_class(gateways=gateways, keep=keep, sequencers=sequencers,
                     notifications=notifications, history=history) as stack:
        print(f"bench: stack up in {stack.directory} ({stack.description})",
              file=sys.stderr, flush=True)
        if isinstance(stack, ClusterBenchStack):  # where each process starts
            broker_nodes = stack.broker_nodes()
            print(f"bench: broker node of each process: {broker_nodes}", file=sys.stderr,
                  flush=True)
        during = (partial(fault_mode.run_schedule, stack, config.duration, schedule=schedule)
                  if faults else None)
        workload = mix.MixWorkload(config.mix, seed) if config.mix else None
        http = [g.http_url for g in stack.gateways]
        results: list[LoadResult] = []

        async def load(on_connected: OnConnected) -> LoadResult:
            results.append(await run_load(
                config, http, [g.ws_url for g in stack.gateways], stack.jwt_secret,
                on_connected=on_connected, during_send=during,
                mongo_url=stack.db.database_url("burrow"), workload=workload))
            return results[0]

        summary = measure(config, stack.pids, load, "burrow")
        if workload is not None:  # after the last CPU sample: reading back is not measured
            summary["mix"]["fallbacks"] = workload.fallbacks
            summary["mix"]["convergence"] = workload.converge(http, stack.jwt_secret,
                                                              results[0])
        summary["stack"] = stack.description
        if isinstance(stack, ClusterBenchStack):
            summary["broker_nodes_at_start"] = broker_nodes
            summary["broker_nodes_at_end"] = _or_error(stack.broker_nodes)
            summary["queue_leaders_at_end"] = _or_error(stack.leaders)
        summary["history_messages"] = history
        summary["workers"] = worker_work(stack)
        if faults:  # a shard that stopped consuming shows here
            try:
                summary["shard_queues_at_end"] = stack.shard_queues()
            except (OSError, ValueError) as exc:
                summary["shard_queues_at_end"] = f"management API: {exc}"
    return summary


def _or_error(read: Callable[[], T]) -> T | str:
    """*read*'s answer, or what the management API said instead."""
    try:
        return read()
    except (OSError, ValueError) as exc:
        return f"management API: {exc}"


def worker_work(stack: BenchStack) -> dict[str, Any]:
    """What the workers did in the run, as their metrics say (jobs, pushes and emails
    sent, the sequencer's mean store time), and the backlog of the notification queues
    at the end: the notifier must keep up, not only the chat."""
    done: dict[str, float] = {}
    for text in stack.worker_metrics().values():
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "burrow_jobs_total":
                    key = f"jobs {labels.get('queue')} {labels.get('outcome')}"
                elif sample.name == "burrow_pushes_total":
                    key = f"pushes {labels.get('platform')} {labels.get('outcome')}"
                elif sample.name == "burrow_emails_total":
                    key = f"emails {labels.get('outcome')}"
                elif sample.name == "burrow_sequencer_handovers_total":
                    key = "sequencer handovers"  # shards moved between sequencers
                elif sample.name in ("burrow_sequencer_store_seconds_sum",
                                     "burrow_sequencer_store_seconds_count"):
                    key = sample.name.removeprefix("burrow_")  # the database as the chat sees it
                else:
                    continue
                if sample.value:
                    done[key] = done.get(key, 0) + sample.value
    if done.get("sequencer_store_seconds_count"):
        done["sequencer store ms (mean)"] = round(
            1000 * done.pop("sequencer_store_seconds_sum") /
            done.pop("sequencer_store_seconds_count"), 2)
    try:
        backlog: Any = stack.queue_depths(list(NOTIFICATION_QUEUES))
    except (OSError, ValueError) as exc:
        backlog = f"management API: {exc}"
    return {"done": dict(sorted(done.items())), "backlog_at_end": backlog}


def run(config: LoadConfig, gateways: int, results: Path, keep: bool = False,
        faults: bool = False, notifications: bool = True, history: int = 0, seed: int = 1,
        cluster: int = 0, cluster_faults_name: str = "full", scale: bool = False,
        sequencers: int | None = None) -> dict[str, Any]:
    """One Burrow run, written under *results* and printed; returns the report."""
    summary = run_burrow(config, gateways, keep, faults, notifications, history, seed,
                         cluster, cluster_faults_name, scale, sequencers)
    path, table = report.write(summary, results)
    print(table)
    print(f"bench: wrote {path} and {results / 'latest.md'}", file=sys.stderr)
    return summary


def run_compare(config: LoadConfig, gateways: int, results: Path,
                keep: bool = False, notifications: bool = True, history: int = 0
                ) -> dict[str, Any]:
    """Burrow, then python-socketio on as many servers, then the broker-less ceiling,
    under the same load; one table with the ratios (:mod:`bench.compare`)."""
    from bench.peers.__main__ import run_peer

    reports = {"burrow": run_burrow(config, gateways, keep, notifications=notifications,
                                    history=history)}
    reports["socketio"] = run_peer(config, "socketio", gateways, keep)
    reports["websockets"] = run_peer(config, "websockets", 1, keep)
    table = compare.markdown(reports)
    summary = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "compare": reports,
               "ratios": compare.ratios(reports)}
    path = report.write_named(summary, results, "compare", f"Burrow and its peers\n\n{table}")
    print(table)
    print(f"bench: wrote {path} and {results / 'latest.md'}", file=sys.stderr)
    return summary


def run_curve(gateways: int, results: Path, scale: float, duration: float,
              drain: float, notifications: bool = True) -> dict[str, Any]:
    """The scaling curve (:mod:`bench.curve`), one fresh stack per point."""
    def point(p: curve.Point) -> dict[str, Any]:
        config = LoadConfig(connections=p.connections, room_size=p.room_size, rate=p.rate,
                            duration=duration, drain=drain)
        return run_burrow(config, gateways, notifications=notifications)

    table, reports = curve.run(point, scale, on_row=lambda row: print(row, flush=True))
    summary = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "curve": reports}
    path = report.write_named(summary, results, "curve", f"Scaling curve\n\n{table}")
    print(table)
    print(f"bench: wrote {path} and {results / 'latest.md'}", file=sys.stderr)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser, connections=None)
    parser.add_argument("--rooms", "-R", type=int, default=None,
                        help="rooms (default connections / room-size; must match it)")
    parser.add_argument("--gateways", "-G", type=int, default=2,
                        help="gateway processes (default 2)")
    parser.add_argument("--drain", type=float, default=None,
                        help="at most this many seconds to wait for the last deliveries "
                             "(default 15, with --faults 60: counted after the last fault)")
    parser.add_argument("--faults", action="store_true",
                        help="kill -9 gateway-0 at 25%% of D, the active sequencer at 50%%, "
                             "restart RabbitMQ at 75%%; implies 2 gateways (at least) and "
                             "2 sequencers (bench/README.md, Fault mode)")
    parser.add_argument("--scale", action="store_true",
                        help="start one more sequencer at 25%% of D, SIGTERM the one holding "
                             "the most shards at 55%%, kill -9 the one holding the most at "
                             "80%% (default D 40 s, drain 60 s; docs/scaling.md, Sequencer "
                             "scale-out)")
    parser.add_argument("--sequencers", type=int, default=None, metavar="N",
                        help="sequencer processes at the start (default 1; 2 with --faults "
                             "or --scale)")
    parser.add_argument("--cluster", type=int, default=0, metavar="N",
                        help="run on N RabbitMQ nodes, clustered (2..9); with --faults the "
                             "cluster schedule: SIGKILL the node leading most shards, start "
                             "it, SIGTERM another, start it, partition the third "
                             "(default D 90 s, drain 60 s; bench/README.md, Cluster faults)")
    parser.add_argument("--cluster-faults", choices=sorted(cluster_faults.SCHEDULES),
                        default="full",
                        help="with --faults --cluster: the whole schedule (full, default) or "
                             "only the SIGKILL of the node leading most shards (kill: the "
                             "suite's short run) or only the partition (partition)")
    parser.add_argument("--compare", action="store_true",
                        help="also run python-socketio (AsyncAioPikaManager, G servers) and a "
                             "broker-less websockets server under the same load; one table "
                             "with the Burrow/peer ratios")
    parser.add_argument("--curve", type=float, nargs="?", const=1.0, default=None,
                        metavar="SCALE",
                        help="the scaling curve: C 1k/5k/10k at room 10, room 10/100/1000 at "
                             "C=1k (one stack per point; SCALE < 1 shrinks C; ignores C, S, M)")
    parser.add_argument("--offline", type=int, default=2,
                        help="members per room who never connect (default 2): pushes and "
                             "digests are for them")
    parser.add_argument("--devices", type=float, default=0.5,
                        help="share of users with a phone and an hourly digest (default 0.5)")
    parser.add_argument("--reduced", action="store_true",
                        help="leave the notifier, the digester and the local providers out "
                             "(a diagnostic: reports say REDUCED)")
    parser.add_argument("--history", type=int, default=0, metavar="N",
                        help="start from a database holding N stored messages in other "
                             "rooms, with their members, read pointers, phones and push "
                             "records (built once per N under .burrow/bench-seed/)")
    parser.add_argument("--mix", default=None, metavar="KIND=WEIGHT,...",
                        help="a mixed workload instead of sends only, e.g. "
                             "send=80,react=10,edit=5,delete=5 (kinds: send, react, edit, "
                             "delete; weights are relative): clients subscribe with v2, the "
                             "report adds numbers per kind and checks that every client's "
                             "view converges on the stored rooms (bench/README.md)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the RNG that draws the mix's operations (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"directory of the reports (default {RESULTS})")
    parser.set_defaults(duration=None)  # 10 s, 90 s with --cluster --faults
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = (90.0 if args.cluster and args.faults
                         else 40.0 if args.scale else 10.0)
    if args.scale and (args.faults or args.cluster or args.compare or args.curve is not None):
        parser.error("--scale is a schedule of its own: not with --faults, --cluster, "
                     "--compare or --curve")
    if args.sequencers is not None and not 1 <= args.sequencers <= 16:
        parser.error("--sequencers takes 1 to 16")
    if args.cluster and not 2 <= args.cluster <= 9:
        parser.error("--cluster takes 2 to 9 nodes (3 for the fault schedule)")
    if args.cluster and args.faults and args.cluster < 3:
        parser.error("--faults --cluster needs 3 nodes at least (a majority must survive)")
    if args.cluster and (args.compare or args.curve is not None):
        parser.error("--cluster is for plain, --faults and --mix runs")
    if args.connections is None:
        args.connections = 200 if args.rooms is None else args.rooms * args.room_size
    if args.rooms is not None and args.rooms * args.room_size != args.connections:
        parser.error("rooms x room-size must equal connections")
    if args.connections < 1 or args.room_size < 1 or args.gateways < 1 or args.rate <= 0:
        parser.error("connections, room-size, gateways and rate must be positive")
    if args.history < 0:
        parser.error("history is a number of messages, at least 0")
    if args.offline < 0 or not 0 <= args.devices <= 1:
        parser.error("offline must be >= 0 and devices a share between 0 and 1")
    if args.room_size + args.offline > 1001:
        parser.error("room-size + offline is at most 1001 (POST /v1/rooms takes 1000 members)")
    if args.room_size > 1001:
        parser.error("room-size is at most 1001 (POST /v1/rooms takes 1000 members)")
    try:
        weights = mix.parse(args.mix) if args.mix is not None else ()
    except ValueError as exc:
        parser.error(f"--mix: {exc}")
    if weights and (args.compare or args.curve is not None):
        parser.error("--mix is Burrow's alone (the peers have no edits, deletes or "
                     "reactions): not with --compare or --curve")
    if args.faults:
        args.gateways = max(2, args.gateways)
    if args.drain is None:
        args.drain = 60.0 if args.faults or args.scale else 15.0
    config = LoadConfig(connections=args.connections, room_size=args.room_size,
                        rate=args.rate, duration=args.duration, drain=args.drain,
                        offline=args.offline, devices=args.devices, mix=weights)
    notifications = not args.reduced
    prepare_process()
    try:
        if args.curve is not None:
            run_curve(args.gateways, args.results, args.curve, args.duration, args.drain,
                      notifications)
            return
        if args.compare:
            compared = run_compare(config, args.gateways, args.results, keep=args.keep,
                                   notifications=notifications, history=args.history)
            summary = compared["compare"]["burrow"]
        else:
            summary = run(config, args.gateways, args.results, keep=args.keep,
                          faults=args.faults, notifications=notifications,
                          history=args.history, seed=args.seed, cluster=args.cluster,
                          cluster_faults_name=args.cluster_faults, scale=args.scale,
                          sequencers=args.sequencers)
    except (StackFailed, PeerFailed, NodeFailed) as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; the stack is stopped")
    if args.json:
        print(json.dumps(summary, indent=2))
    bad = failures(summary)
    if bad:
        print(f"bench: FAILED: {', '.join(bad)}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
