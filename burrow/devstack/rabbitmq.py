"""A private RabbitMQ node on loopback, from Debian's ``rabbitmq-server`` package.

The node is self-contained: its config, plugins file, definitions, database (mnesia),
logs and Erlang cookie all live in one directory, and it listens on the ports it is
given, so it never touches a system RabbitMQ. We run the package's inner start script
(``/usr/lib/rabbitmq/bin/rabbitmq-server``) directly: the ``/usr/sbin`` wrapper switches
to the ``rabbitmq`` user and then cannot write into a project directory.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from burrow.devstack.processes import stop_group
from burrow.devstack.tls import TlsFiles

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
PLUGINS = ("rabbitmq_management", "rabbitmq_prometheus", "rabbitmq_consistent_hash_exchange",
           "rabbitmq_shovel", "rabbitmq_shovel_management")
# Keys of rabbitmq/rabbitmq.conf that the node sets from its own ports and paths.
_OWN_KEYS = ("listeners.", "management.tcp.", "prometheus.tcp.", "load_definitions",
             "management.load_definitions", "ssl_options.")


class NodeFailed(RuntimeError):
    """The node did not come up (or went down); the message ends with its log's tail."""


@dataclass(frozen=True)
class NodeConfig:
    directory: Path
    amqp_port: int
    management_port: int
    prometheus_port: int
    dist_port: int
    admin_user: str
    admin_password: str
    base_config: Path | None = None  # rabbitmq/rabbitmq.conf, whose other keys are kept
    tls: TlsFiles | None = None  # with amqps_port: a TLS listener too (AMQP over TLS)
    amqps_port: int = 0
    # More rabbitmq.conf lines, last (a cluster's peer discovery: burrow.devstack.cluster)
    extra_config: tuple[str, ...] = ()

    @property
    def nodename(self) -> str:
        return f"burrow-{self.amqp_port}@localhost"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def amqp_url(self, user: str, password: str, vhost: str) -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.amqp_port}/{vhost}"

    def amqps_url(self, user: str, password: str, vhost: str) -> str:
        """The TLS listener's URL; the client verifies the node against the CA file."""
        assert self.tls is not None and self.amqps_port, "the node has no TLS listener"
        cafile = urllib.parse.quote(str(self.tls.ca), safe="/")
        return (f"amqps://{user}:{password}@127.0.0.1:{self.amqps_port}/{vhost}"
                f"?cafile={cafile}")


def installed() -> bool:
    return SERVER.exists()


def render_config(config: NodeConfig, definitions_path: Path) -> str:
    """rabbitmq.conf for the node: the base file's own keys, then ports and definitions,
    then the extra lines."""
    lines: list[str] = []
    if config.base_config is not None:
        for line in config.base_config.read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if not key.startswith(_OWN_KEYS):
                lines.append(line)
    lines += [
        f"listeners.tcp.default = 127.0.0.1:{config.amqp_port}",
        "management.tcp.ip = 127.0.0.1",
        f"management.tcp.port = {config.management_port}",
        "prometheus.tcp.ip = 127.0.0.1",
        f"prometheus.tcp.port = {config.prometheus_port}",
        f"load_definitions = {definitions_path}",
    ]
    if config.tls is not None and config.amqps_port:
        # verify_none: the node asks clients for no certificate (they log in with a
        # password); the clients verify the node's, which is what keeps the path honest.
        lines += [
            f"listeners.ssl.default = 127.0.0.1:{config.amqps_port}",
            f"ssl_options.cacertfile = {config.tls.ca}",
            f"ssl_options.certfile = {config.tls.cert}",
            f"ssl_options.keyfile = {config.tls.key}",
            "ssl_options.verify = verify_none",
            "ssl_options.fail_if_no_peer_cert = false",
        ]
    lines += config.extra_config
    return "\n".join(lines) + "\n"


class RabbitNode:
    """Call :meth:`start` then :meth:`wait_ready`; :meth:`stop` ends it gracefully."""

    def __init__(self, config: NodeConfig, definitions: dict[str, Any]) -> None:
        self.config = config
        self.definitions = definitions
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = config.directory / "log" / "node.out"

    def _environment(self) -> dict[str, str]:
        d = self.config.directory
        env = dict(os.environ)
        env.update({
            "HOME": str(d),  # the Erlang cookie lands here
            "RABBITMQ_NODENAME": self.config.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.config.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.config.dist_port),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),  # no suffix: .conf is implied
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "ERL_CRASH_DUMP": str(d / "log" / "erl_crash.dump"),
        })
        return env

    def start(self) -> None:
        if not installed():
            raise NodeFailed(f"{SERVER} is missing: install Debian's rabbitmq-server "
                             "(./dev does it: apt-get install rabbitmq-server)")
        d = self.config.directory
        (d / "log").mkdir(parents=True, exist_ok=True)
        (d / "mnesia").mkdir(exist_ok=True)
        definitions_path = d / "definitions.json"
        definitions_path.write_text(json.dumps(self.definitions, indent=2))
        definitions_path.chmod(0o600)  # it holds password hashes
        (d / "rabbitmq.conf").write_text(render_config(self.config, definitions_path))
        (d / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")
        (d / "rabbitmq-env.conf").touch()
        (d / "advanced.config").write_text("[].\n")
        with open(self.log_path, "ab") as out:
            # A session of its own: Ctrl-C in the launcher's terminal must not reach the
            # node directly; the launcher stops it in order, after Burrow's processes.
            self.process = subprocess.Popen([str(SERVER)], env=self._environment(),
                                            stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the management HTTP API as the admin; raises ``urllib.error.HTTPError``."""
        data = None if body is None else json.dumps(body).encode()
        auth = f"{self.config.admin_user}:{self.config.admin_password}".encode()
        request = urllib.request.Request(
            self.config.management_url + path, data=data, method=method,
            headers={"Authorization": "Basic " + base64.b64encode(auth).decode(),
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the management API answers and the definitions are loaded.

        Raises :exc:`NodeFailed` with the log's tail if the node exits or the time runs out.
        """
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise NodeFailed(f"RabbitMQ exited with {self.process.returncode}"
                                 f"{self.log_tail()}")
            try:
                vhosts = {v["name"] for v in self.api("GET", "/api/vhosts", timeout=2)}
                wanted = {v["name"] for v in self.definitions.get("vhosts", [])}
                # The management API answers before the AMQP listener opens.
                if wanted <= vhosts and all(map(_accepts, self._amqp_ports())):
                    return
                last_error = f"vhosts so far: {sorted(vhosts)}, AMQP port not open yet"
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last_error = str(exc)
            time.sleep(0.25)
        raise NodeFailed(f"RabbitMQ did not come up on {self.config.management_url} within "
                         f"{timeout:.0f}s ({last_error}){self.log_tail()}")

    def recreate_changed_exchanges(self, definitions: dict[str, Any] | None = None
                                   ) -> list[str]:
        """Recreate, with their bindings, the exchanges whose type on the node is not the
        one in *definitions* (default: the node's own); returns their names.

        Loading definitions at boot keeps an exchange that exists already, whatever its
        type, and RabbitMQ cannot change a type in place: a node kept from an older Burrow
        (``burrow.jobs`` was direct before the workers got users of their own) would have
        every worker refused with PRECONDITION_FAILED. Queues stay, with their messages;
        the definitions are imported again for the bindings the deletion dropped.
        """
        definitions = self.definitions if definitions is None else definitions
        changed = []
        for exchange in definitions.get("exchanges", []):
            path = "/api/exchanges/{}/{}".format(
                *(urllib.parse.quote(exchange[k], safe="") for k in ("vhost", "name")))
            try:
                found = self.api("GET", path)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    continue
                raise
            if found["type"] != exchange["type"]:
                self.api("DELETE", path)
                changed.append(exchange["name"])
        if changed:
            self.api("POST", "/api/definitions", definitions)
        return changed

    def _amqp_ports(self) -> list[int]:
        tls = [self.config.amqps_port] if self.config.tls and self.config.amqps_port else []
        return [self.config.amqp_port, *tls]

    def log_tail(self, lines: int = 12) -> str:
        """The node's first error lines (the cause) and its last lines (the outcome)."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        errors = [line for line in text if "[error]" in line][:lines]
        return "\n".join(["", f"--- {self.log_path}", *errors, "...", *text[-lines // 2:]])

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (RabbitMQ shuts down cleanly on it), then SIGKILL after *timeout*."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        stop_group(process, timeout)
        _reap_group(process.pid)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start()
        self.wait_ready(timeout)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _reap_group(pgid: int) -> None:
    """Kill what is left of the node's process group (epmd is a daemon of its own)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
