"""The operator's side of a deployed federation: the SuperLink host and the coordinator's app executor.

``fedmm superlink --pki DIR`` runs Flower's SuperLink with TLS (the PKI's server certificate),
SuperNode authentication and ``--isolation process`` (no ServerApp runs on the SuperLink host),
its one HTTP server (Fleet, Control and Runtime APIs in Flower 1.42) bound to the operator
address only, and :mod:`fedmm.flower.gateway` on the public address, forwarding the Fleet API
alone. The SuperLink is then a message broker: the coordinator runs the ServerApp with
:class:`AppExecutor` (``flower-superexec`` against the operator address, authenticated with
the SuperExec secret), so every file the ServerApp reads or writes stays on the coordinator.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fedmm.fl.deploy import (
    FEDERATION_ENV,
    DeploymentError,
    Runtime,
    kill_marked,
    start_process,
    start_reaper,
    stop_processes,
    wait_for_port,
    write_connection,
)
from fedmm.fl.pki import PKI

START_SECONDS = 60.0


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def operator_bind(pki: PKI, bind: str | None) -> tuple[str, int]:
    """Where the SuperLink listens: ``bind`` (an address of this host) or the PKI's operator host, its operator port."""
    host, port = _host_port(pki.operator_address)
    return (bind or host), port


def _reach(host: str) -> str:
    """The address to reach a server bound to ``host`` from this host (a wildcard bind: loopback, in the SANs)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def superlink_command(runtime: Runtime, pki: PKI, database: Path | None = None, bind: str | None = None) -> list[str]:
    """``flower-superlink`` with TLS, node auth, process isolation and its APIs on the operator address."""
    folder = pki.party("superlink")
    host, port = operator_bind(pki, bind)
    args = [runtime.command("flower-superlink"), "--ssl-ca-certfile", str(folder / "ca.pem"),
            "--ssl-certfile", str(folder / "server.pem"), "--ssl-keyfile", str(folder / "server.key"),
            "--enable-supernode-auth", "--isolation", "process", "--disable-runtime-dependency-installation",
            "--superexec-auth-secret-file", str(folder / "superexec.secret"), "--host", host, "--port", str(port)]
    if database is not None:
        args += ["--database", str(database)]
    return args


def gateway_command(runtime: Runtime, pki: PKI, bind: str | None = None, listen: str | None = None) -> list[str]:
    folder = pki.party("superlink")
    host, port = operator_bind(pki, bind)
    return [runtime.python(), "-m", "fedmm.flower.gateway", "--listen", listen or pki.public_address,
            "--upstream", f"{_reach(host)}:{port}", "--certfile", str(folder / "server.pem"),
            "--keyfile", str(folder / "server.key"), "--ca", str(folder / "ca.pem")]


def serve_superlink(runtime: Runtime, pki: PKI, say: Callable[[str], None], database: Path | None = None,
                    bind: str | None = None, listen: str | None = None) -> int:
    """Run the SuperLink and its Fleet gateway until either exits or this process is stopped (SIGTERM, SIGINT).

    ``bind``/``listen`` override where the operator APIs and the gateway listen (default: the
    PKI's operator and public addresses), e.g. ``0.0.0.0`` in a container whose network
    policy keeps the operator port to the coordinator.
    """
    processes: dict[str, subprocess.Popen] = {}
    stopping: list[int] = []

    def stop(signum, frame) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        processes["superlink"] = start_process(runtime, "superlink", superlink_command(runtime, pki, database, bind))
        host, port = operator_bind(pki, bind)
        wait_for_port(port, START_SECONDS, processes["superlink"], "the SuperLink", _reach(host))
        processes["gateway"] = start_process(runtime, "gateway", gateway_command(runtime, pki, bind, listen))
        public_host, public_port = _host_port(listen or pki.public_address)
        wait_for_port(public_port, START_SECONDS, processes["gateway"], "the Fleet gateway", _reach(public_host))
        say(f"superlink: Fleet API for sites on {listen or pki.public_address} (TLS, node authentication); "
            f"Control and Runtime APIs on {host}:{port} only; logs in {runtime.home / 'logs'}")
        while not stopping and all(p.poll() is None for p in processes.values()):
            time.sleep(0.2)
        exited = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
    finally:
        stop_processes(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if exited:
        raise DeploymentError(f"{', '.join(f'{n} exited with code {c}' for n, c in exited.items())}: "
                              f"see {runtime.home / 'logs'}")
    say("superlink: stopped")
    return 0


class AppExecutor:
    """``flower-superexec`` on the coordinator: runs the ServerApps of a remote SuperLink here.

    Also writes the ``flwr`` connection ``fedmm`` (Control API on the operator address), so
    ``flwr run``, ``flwr ls`` and ``flwr supernode register`` work from the coordinator.
    """

    def __init__(self, runtime: Runtime, superlink: str, root_certificates: Path, secret_file: Path) -> None:
        self.runtime, self.superlink = runtime, superlink
        self.root_certificates, self.secret_file = Path(root_certificates), Path(secret_file)
        self.processes: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> AppExecutor:
        if not self.secret_file.is_file():
            raise DeploymentError(f"SuperExec secret {self.secret_file} not found (the PKI's coordinator/superexec.secret)")
        write_connection(self.runtime, self.superlink, self.root_certificates)
        self.marker = marker = f"{FEDERATION_ENV}={uuid.uuid4().hex}"
        self.processes["reaper"] = start_reaper(self.runtime, marker)
        self.processes["superexec"] = start_process(self.runtime, "superexec", [
            self.runtime.command("flower-superexec"), "--runtime-api-address", self.superlink,
            "--root-certificates", str(self.root_certificates),
            "--superexec-auth-secret-file", str(self.secret_file),
        ], dict([marker.split("=", 1)]))
        return self

    def __exit__(self, *exc) -> None:
        stop_processes(self.processes)
        kill_marked(self.marker)
