"""The cluster fault schedule: ``python -m bench --faults --cluster 3``.

While the clients send (D seconds from the first send; default D = 90 s with
``--cluster``), on a :class:`bench.cluster_stack.ClusterBenchStack`:

* 8 % of D: **SIGKILL** the node that leads the most shard queues ``chat.seq.N`` (the
  worst case: their leaders are elected anew on the survivors, and the processes
  connected to it move to another node);
* 20 %: **start it again**; it rejoins with its data (its queue replicas catch up);
* 36 %: **stop another node gracefully** (SIGTERM: RabbitMQ's clean shutdown, which hands
  its leaderships over before it goes), the one of the two others leading most shards;
* 50 %: **start it again**;
* 66 %: **partition** the third node from its peers for at most
  :data:`PARTITION_HOLD` s: iptables rules on loopback (:meth:`Cluster.partition`); with
  ``pause_minority`` the cut-off node pauses itself (closing its clients' connections)
  and the majority goes on; then the rules go and it rejoins. Where the machine refuses
  iptables, the node is frozen instead (SIGSTOP, SIGCONT after the hold), and the record
  says why (``partition_refused``).

Each record says its victim, the nodes running before and after (as a majority node's
management API sees them), which queues changed leader (``leaders_moved``: queue ->
"old -> new"), how long the elections took (``elected_s``), and for a start how long the
node took to be back in the cluster (``back_s``; ``down_s`` from its fault). The actions
take one lock: a fault never begins while the one before it is still acting (on a slow
machine a restart may run late); ``time`` is then when it really began and ``waited_s``
says how late.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench.cluster_stack import ClusterBenchStack
from bench.faults import Step
from bench.stack import BenchStack
from burrow.devstack.cluster import NET_TICKTIME, ClusterFailed

# How long a partition is held at most: the peers see the node down after 7.5-12.5 s
# (net_ticktime 10 s) and it pauses itself; held until both are seen and 5 s more.
PARTITION_HOLD = 3 * NET_TICKTIME
ELECTION_TIMEOUT = 45.0
REJOIN_TIMEOUT = 150.0

_LOCK = threading.Lock()


def _cluster(stack: BenchStack) -> ClusterBenchStack:
    if not isinstance(stack, ClusterBenchStack):
        raise TypeError("the cluster fault schedule needs a ClusterBenchStack")
    return stack


def _poll(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if done():
                return True
        except (OSError, ValueError, KeyError, ClusterFailed):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)


def _running(stack: ClusterBenchStack) -> list[str]:
    """The running nodes (``rabbit-N``) as a node of the majority sees them."""
    for index, node in enumerate(stack.cluster.nodes):
        if node.process is None or index in stack.cluster.paused \
                or index in stack.cluster.partitioned:
            continue
        seen = stack.cluster.running(index)
        if seen:
            return sorted(stack.node_label(name) for name in seen)
    return []


def _leaders(stack: ClusterBenchStack) -> dict[str, str]:
    try:
        return stack.leaders()
    except (OSError, ValueError, ClusterFailed):
        return {}


def _moved(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    return {queue: f"{leader} -> {after.get(queue)}" for queue, leader in before.items()
            if after.get(queue) not in (None, leader)}


def _shards_led(leaders: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for queue, leader in leaders.items():
        if queue.startswith("chat.seq.") and queue[len("chat.seq."):].isdigit():
            counts[leader] = counts.get(leader, 0) + 1
    return dict(sorted(counts.items(), key=str))


def _pick(stack: ClusterBenchStack, exclude: set[int]) -> int:
    """The node (index) leading the most shard queues, among those not in *exclude*."""
    counts = stack.shard_leader_counts()
    return max((i for i in counts if i not in exclude), key=lambda i: (counts[i], -i))


def _gone(stack: ClusterBenchStack, victim: int, began: float) -> dict[str, Any]:
    """Wait until the majority sees *victim* down and every queue has a leader elsewhere
    (the API shows "none" while it has no figures for a queue's new leader yet)."""
    label = f"rabbit-{victim + 1}"
    seen_down = _poll(lambda: label not in _running(stack), ELECTION_TIMEOUT)
    down_at = time.monotonic()
    elected = _poll(lambda: bool(leaders := _leaders(stack))
                    and not {label, "none"} & set(leaders.values()), ELECTION_TIMEOUT)
    return {"seen_down_s": round(down_at - began, 3) if seen_down else None,
            "elected_s": round(time.monotonic() - began, 3) if elected else None}


def _act(name: str, action: Callable[[ClusterBenchStack], dict[str, Any]]
         ) -> Callable[[BenchStack], dict[str, Any]]:
    """One fault: under the schedule's lock, with the nodes and leaders before and after."""
    def run(stack: BenchStack) -> dict[str, Any]:
        asked = time.time()
        with _LOCK:
            cluster_stack = _cluster(stack)
            record: dict[str, Any] = {"time": time.time(),
                                      "waited_s": round(time.time() - asked, 3)}
            record["running_before"] = _running(cluster_stack)
            before = _leaders(cluster_stack)
            record["shards_led_before"] = _shards_led(before)
            try:
                record.update(action(cluster_stack))
            except Exception:
                traceback.print_exc()  # the schedule reports the message only
                raise
            after = _leaders(cluster_stack)
            record["running_after"] = _running(cluster_stack)
            record["shards_led_after"] = _shards_led(after)
            record["leaders_moved"] = _moved(before, after)
            return record
    run.__name__ = name
    return run


def kill_leader(stack: ClusterBenchStack) -> dict[str, Any]:
    """SIGKILL the node leading the most shard queues; wait for the elections."""
    victim = _pick(stack, set())
    stack.fault_nodes["killed"] = victim
    began = time.monotonic()
    stack.fault_nodes_at[victim] = began
    stack.cluster.kill(victim)
    return {"victim": f"rabbit-{victim + 1}", "how": "SIGKILL",
            **_gone(stack, victim, began)}


def stop_graceful(stack: ClusterBenchStack) -> dict[str, Any]:
    """SIGTERM another node (of the two others, the one leading most shards)."""
    victim = _pick(stack, set(stack.fault_nodes.values()))
    stack.fault_nodes["stopped"] = victim
    began = time.monotonic()
    stack.fault_nodes_at[victim] = began
    stack.cluster.stop_node(victim)
    stopped = time.monotonic()
    return {"victim": f"rabbit-{victim + 1}", "how": "SIGTERM (clean shutdown)",
            "stop_s": round(stopped - began, 3), **_gone(stack, victim, began)}


def start_again(key: str) -> Callable[[ClusterBenchStack], dict[str, Any]]:
    def start(stack: ClusterBenchStack) -> dict[str, Any]:
        """Start the node of fault *key* again; wait until the cluster has it running."""
        victim = stack.fault_nodes[key]
        began = time.monotonic()
        stack.cluster.restart(victim, REJOIN_TIMEOUT)
        back = time.monotonic()
        return {"victim": f"rabbit-{victim + 1}", "how": "start (rejoins with its data)",
                "back_s": round(back - began, 3),
                "down_s": round(back - stack.fault_nodes_at[victim], 3)}
    return start


def partition(stack: ClusterBenchStack) -> dict[str, Any]:
    """Cut the third node off (iptables; SIGSTOP where refused), hold, heal, rejoin."""
    victim = next(i for i in range(stack.node_count) if i not in stack.fault_nodes.values())
    label = f"rabbit-{victim + 1}"
    record: dict[str, Any] = {"victim": label}
    began = time.monotonic()
    try:
        record["rules"] = stack.cluster.partition(victim)
        record["how"] = "iptables: its distribution traffic dropped on loopback"
    except ClusterFailed as exc:
        record["partition_refused"] = str(exc)
        record["how"] = "SIGSTOP (iptables refused), SIGCONT after the hold"
        stack.cluster.pause(victim)
    try:
        seen = _poll(lambda: label not in _running(stack), PARTITION_HOLD)
        record["seen_down_s"] = round(time.monotonic() - began, 3) if seen else None
        # pause_minority: the cut-off node stops its listeners (its clients move over)
        paused = _poll(lambda: not stack.cluster.accepts_amqp(victim),
                       max(0.0, began + PARTITION_HOLD - time.monotonic()))
        record["victim_paused_s"] = round(time.monotonic() - began, 3) if paused else None
        time.sleep(max(0.0, min(5.0, began + PARTITION_HOLD - time.monotonic())))
        # (no look at the leaders while the partition holds: the majority's management
        # API can take its whole 30 s timeout then; leaders_moved says where they went)
    finally:
        healed = time.monotonic()
        if victim in stack.cluster.paused:
            stack.cluster.resume(victim)
        else:
            stack.cluster.heal(victim)
    record["held_s"] = round(healed - began, 3)
    stack.cluster.wait_formed(REJOIN_TIMEOUT)
    back = time.monotonic()
    record["back_s"] = round(back - healed, 3)
    record["down_s"] = round(back - began, 3)
    return record


SCHEDULE: tuple[Step, ...] = (
    Step(0.08, "SIGKILL the node leading most shards", _act("kill", kill_leader)),
    Step(0.20, "start the killed node again", _act("restart", start_again("killed"))),
    Step(0.36, "stop another node gracefully (SIGTERM)", _act("stop", stop_graceful)),
    Step(0.50, "start the stopped node again", _act("start", start_again("stopped"))),
    Step(0.66, "partition the third node (pause_minority)", _act("partition", partition)),
)
# The suite's share (tests/integration/test_bench_cluster_faults.py): the worst single
# fault alone, early enough that the survivors' recovery is seen within a short run.
SHORT: tuple[Step, ...] = (
    Step(0.25, "SIGKILL the node leading most shards", _act("kill", kill_leader)),
)
# The partition alone (a diagnostic: --cluster-faults partition).
PARTITION: tuple[Step, ...] = (
    Step(0.2, "partition the third node (pause_minority)", _act("partition", partition)),
)
SCHEDULES = {"full": SCHEDULE, "kill": SHORT, "partition": PARTITION}
