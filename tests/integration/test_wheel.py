"""The wheel as an adopter gets it (issue 19): built from this checkout, listed, installed
into clean virtualenvs and run from there.

* contents: every file of the shipped packages (code, mail templates, the web demo) and
  nothing else: no benchmark, no tests, no dev launcher; the ``burrow`` script only;
* ``pip install burrow``, the client alone: ``burrow --help`` and ``import burrow.client``
  work, no server library comes along, and ``python -m gateway`` / ``python -m consumers``
  say in one line to install ``burrow[server]``;
* ``pip install 'burrow[server]'``: the gateway and a worker start from the installed
  package against the suite's broker and database and answer ``/readyz``.

The wheel is built with this virtualenv's setuptools (``pip wheel --no-build-isolation``:
no build tool is downloaded). The clean virtualenvs get their dependencies from the
package index through pip, constrained to the versions installed here (``pip freeze``),
so they run what the suite runs and pip's cache serves them: about 15 s for the server's
dependencies when the cache is warm (``./dev test`` has just installed the same
versions). The children run with ``PYTHONSAFEPATH=1`` and outside the checkout's path, and
each test checks that what it ran came from the clean virtualenv, not from here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from burrow.devstack import plan, ports
from burrow.devstack.processes import AppProcess
from tests.conftest import Vhost
from tests.integration.conftest import Running
from tests.unit.test_packaging import declared, normalize, shipped_packages

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SKIP = {"__pycache__", "results"}  # bytecode; bench/results (measurements)


def run(command: Sequence[str | Path], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def must(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (f"{' '.join(result.args)} exited {result.returncode}\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without Burrow's settings, Python's search paths or this venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BURROW_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "PYTHONSAFEPATH": "1", **extra}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheel")


@pytest.fixture(scope="module")
def source(workdir: Path) -> Path:
    """A copy of the checkout's build inputs and every top-level package, shipped or not
    (building in the checkout would leave build/ and egg-info behind)."""
    src = workdir / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).write_bytes((ROOT / name).read_bytes())
    for top in sorted(p for p in ROOT.iterdir() if (p / "__init__.py").is_file()):
        for path in sorted(top.rglob("*")):
            relative = path.relative_to(ROOT)
            if path.is_file() and not SKIP & set(relative.parts):
                (src / relative).parent.mkdir(parents=True, exist_ok=True)
                (src / relative).write_bytes(path.read_bytes())
    return src


@pytest.fixture(scope="module")
def wheel(workdir: Path, source: Path) -> Path:
    out = workdir / "dist"
    must(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
              "-q", "-w", out, source], cwd=workdir))  # a path: "src" alone is a PyPI name
    [built] = out.glob("burrow-*.whl")
    return built


@pytest.fixture(scope="module")
def constraints(workdir: Path) -> Path:
    """The versions of this virtualenv, for the clean ones (Burrow itself left out)."""
    frozen = must(run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                      cwd=workdir))
    path = workdir / "constraints.txt"
    path.write_text("".join(f"{line}\n" for line in frozen.splitlines()
                            if line and not line.startswith(("-e", "#")) and " @ " not in line))
    return path


def venv(path: Path, constraints: Path, requirement: str) -> Path:
    """A new virtualenv at *path* with *requirement* installed by this venv's pip."""
    must(run([sys.executable, "-m", "venv", "--without-pip", path], cwd=path.parent))
    python = path / "bin" / "python"
    must(run([sys.executable, "-m", "pip", "--python", python, "install", "-q",
              "-c", constraints, requirement], cwd=path.parent, timeout=170))
    return python


@pytest.fixture(scope="module")
def client_python(workdir: Path, wheel: Path, constraints: Path) -> Path:
    return venv(workdir / "client-venv", constraints, str(wheel))


@pytest.fixture(scope="module")
def server_python(workdir: Path, wheel: Path, constraints: Path) -> Path:
    return venv(workdir / "server-venv", constraints, f"{wheel}[server]")


def installed(python: Path, cwd: Path) -> set[str]:
    code = "import importlib.metadata as m; print('\\n'.join(d.name for d in m.distributions()))"
    return {normalize(n) for n in must(run([python, "-c", code], cwd, clean_env())).split()}


def origin(python: Path, module: str, cwd: Path) -> Path:
    code = f"import {module}; print({module}.__file__)"
    return Path(must(run([python, "-c", code], cwd, clean_env())).strip())


def package_of(path: Path, source: Path) -> str | None:
    """The innermost package holding *path*: a folder without ``__init__.py`` inside a
    package (templates, web) is that package's data."""
    for folder in path.parents:
        if folder == source:
            return None
        if (folder / "__init__.py").is_file():
            return ".".join(folder.relative_to(source).parts)
    return None


def test_the_wheel_holds_the_shipped_packages_and_nothing_else(wheel: Path,
                                                                source: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = {n for n in names if n.split("/")[0].endswith(".dist-info")}
        meta = archive.read(next(n for n in info if n.endswith("/METADATA"))).decode()
        scripts = archive.read(next(n for n in info if n.endswith("/entry_points.txt")))
    packages = set(shipped_packages())
    expected = {str(p.relative_to(source)) for p in source.rglob("*")
                if p.is_file() and package_of(p, source) in packages}
    assert names - info == expected
    assert {"burrow/mail/templates/digest.html.j2", "gateway/web/burrow.js",
            "gateway/web/demo/index.html", "burrow/client/cli/__init__.py",
            "gateway/__main__.py", "consumers/__main__.py", "queues/definitions.py"} <= names
    assert not {n for n in names if n.startswith(("bench/", "tests/", "burrow/devstack/"))}
    assert scripts.decode().split() == ["[console_scripts]", "burrow", "=",
                                        "burrow.client.cli:main"]
    assert "Provides-Extra: server" in meta.splitlines()


def test_the_client_alone(client_python: Path, workdir: Path) -> None:
    """``pip install burrow``: the client and the command, no server library; the
    servers say what to install."""
    here = workdir / "client-venv"
    assert here in origin(client_python, "burrow.client", workdir).parents
    must(run([client_python, "-c", "import burrow.client, burrow.client.cli"], workdir,
             clean_env()))
    usage = must(run([here / "bin" / "burrow", "--help"], workdir, clean_env()))
    assert usage.startswith("usage: burrow")
    server_only = declared("server") - declared()
    assert installed(client_python, workdir) & server_only == set()
    for module in ("gateway", "consumers"):
        result = run([client_python, "-m", module], workdir, clean_env())
        lines = result.stderr.strip().splitlines()
        assert (result.returncode, len(lines)) == (1, 1), result.stderr
        assert lines[0].startswith(f"{module}: ") and lines[0].endswith(
            "is not installed: the servers need the server extra "
            "(pip install 'burrow[server]')"), result.stderr


@pytest.fixture
def started() -> Iterator[list[AppProcess]]:
    apps: list[AppProcess] = []
    yield apps
    for app in apps:
        app.stop()


def test_the_servers_run_from_the_installed_wheel(
        server_python: Path, workdir: Path, vhost: Vhost, mongo_url: str,
        process_env: dict[str, str], tmp_path: Path, started: list[AppProcess]) -> None:
    """``pip install 'burrow[server]'``: the gateway and the sequencer start from the clean
    virtualenv (run from the checkout's directory, which must not matter) and get ready
    against the suite's broker and database."""
    base = {**clean_env(), **{k: v for k, v in process_env.items() if k.startswith("BURROW_")},
            "BURROW_MONGO_URL": mongo_url, "PYTHONUNBUFFERED": "1"}
    for module in ("gateway", "consumers", "queues"):
        assert workdir / "server-venv" in origin(server_python, module, ROOT).parents
    gateway = AppProcess("gateway", plan.GATEWAY_MODULE, {
        **base, "BURROW_AMQP_URL": vhost.url(plan.GATEWAY_USER),
        "BURROW_PORT": str(port := ports.free_port()), "BURROW_GATEWAY_WORKERS": "1",
        "BURROW_METRICS_DIR": str(tmp_path / "metrics-gateway")}, log=tmp_path / "gateway.log")
    worker = plan.worker("sequencer")
    sequencer = AppProcess(worker.name, plan.WORKER_MODULE, {
        **base, "BURROW_AMQP_URL": vhost.url(worker.user),
        "BURROW_METRICS_PORT": str(probes := ports.free_port()),
        "BURROW_METRICS_DIR": str(tmp_path / "metrics-sequencer")},
        args=worker.args, log=tmp_path / "sequencer.log")
    for app, listens in ((gateway, port), (sequencer, probes)):
        app.command[0] = str(server_python)  # not this virtualenv's python
        app.start()
        started.append(app)
        assert app.log is not None
        Running(app, listens, app.log).wait("up", "up")
