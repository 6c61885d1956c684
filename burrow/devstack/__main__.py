"""Run the whole stack on loopback: ``python -m burrow.devstack up`` (``./dev up`` does it).

Starts a private RabbitMQ node (management, prometheus, consistent-hash and shovel
plugins; Burrow's config and definitions loaded), the embedded MongoDB-wire server unless
``BURROW_MONGO_URL`` is set, the gateway (two Sanic workers) and one process per worker
kind (sequencer, notifier, digester: :mod:`burrow.devstack.plan`, the set compose and the
benchmark run too), and a mailbox that catches the mails they send unless
``BURROW_SMTP_URL`` is set or ``--no-mailbox`` given (:mod:`burrow.devstack.mailbox`,
docs/mailbox.md); waits until every ``/readyz`` says 200; prints the URLs; and on Ctrl-C
(or SIGTERM) stops everything it started, in reverse order. Data is kept between runs in
``BURROW_DEV_DIR`` (default ``.burrow/``).

``up --prometheus`` also runs a real Prometheus (Debian's package) that scrapes every
process of the stack and RabbitMQ, with Burrow's alert rules loaded (docs/monitoring.md).

``up --cluster 3`` runs a cluster of three RabbitMQ nodes instead of the one
(:mod:`burrow.devstack.cluster`, data in ``rabbitmq-cluster/``; node *i* on each port
plus *i*), and gives every process the nodes' URLs, comma-separated.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from burrow.devstack import cluster, mailbox, mongo, plan, ports, prometheus, rabbitmq
from burrow.devstack.processes import AppProcess, wait_status
from burrow.mail.smtp_url import parse_smtp_url
from burrow.runtime.settings import ConfigError, Settings, is_loopback
from queues import definitions, topology

PROJECT = Path(__file__).resolve().parents[2]
# The gateway refuses to start without a way to verify tokens; in development, when none
# is configured, it gets this secret (printed, so anyone can mint a dev token with it).
DEV_SECRET = "burrow-dev-secret-not-for-production-use"
JWT_KEYS = ("BURROW_JWT_SECRET", "BURROW_JWT_PUBLIC_KEY", "BURROW_JWKS_URL")


@dataclass(frozen=True)
class DevConfig:
    """The launcher's own knobs (``BURROW_DEV_*``), beside the processes' settings."""

    directory: Path
    amqp_port: int
    management_port: int
    prometheus_port: int
    dist_port: int
    mongo_port: int
    mongo_url: str | None
    gateway_port: int
    worker_metrics_port: int  # the first worker's; the others take the next ports
    passwords: Mapping[str, str]
    webhooks: bool = False  # BURROW_WEBHOOK_URL is set: the webhooks worker runs too

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DevConfig:
        def port(name: str, default: int) -> int:
            raw = env.get(name) or str(default)
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise ConfigError(f"{name}={raw!r} is not a port (1..65535)")
            return int(raw)

        amqp = port("BURROW_DEV_AMQP_PORT", 5672)
        return cls(
            directory=Path(env.get("BURROW_DEV_DIR") or PROJECT / ".burrow").resolve(),
            amqp_port=amqp,
            management_port=port("BURROW_DEV_MANAGEMENT_PORT", 15672),
            prometheus_port=port("BURROW_DEV_PROMETHEUS_PORT", 15692),
            dist_port=port("BURROW_DEV_DIST_PORT", amqp + 20000 if amqp < 45536 else 25672),
            mongo_port=port("BURROW_DEV_MONGO_PORT", 27017),
            mongo_url=env.get("BURROW_MONGO_URL") or None,
            gateway_port=port("BURROW_PORT", 8000),
            worker_metrics_port=port("BURROW_METRICS_PORT", 9100),
            passwords=definitions.passwords_from_env(env),
            webhooks=bool(env.get("BURROW_WEBHOOK_URL")),
        )

    def node_config(self) -> rabbitmq.NodeConfig:
        return rabbitmq.NodeConfig(
            directory=self.directory / "rabbitmq", amqp_port=self.amqp_port,
            management_port=self.management_port, prometheus_port=self.prometheus_port,
            dist_port=self.dist_port, admin_user="burrow-admin",
            admin_password=self.passwords["burrow-admin"],
            base_config=PROJECT / "rabbitmq" / "rabbitmq.conf")

    def cluster_configs(self, nodes: int) -> list[rabbitmq.NodeConfig]:
        """``--cluster N``: node *i* (from 0) on each of node 1's ports plus *i*."""
        return cluster.node_configs(
            self.directory / "rabbitmq-cluster", nodes, "burrow-admin",
            self.passwords["burrow-admin"], PROJECT / "rabbitmq" / "rabbitmq.conf",
            cluster.FirstPorts(self.amqp_port, self.management_port, self.prometheus_port,
                               self.dist_port))

    def worker_ports(self) -> dict[str, int]:
        """Metrics and probe port of each worker process, from BURROW_METRICS_PORT on."""
        return {w.name: self.worker_metrics_port + i
                for i, w in enumerate(plan.workers(self.webhooks))}

    def needed_ports(self) -> list[tuple[int, str, str]]:
        wanted = [
            (self.amqp_port, "RabbitMQ AMQP", "BURROW_DEV_AMQP_PORT"),
            (self.management_port, "the RabbitMQ management UI", "BURROW_DEV_MANAGEMENT_PORT"),
            (self.prometheus_port, "RabbitMQ's Prometheus endpoint", "BURROW_DEV_PROMETHEUS_PORT"),
            (self.dist_port, "RabbitMQ's Erlang distribution", "BURROW_DEV_DIST_PORT"),
            (self.gateway_port, "the gateway", "BURROW_PORT"),
            *((port, f"the {name}'s probes", "BURROW_METRICS_PORT")
              for name, port in self.worker_ports().items()),
        ]
        if self.mongo_url is None:
            wanted.append((self.mongo_port, "the embedded database", "BURROW_DEV_MONGO_PORT"))
        return wanted


@dataclass(frozen=True)
class PrometheusOptions:
    """``--prometheus``: where it listens (0: a free port), how often it scrapes."""

    port: int = 0
    interval: float = 15.0
    rule_for: str | None = None


def prometheus_jobs(config: DevConfig, nodes: Sequence[rabbitmq.NodeConfig]
                    ) -> list[prometheus.ScrapeJob]:
    """Scrape jobs for every process of the local stack and for every RabbitMQ node."""
    return [
        prometheus.ScrapeJob("burrow-gateway", (f"127.0.0.1:{config.gateway_port}",)),
        prometheus.ScrapeJob("burrow-workers", tuple(
            f"127.0.0.1:{port}" for port in config.worker_ports().values())),
        *prometheus.rabbitmq_jobs(*(f"127.0.0.1:{node.prometheus_port}" for node in nodes)),
    ]


def product_apps(config: DevConfig, env: Mapping[str, str],
                 app_env: Callable[[str, Mapping[str, str]], dict[str, str]],
                 gateway_extra: Mapping[str, str],
                 worker_extra: Mapping[str, str]) -> list[AppProcess]:
    """The gateway and one process per worker kind (:mod:`burrow.devstack.plan`), not
    started; *app_env* (broker user, extra variables) makes each one's environment."""
    return [
        AppProcess("gateway", plan.GATEWAY_MODULE, app_env(plan.GATEWAY_USER, {
            "BURROW_GATEWAY_WORKERS": env.get("BURROW_GATEWAY_WORKERS")
            or str(plan.GATEWAY_WORKERS), **gateway_extra,
            "BURROW_PORT": str(config.gateway_port),
            "BURROW_METRICS_DIR": str(config.directory / "metrics" / "gateway")})),
        *(AppProcess(w.name, plan.WORKER_MODULE, app_env(w.user, {**worker_extra,
            "BURROW_METRICS_PORT": str(config.worker_ports()[w.name]),
            "BURROW_METRICS_DIR": str(config.directory / "metrics" / w.name)}),
            args=w.args) for w in plan.workers(config.webhooks)),
    ]


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def say(line: str) -> None:
    print(f"burrow-dev: {line}", flush=True)


def cluster_ports(configs: list[rabbitmq.NodeConfig]) -> list[tuple[int, str, str]]:
    """The ports of a cluster's nodes 2..N, with the variable that moves each."""
    return [(port, f"RabbitMQ node {i}'s {what}", variable)
            for i, c in enumerate(configs[1:], 2)
            for port, what, variable in (
                (c.amqp_port, "AMQP", "BURROW_DEV_AMQP_PORT"),
                (c.management_port, "management UI", "BURROW_DEV_MANAGEMENT_PORT"),
                (c.prometheus_port, "Prometheus endpoint", "BURROW_DEV_PROMETHEUS_PORT"),
                (c.dist_port, "Erlang distribution", "BURROW_DEV_DIST_PORT"))]


def up(env: Mapping[str, str], monitor: PrometheusOptions | None = None,
       mail: bool = True, nodes: int = 1) -> int:
    started = time.monotonic()
    config = DevConfig.from_env(env)
    # A mailbox catches what the digester sends, unless BURROW_SMTP_URL says where mail goes.
    catcher, no_catcher = mailbox.for_launcher(env, mail)
    node_configs = config.cluster_configs(nodes) if nodes > 1 else [config.node_config()]
    for port, service, variable in [*config.needed_ports(), *cluster_ports(node_configs),
                                    *(catcher.needed_ports() if catcher else [])]:
        ports.ensure_free(port, service, variable)
    scraper: prometheus.PrometheusServer | None = None
    if monitor is not None:
        if monitor.port:
            ports.ensure_free(monitor.port, "Prometheus", "--prometheus-port")
        if prometheus.binary() is None:
            raise prometheus.PrometheusFailed(
                "prometheus is not installed: ./dev up installs it (Debian's prometheus)")
        scraper = prometheus.PrometheusServer(
            config.directory / "prometheus", prometheus_jobs(config, node_configs),
            monitor.port or ports.free_port(), monitor.interval, rule_for=monitor.rule_for)
    # Validate the processes' own settings now rather than in two crashing children.
    Settings.from_env({**env, "BURROW_AMQP_URL": "amqp://x@127.0.0.1/burrow"})

    config.directory.mkdir(parents=True, exist_ok=True)
    rendered = definitions.render(topology.build(), config.passwords)
    node: rabbitmq.RabbitNode | cluster.Cluster = (
        cluster.Cluster(config.directory / "rabbitmq-cluster", node_configs, rendered)
        if nodes > 1 else rabbitmq.RabbitNode(node_configs[0], rendered))
    db = mongo.EmbeddedMongo(config.directory / "mongo", config.mongo_port)
    apps: list[AppProcess] = []
    logs = config.directory / "logs"
    logs.mkdir(exist_ok=True)
    try:
        say(f"starting RabbitMQ node {node.config.nodename} (log: {node.log_path})"
            if isinstance(node, rabbitmq.RabbitNode) else
            f"starting a RabbitMQ cluster of {nodes} nodes, {', '.join(node.names)} (logs: "
            f"{node.directory}/node-N/log/node.out)")
        node.start()
        mongo_url = config.mongo_url
        if mongo_url is None:
            say(f"starting the embedded database on port {config.mongo_port} "
                f"(data: {db.storage})")
            db.start()
            mongo_url = db.database_url("burrow")
            db.wait_ready()
        node.wait_ready()
        for name in node.recreate_changed_exchanges():
            say(f"{name} had another type on this node (from an older Burrow): recreated")

        def app_env(user: str, extra: Mapping[str, str]) -> dict[str, str]:
            role = definitions.role(user)
            url = ",".join(c.amqp_url(user, config.passwords[role.user], definitions.VHOST)
                           for c in node_configs)
            return {**env, "BURROW_AMQP_URL": url, "BURROW_MONGO_URL": mongo_url, **extra}

        jwt = {} if any(env.get(v) for v in JWT_KEYS) else {"BURROW_JWT_SECRET": DEV_SECRET}
        if not env.get("BURROW_JWT_SECRET") and not env.get("BURROW_UNSUBSCRIBE_SECRET"):
            # unsubscribe links need a secret of their own when tokens are not HS256
            jwt["BURROW_UNSUBSCRIBE_SECRET"] = f"{DEV_SECRET}-unsubscribe"
        # The web demo and its dev login, unless told otherwise; they need the HS256 secret.
        secret = jwt.get("BURROW_JWT_SECRET") or env.get("BURROW_JWT_SECRET")
        # On loopback only, unless asked for: the gateway refuses it beyond (dev_api.check).
        loopback = is_loopback(env.get("BURROW_HOST", "127.0.0.1"))
        dev_mode = {"BURROW_DEV_MODE": env.get("BURROW_DEV_MODE")
                    or str(bool(secret) and loopback).lower()}
        demo = dev_mode["BURROW_DEV_MODE"].strip().lower() in ("true", "1", "yes")
        # Links in mails lead to this gateway (its port may not be BURROW_PUBLIC_URL's 8000).
        mails = {**({"BURROW_SMTP_URL": catcher.smtp_url} if catcher else {}),
                 "BURROW_PUBLIC_URL": env.get("BURROW_PUBLIC_URL")
                 or f"http://127.0.0.1:{config.gateway_port}"}
        apps = [*([catcher.process(env)] if catcher else []),
                *product_apps(config, env, app_env, {**jwt, **dev_mode}, {**jwt, **mails})]
        for app in apps:
            app.start()
        probes = {**({"mailbox": f"{catcher.url}readyz"} if catcher else {}),
                  "gateway": f"http://127.0.0.1:{config.gateway_port}/readyz",
                  **{name: f"http://127.0.0.1:{port}/readyz"
                     for name, port in config.worker_ports().items()}}
        for app in apps:
            # every Sanic worker of the gateway must answer ready, not just the first
            status, body = wait_status(probes[app.name], 200, timeout=60, alive=app,
                                       in_a_row=20 if app.name == "gateway" else 1)
            if status != 200:
                say(f"{app.name} is not ready: /readyz answered {status} {body}"
                    + (f"; it exited with {app.exited}" if app.exited is not None else ""))
                return 1
        if scraper is not None:
            say(f"starting Prometheus (config: {scraper.config_path}, log: {scraper.log_path})")
            scraper.start()
            scraper.wait_ready()
        admin = config.passwords["burrow-admin"]
        smtp = (str(parse_smtp_url(env["BURROW_SMTP_URL"])) if env.get("BURROW_SMTP_URL")
                else f"smtp://127.0.0.1:1025 (BURROW_SMTP_URL; {no_catcher})")
        say(f"Burrow is up in {time.monotonic() - started:.1f}s\n"
            f"  gateway        http://127.0.0.1:{config.gateway_port}  "
            "(/v1/rooms, /healthz /readyz /metrics)\n"
            + (f"  web demo       http://127.0.0.1:{config.gateway_port}/demo/  (dev mode: "
               "anyone may mint a token; BURROW_DEV_MODE=false turns it off)\n" if demo else "")
            + f"  WebSocket      ws://127.0.0.1:{config.gateway_port}/v1/ws  (docs/protocol.md)\n"
            f"  management UI  {node_configs[0].management_url}  login burrow-admin / {admin}\n"
            + "".join(f"  node {i} UI      {c.management_url}\n"
                      for i, c in enumerate(node_configs[1:], 2))
            + f"  broker metrics http://127.0.0.1:{config.prometheus_port}/metrics\n"
            + "".join(f"  {name:<14} http://127.0.0.1:{port}/metrics\n"
                      for name, port in config.worker_ports().items())
            + (f"  mailbox        {catcher.url}  (every mail the stack sends, caught on "
               f"{catcher.smtp_url}; docs/mailbox.md)\n" if catcher
               else f"  email          digests go to {smtp}\n")
            + "".join(f"  AMQP           amqp://127.0.0.1:{c.amqp_port}/{definitions.VHOST}\n"
                      for c in node_configs)
            + f"  database       {mongo_url}\n"
            + (f"  prometheus     {scraper.url}  (targets: /targets, alerts: /alerts; "
               f"every {scraper.interval:g}s)\n" if scraper else "")
            + (f"  JWT secret     {DEV_SECRET} (HS256, dev only)\n" if jwt else "")
            + "Ctrl-C stops everything.")
        while True:
            for app in apps:
                if app.exited is not None:
                    say(f"{app.name} exited with {app.exited}; stopping the stack")
                    return 1
            time.sleep(0.5)
    except Stopped as why:
        say(f"{why}: stopping")
        return 0
    except (rabbitmq.NodeFailed, mongo.DatabaseFailed, prometheus.PrometheusFailed) as exc:
        say(str(exc))
        return 1
    finally:
        # Ignore further Ctrl-C while stopping: a half-stopped node is worse than a wait.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if scraper is not None:
            scraper.stop()
        for app in reversed(apps):
            app.stop()
        # The database and the broker need nothing of each other: stopped at once (each
        # takes seconds: SecantusDB waits 2 s for its accept thread, RabbitMQ 3.10's
        # management agent 5 s before it stops; 2 s less at every Ctrl-C).
        with ThreadPoolExecutor(2, thread_name_prefix="stop") as pool:
            for stopping in [pool.submit(db.stop), pool.submit(node.stop)]:
                stopping.result()
        say("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m burrow.devstack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up"], help="up: run the whole stack")
    parser.add_argument("--prometheus", action="store_true",
                        help="also run a Prometheus (Debian's package) scraping the stack, "
                             "with monitoring/alerts.yml loaded")
    parser.add_argument("--prometheus-port", type=int, default=0, metavar="PORT",
                        help="its loopback port (default: a free one, printed)")
    parser.add_argument("--scrape-interval", type=float, default=15.0, metavar="SECONDS",
                        help="scrape and rule evaluation interval (default 15; 1 for a demo)")
    parser.add_argument("--alert-for", default=None, metavar="DURATION",
                        help="replace every rule's `for:` (e.g. 0s: alerts fire at once; "
                             "for demos and tests, never production)")
    parser.add_argument("--cluster", type=int, default=1, metavar="N",
                        help="run a cluster of N RabbitMQ nodes (2 to "
                             f"{cluster.MAX_NODES}; 3 survives the loss of one) instead of "
                             "one node: docs/development.md")
    parser.add_argument("--no-mailbox", action="store_true",
                        help="run no mailbox (it shows the mails the stack sends at "
                             f"http://127.0.0.1:{mailbox.HTTP_PORT}/, "
                             f"{mailbox.HTTP_PORT_VAR}; none either when BURROW_SMTP_URL "
                             "is set)")
    args = parser.parse_args(argv)
    if not (PROJECT / "rabbitmq" / "rabbitmq.conf").is_file():
        # Not in the wheel (pyproject.toml): it needs the checkout's broker config and
        # alert rules, and keeps its data in the checkout (docs/install.md).
        sys.exit(f"burrow-dev: {PROJECT} is not a Burrow checkout (no rabbitmq/rabbitmq.conf);"
                 " the local stack runs from one: ./dev up in a clone of the repository")
    if args.scrape_interval <= 0:
        parser.error("--scrape-interval must be positive")
    if not 1 <= args.cluster <= cluster.MAX_NODES:
        parser.error(f"--cluster takes 1 (one node, the default) to {cluster.MAX_NODES} nodes")
    monitor = (PrometheusOptions(args.prometheus_port, args.scrape_interval, args.alert_for)
               if args.prometheus else None)
    signal.signal(signal.SIGINT, _raise_stopped)
    signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        sys.exit(up(os.environ, monitor, mail=not args.no_mailbox, nodes=args.cluster))
    except (ConfigError, ports.PortTaken, prometheus.PrometheusFailed) as exc:
        sys.exit(f"burrow-dev: {exc}")


if __name__ == "__main__":
    main()
