"""Flower's deployment runtime as processes: SuperLink, SuperNodes with their ClientApp executors, ``flwr run``.

This module starts and stops programs of the Flower virtual environment (``flower.venv``,
built by ``make install-site``); it never imports ``flwr`` itself, so the pipeline's
environment can drive a federation. Every process it starts gets its own process group and
is stopped (TERM, then KILL) when the :class:`Federation` context ends, on errors and on
SIGTERM too. TLS material and SuperNode keys are generated with ``cryptography``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedmm.errors import UserError, raise_interrupted
from fedmm.fl import pki
from fedmm.fl.pki import make_ca, make_server_certificate

logger = logging.getLogger(__name__)

FEDERATION = "fedmm"
APP_DIR = Path(__file__).resolve().parent.parent / "flower" / "app"
STOP_SECONDS = 5.0
SERVERAPP_GRACE = 5.0
"""Seconds ``flwr run`` may go on streaming after its ServerApp process is gone (see :class:`ServerAppWatch`)."""
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
FEDERATION_ENV = "FEDMM_FEDERATION"
"""Set in every process a :class:`Federation` starts (inherited by theirs): how it finds them all to stop them."""


class DeploymentError(UserError, RuntimeError):
    """A Flower process did not start, or the federation's run failed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None, what: str = "",
                  host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise DeploymentError(f"{what} exited with code {process.returncode} before listening on port {port}")
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise DeploymentError(f"{what} did not listen on {host}:{port} within {timeout:g} s")


def live_processes(marker: str) -> list[int]:
    """PIDs of running (not zombie) processes, this one excepted, whose environment holds ``marker`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            running = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
            if running and marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


def kill_marked(marker: str, timeout: float = STOP_SECONDS) -> None:
    """SIGKILL every process whose environment holds ``marker`` until none is left (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while (left := live_processes(marker)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


@dataclass
class ServerAppWatch:
    """Notices a run's ServerApp process (``flwr-serverapp`` holding ``marker``) dying before the run ends.

    Flower's SuperLink learns that a ServerApp was killed (``kill -9``, out of memory) only
    when its heartbeat expires, about a minute later in Flower 1.42, and ``flwr run`` streams
    until then. :func:`run_app` stops ``flwr run`` once the ServerApp was seen and has been
    gone for ``grace`` seconds; ``fired`` then says so.
    """

    marker: str
    grace: float = SERVERAPP_GRACE
    last_seen: float | None = None
    fired: bool = False

    def died(self) -> bool:
        if any(b"flwr-serverapp" in _cmdline(pid) for pid in live_processes(self.marker)):
            self.last_seen = time.monotonic()
        return self.last_seen is not None and time.monotonic() - self.last_seen > self.grace


def start_reaper(runtime: Runtime, marker: str) -> subprocess.Popen:
    """A watcher that kills every process holding ``marker`` once this process is gone, however it died.

    Children die with this process (:func:`die_with_parent`), but Flower starts some of its
    own without ``--parent-pid`` (a SuperExec's ServerApp): the marker, inherited by all
    descendants, finds them.
    """
    name, _, value = marker.partition("=")
    return start_process(runtime, f"reaper-{value[:8]}", [sys.executable, "-m", "fedmm.fl.deploy", str(os.getpid())],
                         {name: value}, orphan_dies=False)


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when this process dies, however it dies (Linux prctl).

    Flower's own children (SuperExec, ServerApp) follow theirs with ``--parent-pid``, so a
    ``kill -9`` of fedmm takes the whole tree down and a rerun starts clean.
    """
    parent = os.getpid()

    def preexec() -> None:
        if _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != parent:
            os._exit(1)

    return preexec


def start_process(runtime: Runtime, name: str, args: list[str], env: dict[str, str] | None = None,
                  orphan_dies: bool = True) -> subprocess.Popen:
    """Start ``args`` in a session of its own, logging to ``logs/<name>.log``, dying with this process."""
    log = open(runtime.home / "logs" / f"{name}.log", "ab")
    try:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**runtime.env(), **(env or {})}, start_new_session=True,
            preexec_fn=die_with_parent() if orphan_dies else None,
        )
    finally:
        log.close()


def stop_processes(processes: dict[str, subprocess.Popen], sig: int = signal.SIGTERM) -> None:
    """Signal the processes' groups at once, KILL what is left after a grace period, and reap them."""
    for process in processes.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    deadline = time.monotonic() + STOP_SECONDS
    for name, process in processes.items():
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.info("%s (pid %d) did not stop within %s s: killing its process group", name, process.pid,
                        STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    processes.clear()


@dataclass(frozen=True)
class Certificates:
    """A CA and a server certificate for 127.0.0.1/localhost, as PEM files."""

    ca: Path
    certificate: Path
    key: Path


def make_certificates(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Certificates:
    """A fresh CA and a server certificate signed by it, valid for ``hosts`` (IP addresses or names)."""
    ca = make_ca(directory, directory / "ca.key")
    return Certificates(ca, *make_server_certificate(ca, directory / "ca.key", directory, list(hosts)))


@dataclass(frozen=True)
class SiteSpec:
    """One SuperNode: its client id, its own data file, where it keeps state, its auth key."""

    client_id: int
    data_path: Path
    state_dir: Path
    auth_key: Path | None = None

    def node_config(self, threads: int) -> str:
        return (f'partition-id={self.client_id} data-path="{self.data_path}" '
                f'state-dir="{self.state_dir}" torch-threads={threads}')


@dataclass
class Runtime:
    """The Flower virtual environment and the folder holding FLWR_HOME and the logs."""

    venv: Path
    home: Path
    threads: int = 1

    def __post_init__(self) -> None:
        self.venv, self.home = Path(self.venv).resolve(), Path(self.home).resolve()
        if not (self.venv / "bin" / "flower-superlink").is_file():
            raise DeploymentError(
                f"no Flower runtime in {self.venv} (flower.venv): run `make install-site` to build it"
            )
        (self.home / "logs").mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONHOME"))}
        threads = str(self.threads)
        env.update(
            FLWR_HOME=str(self.home / "flwr"), FLWR_DISABLE_UPDATE_CHECK="1", PYTHONUNBUFFERED="1",
            PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads, FLWR_TELEMETRY_ENABLED="0",
        )
        return env

    def live_processes(self, marker: str | None = None) -> list[int]:
        """PIDs of running (not zombie) processes whose environment holds ``marker`` (default: this FLWR_HOME).

        That is everything started here and all its descendants, also those that left their
        process group (Flower's SuperExec starts a session of its own). Linux: reads /proc.
        """
        return live_processes(marker or f"FLWR_HOME={self.env()['FLWR_HOME']}")

    def command(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def python(self) -> str:
        return self.command("python")


@dataclass
class Federation:
    """A SuperLink and one SuperNode (plus its ClientApp executor) per site, on loopback.

    With ``certificates`` everything speaks TLS; with ``node_auth`` the SuperLink accepts only
    SuperNodes whose public keys were registered (each site's ``auth_key``). With
    ``superlink`` no SuperLink is started: the sites join that one (TLS verified with
    ``root_certificates``, else insecure). The sites' ClientApps run in at most ``executors``
    long-running processes (default: one per core), each serving its share of the SuperNodes.
    """

    runtime: Runtime
    sites: list[SiteSpec]
    certificates: Certificates | None = None
    node_auth: bool = False
    superlink: str | None = None
    root_certificates: Path | None = None
    executors: int = field(default_factory=lambda: os.cpu_count() or 1)
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    node_ports: dict[int, int] = field(default_factory=dict)
    executor_of: dict[int, str] = field(default_factory=dict)
    ident: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def address(self) -> str:
        return self.superlink or f"127.0.0.1:{self.port}"

    @property
    def marker(self) -> str:
        """The environment entry every process of this federation holds."""
        return f"{FEDERATION_ENV}={self.ident}"

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        self.processes[name] = start_process(self.runtime, name, args, {FEDERATION_ENV: self.ident})
        return self.processes[name]

    def _tls_args(self, server: bool) -> list[str]:
        if server and self.certificates is not None:
            return ["--ssl-ca-certfile", str(self.certificates.ca), "--ssl-certfile", str(self.certificates.certificate),
                    "--ssl-keyfile", str(self.certificates.key)]
        ca = self.certificates.ca if self.certificates is not None else self.root_certificates
        return ["--insecure"] if ca is None else ["--root-certificates", str(ca)]

    def start_superlink(self, timeout: float = 60.0) -> None:
        args = [self.runtime.command("flower-superlink"), *self._tls_args(server=True),
                "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.node_auth:
            args.append("--enable-supernode-auth")
        wait_for_port(self.port, timeout, self._start("superlink", args), "the SuperLink")
        write_connection(self.runtime, self.address, self.certificates.ca if self.certificates else None)

    def register(self, public_key: Path) -> None:
        """Register a SuperNode's public key with the SuperLink (node authentication)."""
        done = subprocess.run(
            [self.runtime.command("flwr"), "supernode", "register", str(public_key), FEDERATION],
            env=self.runtime.env(), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
        )
        if done.returncode != 0:
            raise DeploymentError(f"registering {public_key.name} failed: {(done.stdout + done.stderr).strip()[-400:]}")

    def start_sites(self, sites: list[SiteSpec], timeout: float = 60.0) -> None:
        """A SuperNode per site (``--isolation process``), all at once, then the executors that run their ClientApps."""
        nodes = {}
        for site in sites:
            port = self.node_ports[site.client_id] = free_port()
            args = [self.runtime.command("flower-supernode"), *self._tls_args(server=False),
                    "--superlink", self.address, "--isolation", "process", "--host", "127.0.0.1", "--port", str(port),
                    "--node-config", site.node_config(self.runtime.threads)]
            if site.auth_key is not None:
                args += ["--auth-supernode-private-key", str(site.auth_key)]
            nodes[site.client_id] = self._start(f"supernode-{site.client_id}", args)
        for client, node in nodes.items():
            wait_for_port(self.node_ports[client], timeout, node, f"SuperNode {client}")
        clients = list(nodes)
        groups = [clients[i::self.executors] for i in range(min(self.executors, len(clients)))]
        for group in groups:
            apis = [arg for client in group for arg in ("--runtime-api", f"127.0.0.1:{self.node_ports[client]}")]
            name = "executor-" + "-".join(map(str, group))
            self._start(name, [self.runtime.python(), "-m", "fedmm.flower.executor", *apis,
                               "--parent-pid", str(os.getpid())])
            self.executor_of.update({client: name for client in group})

    def __enter__(self) -> Federation:
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, raise_interrupted)
        try:
            self.processes["reaper"] = start_reaper(self.runtime, self.marker)
            if self.superlink is None:
                self.start_superlink()
            if self.node_auth and self.superlink is None:
                for site in self.sites:
                    if site.auth_key is not None:
                        self.register(Path(f"{site.auth_key}.pub"))
            self.start_sites(self.sites)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop_processes(self, names: list[str], sig: int = signal.SIGTERM) -> None:
        """Stop these processes of the federation (see :func:`stop_processes`)."""
        stop_processes({name: self.processes.pop(name) for name in names if name in self.processes}, sig)

    def kill_site(self, client_id: int) -> None:
        """SIGKILL one site's SuperNode (fault injection; an executor it shares with other sites stays)."""
        self.stop_processes([f"supernode-{client_id}"], signal.SIGKILL)

    def stop(self) -> None:
        """Stop every process of this federation, including those its SuperLink started in other sessions."""
        self.stop_processes([n for n in self.processes if n != "superlink"])
        self.stop_processes(["superlink"])
        kill_marked(self.marker)
        if getattr(self, "_previous", None) is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def write_connection(runtime: Runtime, address: str, root_certificates: Path | str | None) -> None:
    """The ``flwr`` CLI's connection named ``fedmm`` (``$FLWR_HOME/config.toml``): TLS unless no CA is given."""
    pki.write_connection(Path(runtime.env()["FLWR_HOME"]), address, root_certificates)


def run_app(
    runtime: Runtime, run_config: dict[str, str | int], on_line: Callable[[str], None], timeout: float | None = None,
    watch: ServerAppWatch | None = None,
) -> int:
    """``flwr run`` the fedmm Flower App on the ``fedmm`` connection, streaming its log lines to ``on_line``.

    It is killed after ``timeout`` seconds, and once ``watch`` says the ServerApp died.
    """
    config = " ".join(f"{key}={_toml(value)}" for key, value in run_config.items())
    process = subprocess.Popen(
        [runtime.command("flwr"), "run", str(APP_DIR), FEDERATION, "--stream", "--run-config", config],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=runtime.env(), text=True,
        start_new_session=True, preexec_fn=die_with_parent(),
    )
    timer = threading.Timer(timeout, lambda: os.killpg(process.pid, signal.SIGKILL)) if timeout else None
    finished = threading.Event()
    watcher = threading.Thread(target=_watch, args=(watch, process, finished), daemon=True) if watch else None
    try:
        for thread in (timer, watcher):
            if thread is not None:
                thread.start()
        for line in process.stdout:
            on_line(line.rstrip("\n"))
        return process.wait()
    finally:
        finished.set()
        if timer is not None:
            timer.cancel()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()


def _watch(watch: ServerAppWatch, process: subprocess.Popen, finished: threading.Event) -> None:
    """Kill ``flwr run`` (its process group) once ``watch`` says the ServerApp died; stop when the run finished."""
    while not finished.wait(0.5):
        if watch.died():
            watch.fired = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return


def _reap(parent: int, marker: str) -> None:
    """The reaper's loop (:func:`start_reaper`): wait until ``parent`` is gone, then kill what holds ``marker``."""
    while os.getppid() == parent:
        time.sleep(0.2)
    kill_marked(marker)


def _toml(value: str | int) -> str:
    return str(value) if isinstance(value, int) else '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    _reap(int(sys.argv[1]), f"{FEDERATION_ENV}={os.environ[FEDERATION_ENV]}")
